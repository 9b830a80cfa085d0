//! The TCP front: HTTP/1.1 and HTTP/2 (ALPN, or HTTP/1.1 for a client that sends no
//! ALPN) over TLS with hyper, for clients and CDNs that cannot speak QUIC. Every
//! response advertises HTTP/3 with `Alt-Svc`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::StreamBody;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::h3::ConnectionLimits;
use super::{AppState, Body, handle};

/// The body type hyper sends.
pub type HyperBody =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

fn hyper_body(body: Body) -> HyperBody {
    let stream = futures_util::stream::unfold(body.into_chunks(), |mut chunks| async move {
        chunks
            .next()
            .await
            .map(|chunk| (Ok(Frame::data(chunk)), chunks))
    });
    StreamBody::new(Box::pin(stream))
}

/// Accepts TLS connections on `listener` until the task is dropped. `h3_port` is
/// advertised in `Alt-Svc`; `limits` are the same as the QUIC listener's.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    h3_port: u16,
    limits: ConnectionLimits,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let acceptor = TlsAcceptor::from(tls);
    let alt_svc = HeaderValue::from_str(&format!("h3=\":{h3_port}\"; ma=86400"))
        .unwrap_or(HeaderValue::from_static("h3=\":4443\""));
    loop {
        let (socket, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "TCP accept failed");
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            tracing::warn!(%remote, "connection limit reached, refused");
            continue;
        }
        // Parts are small and latency-bound: do not let Nagle hold their tails back.
        let _ = socket.set_nodelay(true);
        let open = open.clone();
        open.fetch_add(1, Ordering::Relaxed);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let alt_svc = alt_svc.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(socket).await {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::debug!(%remote, %error, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |request: http::Request<Incoming>| {
                let state = state.clone();
                let alt_svc = alt_svc.clone();
                async move {
                    let (parts, _) = request.into_parts();
                    let request = http::Request::from_parts(parts, ());
                    let response = handle(&state, &request).await;
                    let (mut parts, body) = response.into_parts();
                    parts.headers.insert(http::header::ALT_SVC, alt_svc);
                    Ok::<_, Infallible>(http::Response::from_parts(parts, hyper_body(body)))
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            // An idle HTTP/1.1 keep-alive connection is closed when no next request's
            // headers arrive in time; HTTP/2 pings an idle peer and drops it if silent.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(limits.max_streams_per_connection)
                .keep_alive_interval(limits.idle_timeout / 2)
                .keep_alive_timeout(limits.idle_timeout / 2);
            if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(%remote, %error, "HTTP connection ended");
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}
