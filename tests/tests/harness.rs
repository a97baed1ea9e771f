//! Self-checks of the test harness without the proxy: the upstreams and clients behave as
//! the other tests assume, so a failure there points at the proxy, not the harness.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tandem_tests::client::{self, header};
use tandem_tests::grpc::{health_client, GrpcHealthServer, ServingStatus};
use tandem_tests::tcp::{TcpEchoServer, WsEchoServer};
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{raw, within, STEP_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn echo_upstream_echoes_over_http1_and_h2() {
    let echo = HttpServer::builder("e").status(202).start().await;
    for client in [client::http1(echo.addr()), client::h2(echo.addr())] {
        let mut req = client::request("PATCH", "http://svc/p?q=1", client::full("body"));
        req.headers_mut().insert("x-a", "1".parse().unwrap());
        let resp = within(STEP_TIMEOUT, "echo", client::send(&client, req))
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        assert_eq!(header(&resp, upstream::SERVER), Some("e"));
        assert_eq!(header(&resp, upstream::ECHO_METHOD), Some("PATCH"));
        assert_eq!(header(&resp, upstream::ECHO_PATH), Some("/p?q=1"));
        let seen = client::echoed_headers(&resp);
        assert_eq!(seen["x-a"], ["1"]);
        assert_eq!(resp.body().as_ref(), b"body");
    }
    assert_eq!(echo.requests(), 2);
}

#[tokio::test]
async fn echo_upstream_streams_and_delays() {
    let echo = HttpServer::echo("e").await;
    let client = client::http1(echo.addr());
    let (tx, body) = client::channel_body();
    tx.send(Bytes::from_static(b"one")).await.unwrap();
    let resp = within(
        STEP_TIMEOUT,
        "headers",
        client.request(client::request("POST", "http://svc/", body)),
    )
    .await
    .unwrap();
    let mut body = resp.into_body();
    let frame = within(STEP_TIMEOUT, "first frame", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "one");
    drop(tx);

    let mut req = client::request("GET", "http://svc/", client::empty());
    req.headers_mut()
        .insert(upstream::DELAY_MS, "300".parse().unwrap());
    let started = std::time::Instant::now();
    let resp = client::send(&client, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn raw_client_reads_chunked_and_sized_responses() {
    let echo = HttpServer::echo("e").await;
    let resp = raw::exchange(
        echo.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"abcde");
    let resp = raw::exchange(
        echo.addr(),
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.body, b"hi");
}

#[tokio::test]
async fn grpc_health_server_answers_directly() {
    let server = GrpcHealthServer::start().await;
    server.set("t", ServingStatus::Serving).await;
    let mut health = health_client(server.addr(), "grpc").await;
    let resp = health
        .check(HealthCheckRequest {
            service: "t".into(),
        })
        .await
        .unwrap();
    assert_eq!(resp.into_inner().status, 1);
    let err = health
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn ws_and_tcp_echo_directly() {
    let ws_server = WsEchoServer::start().await;
    let stream = TcpStream::connect(ws_server.addr()).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async("ws://ws/".into_client_request().unwrap(), stream)
            .await
            .unwrap();
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));

    let tcp = TcpEchoServer::with_banner(b"hello\n".to_vec()).await;
    let mut s = TcpStream::connect(tcp.addr()).await.unwrap();
    let mut banner = [0u8; 6];
    s.read_exact(&mut banner).await.unwrap();
    s.write_all(b"xyz").await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(
        raw::read_to_end(&mut s).await,
        [&b"xyz"[..], tandem_tests::tcp::FAREWELL].concat()
    );
}

#[tokio::test]
async fn blackhole_connects_hang() {
    let hole = tandem_tests::tcp::Blackhole::start().await;
    let attempt =
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(hole.addr())).await;
    assert!(
        attempt.is_err(),
        "connect to the blackhole completed: {attempt:?}"
    );
}
