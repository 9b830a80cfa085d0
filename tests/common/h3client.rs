//! A real HTTP/3 client for the tests: quinn + h3 over loopback, trusting the server's
//! certificate.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mirror::tls::{TlsMaterial, client_config_trusting};

/// A response with its body and when each body chunk arrived.
#[derive(Debug)]
pub struct Fetched {
    pub response: http::Response<()>,
    pub body: Bytes,
    /// Time from sending the request to the response headers.
    pub headers_after: Duration,
    /// Arrival time (since the request was sent) and size of each DATA chunk.
    pub chunks: Vec<(Duration, usize)>,
}

impl Fetched {
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/3 connection.
#[derive(Clone)]
pub struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    authority: String,
    _endpoint: quinn::Endpoint,
}

impl H3Client {
    pub async fn connect(addr: SocketAddr, tls: &TlsMaterial) -> Self {
        let crypto = client_config_trusting(tls, &[b"h3"]).expect("client TLS");
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).expect("QUIC TLS");
        let mut endpoint =
            quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let connection = endpoint
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("QUIC handshake");
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .expect("h3 session");
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Self {
            send,
            authority: format!("localhost:{}", addr.port()),
            _endpoint: endpoint,
        }
    }

    pub async fn get(&self, path: &str) -> Fetched {
        self.request(http::Method::GET, path, &[]).await
    }

    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Fetched {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(()).expect("request");
        let started = Instant::now();
        let mut send = self.send.clone();
        let mut stream = send.send_request(request).await.expect("send request");
        // A server that has answered may already have stopped reading the request
        // (RFC 9114 4.1, H3_NO_ERROR): the response is still to be read.
        let _ = stream.finish().await;
        let response = stream.recv_response().await.expect("response");
        let headers_after = started.elapsed();
        let mut body = BytesMut::new();
        let mut chunks = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.expect("body") {
            chunks.push((started.elapsed(), chunk.remaining()));
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                body.extend_from_slice(piece);
                let n = piece.len();
                chunk.advance(n);
            }
        }
        Fetched {
            response,
            body: body.freeze(),
            headers_after,
            chunks,
        }
    }
}
