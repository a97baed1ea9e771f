//! HTTP/1.1 through the outbound listener (Host names the service) and the inbound
//! listener (to the app port): what the client sends is what the upstream sees, and back.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tandem_tests::client::{self, header};
use tandem_tests::raw;
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{within, Proxy, STEP_TIMEOUT};

fn echo_config(echo: SocketAddr) -> String {
    format!("service: web\nservices:\n  - name: echo\n    endpoints:\n      - {echo}\n")
}

/// Reads response body frames until `want.len()` bytes arrived; they must equal `want`.
async fn expect_echo(body: &mut Incoming, want: &[u8]) {
    let mut got = Vec::new();
    within(Duration::from_secs(5), "echoed chunk", async {
        while got.len() < want.len() {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        got.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => panic!("response body error: {e}"),
                None => panic!("response body ended after {:?}", String::from_utf8_lossy(&got)),
            }
        }
    })
    .await;
    assert_eq!(got, want, "echoed bytes");
}

#[tokio::test]
async fn outbound_round_trip_carries_method_path_headers_and_body() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;
    let client = client::http1(proxy.outbound());

    let mut req = client::request("PUT", "http://echo/some/path?x=1&y=two", client::full("hello upstream"));
    req.headers_mut().insert("x-custom", "custom-value".parse().unwrap());
    req.headers_mut().insert(upstream::STATUS, "201".parse().unwrap());
    let resp = within(STEP_TIMEOUT, "PUT via outbound", client::send(&client, req))
        .await
        .unwrap();

    assert_eq!(resp.status(), 201, "upstream status passes through");
    assert_eq!(header(&resp, upstream::SERVER), Some("a"), "response headers pass through");
    assert_eq!(header(&resp, upstream::ECHO_METHOD), Some("PUT"));
    assert_eq!(header(&resp, upstream::ECHO_PATH), Some("/some/path?x=1&y=two"));
    assert_eq!(header(&resp, upstream::ECHO_VERSION), Some("HTTP/1.1"));
    let seen = client::echoed_headers(&resp);
    assert_eq!(seen.get("x-custom"), Some(&vec!["custom-value".to_owned()]), "upstream saw {seen:?}");
    assert_eq!(resp.body().as_ref(), b"hello upstream");
    assert_eq!(echo.requests(), 1);
}

#[tokio::test]
async fn inbound_round_trip_reaches_the_app_port() {
    let app = HttpServer::echo("app").await;
    let port = app.addr().port().to_string();
    let proxy = Proxy::start("service: web\nservices: []\n", &["--app-port", &port]).await;
    let client = client::http1(proxy.inbound());

    let mut req = client::request("POST", "http://web/inbound?q=1", client::full("to the app"));
    req.headers_mut().insert("x-caller", "mesh".parse().unwrap());
    let resp = within(STEP_TIMEOUT, "POST via inbound", client::send(&client, req))
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, upstream::SERVER), Some("app"));
    assert_eq!(header(&resp, upstream::ECHO_METHOD), Some("POST"));
    assert_eq!(header(&resp, upstream::ECHO_PATH), Some("/inbound?q=1"));
    assert_eq!(client::echoed_headers(&resp).get("x-caller"), Some(&vec!["mesh".to_owned()]));
    assert_eq!(resp.body().as_ref(), b"to the app");
}

