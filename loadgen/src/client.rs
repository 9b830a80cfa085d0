//! An HTTP/3 client (quinn + h3) for the load generator and the tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

/// Why a request or connection failed, by kind (the report counts them by kind).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The QUIC connection could not be made.
    #[error("connect: {0}")]
    Connect(String),
    /// The HTTP/3 session failed.
    #[error("h3: {0}")]
    H3(String),
    /// A request stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// TLS configuration.
    #[error("tls: {0}")]
    Tls(String),
}

impl ClientError {
    /// A short name of the kind, for counting.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect(_) => "connect",
            ClientError::H3(_) => "h3",
            ClientError::Stream(_) => "stream",
            ClientError::Tls(_) => "tls",
        }
    }
}

/// A client endpoint for servers like `addr`, speaking HTTP/3 with `tls`.
pub fn client_endpoint(
    addr: SocketAddr,
    tls: rustls::ClientConfig,
) -> Result<quinn::Endpoint, ClientError> {
    let bind: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    client_endpoint_at(bind, tls)
}

/// A client endpoint on the local address `bind` (e.g. 127.0.0.2: a second client
/// address on loopback), speaking HTTP/3 with `tls`.
pub fn client_endpoint_at(
    bind: SocketAddr,
    mut tls: rustls::ClientConfig,
) -> Result<quinn::Endpoint, ClientError> {
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|e| ClientError::Connect(e.to_string()))?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    Ok(endpoint)
}

/// A response with its body and timings.
#[derive(Debug)]
pub struct Fetched {
    /// Status and headers.
    pub response: http::Response<()>,
    /// The whole body.
    pub body: Bytes,
    /// From sending the request to the response headers.
    pub headers_after: Duration,
    /// Arrival (since the request was sent) and size of each DATA chunk.
    pub chunks: Vec<(Duration, usize)>,
}

impl Fetched {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/3 connection; clones share it (requests run concurrently as streams).
#[derive(Clone)]
pub struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    authority: String,
    _endpoint: quinn::Endpoint,
}

impl H3Client {
    /// Connects to `addr` as `server_name`, with `tls` (ALPN `h3` is set here), from
    /// an endpoint of its own.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        tls: rustls::ClientConfig,
    ) -> Result<Self, ClientError> {
        let endpoint = client_endpoint(addr, tls)?;
        Self::connect_on(&endpoint, addr, server_name).await
    }

    /// Connects from `endpoint` (one UDP socket can carry thousands of connections).
    pub async fn connect_on(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<Self, ClientError> {
        let connection = endpoint
            .connect(addr, server_name)
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
            .await
            .map_err(|e| ClientError::H3(e.to_string()))?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Self {
            send,
            authority: format!("{server_name}:{}", addr.port()),
            _endpoint: endpoint.clone(),
        })
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Result<Fetched, ClientError> {
        self.request(http::Method::GET, path, &[]).await
    }

    /// Sends a request and reads the whole response.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Fetched, ClientError> {
        self.send(method, path, headers, None).await
    }

    /// Sends a request with `body` (none: an empty one) and reads the whole response.
    pub async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
    ) -> Result<Fetched, ClientError> {
        let stream_error = |e: &dyn std::fmt::Display| ClientError::Stream(e.to_string());
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(()).map_err(|e| stream_error(&e))?;
        let started = Instant::now();
        let mut send = self.send.clone();
        let mut stream = send
            .send_request(request)
            .await
            .map_err(|e| stream_error(&e))?;
        if let Some(body) = body {
            stream.send_data(body).await.map_err(|e| stream_error(&e))?;
        }
        // A server that has answered may already have stopped reading the request (RFC
        // 9114 4.1, H3_NO_ERROR): the response is still to be read.
        let _ = stream.finish().await;
        let response = stream.recv_response().await.map_err(|e| stream_error(&e))?;
        let headers_after = started.elapsed();
        let mut body = BytesMut::new();
        let mut chunks = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.map_err(|e| stream_error(&e))? {
            chunks.push((started.elapsed(), chunk.remaining()));
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                body.extend_from_slice(piece);
                let n = piece.len();
                chunk.advance(n);
            }
        }
        Ok(Fetched {
            response,
            body: body.freeze(),
            headers_after,
            chunks,
        })
    }
}
