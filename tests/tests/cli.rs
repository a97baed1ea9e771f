//! The command line: environment fallbacks for the flags, and stdout carrying nothing
//! but the ready line.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::client::{self, header};
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{eventually, within, Proxy, STEP_TIMEOUT};

#[tokio::test]
async fn environment_variables_stand_in_for_flags() {
    let app = HttpServer::echo("app").await;
    let port = app.addr().port().to_string();
    let env = [
        ("TANDEM_OUTBOUND_ADDR", "127.0.0.1:0"),
        ("TANDEM_INBOUND_ADDR", "127.0.0.1:0"),
        ("TANDEM_ADMIN_ADDR", "127.0.0.1:0"),
        ("TANDEM_APP_PORT", port.as_str()),
        ("TANDEM_LOG", "off"),
    ];
    let proxy = Proxy::try_start_with_env("service: web\nservices: []\n", &[], &env)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    for (name, addr, default) in [
        ("outbound", proxy.outbound(), 15001),
        ("inbound", proxy.inbound(), 15006),
        ("admin", proxy.admin(), 15000),
    ] {
        assert_ne!(addr.port(), default, "{name} ignored its TANDEM_* variable");
        assert!(addr.ip().is_loopback(), "{name} = {addr}");
    }
    let client = client::http1(proxy.inbound());
    let resp = within(
        STEP_TIMEOUT,
        "inbound to TANDEM_APP_PORT",
        client::send(
            &client,
            client::request("GET", "http://web/", client::empty()),
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, upstream::SERVER),
        Some("app"),
        "TANDEM_APP_PORT names the app"
    );
    assert!(
        !proxy.stderr().contains("INFO"),
        "TANDEM_LOG=off silences the info logs: {}",
        proxy.stderr()
    );
}

#[tokio::test]
async fn stdout_carries_only_the_ready_line() {
    let echo = HttpServer::echo("a").await;
    let cfg = format!(
        "services:\n  - name: echo\n    endpoints:\n      - {}\n",
        echo.addr()
    );
    let mut proxy = Proxy::start(&cfg, &[]).await;
    let client = client::http1(proxy.outbound());
    for uri in ["http://echo/", "http://unknown/"] {
        within(
            STEP_TIMEOUT,
            uri,
            client::send(&client, client::request("GET", uri, client::empty())),
        )
        .await
        .unwrap();
    }
    proxy.rewrite_config("services: [\n");
    proxy.sigterm();
    proxy.wait_exit(Duration::from_secs(10)).await;
    eventually(Duration::from_secs(5), "stdout drained", || async {
        if proxy.stdout_closed() {
            Ok(())
        } else {
            Err("stdout still open".to_owned())
        }
    })
    .await;
    assert_eq!(proxy.stdout_extra(), "", "logs belong on stderr");
}

#[tokio::test]
async fn a_single_worker_still_serves_connections_concurrently() {
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_millis(800))
        .start()
        .await;
    let cfg = format!(
        "services:\n  - name: slow\n    endpoints:\n      - {}\n",
        slow.addr()
    );
    let by_flag = Proxy::start(&cfg, &["--workers", "1"]).await;
    let by_env = Proxy::try_start_with_env(&cfg, &[], &[("TANDEM_WORKERS", "1")])
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    for proxy in [&by_flag, &by_env] {
        let started = std::time::Instant::now();
        let calls = (0..6).map(|_| client::get_once(proxy.outbound(), "slow", "/"));
        let results = within(
            Duration::from_secs(20),
            "concurrent requests",
            futures_util::future::join_all(calls),
        )
        .await;
        for resp in results {
            assert_eq!(resp.unwrap().status(), 200);
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(2400),
            "6 × 800 ms on separate connections took {took:?}: serialized"
        );
    }
}
