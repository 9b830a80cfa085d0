//! Attacks on the transports: connections that never speak TLS, floods, silence,
//! clients that stop reading, oversized headers and frames, handshakes that are never
//! finished, garbage datagrams, rapid resets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

use super::{STREAM, Target, curl, source};

/// A TCP connection from `from` to the TLS port.
async fn tcp_from(target: &Target, from: u8, recv_buffer: Option<u32>) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source(from), 0)).unwrap();
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).unwrap();
    }
    socket.connect(target.tcp_addr()).await.unwrap()
}

/// Reads until the peer closes; how long that took, or `None` if it did not within
/// `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// A TLS connection from `from`, ALPN `alpn`.
async fn tls_from(
    target: &Target,
    from: u8,
    alpn: &[u8],
    recv_buffer: Option<u32>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let config = mirror::tls::client_config_trusting(target.tls(), &[alpn]).unwrap();
    let tcp = tcp_from(target, from, recv_buffer).await;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Issue 11.1: plain-HTTP requests to the TLS port, from 12 addresses as a scanner's
/// would be, failed their handshake and, before, kept their place under
/// `max_connections` (8) forever.
pub(crate) async fn plain_http_on_the_tls_port(target: &Target) {
    for n in 0..12 {
        let mut stream = tcp_from(target, 140 + n, None).await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        assert!(
            closed_within(&mut stream, Duration::from_secs(3))
                .await
                .is_some(),
            "a plain-HTTP request on the TLS port was not closed"
        );
    }
    let after = curl(target, source(11), &["--http1.1"], "/streams").await;
    assert_eq!(
        after.status, 200,
        "locked out after failed handshakes: {after:?}"
    );
}

/// Connections held open without a byte, far past both limits, from one address: the
/// others (another address on TCP, everyone on QUIC) are still served.
pub(crate) async fn connection_flood(target: &Target) {
    let mut held = Vec::new();
    for _ in 0..300 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source(12), 0)).unwrap();
        if let Ok(stream) = socket.connect(target.tcp_addr()).await {
            held.push(stream);
        }
    }
    let other = curl(target, source(13), &["--http2"], "/streams").await;
    assert_eq!(
        other.status, 200,
        "another address during the flood: {other:?}"
    );
    drop(held);
}

/// QUIC connections past an address's budget (4) are refused before any TLS handshake
/// (a Retry, then CONNECTION_REFUSED once the address is proven), not after one; another
/// address still connects.
pub(crate) async fn quic_connection_budget(target: &Target) {
    let mut held = Vec::new();
    for _ in 0..4 {
        // Answered once: the server has counted the connection (a client's handshake
        // ends before the server has read its last flight).
        let client = target.h3_from(source(23)).await;
        let fetched = client.get(&format!("/{STREAM}/video.m3u8")).await.unwrap();
        assert_eq!(fetched.status(), 200);
        held.push(client);
    }
    let endpoint = target.quic_endpoint(source(23), None);
    let refused = endpoint
        .connect(target.h3_addr(), "localhost")
        .unwrap()
        .await;
    assert!(
        matches!(
            &refused,
            Err(quinn::ConnectionError::ConnectionClosed(close))
                if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED
        ),
        "a fifth connection from one address: {refused:?}"
    );
    let other = target.h3_from(source(24)).await;
    let fetched = other.get(&format!("/{STREAM}/video.m3u8")).await.unwrap();
    assert_eq!(fetched.status(), 200);
    drop(held);
}

