//! `timeouts.request`, `timeouts.connect` and `timeouts.idle`.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tandem_tests::client::{self, assert_proxy_error};
use tandem_tests::tcp::Blackhole;
use tandem_tests::upstream::HttpServer;
use tandem_tests::{eventually, raw, within, Proxy, STEP_TIMEOUT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn config(endpoint: SocketAddr, timeouts: &str) -> String {
    format!("timeouts:\n{timeouts}services:\n  - name: echo\n    endpoints:\n      - {endpoint}\n")
}

/// One GET through the outbound listener; returns the response and how long it took.
async fn timed_get(proxy: &Proxy, uri: &str) -> (http::Response<bytes::Bytes>, Duration) {
    let client = client::http1(proxy.outbound());
    let started = Instant::now();
    let resp = within(
        STEP_TIMEOUT,
        uri,
        client::send(&client, client::request("GET", uri, client::empty())),
    )
    .await
    .unwrap();
    (resp, started.elapsed())
}

#[tokio::test]
async fn slow_upstream_is_504_after_the_request_timeout() {
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let proxy = Proxy::start(&config(slow.addr(), "  request: 300ms\n"), &[]).await;
    let (resp, elapsed) = timed_get(&proxy, "http://echo/slow").await;
    assert_proxy_error(&resp, 504);
    assert!(
        elapsed >= Duration::from_millis(250),
        "504 before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "504 came late: {elapsed:?}"
    );
}

#[tokio::test]
async fn request_timeout_does_not_cut_a_response_that_made_it() {
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_millis(100))
        .start()
        .await;
    let proxy = Proxy::start(&config(slow.addr(), "  request: 2s\n"), &[]).await;
    let (resp, _) = timed_get(&proxy, "http://echo/in-time").await;
    assert_eq!(resp.status(), 200, "{resp:?}");
}

#[tokio::test]
async fn connect_timeout_is_502_in_time() {
    let hole = Blackhole::start().await;
    let proxy = Proxy::start(
        &config(hole.addr(), "  connect: 300ms\n  request: 10s\n"),
        &[],
    )
    .await;
    let (resp, elapsed) = timed_get(&proxy, "http://echo/").await;
    assert_proxy_error(&resp, 502);
    assert!(
        elapsed < Duration::from_millis(2500),
        "connect timeout of 300ms, but the 502 took {elapsed:?}"
    );
}

#[tokio::test]
async fn idle_client_connections_are_closed() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), "  idle: 300ms\n"), &[]).await;

    let mut stream = TcpStream::connect(proxy.outbound()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
        .await
        .unwrap();
    let resp = raw::read_response(&mut stream)
        .await
        .unwrap()
        .expect("a response");
    assert_eq!(resp.status, 200);
    let idle_since = Instant::now();
    let rest = within(
        Duration::from_secs(5),
        "proxy closes the idle connection",
        raw::read_to_end(&mut stream),
    )
    .await;
    assert!(rest.is_empty(), "unexpected bytes {rest:?}");
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(250),
        "closed after only {idle:?} idle"
    );
}

#[tokio::test]
async fn idle_timeout_does_not_cut_in_flight_requests() {
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_millis(1200))
        .start()
        .await;
    let proxy = Proxy::start(&config(slow.addr(), "  idle: 300ms\n"), &[]).await;
    let (resp, _) = timed_get(&proxy, "http://echo/slow").await;
    assert_eq!(
        resp.status(),
        200,
        "a request in flight is not idle: {resp:?}"
    );
}

#[tokio::test]
async fn idle_upstream_connections_are_closed_after_upstream_idle() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), "  upstream_idle: 300ms\n"), &[]).await;
    let client = client::http1(proxy.outbound());
    let resp = within(
        STEP_TIMEOUT,
        "GET",
        client::send(
            &client,
            client::request("GET", "http://echo/", client::empty()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(echo.connections(), 1);
    // The client keeps its own connection to the proxy; the proxy's pooled upstream
    // connection must still go once idle.
    eventually(
        Duration::from_secs(5),
        "idle upstream connection closed",
        || async {
            match echo.open_connections() {
                0 => Ok(()),
                n => Err(format!("{n} upstream connections open")),
            }
        },
    )
    .await;
    drop(client);
}
