//! The admin port: `/live`, `/ready`, `/config_dump`, `/metrics`.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::client;
use tandem_tests::metrics::Metrics;
use tandem_tests::tcp::TcpEchoServer;
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{eventually, within, Proxy, STEP_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Metric name, labels that must match, expected value.
type Expectation<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Sends `n` requests for `uri` through `addr`, each expected to answer `status`.
async fn send_n(addr: std::net::SocketAddr, n: usize, uri: &str, status: u16) {
    let client = client::http1(addr);
    for _ in 0..n {
        let mut req = client::request("GET", uri, client::empty());
        req.headers_mut()
            .insert(upstream::STATUS, status.to_string().parse().unwrap());
        let resp = within(STEP_TIMEOUT, uri, client::send(&client, req))
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{uri}");
    }
}

#[tokio::test]
async fn request_metrics_count_exactly_what_was_sent() {
    let echo = HttpServer::echo("a").await;
    let app = HttpServer::echo("app").await;
    let cfg = format!(
        "service: web\nservices:\n  - name: echo\n    endpoints:\n      - {}\n",
        echo.addr()
    );
    let port = app.addr().port().to_string();
    let proxy = Proxy::start(&cfg, &["--app-port", &port]).await;

    send_n(proxy.outbound(), 5, "http://echo/ok", 200).await;
    send_n(proxy.outbound(), 2, "http://echo/fail", 500).await;
    send_n(proxy.outbound(), 3, "http://no-such-service/", 503).await;
    send_n(proxy.inbound(), 4, "http://web/in", 200).await;

    let requests = "tandem_requests_total";
    let durations = "tandem_request_duration_seconds_count";
    let expected: [Expectation<'_>; 6] = [
        (
            requests,
            &[
                ("direction", "outbound"),
                ("dst_service", "echo"),
                ("code", "200"),
            ],
            5.0,
        ),
        (
            requests,
            &[
                ("direction", "outbound"),
                ("dst_service", "echo"),
                ("code", "500"),
            ],
            2.0,
        ),
        (
            requests,
            &[
                ("direction", "outbound"),
                ("dst_service", "unknown"),
                ("code", "503"),
            ],
            3.0,
        ),
        (
            requests,
            &[
                ("direction", "inbound"),
                ("dst_service", "web"),
                ("code", "200"),
            ],
            4.0,
        ),
        (
            durations,
            &[("direction", "outbound"), ("dst_service", "echo")],
            7.0,
        ),
        (
            durations,
            &[("direction", "inbound"), ("dst_service", "web")],
            4.0,
        ),
    ];
    // Recording may trail the response by a moment: poll until it settles.
    let metrics: Metrics = eventually(Duration::from_secs(5), "request metrics", || async {
        let m = proxy.metrics().await;
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(name, labels, want)| m.get(name, labels) != Some(*want))
            .map(|(name, labels, want)| {
                format!("{name}{labels:?} = {:?}, want {want}", m.get(name, labels))
            })
            .collect();
        if wrong.is_empty() {
            Ok(m)
        } else {
            Err(wrong.join("; "))
        }
    })
    .await;

    // Histogram consistency: the +Inf bucket equals the count; time was spent.
    let out = [("direction", "outbound"), ("dst_service", "echo")];
    let inf: Vec<_> = out.iter().copied().chain([("le", "+Inf")]).collect();
    assert_eq!(
        metrics.get("tandem_request_duration_seconds_bucket", &inf),
        Some(7.0)
    );
    assert!(metrics.value("tandem_request_duration_seconds_sum", &out) > 0.0);
    // A raw Host never becomes a label value.
    assert!(
        !metrics
            .samples
            .iter()
            .any(|s| s.labels.values().any(|v| v.contains("no-such-service"))),
        "unbounded label value from Host"
    );
    assert!(
        metrics.value("tandem_protocol_detect_total", &[("result", "http1")]) >= 1.0,
        "HTTP/1 detections counted"
    );
}

#[tokio::test]
async fn tcp_and_process_metrics_are_exported() {
    let db = TcpEchoServer::start().await;
    let cfg = format!(
        "services:\n  - name: db\n    protocol: opaque\n    listen: 127.0.0.1:0\n    endpoints:\n      - {}\n",
        db.addr()
    );
    let proxy = Proxy::start(&cfg, &[]).await;
    let open = |m: &Metrics| m.value("tandem_tcp_connections_open", &[("direction", "outbound")]);
    let before = proxy.metrics().await;
    assert!(
        before.has("tandem_tcp_connections_open"),
        "gauge exported from the start"
    );

    let mut stream = TcpStream::connect(proxy.service_addr("db")).await.unwrap();
    let payload = vec![7u8; 10_000];
    stream.write_all(&payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    within(STEP_TIMEOUT, "tcp echo", stream.read_exact(&mut back))
        .await
        .unwrap();

    let during = proxy.metrics().await;
    assert!(
        open(&during) >= open(&before) + 1.0,
        "an open TCP connection is counted: {}",
        open(&during)
    );
    assert!(during.value("tandem_tcp_connections_total", &[("direction", "outbound")]) >= 1.0);

    drop(stream);
    eventually(
        Duration::from_secs(5),
        "gauge back down after close",
        || async {
            let m = proxy.metrics().await;
            let bytes = m.value(
                "tandem_tcp_bytes_total",
                &[("direction", "outbound"), ("peer", "client")],
            );
            let from_server = m.value(
                "tandem_tcp_bytes_total",
                &[("direction", "outbound"), ("peer", "server")],
            );
            if open(&m) <= open(&before) && bytes >= 10_000.0 && from_server >= 10_000.0 {
                Ok(())
            } else {
                Err(format!(
                    "open {} bytes client {bytes} server {from_server}",
                    open(&m)
                ))
            }
        },
    )
    .await;

    let m = proxy.metrics().await;
    assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(m.value("process_open_fds", &[]) > 0.0);
    assert!(m.has("process_cpu_seconds_total"));
    assert!(
        m.value("process_start_time_seconds", &[]) > 1.6e9,
        "start time is a Unix timestamp"
    );
    assert!(m.has("tandem_config_version"));
}

#[tokio::test]
async fn live_ready_and_config_dump() {
    let echo = HttpServer::echo("a").await;
    let cfg = format!(
        "service: web\nservices:\n  - name: echo\n    endpoints:\n      - {}\n",
        echo.addr()
    );
    let proxy = Proxy::start(&cfg, &[]).await;

    assert_eq!(proxy.admin_get("/live").await.0, 200);
    assert_eq!(
        proxy.admin_get("/ready").await.0,
        200,
        "ready once the ready line is printed"
    );
    let (status, _) = proxy.admin_get("/no-such-admin-path").await;
    assert!(
        status.is_client_error(),
        "unknown admin path answered {status}"
    );

    let dump = proxy.config_dump().await;
    let version = proxy.config_version().await;
    let text = dump.to_string();
    assert!(text.contains("echo"), "dump names the service: {dump}");
    assert!(
        text.contains(&echo.addr().to_string()),
        "dump lists the endpoint: {dump}"
    );
    if let Ok(n) = version.parse::<f64>() {
        let gauge = proxy.metrics().await.get("tandem_config_version", &[]);
        assert_eq!(
            gauge,
            Some(n),
            "tandem_config_version matches /config_dump version"
        );
    }
}