#[tokio::test]
async fn streamed_request_body_is_echoed_while_still_streaming() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;
    let client = client::http1(proxy.outbound());

    let (tx, body) = client::channel_body();
    let req = client::request("POST", "http://echo/stream", body);
    tx.send(Bytes::from_static(b"chunk-one;")).await.unwrap();
    let resp = within(STEP_TIMEOUT, "response headers while the body streams", client.request(req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // Each chunk must come back before the next one is sent: nothing buffers the whole body.
    expect_echo(&mut body, b"chunk-one;").await;
    tx.send(Bytes::from_static(b"chunk-two;")).await.unwrap();
    expect_echo(&mut body, b"chunk-two;").await;
    tx.send(Bytes::from_static(b"chunk-three")).await.unwrap();
    drop(tx);
    expect_echo(&mut body, b"chunk-three").await;
    let rest = within(Duration::from_secs(5), "end of body", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert!(rest.is_empty(), "unexpected trailing bytes {rest:?}");
}

#[tokio::test]
async fn content_length_zero_post_does_not_stall_the_connection() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let mut stream = tokio::net::TcpStream::connect(proxy.outbound()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stream,
        b"POST /empty HTTP/1.1\r\nHost: echo\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let first = within(STEP_TIMEOUT, "response to empty POST", raw::read_response(&mut stream))
        .await
        .unwrap()
        .expect("a response, not a closed connection");
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header(upstream::ECHO_METHOD), Some("POST"));
    assert!(first.body.is_empty(), "body {:?}", first.text());

    // The same connection still frames the next request correctly.
    tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /after HTTP/1.1\r\nHost: echo\r\n\r\n")
        .await
        .unwrap();
    let second = within(STEP_TIMEOUT, "second response", raw::read_response(&mut stream))
        .await
        .unwrap()
        .expect("a second response on the kept-alive connection");
    assert_eq!(second.status, 200);
    assert_eq!(second.header(upstream::ECHO_PATH), Some("/after"));
}

#[tokio::test]
async fn large_body_arrives_intact() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;
    let client = client::http1(proxy.outbound());

    let payload: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let req = client::request("POST", "http://echo/large", client::full(payload.clone()));
    let resp = within(Duration::from_secs(30), "5 MB round trip", client::send(&client, req))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().len(), payload.len(), "echoed length");
    assert!(resp.body().as_ref() == payload.as_slice(), "echoed bytes differ");
}

#[tokio::test]
async fn absolute_form_target_routes_to_the_service() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let resp = raw::exchange(
        proxy.outbound(),
        b"GET http://echo/abs/path?q=1 HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap()
    .expect("a response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header(upstream::SERVER), Some("a"));
    assert_eq!(
        resp.header(upstream::ECHO_PATH),
        Some("/abs/path?q=1"),
        "upstream gets the path and query of the absolute URI"
    );
}

#[tokio::test]
async fn absolute_form_host_wins_over_the_host_header() {
    // RFC 9112 §3.2.2: with an absolute-form target the Host header is ignored.
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let resp = raw::exchange(
        proxy.outbound(),
        b"GET http://echo/abs HTTP/1.1\r\nHost: not-a-service\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap()
    .expect("a response");
    assert_eq!(resp.status, 200, "routed by the URI host; got {resp:?}");
    assert_eq!(resp.header(upstream::SERVER), Some("a"));
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_reach_the_upstream() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let resp = raw::exchange(
        proxy.outbound(),
        b"GET /hop HTTP/1.1\r\n\
          Host: echo\r\n\
          Connection: keep-alive, x-foo\r\n\
          x-foo: connection-scoped\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          x-normal: end-to-end\r\n\
          \r\n",
    )
    .await
    .unwrap()
    .expect("a response");
    assert_eq!(resp.status, 200, "{resp:?}");
    let raw = resp.header(upstream::ECHO_HEADERS).expect("echo headers");
    let seen: std::collections::HashMap<String, Vec<String>> = serde_json::from_str(raw).unwrap();
    assert_eq!(seen.get("x-normal"), Some(&vec!["end-to-end".to_owned()]), "ordinary header kept: {seen:?}");
    for hop in ["x-foo", "keep-alive", "proxy-connection"] {
        assert!(!seen.contains_key(hop), "hop-by-hop `{hop}` reached the upstream: {seen:?}");
    }
    if let Some(conn) = seen.get("connection") {
        assert!(
            conn.iter().all(|v| !v.to_ascii_lowercase().contains("x-foo")),
            "client's Connection header forwarded: {conn:?}"
        );
    }
}