/// Issue 11.2: silence at every stage is closed within its timeout: before the TLS
/// handshake (1 s), after it with no HTTP/1.1 request (1 s) or no HTTP/2 preface (idle
/// 2 s + 1 s), a QUIC request whose headers never end (1 s), and a QUIC connection
/// that keeps itself alive with PINGs but asks for nothing (idle 2 s).
pub(crate) async fn silent_connections(target: &Target) {
    let mut bare = tcp_from(target, 14, None).await;
    let took = closed_within(&mut bare, Duration::from_secs(5)).await;
    assert!(
        took.is_some(),
        "a connection that never starts TLS was kept"
    );

    for (alpn, within) in [(&b"http/1.1"[..], 4), (&b"h2"[..], 6)] {
        let mut tls = tls_from(target, 14, alpn, None).await;
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(within), tls.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(_)) => {} // HTTP/2's SETTINGS, then GOAWAY
                Err(_) => break false,
            }
        };
        assert!(
            closed,
            "a TLS connection ({}) that sent nothing was kept {:?}",
            String::from_utf8_lossy(alpn),
            started.elapsed()
        );
    }

    let (_endpoint, connection) = target.quic_connect(source(14), None).await;
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    // A HEADERS frame of 100 bytes, of which 10 are ever sent.
    send.write_all(&[0x01, 0x40, 0x64]).await.unwrap();
    send.write_all(&[0; 10]).await.unwrap();
    let reset = tokio::time::timeout(Duration::from_secs(4), recv.read_chunk(1024, true)).await;
    assert!(
        matches!(reset, Ok(Err(_))),
        "a request whose headers never end was kept: {reset:?}"
    );

    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(200)));
    let (_endpoint, pinging) = target.quic_connect(source(14), Some(transport)).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), pinging.closed()).await;
    assert!(
        closed.is_ok(),
        "a QUIC connection that only pings was kept open"
    );
}

/// The name of a complete segment of the live rendition.
async fn complete_segment(target: &Target) -> String {
    let client = target.h3_from(source(15)).await;
    let playlist = target.playlist(&client).await;
    let segment = playlist.segments.last().unwrap();
    format!("/{STREAM}/{}", segment.uri)
}

/// Issue 11.2: a client that stops reading is dropped after the send timeout (1 s)
/// instead of holding its response, its buffers and its place forever.
pub(crate) async fn slow_readers(target: &Target) {
    let segment = complete_segment(target).await;

    // HTTP/1.1: a small receive buffer and pipelined requests that are never read.
    let length = target
        .h3_from(source(16))
        .await
        .get(&segment)
        .await
        .unwrap()
        .body
        .len();
    let mut tls = tls_from(target, 16, b"http/1.1", Some(4096)).await;
    let request = format!("GET {segment} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let pipelined = 256;
    for _ in 0..pipelined {
        tls.write_all(request.as_bytes()).await.unwrap();
    }
    tls.flush().await.unwrap();
    // Long enough for a debug build on a busy machine to fill the socket buffers
    // (megabytes, TLS-encrypted) and then stall past its 1 s send timeout: with 3 s, a
    // loaded run once had the server still filling them when this client began to read.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => received += n,
            Err(_) => break false,
        }
    };
    // Socket buffers hold a few megabytes; the rest was never sent.
    assert!(
        ended && received < pipelined * length / 2,
        "HTTP/1.1: a client that stopped reading was still being served \
         ({received} of {} bytes)",
        pipelined * length
    );

    // HTTP/2: windows of 4 KiB that are never opened again (the body is not read), on
    // a connection that answers the server's pings: hyper writes nothing while it
    // waits, so only the bodies' progress shows the stall.
    let config = mirror::tls::client_config_trusting(target.tls(), &[b"h2"]).unwrap();
    let tcp = tcp_from(target, 16, None).await;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(4096)
            .initial_connection_window_size(4096)
            .adaptive_window(false)
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let _connection = tokio::spawn(connection);
    let request = http::Request::get(format!("https://localhost{segment}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await;
    assert!(
        !matches!(read, Ok(Ok(_))),
        "HTTP/2: a peer that granted no window was answered whole"
    );

    // HTTP/3: a stream window of 4 KiB that is never read past, on a connection kept
    // alive with PINGs (QUIC's idle timeout must not be what ends it).
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(4096u32.into())
        .receive_window(16384u32.into())
        .keep_alive_interval(Some(Duration::from_millis(300)));
    let (_endpoint, connection) = target.quic_connect(source(16), Some(transport)).await;
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    let _driver =
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let request = http::Request::get(format!("https://localhost{segment}"))
        .body(())
        .unwrap();
    let mut stream = send.send_request(request).await.unwrap();
    stream.finish().await.unwrap();
    let response = stream.recv_response().await.unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut outcome = Ok(0usize);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.recv_data()).await {
            Ok(Ok(Some(chunk))) => {
                if let Ok(n) = &mut outcome {
                    *n += bytes::Buf::remaining(&chunk);
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(error)) => {
                outcome = Err(error.to_string());
                break;
            }
            Err(_) => {
                outcome = Err("no data for 5 s".into());
                break;
            }
        }
    }
    assert!(
        outcome.is_err(),
        "HTTP/3: a stream that stopped reading was answered whole: {outcome:?}"
    );
}

