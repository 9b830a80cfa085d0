//! An HTTP/2 client over TLS (hyper + rustls), so the load generator can measure the
//! TCP path of any server with the same viewers as over HTTP/3.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::client::{ClientError, Fetched};

/// One HTTP/2 connection; clones share it.
#[derive(Clone)]
pub struct H2Client {
    send: SendRequest<Empty<Bytes>>,
    authority: String,
}

impl H2Client {
    /// Connects to `addr` as `server_name` (ALPN `h2` is set here).
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        mut tls: rustls::ClientConfig,
    ) -> Result<Self, ClientError> {
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let (send, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| ClientError::H3(e.to_string()))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            send,
            authority: format!("{server_name}:{}", addr.port()),
        })
    }

    /// GET `path`, reading the whole response.
    pub async fn get(&self, path: &str) -> Result<Fetched, ClientError> {
        let stream_error = |e: &dyn std::fmt::Display| ClientError::Stream(e.to_string());
        let request = http::Request::get(format!("https://{}{path}", self.authority))
            .body(Empty::<Bytes>::new())
            .map_err(|e| stream_error(&e))?;
        let started = Instant::now();
        let mut send = self.send.clone();
        send.ready().await.map_err(|e| stream_error(&e))?;
        let response = send
            .send_request(request)
            .await
            .map_err(|e| stream_error(&e))?;
        let headers_after = started.elapsed();
        let (parts, mut body) = response.into_parts();
        let mut bytes = BytesMut::new();
        let mut chunks = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| stream_error(&e))?;
            if let Some(data) = frame.data_ref() {
                chunks.push((started.elapsed(), data.len()));
                bytes.extend_from_slice(data);
            }
        }
        Ok(Fetched {
            response: http::Response::from_parts(parts, ()),
            body: bytes.freeze(),
            headers_after,
            chunks,
        })
    }
}
