//! WebSocket upgrades and opaque TCP: inbound opaque, inbound detection falling back to
//! TCP, per-service TCP listeners, half-close, server-speaks-first.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tandem_tests::raw;
use tandem_tests::tcp::{TcpEchoServer, WsEchoServer, FAREWELL};
use tandem_tests::{eventually, within, Proxy, STEP_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Writes `first`, reads it back, writes `tail`, half-closes, and expects `tail`, then the
/// server's farewell (sent only after it saw our EOF), then EOF.
async fn echo_with_half_close(stream: &mut TcpStream, first: &[u8], tail: &[u8]) {
    stream.write_all(first).await.unwrap();
    let mut got = vec![0u8; first.len()];
    within(
        STEP_TIMEOUT,
        "echo of the first bytes",
        stream.read_exact(&mut got),
    )
    .await
    .unwrap();
    assert_eq!(got, first, "first bytes echoed");

    stream.write_all(tail).await.unwrap();
    stream.shutdown().await.unwrap();
    let rest = raw::read_to_end(stream).await;
    let want = [tail, FAREWELL].concat();
    assert_eq!(
        String::from_utf8_lossy(&rest),
        String::from_utf8_lossy(&want),
        "after our half-close the rest and the server's farewell still arrive, then EOF"
    );
}

async fn read_exactly(stream: &mut TcpStream, n: usize, what: &str) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    within(Duration::from_secs(3), what, stream.read_exact(&mut buf))
        .await
        .unwrap();
    buf
}

fn ws_config(ws: SocketAddr) -> String {
    format!("services:\n  - name: ws\n    endpoints:\n      - {ws}\n")
}

