//! HTTP/1.1 through the outbound listener (Host names the service) and the inbound
//! listener (to the app port): what the client sends is what the upstream sees, and back.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use tandem_tests::client::{self, header};
use tandem_tests::raw;
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{within, Proxy, STEP_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn echo_config(echo: SocketAddr) -> String {
    format!("service: web\nservices:\n  - name: echo\n    endpoints:\n      - {echo}\n")
}

#[tokio::test]
async fn outbound_round_trip_carries_method_path_headers_and_body() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;
    let client = client::http1(proxy.outbound());

    let mut req = client::request(
        "PUT",
        "http://echo/some/path?x=1&y=two",
        client::full("hello upstream"),
    );
    req.headers_mut()
        .insert("x-custom", "custom-value".parse().unwrap());
    req.headers_mut().append("x-multi", "one".parse().unwrap());
    req.headers_mut().append("x-multi", "two".parse().unwrap());
    req.headers_mut()
        .insert(upstream::STATUS, "201".parse().unwrap());
    let resp = within(STEP_TIMEOUT, "PUT via outbound", client::send(&client, req))
        .await
        .unwrap();

    assert_eq!(resp.status(), 201, "upstream status passes through");
    assert_eq!(
        header(&resp, upstream::SERVER),
        Some("a"),
        "response headers pass through"
    );
    assert_eq!(header(&resp, upstream::ECHO_METHOD), Some("PUT"));
    assert_eq!(
        header(&resp, upstream::ECHO_PATH),
        Some("/some/path?x=1&y=two")
    );
    assert_eq!(header(&resp, upstream::ECHO_VERSION), Some("HTTP/1.1"));
    let seen = client::echoed_headers(&resp);
    assert_eq!(
        seen.get("x-custom"),
        Some(&vec!["custom-value".to_owned()]),
        "upstream saw {seen:?}"
    );
    assert_eq!(
        seen.get("x-multi"),
        Some(&vec!["one".to_owned(), "two".to_owned()]),
        "repeated header kept in order"
    );
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
    req.headers_mut()
        .insert("x-caller", "mesh".parse().unwrap());
    let resp = within(STEP_TIMEOUT, "POST via inbound", client::send(&client, req))
        .await
        .unwrap();

    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, upstream::SERVER), Some("app"));
    assert_eq!(header(&resp, upstream::ECHO_METHOD), Some("POST"));
    assert_eq!(header(&resp, upstream::ECHO_PATH), Some("/inbound?q=1"));
    assert_eq!(
        client::echoed_headers(&resp).get("x-caller"),
        Some(&vec!["mesh".to_owned()])
    );
    assert_eq!(resp.body().as_ref(), b"to the app");
}

#[tokio::test]
async fn streamed_request_body_is_echoed_while_still_streaming() {
    let echo = HttpServer::echo("a").await;
    let cfg = format!(
        "services:\n\
         \x20 - name: echo\n    endpoints:\n      - {a}\n\
         \x20 - name: echo-h2\n    protocol: http2\n    endpoints:\n      - {a}\n",
        a = echo.addr()
    );
    let proxy = Proxy::start(&cfg, &[]).await;
    // HTTP/1.1 upstream, then HTTP/1.1 → h2c upstream.
    for uri in ["http://echo/stream", "http://echo-h2/stream"] {
        client::assert_streaming_echo(&client::http1(proxy.outbound()), uri).await;
    }
}

