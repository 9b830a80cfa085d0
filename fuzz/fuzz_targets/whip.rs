//! What a WHIP publisher sends Mirror: the SDP offer (answered or refused with a
//! reason), the datagrams that arrive on the session's UDP port before and during ICE
//! and DTLS (STUN, DTLS, SRTP and garbage, fed to a session negotiated from a browser's
//! offer), and the Opus packets whose length the stream reads from their TOC byte.
//! Never a panic; an Opus packet never lasts more than RFC 6716 allows (120 ms).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mirror::ingest::{MAX_OPUS_PACKET_SAMPLES, opus_samples};
use mirror::ingest::push::whip::{answer, parse_offer};
use str0m::net::{Protocol, Receive};
use str0m::{Input, Output};

/// A browser's offer (Chromium's, trimmed): H.264 and Opus, sendonly.
const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=msid:- a\r\na=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=ssrc:2222 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=mid:1\r\na=sendonly\r\na=msid:- v\r\na=rtcp-mux\r\n\
a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack pli\r\n\
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=ssrc:1111 cname:x\r\n";

fuzz_target!(|input: (u8, Vec<Vec<u8>>)| {
    let (choice, chunks) = input;
    let candidate: SocketAddr = "127.0.0.1:8189".parse().expect("address");
    match choice % 3 {
        0 => {
            // Any text as an offer.
            for chunk in &chunks {
                let Ok(text) = std::str::from_utf8(chunk) else { continue };
                if let Ok(offer) = parse_offer(text) {
                    let _ = answer(offer, candidate);
                }
            }
        }
        1 => {
            // Datagrams from the publisher's address to a negotiated session.
            let offer = parse_offer(OFFER).expect("the browser's offer parses");
            let (mut rtc, _) = answer(offer, candidate).expect("and is answered");
            let source: SocketAddr = "127.0.0.1:50000".parse().expect("address");
            let mut now = Instant::now();
            for chunk in chunks.iter().take(64) {
                now += Duration::from_millis(5);
                if let Ok(receive) = Receive::new(Protocol::Udp, source, candidate, chunk) {
                    let input = Input::Receive(now, receive);
                    if rtc.accepts(&input) && rtc.handle_input(input).is_err() {
                        return;
                    }
                }
                // Drained as the server drains it, to its next timeout.
                for _ in 0..256 {
                    match rtc.poll_output() {
                        Ok(Output::Timeout(_)) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
        }
        _ => {
            for chunk in &chunks {
                // 120 ms at 48 kHz is the most a packet may hold.
                let samples = opus_samples(chunk);
                assert!(samples <= MAX_OPUS_PACKET_SAMPLES, "{samples} samples in {chunk:?}");
            }
        }
    }
});