#[tokio::test]
async fn websocket_echo_through_outbound() {
    let server = WsEchoServer::start().await;
    let proxy = Proxy::start(&ws_config(server.addr()), &[]).await;

    let stream = TcpStream::connect(proxy.outbound()).await.unwrap();
    let req = "ws://ws/chat".into_client_request().unwrap();
    let (mut ws, resp) = within(
        STEP_TIMEOUT,
        "websocket handshake",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);

    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
    let messages = [
        Message::text("hello through the mesh"),
        Message::binary(vec![0u8, 1, 2, 254, 255]),
        Message::binary(big),
        Message::text("last"),
    ];
    for msg in messages {
        ws.send(msg.clone()).await.unwrap();
        let echoed = within(STEP_TIMEOUT, "websocket echo", ws.next())
            .await
            .expect("stream open")
            .unwrap();
        assert_eq!(echoed, msg);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn inbound_opaque_reaches_a_server_that_speaks_first() {
    let app = TcpEchoServer::with_banner(b"220 app ready\r\n".to_vec()).await;
    let port = app.addr().port().to_string();
    // A long detection timeout: an opaque port must not wait for it.
    let cfg =
        "service: web\ninbound:\n  protocol: opaque\ntimeouts:\n  detect: 10s\nservices: []\n";
    let proxy = Proxy::start(cfg, &["--app-port", &port]).await;

    let mut stream = TcpStream::connect(proxy.inbound()).await.unwrap();
    let banner = read_exactly(
        &mut stream,
        15,
        "banner without sending anything (opaque skips detection)",
    )
    .await;
    assert_eq!(banner, b"220 app ready\r\n");
    echo_with_half_close(&mut stream, b"HELO mesh\r\n", b"QUIT\r\n").await;
}

#[tokio::test]
async fn inbound_detect_falls_back_to_tcp_for_non_http_bytes() {
    let app = TcpEchoServer::start().await;
    let port = app.addr().port().to_string();
    let cfg = "service: web\ninbound:\n  protocol: detect\nservices: []\n";
    let proxy = Proxy::start(cfg, &["--app-port", &port]).await;

    let mut stream = TcpStream::connect(proxy.inbound()).await.unwrap();
    echo_with_half_close(&mut stream, b"\x00\x01hello", b"\xffbinary tail\x00").await;

    let metrics = proxy.metrics().await;
    assert!(
        metrics.value("tandem_protocol_detect_total", &[("result", "opaque")]) >= 1.0,
        "detection counted as opaque: {:?}",
        metrics
            .matching("tandem_protocol_detect_total", &[])
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn inbound_detect_times_out_to_tcp_when_the_client_is_silent() {
    let app = TcpEchoServer::with_banner(b"* OK imap\r\n".to_vec()).await;
    let port = app.addr().port().to_string();
    let cfg =
        "service: web\ninbound:\n  protocol: detect\ntimeouts:\n  detect: 200ms\nservices: []\n";
    let proxy = Proxy::start(cfg, &["--app-port", &port]).await;

    let mut stream = TcpStream::connect(proxy.inbound()).await.unwrap();
    let banner = read_exactly(&mut stream, 11, "banner after the detect timeout").await;
    assert_eq!(banner, b"* OK imap\r\n");
    echo_with_half_close(&mut stream, b"a1 NOOP\r\n", b"a2 LOGOUT\r\n").await;

    eventually(Duration::from_secs(5), "detect timeout counted", || async {
        let m = proxy.metrics().await;
        let v = m.value("tandem_protocol_detect_total", &[("result", "timeout")]);
        if v >= 1.0 {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                m.matching("tandem_protocol_detect_total", &[])
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await;
}

#[tokio::test]
async fn per_service_listener_carries_opaque_tcp() {
    let db = TcpEchoServer::start().await;
    let cfg = format!(
        "services:\n  - name: db\n    protocol: opaque\n    listen: 127.0.0.1:0\n    endpoints:\n      - {}\n",
        db.addr()
    );
    let proxy = Proxy::start(&cfg, &[]).await;
    let listener = proxy.service_addr("db");
    assert_ne!(listener.port(), 0, "ready line reports the bound port");

    let mut stream = TcpStream::connect(listener).await.unwrap();
    let first: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 253) as u8).collect();
    echo_with_half_close(&mut stream, &first, b"client is done writing").await;
    assert_eq!(db.connections(), 1);

    // A second, concurrent pair of connections works independently.
    let mut a = TcpStream::connect(listener).await.unwrap();
    let mut b = TcpStream::connect(listener).await.unwrap();
    echo_with_half_close(&mut a, b"conn-a", b"tail-a").await;
    echo_with_half_close(&mut b, b"conn-b", b"tail-b").await;
}

#[tokio::test]
async fn opaque_bytes_on_the_main_outbound_listener_are_closed() {
    let db = TcpEchoServer::start().await;
    let cfg = format!(
        "services:\n  - name: db\n    endpoints:\n      - {}\n",
        db.addr()
    );
    let proxy = Proxy::start(&cfg, &[]).await;

    let mut stream = TcpStream::connect(proxy.outbound()).await.unwrap();
    stream
        .write_all(b"\x00\x01not http at all\r\n\r\n")
        .await
        .unwrap();
    let got = raw::read_to_end(&mut stream).await;
    assert!(
        got.is_empty(),
        "no destination, so nothing comes back; got {:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(db.connections(), 0, "nothing was forwarded");
}

#[tokio::test]
async fn tcp_bulk_transfer_streams_both_ways_at_once() {
    let db = TcpEchoServer::start().await;
    let cfg = format!(
        "services:\n  - name: db\n    protocol: opaque\n    listen: 127.0.0.1:0\n    endpoints:\n      - {}\n",
        db.addr()
    );
    let proxy = Proxy::start(&cfg, &[]).await;
    let stream = TcpStream::connect(proxy.service_addr("db")).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();

    // More than every buffer on the path holds: only works if both directions flow at once.
    let payload: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.shutdown().await.unwrap();
    });
    let echoed = within(Duration::from_secs(30), "8 MB echoed", async {
        let mut out = Vec::with_capacity(payload.len());
        rd.read_to_end(&mut out).await.unwrap();
        out
    })
    .await;
    writer.await.unwrap();
    let echoed = echoed
        .strip_suffix(FAREWELL)
        .expect("farewell after the echo")
        .to_vec();
    assert_eq!(echoed.len(), payload.len(), "echoed length");
    assert!(echoed == payload, "echoed bytes differ");
}

#[tokio::test]
async fn silent_client_on_outbound_is_closed_after_the_detect_timeout() {
    let proxy = Proxy::start("timeouts:\n  detect: 300ms\nservices: []\n", &[]).await;
    let mut stream = TcpStream::connect(proxy.outbound()).await.unwrap();
    let started = std::time::Instant::now();
    let got = raw::read_to_end(&mut stream).await;
    let waited = started.elapsed();
    assert!(
        got.is_empty(),
        "nothing to say to a silent client; got {got:?}"
    );
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}, before the detect timeout"
    );
    eventually(Duration::from_secs(5), "detect timeout counted", || async {
        let m = proxy.metrics().await;
        match m.value("tandem_protocol_detect_total", &[("result", "timeout")]) {
            v if v >= 1.0 => Ok(()),
            _ => Err(format!(
                "{:?}",
                m.matching("tandem_protocol_detect_total", &[])
                    .collect::<Vec<_>>()
            )),
        }
    })
    .await;
}
