//! HTTP/2 prior knowledge (h2c) and gRPC through the outbound listener.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use http::Version;
use tandem_tests::client::{self, header};
use tandem_tests::grpc::{health_client, GrpcHealthServer, ServingStatus};
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{within, Proxy, STEP_TIMEOUT};
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::HealthCheckRequest;

fn config(name: &str, protocol: &str, endpoint: SocketAddr) -> String {
    format!("services:\n  - name: {name}\n    protocol: {protocol}\n    endpoints:\n      - {endpoint}\n")
}

#[tokio::test]
async fn h2_concurrent_streams_share_one_connection() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config("echo", "detect", echo.addr()), &[]).await;
    let sender = within(
        STEP_TIMEOUT,
        "h2 handshake",
        client::h2_connect(proxy.outbound()),
    )
    .await
    .unwrap();

    const STREAMS: usize = 8;
    let delay = Duration::from_millis(1000);
    let started = Instant::now();
    let calls = (0..STREAMS).map(|i| {
        let mut sender = sender.clone();
        async move {
            let mut req = client::request(
                "POST",
                &format!("http://echo/stream/{i}"),
                client::full(format!("body-{i}")),
            );
            req.headers_mut().insert(
                upstream::DELAY_MS,
                delay.as_millis().to_string().parse().unwrap(),
            );
            let resp = sender.send_request(req).await.unwrap();
            (i, client::collect(resp).await.unwrap())
        }
    });
    let results = within(
        Duration::from_secs(20),
        "concurrent h2 streams",
        join_all(calls),
    )
    .await;
    let elapsed = started.elapsed();

    for (i, resp) in results {
        assert_eq!(resp.status(), 200, "stream {i}");
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(
            header(&resp, upstream::ECHO_PATH),
            Some(format!("/stream/{i}").as_str())
        );
        assert_eq!(
            header(&resp, upstream::ECHO_VERSION),
            Some("HTTP/2.0"),
            "protocol: detect keeps HTTP/2 upstream"
        );
        assert_eq!(resp.body().as_ref(), format!("body-{i}").as_bytes());
    }
    assert!(
        elapsed < delay * 4,
        "{STREAMS} streams of {delay:?} took {elapsed:?}: they were not concurrent"
    );
}

#[tokio::test]
async fn h2_streamed_request_body_is_echoed_while_still_streaming() {
    let echo = HttpServer::echo("a").await;
    let cfg = format!(
        "services:\n\
         \x20 - name: echo\n    endpoints:\n      - {a}\n\
         \x20 - name: echo-h1\n    protocol: http1\n    endpoints:\n      - {a}\n",
        a = echo.addr()
    );
    let proxy = Proxy::start(&cfg, &[]).await;
    // h2c upstream, then h2c → HTTP/1.1 upstream.
    for uri in ["http://echo/stream", "http://echo-h1/stream"] {
        client::assert_streaming_echo(&client::h2(proxy.outbound()), uri).await;
    }
}

#[tokio::test]
async fn h2_large_bodies_pass_flow_control() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config("echo", "detect", echo.addr()), &[]).await;
    let h2 = client::h2(proxy.outbound());
    // Far beyond the 64 KiB default windows: the proxy must release capacity as it forwards.
    let payload: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 249) as u8).collect();
    let calls = (0..2).map(|_| {
        let req = client::request("POST", "http://echo/large", client::full(payload.clone()));
        client::send(&h2, req)
    });
    let results = within(
        Duration::from_secs(60),
        "two concurrent 5 MB h2 echoes",
        join_all(calls),
    )
    .await;
    for resp in results {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.body().len(), payload.len());
        assert!(
            resp.body().as_ref() == payload.as_slice(),
            "echoed bytes differ"
        );
    }
}

