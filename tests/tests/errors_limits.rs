//! Errors the proxy answers itself (with `tandem-proxy-error`) and request limits.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use tandem_tests::client::{self, assert_proxy_error, header};
use tandem_tests::raw::{self, RawResponse};
use tandem_tests::tcp::{refused_addr, HangupServer};
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{within, Proxy, STEP_TIMEOUT};
use tokio::io::AsyncWriteExt;

fn config(echo: SocketAddr, extra: &str) -> String {
    format!("services:\n  - name: echo\n    endpoints:\n      - {echo}\n{extra}")
}

async fn get(proxy: &Proxy, uri: &str) -> http::Response<bytes::Bytes> {
    let client = client::http1(proxy.outbound());
    within(
        STEP_TIMEOUT,
        uri,
        client::send(&client, client::request("GET", uri, client::empty())),
    )
    .await
    .unwrap()
}

/// Sends a hand-made request on a fresh connection; expects a response.
async fn raw_request(proxy: &Proxy, request: String) -> RawResponse {
    raw::exchange(proxy.outbound(), request.as_bytes())
        .await
        .unwrap()
        .unwrap_or_else(|| {
            let head = &request[..request.len().min(120)];
            panic!("connection closed without a response to {head:?}")
        })
}

#[tokio::test]
async fn unknown_host_is_503() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), ""), &[]).await;
    let resp = get(&proxy, "http://no-such-service/").await;
    assert_proxy_error(&resp, 503);
    assert_eq!(echo.requests(), 0);
}

#[tokio::test]
async fn service_without_endpoints_is_503() {
    let proxy = Proxy::start("services:\n  - name: empty\n    endpoints: []\n", &[]).await;
    let resp = get(&proxy, "http://empty/").await;
    assert_proxy_error(&resp, 503);
}

#[tokio::test]
async fn refused_endpoint_is_502() {
    let dead = refused_addr().await;
    let proxy = Proxy::start(&config(dead, ""), &[]).await;
    let resp = get(&proxy, "http://echo/").await;
    assert_proxy_error(&resp, 502);
}

#[tokio::test]
async fn upstream_hanging_up_is_502() {
    let hangup = HangupServer::start().await;
    let proxy = Proxy::start(&config(hangup.addr(), ""), &[]).await;
    let resp = get(&proxy, "http://echo/").await;
    assert_proxy_error(&resp, 502);
    assert!(hangup.connections() >= 1, "the upstream was reached");
}

#[tokio::test]
async fn missing_host_is_400() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), ""), &[]).await;
    let resp = raw_request(&proxy, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".into()).await;
    resp.assert_proxy_error(400);
}

#[tokio::test]
async fn duplicate_host_headers_are_400() {
    // RFC 9112 §3.2: a request with more than one Host is malformed.
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), ""), &[]).await;
    let resp = raw_request(
        &proxy,
        "GET / HTTP/1.1\r\nHost: echo\r\nHost: other\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    resp.assert_proxy_error(400);
    assert_eq!(echo.requests(), 0);
}

#[tokio::test]
async fn upstream_errors_pass_through_without_the_proxy_header() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), ""), &[]).await;
    let client = client::http1(proxy.outbound());
    for status in [500u16, 502, 503, 504] {
        let mut req = client::request("GET", "http://echo/", client::empty());
        req.headers_mut().insert(upstream::STATUS, status.into());
        let resp = within(STEP_TIMEOUT, "upstream error", client::send(&client, req))
            .await
            .unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(header(&resp, upstream::SERVER), Some("a"));
        assert!(
            !resp.headers().contains_key(client::ERROR_HEADER),
            "an upstream {status} is not the proxy's own error: {:?}",
            resp.headers()
        );
    }
}

const LIMITS: &str = "limits:\n  max_headers: 20\n  max_header_bytes: 4096\n  max_uri_bytes: 256\n";

fn request_with(path: &str, headers: &[(String, String)]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req + "\r\n"
}

fn numbered_headers(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("x-h-{i}"), "v".to_owned()))
        .collect()
}

#[tokio::test]
async fn too_many_headers_is_431() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), LIMITS), &[]).await;

    let ok = raw_request(&proxy, request_with("/", &numbered_headers(10))).await;
    assert_eq!(
        ok.status, 200,
        "12 headers are under max_headers=20: {ok:?}"
    );

    let resp = raw_request(&proxy, request_with("/", &numbered_headers(30))).await;
    resp.assert_proxy_error(431);
    assert_eq!(
        echo.requests(),
        1,
        "the rejected request never reached the upstream"
    );
}

