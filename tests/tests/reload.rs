//! Config reload: file polling, SIGHUP, invalid files, and what keeps the old snapshot.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tandem_tests::client::{self, header};
use tandem_tests::tcp::WsEchoServer;
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{eventually, raw, within, Proxy, STEP_TIMEOUT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn config(service: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    let mut cfg = format!("service: {service}\n{extra}services:\n  - name: echo\n    endpoints:\n");
    for ep in endpoints {
        cfg.push_str(&format!("      - {ep}\n"));
    }
    cfg
}

/// `n` GETs on a fresh connection; returns the `x-server` of each answer.
async fn served_by(proxy: &Proxy, n: usize) -> Vec<String> {
    let client = client::http1(proxy.outbound());
    let mut names = Vec::new();
    for _ in 0..n {
        let req = client::request("GET", "http://echo/who", client::empty());
        let resp = within(STEP_TIMEOUT, "GET echo", client::send(&client, req))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{resp:?}");
        names.push(header(&resp, upstream::SERVER).unwrap_or("?").to_owned());
    }
    names
}

async fn reload_errors(proxy: &Proxy) -> f64 {
    proxy
        .metrics()
        .await
        .value("tandem_config_reloads_total", &[("result", "error")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_requests() {
    let a = HttpServer::echo("a").await;
    let b = HttpServer::echo("b").await;
    let proxy = Arc::new(Proxy::start(&config("web", &[a.addr()], ""), &[]).await);

    // Load runs until the rewrites are done, bounded in count and time. Half the clients
    // keep connections alive (requests on established connections), half open a new
    // connection per request.
    const MAX_REQUESTS: u64 = 20_000;
    const CLIENTS: usize = 4;
    let deadline = Instant::now() + Duration::from_secs(15);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut load = Vec::new();
    for i in 0..CLIENTS {
        let (stop, done, failures) = (stop.clone(), done.clone(), failures.clone());
        let addr = proxy.outbound();
        load.push(tokio::spawn(async move {
            let pooled = client::http1(addr);
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && done.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
            {
                let req = client::request("GET", "http://echo/load", client::empty());
                let fresh = client::http1(addr);
                let client = if i % 2 == 0 { &pooled } else { &fresh };
                let outcome = tokio::time::timeout(STEP_TIMEOUT, client::send(client, req)).await;
                let failure = match outcome {
                    Ok(Ok(resp)) if resp.status() == 200 => continue,
                    Ok(Ok(resp)) => format!("status {} body {:?}", resp.status(), resp.body()),
                    Ok(Err(e)) => format!("error {e:?}"),
                    Err(_) => "timed out".to_owned(),
                };
                failures.lock().unwrap().push(failure);
            }
        }));
    }

    // Rewrite while the load runs; each rewrite waits until it has applied and some load
    // has passed over it.
    let steps = [
        config("web", &[b.addr()], ""),
        config("web", &[a.addr()], "timeouts:\n  upstream_idle: 10s\n"),
        config("web-v2", &[a.addr(), b.addr()], ""),
        config("web-v3", &[b.addr()], "timeouts:\n  request: 10s\n"),
    ];
    let mut version = proxy.config_version().await;
    for cfg in &steps {
        let before = done.load(Ordering::Relaxed);
        proxy.rewrite_config(cfg);
        version = proxy
            .wait_version_change(&version, Duration::from_secs(5))
            .await;
        eventually(
            Duration::from_secs(5),
            "load continues after a reload",
            || async {
                let now = done.load(Ordering::Relaxed);
                if now >= before + 100 {
                    Ok(())
                } else {
                    Err(format!("{now} requests"))
                }
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        within(Duration::from_secs(30), "load clients", task)
            .await
            .unwrap();
    }

    let failures = failures.lock().unwrap().clone();
    let sent = done.load(Ordering::Relaxed).min(MAX_REQUESTS);
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during reloads; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        a.requests() > 0 && b.requests() > 0,
        "both endpoints served: a={} b={}",
        a.requests(),
        b.requests()
    );

    // The last config names only b: new connections and requests go there.
    let names = served_by(&proxy, 20).await;
    assert!(
        names.iter().all(|n| n == "b"),
        "after the final reload: {names:?}"
    );
    let ok = proxy
        .metrics()
        .await
        .value("tandem_config_reloads_total", &[("result", "ok")]);
    assert!(
        ok >= steps.len() as f64,
        "reloads ok = {ok}, expected ≥ {}",
        steps.len()
    );
}

#[tokio::test]
async fn reload_applies_to_the_next_request_on_a_kept_alive_connection() {
    // The snapshot is loaded once per request (docs/proxy.md "new requests use the new
    // one"; design.md "route (snapshot loaded once per request)").
    let a = HttpServer::echo("a").await;
    let b = HttpServer::echo("b").await;
    let proxy = Proxy::start(&config("web", &[a.addr()], ""), &[]).await;
    let mut conn = TcpStream::connect(proxy.outbound()).await.unwrap();
    let ask = async |conn: &mut TcpStream| {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: echo\r\n\r\n")
            .await
            .unwrap();
        let resp = within(STEP_TIMEOUT, "response", raw::read_response(conn))
            .await
            .unwrap();
        let resp = resp.expect("a response on the kept-alive connection");
        resp.header(upstream::SERVER).unwrap_or("?").to_owned()
    };
    assert_eq!(ask(&mut conn).await, "a");
    let version = proxy.config_version().await;
    proxy.rewrite_config(&config("web", &[b.addr()], ""));
    proxy
        .wait_version_change(&version, Duration::from_secs(5))
        .await;
    assert_eq!(
        ask(&mut conn).await,
        "b",
        "the next request on the same connection uses the new snapshot"
    );
}

#[tokio::test]
async fn invalid_config_is_rejected_and_the_old_one_keeps_serving() {
    let a = HttpServer::echo("a").await;
    let b = HttpServer::echo("b").await;
    let proxy = Proxy::start(&config("web", &[a.addr()], ""), &[]).await;
    let version = proxy.config_version().await;

    let bad_configs = [
        // A bad endpoint address (no port): the error names the field path.
        "service: web\nservices:\n  - name: echo\n    endpoints:\n      - 10.0.0.1\n".to_owned(),
        // Not YAML at all.
        "services: [\n  - name: {\n".to_owned(),
        // An unknown protocol.
        format!(
            "services:\n  - name: echo\n    protocol: carrier-pigeon\n    endpoints:\n      - {}\n",
            b.addr()
        ),
    ];
    for (i, bad) in bad_configs.iter().enumerate() {
        let errors = reload_errors(&proxy).await;
        proxy.rewrite_config(bad);
        eventually(Duration::from_secs(5), "reload error counted", || async {
            let now = reload_errors(&proxy).await;
            if now > errors {
                Ok(())
            } else {
                Err(format!(
                    "tandem_config_reloads_total{{result=\"error\"}} still {now}"
                ))
            }
        })
        .await;
        assert_eq!(
            proxy.config_version().await,
            version,
            "rejected config must not apply:\n{bad}"
        );
        assert_eq!(
            served_by(&proxy, 3).await,
            ["a", "a", "a"],
            "old config keeps serving"
        );
        if i == 0 {
            let dump = proxy.config_dump().await.to_string();
            assert!(
                dump.contains("services[0].endpoints[0]"),
                "/config_dump shows the last reload error with its field path: {dump}"
            );
        }
    }
    assert!(
        proxy.stderr().contains("services[0].endpoints[0]"),
        "the log names the field path services[0].endpoints[0]; stderr:\n{}",
        proxy.stderr()
    );

    // A valid file after the bad ones applies.
    proxy.rewrite_config(&config("web", &[b.addr()], ""));
    proxy
        .wait_version_change(&version, Duration::from_secs(5))
        .await;
    assert_eq!(served_by(&proxy, 3).await, ["b", "b", "b"]);
}

#[tokio::test]
async fn invalid_startup_config_exits_non_zero_with_the_field_path() {
    let bad = "services:\n  - name: echo\n    endpoints:\n      - 10.0.0.1\n";
    let failure = Proxy::try_start(bad, &[])
        .await
        .expect_err("an invalid config must not become ready");
    let status = failure.status.expect("the proxy exits");
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        failure.stderr.contains("services[0].endpoints[0]"),
        "stderr names the field path: {}",
        failure.stderr
    );
}

#[tokio::test]
async fn sighup_reloads_even_when_the_file_looks_unchanged() {
    let a = HttpServer::echo("a").await;
    let b = HttpServer::echo("b").await;
    let mut old = config("web", &[a.addr()], "");
    let mut new = config("web", &[b.addr()], "");
    // Same size and mtime: only SIGHUP (or content hashing) can notice the change.
    while old.len() < new.len() {
        old.push('#');
    }
    while new.len() < old.len() {
        new.push('#');
    }
    let mut proxy = Proxy::start(&old, &[]).await;
    let version = proxy.config_version().await;
    assert_eq!(served_by(&proxy, 1).await, ["a"]);

    let mtime = std::fs::metadata(proxy.config_path())
        .unwrap()
        .modified()
        .unwrap();
    proxy.rewrite_config_with(&new, Some(mtime));
    proxy.sighup();
    proxy
        .wait_version_change(&version, Duration::from_secs(5))
        .await;
    assert!(!proxy.has_exited(), "SIGHUP must not terminate the proxy");
    assert_eq!(served_by(&proxy, 3).await, ["b", "b", "b"]);
    let (status, _) = proxy.admin_get("/live").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn established_websocket_survives_a_reload() {
    let a = WsEchoServer::start().await;
    let b = WsEchoServer::start().await;
    let ws_config =
        |ep: SocketAddr| format!("services:\n  - name: ws\n    endpoints:\n      - {ep}\n");
    let proxy = Proxy::start(&ws_config(a.addr()), &[]).await;
    let connect = || async {
        let stream = TcpStream::connect(proxy.outbound()).await.unwrap();
        let req = "ws://ws/".into_client_request().unwrap();
        within(
            STEP_TIMEOUT,
            "websocket handshake",
            tokio_tungstenite::client_async(req, stream),
        )
        .await
        .unwrap()
        .0
    };
    let mut old = connect().await;
    old.send(Message::text("before")).await.unwrap();
    assert_eq!(
        within(STEP_TIMEOUT, "echo", old.next())
            .await
            .unwrap()
            .unwrap(),
        Message::text("before")
    );

    let version = proxy.config_version().await;
    proxy.rewrite_config(&ws_config(b.addr()));
    proxy
        .wait_version_change(&version, Duration::from_secs(5))
        .await;

    old.send(Message::text("after")).await.unwrap();
    let echoed = within(
        STEP_TIMEOUT,
        "echo on the old connection after reload",
        old.next(),
    )
    .await;
    assert_eq!(
        echoed.map(|m| m.ok()),
        Some(Some(Message::text("after"))),
        "the established WebSocket keeps going"
    );

    let mut new = connect().await;
    new.send(Message::text("new")).await.unwrap();
    assert_eq!(
        within(STEP_TIMEOUT, "echo", new.next())
            .await
            .unwrap()
            .unwrap(),
        Message::text("new")
    );
    assert_eq!(
        (a.connections(), b.connections()),
        (1, 1),
        "old socket on a, new one on b"
    );
}

#[tokio::test]
async fn in_flight_request_survives_a_reload_that_removes_its_service() {
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_millis(1000))
        .start()
        .await;
    let proxy = Proxy::start(&config("web", &[slow.addr()], ""), &[]).await;
    let client = client::http1(proxy.outbound());
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client::send(
                &client,
                client::request("GET", "http://echo/slow", client::empty()),
            )
            .await
        })
    };
    slow.wait_requests(1, STEP_TIMEOUT).await;

    let version = proxy.config_version().await;
    proxy.rewrite_config("service: web\nservices: []\n");
    proxy
        .wait_version_change(&version, Duration::from_secs(5))
        .await;

    let resp = within(STEP_TIMEOUT, "in-flight request", in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "in-flight requests keep their snapshot: {resp:?}"
    );
    let fresh = client::http1(proxy.outbound());
    let resp = within(
        STEP_TIMEOUT,
        "request after removal",
        client::send(
            &fresh,
            client::request("GET", "http://echo/", client::empty()),
        ),
    )
    .await
    .unwrap();
    client::assert_proxy_error(&resp, 503);
}
