//! The tests' HTTP/3 client: Mirror's own (quinn + h3, `mirror_loadgen::client`) over
//! loopback, trusting the server's certificate, failing the test on transport errors.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use mirror::tls::{TlsMaterial, client_config_trusting};
pub use mirror_loadgen::client::Fetched;

/// One HTTP/3 connection.
#[derive(Clone)]
pub struct H3Client(mirror_loadgen::client::H3Client);

impl H3Client {
    pub async fn connect(addr: SocketAddr, tls: &TlsMaterial) -> Self {
        let config = client_config_trusting(tls, &[b"h3"]).expect("client TLS");
        let client = mirror_loadgen::client::H3Client::connect(addr, "localhost", config)
            .await
            .expect("HTTP/3 connection");
        Self(client)
    }

    pub async fn get(&self, path: &str) -> Fetched {
        self.0.get(path).await.expect("HTTP/3 request")
    }

    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Fetched {
        self.0
            .request(method, path, headers)
            .await
            .expect("HTTP/3 request")
    }

    /// A request with a body (the admin API's).
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Fetched {
        self.0
            .send(method, path, headers, Some(body.to_string().into()))
            .await
            .expect("HTTP/3 request")
    }
}