/// Issue 11.3: a 64 KiB header, and 500 headers, are refused with 431 (or the stream is
/// refused) on all three protocols.
pub(crate) async fn header_limits(target: &Target) {
    let big = "x".repeat(64 << 10);
    let many: Vec<(String, String)> = (0..500)
        .map(|i| (format!("x-filler-{i}"), "y".into()))
        .collect();
    let path = format!("/{STREAM}/video.m3u8");

    // HTTP/3, from a client that has not read the server's SETTINGS yet (its driver is
    // not running), so that it sends what the server's limit would make h3 refuse.
    let (_endpoint, connection) = target.quic_connect(source(17), None).await;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    let small: Vec<(String, String)> = (0..500).map(|i| (format!("a{i}"), "b".into())).collect();
    let cases: [(&str, Vec<(String, String)>); 4] = [
        ("a 64 KiB header", vec![("x-big".into(), big.clone())]),
        ("500 headers of 40 bytes", many.clone()),
        ("500 tiny headers (17 KB decoded)", small.clone()),
        ("300 tiny headers", small[..300].to_vec()),
    ];
    let mut streams = Vec::new();
    for (what, headers) in &cases {
        let mut request = http::Request::get(format!("https://localhost{path}"));
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let mut send = send.clone();
        let stream = send.send_request(request.body(()).unwrap()).await;
        streams.push((*what, stream));
    }
    let _driver =
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    for (what, stream) in streams {
        let outcome = match stream {
            Ok(mut stream) => {
                let _ = stream.finish().await;
                tokio::time::timeout(Duration::from_secs(5), stream.recv_response())
                    .await
                    .map(|r| r.map(|r| r.status().as_u16()).map_err(|e| e.to_string()))
            }
            Err(error) => Ok(Err(error.to_string())),
        };
        match outcome {
            Ok(Ok(status)) => assert_eq!(status, 431, "HTTP/3 {what}"),
            Ok(Err(error)) => eprintln!("HTTP/3 {what}: stream refused ({error})"),
            Err(_) => panic!("HTTP/3 {what}: no answer in 5 s"),
        }
    }
    let mut send = send.clone();
    let mut fine = send
        .send_request(
            http::Request::get(format!("https://localhost{path}"))
                .body(())
                .unwrap(),
        )
        .await
        .unwrap();
    fine.finish().await.unwrap();
    assert_eq!(
        fine.recv_response().await.unwrap().status(),
        200,
        "after the refusals"
    );

    let header_file = target.dir.path().join("headers.txt");
    let lines: String = many.iter().map(|(n, v)| format!("{n}: {v}\n")).collect();
    std::fs::write(&header_file, lines).unwrap();
    let big_header = format!("x-big: {big}");
    let many_arg = format!("@{}", header_file.display());
    for protocol in ["--http1.1", "--http2"] {
        for (what, header) in [("64 KiB header", &big_header), ("500 headers", &many_arg)] {
            let got = curl(target, source(17), &[protocol, "-H", header], &path).await;
            assert!(
                got.status == 431 || (got.status == 0 && got.exit != 0),
                "{protocol} {what}: {got:?}"
            );
        }
    }
    // Within the limits, all is well.
    let fine = curl(target, source(17), &["--http2", "-H", "x-small: 1"], &path).await;
    assert_eq!(fine.status, 200);
}