#[tokio::test]
async fn oversized_header_block_is_431() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), LIMITS), &[]).await;

    let ok = raw_request(
        &proxy,
        request_with("/", &[("x-big".into(), "b".repeat(2000))]),
    )
    .await;
    assert_eq!(
        ok.status, 200,
        "~2 KB of headers are under max_header_bytes=4096: {ok:?}"
    );

    let resp = raw_request(
        &proxy,
        request_with("/", &[("x-big".into(), "b".repeat(5000))]),
    )
    .await;
    resp.assert_proxy_error(431);
}

#[tokio::test]
async fn long_uri_is_414() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), LIMITS), &[]).await;

    let ok = raw_request(&proxy, request_with(&format!("/{}", "a".repeat(199)), &[])).await;
    assert_eq!(
        ok.status, 200,
        "a 200-byte target is under max_uri_bytes=256: {ok:?}"
    );

    let resp = raw_request(&proxy, request_with(&format!("/{}", "a".repeat(299)), &[])).await;
    resp.assert_proxy_error(414);
}

#[tokio::test]
async fn default_limits_apply_without_a_limits_block() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), ""), &[]).await;

    let resp = raw_request(&proxy, request_with("/", &numbered_headers(110))).await;
    resp.assert_proxy_error(431);
    let resp = raw_request(&proxy, request_with(&format!("/{}", "u".repeat(9000)), &[])).await;
    resp.assert_proxy_error(414);
}

#[tokio::test]
async fn garbage_requests_do_not_hurt_the_proxy() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), "timeouts:\n  detect: 300ms\n"), &[]).await;

    let garbage: [&[u8]; 5] = [
        b"GET / HTTP/1.1 trailing junk\r\nHost: echo\r\n\r\n",
        b"GET /\x00nul HTTP/1.1\r\nHost: echo\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: echo\r\nbroken header line\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: echo\r\nContent-Length: nope\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    ];
    for bytes in garbage {
        let mut stream = tokio::net::TcpStream::connect(proxy.outbound())
            .await
            .unwrap();
        stream.write_all(bytes).await.unwrap();
        let _ = stream.shutdown().await;
        let resp = within(
            STEP_TIMEOUT,
            "answer to garbage",
            raw::read_response(&mut stream),
        )
        .await;
        match resp {
            Ok(None) => {} // closed (or reset) without an answer
            Err(e) => panic!("bad answer to {:?}: {e}", String::from_utf8_lossy(bytes)),
            Ok(Some(resp)) => assert_eq!(
                resp.status,
                400,
                "answer to {:?}: {resp:?}",
                String::from_utf8_lossy(bytes)
            ),
        }
    }
    assert_eq!(echo.requests(), 0, "no garbage was forwarded");

    let (status, _) = proxy.admin_get("/live").await;
    assert_eq!(status, 200, "proxy still alive");
    let resp = get(&proxy, "http://echo/after-garbage").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, upstream::ECHO_PATH), Some("/after-garbage"));
}

#[tokio::test]
async fn h2_errors_carry_the_header_too() {
    let dead = refused_addr().await;
    let proxy = Proxy::start(&config(dead, ""), &[]).await;
    let h2 = client::h2(proxy.outbound());
    for (uri, status) in [("http://no-such-service/", 503), ("http://echo/", 502)] {
        let resp = within(
            STEP_TIMEOUT,
            uri,
            client::send(&h2, client::request("GET", uri, client::empty())),
        )
        .await
        .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_proxy_error(&resp, status);
    }
}

#[tokio::test]
async fn inbound_with_the_app_down_is_502() {
    let dead = refused_addr().await;
    let port = dead.port().to_string();
    let proxy = Proxy::start("service: web\nservices: []\n", &["--app-port", &port]).await;
    let client = client::http1(proxy.inbound());
    let resp = within(
        STEP_TIMEOUT,
        "inbound to a dead app",
        client::send(
            &client,
            client::request("GET", "http://web/", client::empty()),
        ),
    )
    .await
    .unwrap();
    assert_proxy_error(&resp, 502);
}

#[tokio::test]
async fn limits_apply_to_http2_requests_too() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), LIMITS), &[]).await;
    let h2 = client::h2(proxy.outbound());

    let ok = client::request("GET", "http://echo/fine", client::empty());
    let resp = within(STEP_TIMEOUT, "h2 within limits", client::send(&h2, ok))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let mut many = client::request("GET", "http://echo/many", client::empty());
    for (name, value) in numbered_headers(30) {
        many.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let resp = within(STEP_TIMEOUT, "h2 with 30 headers", client::send(&h2, many))
        .await
        .unwrap();
    assert_proxy_error(&resp, 431);

    let long = client::request(
        "GET",
        &format!("http://echo/{}", "a".repeat(299)),
        client::empty(),
    );
    let resp = within(STEP_TIMEOUT, "h2 with a long path", client::send(&h2, long))
        .await
        .unwrap();
    assert_proxy_error(&resp, 414);
    assert_eq!(
        echo.requests(),
        1,
        "only the request within limits reached the upstream"
    );
}