#[tokio::test]
async fn content_length_zero_post_does_not_stall_the_connection() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let mut stream = tokio::net::TcpStream::connect(proxy.outbound())
        .await
        .unwrap();
    AsyncWriteExt::write_all(
        &mut stream,
        b"POST /empty HTTP/1.1\r\nHost: echo\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let first = within(
        STEP_TIMEOUT,
        "response to empty POST",
        raw::read_response(&mut stream),
    )
    .await
    .unwrap()
    .expect("a response, not a closed connection");
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.header(upstream::ECHO_METHOD), Some("POST"));
    assert!(first.body.is_empty(), "body {:?}", first.text());

    // The same connection still frames the next request correctly.
    AsyncWriteExt::write_all(&mut stream, b"GET /after HTTP/1.1\r\nHost: echo\r\n\r\n")
        .await
        .unwrap();
    let second = within(
        STEP_TIMEOUT,
        "second response",
        raw::read_response(&mut stream),
    )
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
    let resp = within(
        Duration::from_secs(30),
        "5 MB round trip",
        client::send(&client, req),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().len(), payload.len(), "echoed length");
    assert!(
        resp.body().as_ref() == payload.as_slice(),
        "echoed bytes differ"
    );
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
    assert_eq!(
        seen.get("x-normal"),
        Some(&vec!["end-to-end".to_owned()]),
        "ordinary header kept: {seen:?}"
    );
    for hop in ["x-foo", "keep-alive", "proxy-connection"] {
        assert!(
            !seen.contains_key(hop),
            "hop-by-hop `{hop}` reached the upstream: {seen:?}"
        );
    }
    if let Some(conn) = seen.get("connection") {
        assert!(
            conn.iter()
                .all(|v| !v.to_ascii_lowercase().contains("x-foo")),
            "client's Connection header forwarded: {conn:?}"
        );
    }
}

#[tokio::test]
async fn an_h2c_upgrade_is_answered_as_http1_and_never_reaches_the_upstream() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;
    let resp = raw::exchange(
        proxy.outbound(),
        b"GET /h2c HTTP/1.1\r\n\
          Host: echo\r\n\
          Connection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\n\
          HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
          \r\n",
    )
    .await
    .unwrap()
    .expect("a response");
    // RFC 9113 removed the upgrade: the request goes on as HTTP/1.1, not 101.
    assert_eq!(resp.status, 200, "{resp:?}");
    let raw = resp.header(upstream::ECHO_HEADERS).expect("echo headers");
    let seen: std::collections::HashMap<String, Vec<String>> = serde_json::from_str(raw).unwrap();
    for hop in ["upgrade", "http2-settings"] {
        assert!(
            !seen.contains_key(hop),
            "`{hop}` reached the upstream: {seen:?}"
        );
    }
    if let Some(conn) = seen.get("connection") {
        assert!(
            conn.iter()
                .all(|v| !v.to_ascii_lowercase().contains("upgrade")),
            "the client's Connection header forwarded: {conn:?}"
        );
    }
}

/// Reads until the peer closes (`true`) or `limit` passes (`false`).
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_request_head_trickled_past_its_deadline_closes_the_connection_not_an_idle_one() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let echo = HttpServer::echo("a").await;
    let cfg = format!(
        "{}timeouts: {{ request_headers: 1s }}\n",
        echo_config(echo.addr())
    );
    let proxy = Proxy::start(&cfg, &[]).await;

    // Slow headers: the request line at once (the connection is HTTP/1 from there), then
    // a byte every 100 ms; the rest of the head would take 4 s.
    let mut slow = tokio::net::TcpStream::connect(proxy.outbound())
        .await
        .unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    let head = b"Host: echo\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let trickle = async {
        for b in head.iter() {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    assert!(
        closed_within(&mut slow, Duration::from_secs(5)).await,
        "a trickled head keeps its connection"
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    assert_eq!(
        echo.requests(),
        0,
        "the late head never reached the upstream"
    );

    // A keep-alive connection idle between requests for longer than the head deadline
    // is still served: idle time is not head time. (A new connection must speak within
    // the detect timeout; that is another deadline.)
    let mut idle = tokio::net::TcpStream::connect(proxy.outbound())
        .await
        .unwrap();
    idle.write_all(b"GET /first HTTP/1.1\r\nHost: echo\r\n\r\n")
        .await
        .unwrap();
    let resp = raw::read_response(&mut idle)
        .await
        .unwrap()
        .expect("a response");
    assert_eq!(resp.status, 200, "{resp:?}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    idle.write_all(b"GET /again HTTP/1.1\r\nHost: echo\r\n\r\n")
        .await
        .unwrap();
    let resp = raw::read_response(&mut idle)
        .await
        .unwrap()
        .expect("a response");
    assert_eq!(resp.status, 200, "{resp:?}");
}

#[tokio::test]
async fn port_in_host_and_authority_is_ignored() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let resp = raw::exchange(
        proxy.outbound(),
        b"GET /with-port HTTP/1.1\r\nHost: echo:8080\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap()
    .expect("a response");
    assert_eq!(
        resp.status, 200,
        "Host echo:8080 names service echo: {resp:?}"
    );

    let h2 = client::h2(proxy.outbound());
    let req = client::request("GET", "http://echo:9090/h2", client::empty());
    let resp = within(STEP_TIMEOUT, "h2 with port", client::send(&h2, req))
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        ":authority echo:9090 names service echo"
    );
    assert_eq!(header(&resp, upstream::SERVER), Some("a"));
}

#[tokio::test]
async fn expect_100_continue_is_honoured() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let mut stream = tokio::net::TcpStream::connect(proxy.outbound())
        .await
        .unwrap();
    stream
        .write_all(b"POST /expect HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    // The client holds the body until it sees `100 Continue`.
    let mut head = Vec::new();
    within(
        Duration::from_secs(5),
        "100 Continue before the body is sent",
        async {
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                assert_eq!(
                    stream.read(&mut byte).await.unwrap(),
                    1,
                    "closed; got {:?}",
                    String::from_utf8_lossy(&head)
                );
                head.push(byte[0]);
            }
        },
    )
    .await;
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 100"),
        "expected 100 Continue, got {head:?}"
    );
    stream.write_all(b"hello").await.unwrap();
    let resp = within(
        STEP_TIMEOUT,
        "final response",
        raw::read_response(&mut stream),
    )
    .await
    .unwrap()
    .expect("a final response");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, b"hello");
}

