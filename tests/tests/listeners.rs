//! HTTP, gRPC and WebSocket through the inbound listener and through a per-service
//! listener (`listen:`), where everything arriving goes to that one service.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tandem_tests::client::{self, header};
use tandem_tests::grpc::{health_client, GrpcHealthServer, ServingStatus};
use tandem_tests::tcp::WsEchoServer;
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{eventually, raw, within, Proxy, STEP_TIMEOUT};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::HealthCheckRequest;

#[tokio::test]
async fn per_service_listener_sends_any_http_to_its_service() {
    let echo = HttpServer::echo("a").await;
    let cfg = format!(
        "services:\n  - name: echo\n    listen: 127.0.0.1:0\n    endpoints:\n      - {}\n",
        echo.addr()
    );
    let proxy = Proxy::start(&cfg, &[]).await;
    let listener = proxy.service_addr("echo");

    let resp = raw::exchange(
        listener,
        b"GET /h1 HTTP/1.1\r\nHost: whatever.example\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap()
    .expect("a response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header(upstream::SERVER), Some("a"));

    let h2 = client::h2(listener);
    let resp = within(
        STEP_TIMEOUT,
        "h2 on the service listener",
        client::send(
            &h2,
            client::request("GET", "http://other/h2", client::empty()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, upstream::ECHO_VERSION), Some("HTTP/2.0"));

    eventually(
        Duration::from_secs(5),
        "requests counted for service echo",
        || async {
            let m = proxy.metrics().await;
            let n = m.value(
                "tandem_requests_total",
                &[("dst_service", "echo"), ("code", "200")],
            );
            if n == 2.0 {
                Ok(())
            } else {
                Err(format!(
                    "{:?}",
                    m.matching("tandem_requests_total", &[]).collect::<Vec<_>>()
                ))
            }
        },
    )
    .await;
}

#[tokio::test]
async fn inbound_h2_keeps_http2_to_the_app() {
    let app = HttpServer::echo("app").await;
    let port = app.addr().port().to_string();
    let proxy = Proxy::start("service: web\nservices: []\n", &["--app-port", &port]).await;
    let h2 = client::h2(proxy.inbound());
    let resp = within(
        STEP_TIMEOUT,
        "inbound h2",
        client::send(
            &h2,
            client::request("POST", "http://web/in", client::full("h2 body")),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(header(&resp, upstream::SERVER), Some("app"));
    assert_eq!(header(&resp, upstream::ECHO_VERSION), Some("HTTP/2.0"));
    assert_eq!(resp.body().as_ref(), b"h2 body");
}

#[tokio::test]
async fn grpc_through_inbound_to_the_app() {
    let app = GrpcHealthServer::start().await;
    app.set("tandem.App", ServingStatus::Serving).await;
    let port = app.addr().port().to_string();
    let proxy = Proxy::start("service: web\nservices: []\n", &["--app-port", &port]).await;
    let mut health = health_client(proxy.inbound(), "web").await;

    let resp = within(
        STEP_TIMEOUT,
        "Check",
        health.check(HealthCheckRequest {
            service: "tandem.App".into(),
        }),
    )
    .await
    .unwrap();
    assert_eq!(resp.into_inner().status, Wire::Serving as i32);
    let err = within(
        STEP_TIMEOUT,
        "Check unknown",
        health.check(HealthCheckRequest {
            service: "nope".into(),
        }),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let mut watch = within(
        STEP_TIMEOUT,
        "Watch",
        health.watch(HealthCheckRequest {
            service: "tandem.App".into(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let first = within(STEP_TIMEOUT, "first", watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.status, Wire::Serving as i32);
    app.set("tandem.App", ServingStatus::NotServing).await;
    let second = within(STEP_TIMEOUT, "second", watch.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.status, Wire::NotServing as i32);
}

#[tokio::test]
async fn websocket_through_inbound_to_the_app() {
    let app = WsEchoServer::start().await;
    let port = app.addr().port().to_string();
    let proxy = Proxy::start("service: web\nservices: []\n", &["--app-port", &port]).await;

    let stream = TcpStream::connect(proxy.inbound()).await.unwrap();
    let req = "ws://web/socket".into_client_request().unwrap();
    let (mut ws, resp) = within(
        STEP_TIMEOUT,
        "websocket handshake",
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 101);
    for msg in [Message::text("in"), Message::binary(vec![9u8; 70_000])] {
        ws.send(msg.clone()).await.unwrap();
        let echoed = within(STEP_TIMEOUT, "echo", ws.next())
            .await
            .expect("open")
            .unwrap();
        assert_eq!(echoed, msg);
    }
}