#[tokio::test]
async fn upstream_protocol_setting_is_honoured() {
    let up = HttpServer::echo("a").await;
    let cfg = format!(
        "services:\n\
         \x20 - name: as-h2\n    protocol: http2\n    endpoints:\n      - {a}\n\
         \x20 - name: as-h1\n    protocol: http1\n    endpoints:\n      - {a}\n",
        a = up.addr()
    );
    let proxy = Proxy::start(&cfg, &[]).await;

    let h1 = client::http1(proxy.outbound());
    let resp = within(
        STEP_TIMEOUT,
        "h1 → http2 service",
        client::send(
            &h1,
            client::request("GET", "http://as-h2/", client::empty()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, upstream::ECHO_VERSION),
        Some("HTTP/2.0"),
        "protocol: http2 speaks h2c upstream"
    );

    let h2 = client::h2(proxy.outbound());
    let resp = within(
        STEP_TIMEOUT,
        "h2 → http1 service",
        client::send(
            &h2,
            client::request("GET", "http://as-h1/", client::empty()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2, "client side stays HTTP/2");
    assert_eq!(
        header(&resp, upstream::ECHO_VERSION),
        Some("HTTP/1.1"),
        "protocol: http1 speaks HTTP/1.1 upstream"
    );
}

#[tokio::test]
async fn grpc_unary_check_returns_serving() {
    for protocol in ["detect", "http2"] {
        let server = GrpcHealthServer::start().await;
        server.set("tandem.Test", ServingStatus::Serving).await;
        let proxy = Proxy::start(&config("grpc", protocol, server.addr()), &[]).await;
        let mut health = health_client(proxy.outbound(), "grpc").await;

        for service in ["", "tandem.Test"] {
            let resp = within(
                STEP_TIMEOUT,
                "Health/Check",
                health.check(HealthCheckRequest {
                    service: service.into(),
                }),
            )
            .await
            .unwrap_or_else(|s| panic!("protocol {protocol}, Check({service:?}): {s:?}"));
            assert_eq!(
                resp.into_inner().status,
                Wire::Serving as i32,
                "protocol {protocol}, {service:?}"
            );
        }
    }
}

#[tokio::test]
async fn grpc_error_status_arrives_in_trailers() {
    let server = GrpcHealthServer::start().await;
    let proxy = Proxy::start(&config("grpc", "detect", server.addr()), &[]).await;
    let mut health = health_client(proxy.outbound(), "grpc").await;

    let status = within(
        STEP_TIMEOUT,
        "Health/Check of an unknown service",
        health.check(HealthCheckRequest {
            service: "no.such.Service".into(),
        }),
    )
    .await
    .expect_err("unknown service must fail");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    assert_eq!(
        status.message(),
        "service not registered",
        "grpc-message intact: {status:?}"
    );
}

#[tokio::test]
async fn errors_the_proxy_answers_reach_grpc_clients_as_grpc_statuses() {
    let server = GrpcHealthServer::start().await;
    let proxy = Proxy::start(&config("grpc", "detect", server.addr()), &[]).await;
    // A service the proxy does not know: 503 for HTTP clients, UNAVAILABLE for gRPC ones
    // (anything else than a gRPC status would reach the app as UNKNOWN).
    let mut health = health_client(proxy.outbound(), "nope").await;
    let status = within(
        STEP_TIMEOUT,
        "Health/Check through an unknown service",
        health.check(HealthCheckRequest::default()),
    )
    .await
    .expect_err("an unknown service must fail");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with("unknown service"),
        "the proxy's reason is the grpc-message: {status:?}"
    );
    assert_eq!(server.requests(), 0);
}

#[tokio::test]
async fn grpc_server_streaming_watch_sees_updates() {
    let server = GrpcHealthServer::start().await;
    server.set("tandem.Test", ServingStatus::Serving).await;
    let proxy = Proxy::start(&config("grpc", "detect", server.addr()), &[]).await;
    let mut health = health_client(proxy.outbound(), "grpc").await;

    let mut stream = within(
        STEP_TIMEOUT,
        "Health/Watch",
        health.watch(HealthCheckRequest {
            service: "tandem.Test".into(),
        }),
    )
    .await
    .unwrap()
    .into_inner();
    let first = within(STEP_TIMEOUT, "first Watch message", stream.message())
        .await
        .unwrap()
        .expect("a first message");
    assert_eq!(first.status, Wire::Serving as i32);

    server.set("tandem.Test", ServingStatus::NotServing).await;
    let second = within(
        STEP_TIMEOUT,
        "Watch message after the flip",
        stream.message(),
    )
    .await
    .unwrap()
    .expect("a second message");
    assert_eq!(second.status, Wire::NotServing as i32);

    server.set("tandem.Test", ServingStatus::Serving).await;
    let third = within(
        STEP_TIMEOUT,
        "Watch message after flipping back",
        stream.message(),
    )
    .await
    .unwrap()
    .expect("a third message");
    assert_eq!(third.status, Wire::Serving as i32);
}