#[tokio::test]
async fn head_response_keeps_the_connection_usable() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let mut sender = within(
        STEP_TIMEOUT,
        "connect",
        client::h1_connect(proxy.outbound()),
    )
    .await
    .unwrap();
    for method in ["HEAD", "GET", "HEAD", "GET"] {
        let req = http::Request::builder()
            .method(method)
            .uri("/head")
            .header("host", "echo")
            .body(client::empty())
            .unwrap();
        let resp = within(STEP_TIMEOUT, method, async {
            sender.ready().await?;
            client::collect(sender.send_request(req).await?).await
        })
        .await
        .unwrap_or_else(|e| panic!("{method} on the shared connection: {e}"));
        assert_eq!(resp.status(), 200, "{method}");
        assert_eq!(header(&resp, upstream::ECHO_METHOD), Some(method));
        assert!(resp.body().is_empty());
    }
    assert_eq!(echo.requests(), 4);
}

#[tokio::test]
async fn bodiless_statuses_keep_the_connection_usable() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let mut sender = within(
        STEP_TIMEOUT,
        "connect",
        client::h1_connect(proxy.outbound()),
    )
    .await
    .unwrap();
    for status in [204u16, 304, 200, 204, 200] {
        let req = http::Request::builder()
            .uri("/status")
            .header("host", "echo")
            .header(upstream::STATUS, status)
            .body(client::empty())
            .unwrap();
        let resp = within(STEP_TIMEOUT, "bodiless status", async {
            sender.ready().await?;
            client::collect(sender.send_request(req).await?).await
        })
        .await
        .unwrap_or_else(|e| panic!("status {status} on the shared connection: {e}"));
        assert_eq!(resp.status(), status);
        assert!(resp.body().is_empty());
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let echo = HttpServer::echo("a").await;
    let proxy = Proxy::start(&echo_config(echo.addr()), &[]).await;

    let mut stream = tokio::net::TcpStream::connect(proxy.outbound())
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /first HTTP/1.1\r\nHost: echo\r\nx-upstream-delay-ms: 200\r\n\r\n\
              POST /second HTTP/1.1\r\nHost: echo\r\nContent-Length: 3\r\n\r\nabc\
              GET /third HTTP/1.1\r\nHost: echo\r\n\r\n",
        )
        .await
        .unwrap();
    for (path, body) in [("/first", &b""[..]), ("/second", b"abc"), ("/third", b"")] {
        let resp = within(STEP_TIMEOUT, path, raw::read_response(&mut stream))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("connection closed before the response to {path}"));
        assert_eq!(resp.status, 200, "{path}: {resp:?}");
        assert_eq!(
            resp.header(upstream::ECHO_PATH),
            Some(path),
            "responses in request order"
        );
        assert_eq!(resp.body, body);
    }
}
