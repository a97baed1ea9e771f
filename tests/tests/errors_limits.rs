//! Errors the proxy answers itself (with `tandem-proxy-error`) and request limits.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tandem_tests::client::{self, header};
use tandem_tests::raw::{self, RawResponse};
use tandem_tests::tcp::refused_addr;
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{within, Proxy, STEP_TIMEOUT};
use tokio::io::AsyncWriteExt;

const ERROR_HEADER: &str = "tandem-proxy-error";

fn config(echo: SocketAddr, extra: &str) -> String {
    format!("services:\n  - name: echo\n    endpoints:\n      - {echo}\n{extra}")
}

async fn get(proxy: &Proxy, uri: &str) -> http::Response<bytes::Bytes> {
    let client = client::http1(proxy.outbound());
    within(STEP_TIMEOUT, uri, client::send(&client, client::request("GET", uri, client::empty())))
        .await
        .unwrap()
}

/// A proxy-made error: the status, the `tandem-proxy-error` header, a one-line body.
fn assert_proxy_error<B: AsRef<[u8]>>(resp: &http::Response<B>, status: u16) {
    let body = String::from_utf8_lossy(resp.body().as_ref()).into_owned();
    assert_eq!(resp.status(), status, "headers {:?}, body {body:?}", resp.headers());
    assert!(resp.headers().contains_key(ERROR_HEADER), "no {ERROR_HEADER} header: {:?}", resp.headers());
    assert!(!body.trim().is_empty(), "error body names the reason");
    assert_eq!(body.trim_end().lines().count(), 1, "one-line body: {body:?}");
}

fn assert_raw_proxy_error(resp: &RawResponse, status: u16) {
    assert_eq!(resp.status, status, "{resp:?}");
    assert!(resp.header(ERROR_HEADER).is_some(), "no {ERROR_HEADER} header: {resp:?}");
}

/// Sends a hand-made request on a fresh connection; expects a response.
async fn raw_request(proxy: &Proxy, request: String) -> RawResponse {
    raw::exchange(proxy.outbound(), request.as_bytes())
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("connection closed without a response to {:.80?}", request))
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
async fn slow_upstream_is_504_after_the_request_timeout() {
    let slow = HttpServer::builder("slow").delay(Duration::from_secs(3)).start().await;
    let proxy = Proxy::start(&config(slow.addr(), "timeouts:\n  request: 300ms\n"), &[]).await;
    let started = Instant::now();
    let resp = get(&proxy, "http://echo/slow").await;
    let elapsed = started.elapsed();
    assert_proxy_error(&resp, 504);
    assert!(elapsed >= Duration::from_millis(250), "504 before the timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_millis(2500), "504 came late: {elapsed:?}");
}

#[tokio::test]
async fn missing_host_is_400() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), ""), &[]).await;
    let resp = raw_request(&proxy, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".into()).await;
    assert_raw_proxy_error(&resp, 400);
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
    (0..n).map(|i| (format!("x-h-{i}"), "v".to_owned())).collect()
}

#[tokio::test]
async fn too_many_headers_is_431() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), LIMITS), &[]).await;

    let ok = raw_request(&proxy, request_with("/", &numbered_headers(10))).await;
    assert_eq!(ok.status, 200, "12 headers are under max_headers=20: {ok:?}");

    let resp = raw_request(&proxy, request_with("/", &numbered_headers(30))).await;
    assert_raw_proxy_error(&resp, 431);
    assert_eq!(echo.requests(), 1, "the rejected request never reached the upstream");
}

#[tokio::test]
async fn oversized_header_block_is_431() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), LIMITS), &[]).await;

    let ok = raw_request(&proxy, request_with("/", &[("x-big".into(), "b".repeat(2000))])).await;
    assert_eq!(ok.status, 200, "~2 KB of headers are under max_header_bytes=4096: {ok:?}");

    let resp = raw_request(&proxy, request_with("/", &[("x-big".into(), "b".repeat(5000))])).await;
    assert_raw_proxy_error(&resp, 431);
}

#[tokio::test]
async fn long_uri_is_414() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), LIMITS), &[]).await;

    let ok = raw_request(&proxy, request_with(&format!("/{}", "a".repeat(199)), &[])).await;
    assert_eq!(ok.status, 200, "a 200-byte target is under max_uri_bytes=256: {ok:?}");

    let resp = raw_request(&proxy, request_with(&format!("/{}", "a".repeat(299)), &[])).await;
    assert_raw_proxy_error(&resp, 414);
}

#[tokio::test]
async fn default_limits_apply_without_a_limits_block() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&config(echo.addr(), ""), &[]).await;

    let resp = raw_request(&proxy, request_with("/", &numbered_headers(110))).await;
    assert_raw_proxy_error(&resp, 431);
    let resp = raw_request(&proxy, request_with(&format!("/{}", "u".repeat(9000)), &[])).await;
    assert_raw_proxy_error(&resp, 414);
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
        let mut stream = tokio::net::TcpStream::connect(proxy.outbound()).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let _ = stream.shutdown().await;
        let resp = within(STEP_TIMEOUT, "answer to garbage", raw::read_response(&mut stream)).await;
        match resp {
            Ok(None) => {} // closed (or reset) without an answer
            Err(e) => panic!("bad answer to {:?}: {e}", String::from_utf8_lossy(bytes)),
            Ok(Some(resp)) => assert_eq!(resp.status, 400, "answer to {:?}: {resp:?}", String::from_utf8_lossy(bytes)),
        }
    }
    assert_eq!(echo.requests(), 0, "no garbage was forwarded");

    let (status, _) = proxy.admin_get("/live").await;
    assert_eq!(status, 200, "proxy still alive");
    let resp = get(&proxy, "http://echo/after-garbage").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, upstream::ECHO_PATH), Some("/after-garbage"));
}