/// Issue 11.3: an unknown frame on the control stream claiming 10 MB: h3 would buffer
/// it whole; the connection is closed instead.
pub(crate) async fn control_stream_flood(target: &Target) {
    let (_endpoint, connection) = target.quic_connect(source(18), None).await;
    let mut control = connection.open_uni().await.unwrap();
    // Control stream type, an empty SETTINGS frame, then a reserved frame type
    // (0x21) whose length says 10 MB.
    control.write_all(&[0x00, 0x04, 0x00]).await.unwrap();
    let length = (0x8000_0000u32 | (10 << 20)).to_be_bytes();
    control.write_all(&[0x21]).await.unwrap();
    control.write_all(&length).await.unwrap();
    let flood = tokio::spawn(async move {
        let chunk = Bytes::from(vec![0u8; 64 << 10]);
        for _ in 0..160 {
            if control.write_chunk(chunk.clone()).await.is_err() {
                return;
            }
        }
        // The control stream stays open: closing it would be an error of its own.
        std::future::pending::<()>().await;
    });
    // Closed as an error, and before the idle timeout (2 s) would have closed it.
    let closed = tokio::time::timeout(Duration::from_millis(1500), connection.closed()).await;
    match closed {
        Ok(quinn::ConnectionError::ApplicationClosed(close)) => assert_eq!(
            close.error_code.into_inner(),
            0x107,
            "closed, but not as H3_EXCESSIVE_LOAD: {close:?}"
        ),
        Ok(other) => panic!("closed for another reason: {other}"),
        Err(_) => panic!("the connection was kept while it flooded its control stream"),
    }
    flood.abort();
}

/// Issue 11.5: handshakes that are never finished, from 20 addresses (a spoofer's are
/// random), do not count as connections: past the threshold (2) they are sent a Retry,
/// and a real viewer still connects although the listener takes 8 connections.
pub(crate) async fn unanswered_handshakes(target: &Target) {
    let mut relays = Vec::new();
    for n in 0..20 {
        // A client's first datagram (its Initial), relayed once from another address;
        // the server's answers go to that address, where no one reads them.
        let relay = UdpSocket::bind(SocketAddr::new(source(100 + n), 0))
            .await
            .unwrap();
        let endpoint = target.quic_endpoint(source(100 + n), None);
        let _connecting = endpoint
            .connect(relay.local_addr().unwrap(), "localhost")
            .unwrap();
        let mut initial = vec![0u8; 2048];
        let (len, _) = relay.recv_from(&mut initial).await.unwrap();
        relay
            .send_to(&initial[..len], target.h3_addr())
            .await
            .unwrap();
        endpoint.close(0u32.into(), b"");
        // `relay` stays bound until the end of this case, so nothing answers the
        // server and no port-unreachable reaches it either.
        relays.push(relay);
    }
    let viewer = target.h3_from(source(20)).await;
    let fetched = viewer.get(&format!("/{STREAM}/video.m3u8")).await.unwrap();
    assert_eq!(fetched.status(), 200);
    drop(relays);
}

/// Datagrams that are not QUIC, or are truncated QUIC: dropped, nothing else.
pub(crate) async fn garbage_datagrams(target: &Target) {
    let socket = UdpSocket::bind(SocketAddr::new(source(21), 0))
        .await
        .unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in 0..10_000u32 {
        // xorshift: cheap bytes that change every datagram.
        let len = 1 + (i as usize * 37) % 1400;
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let _ = socket.send_to(&datagram, target.h3_addr()).await;
        if i % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let viewer = target.h3_from(source(21)).await;
    assert_eq!(
        viewer
            .get(&format!("/{STREAM}/video.m3u8"))
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Requests opened and reset at once, thousands of times (HTTP/2 "rapid reset",
/// CVE-2023-44487, and the same on HTTP/3).
pub(crate) async fn rapid_resets(target: &Target) {
    // HTTP/3: open a stream, send a request's headers, reset it.
    let (_endpoint, connection) = target.quic_connect(source(22), None).await;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(connection))
        .await
        .unwrap();
    let _driver =
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    for _ in 0..2000 {
        let mut send = send.clone();
        let request = http::Request::get(format!(
            "https://localhost/{STREAM}/video.m3u8?_HLS_msn=999999"
        ))
        .body(())
        .unwrap();
        match send.send_request(request).await {
            Ok(mut stream) => stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED),
            Err(_) => break, // the server closed the connection: also a fine answer
        }
    }

    // HTTP/2: hyper's client resets a stream whose response future is dropped.
    let config = mirror::tls::client_config_trusting(target.tls(), &[b"h2"]).unwrap();
    let tcp = tcp_from(target, 22, None).await;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let _connection = tokio::spawn(connection);
    for _ in 0..2000 {
        let mut send = send.clone();
        if send.ready().await.is_err() {
            break; // GOAWAY: the server had enough
        }
        let request = http::Request::get(format!(
            "https://localhost/{STREAM}/video.m3u8?_HLS_msn=999999"
        ))
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
        let response = send.send_request(request);
        drop(response);
        tokio::task::yield_now().await;
    }
}
