//! SIGTERM/SIGINT: stop accepting, drain in-flight work, exit 0.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tandem_tests::client::{self, header};
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::{eventually, raw, within, Proxy, STEP_TIMEOUT};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_millis(1000))
        .start()
        .await;
    let fast = HttpServer::echo("fast").await;
    let cfg = format!(
        "timeouts:\n  shutdown_grace: 10s\nservices:\n  - name: slow\n    endpoints:\n      - {}\n  - name: fast\n    listen: 127.0.0.1:0\n    endpoints:\n      - {}\n",
        slow.addr(),
        fast.addr()
    );
    let mut proxy = Proxy::start(&cfg, &[]).await;
    let fast_listener = proxy.service_addr("fast");
    let outbound = proxy.outbound();

    // An idle keep-alive connection must not hold the drain up.
    let mut idle = TcpStream::connect(outbound).await.unwrap();
    idle.write_all(b"GET /warm HTTP/1.1\r\nHost: fast\r\n\r\n")
        .await
        .unwrap();
    let warm = raw::read_response(&mut idle)
        .await
        .unwrap()
        .expect("warm-up response");
    assert_eq!(warm.status, 200);

    let mut busy = TcpStream::connect(outbound).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nHost: slow\r\n\r\n")
        .await
        .unwrap();
    slow.wait_requests(1, STEP_TIMEOUT).await;
    let term_at = Instant::now();
    proxy.sigterm();

    for (name, addr) in [("outbound", outbound), ("service.fast", fast_listener)] {
        eventually(
            Duration::from_secs(3),
            &format!("new connections to {name} refused after SIGTERM"),
            || async {
                match TcpStream::connect(addr).await {
                    Err(_) => Ok(()),
                    Ok(_) => Err("connect still succeeds".to_owned()),
                }
            },
        )
        .await;
    }

    let resp = within(
        STEP_TIMEOUT,
        "in-flight response during drain",
        raw::read_response(&mut busy),
    )
    .await
    .unwrap()
    .expect("the in-flight request completes");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header(upstream::SERVER), Some("slow"));
    let conn = resp
        .header("connection")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        conn.contains("close"),
        "HTTP/1 response during drain carries Connection: close; headers {:?}",
        resp.headers
    );
    assert!(
        raw::read_to_end(&mut busy).await.is_empty(),
        "then the connection closes"
    );

    let status = proxy.wait_exit(Duration::from_secs(8)).await;
    assert!(status.success(), "exit status {status:?}");
    let took = term_at.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "exited {took:?} after SIGTERM; in-flight work took ~1 s"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_h2_stream_finish() {
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_millis(1000))
        .start()
        .await;
    let cfg = format!(
        "timeouts:\n  shutdown_grace: 10s\nservices:\n  - name: slow\n    endpoints:\n      - {}\n",
        slow.addr()
    );
    let mut proxy = Proxy::start(&cfg, &[]).await;

    let mut sender = within(
        STEP_TIMEOUT,
        "h2 handshake",
        client::h2_connect(proxy.outbound()),
    )
    .await
    .unwrap();
    let req = client::request("GET", "http://slow/h2", client::empty());
    let in_flight = tokio::spawn(async move {
        let resp = sender.send_request(req).await?;
        let resp = client::collect(resp).await?;
        Ok::<_, client::BoxError>((resp, sender))
    });
    slow.wait_requests(1, STEP_TIMEOUT).await;
    proxy.sigterm();

    let (resp, mut sender) = within(STEP_TIMEOUT, "in-flight h2 stream", in_flight)
        .await
        .unwrap()
        .expect("the in-flight stream completes");
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, upstream::SERVER), Some("slow"));

    // After GOAWAY the connection takes no new streams.
    let refused = within(STEP_TIMEOUT, "new stream after GOAWAY", async {
        match sender.ready().await {
            Err(_) => true,
            Ok(()) => sender
                .send_request(client::request("GET", "http://slow/late", client::empty()))
                .await
                .is_err(),
        }
    })
    .await;
    assert!(refused, "a new stream after GOAWAY must fail");
    assert_eq!(
        slow.requests(),
        1,
        "the late stream never reached the upstream"
    );
    let status = proxy.wait_exit(Duration::from_secs(8)).await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sigint_exits_zero() {
    let mut proxy = Proxy::start("services: []\n", &[]).await;
    assert_eq!(proxy.admin_get("/ready").await.0, 200);
    proxy.sigint();
    let status = proxy.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn signals_right_after_the_ready_line_are_handled() {
    // Supervisors may signal as soon as the ready line appears.
    let mut proxy = Proxy::start("services: []\n", &[]).await;
    proxy.sighup();
    let (status, _) = proxy.admin_get("/live").await;
    assert_eq!(
        status, 200,
        "SIGHUP right after ready must not kill the proxy"
    );
    assert!(!proxy.has_exited());

    let mut proxy = Proxy::start("services: []\n", &[]).await;
    proxy.sigterm();
    let status = proxy.wait_exit(Duration::from_secs(5)).await;
    assert!(
        status.success(),
        "SIGTERM right after ready: exit status {status:?}"
    );
}

#[tokio::test]
async fn ready_fails_while_draining() {
    let slow = HttpServer::builder("slow")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    let cfg = format!(
        "timeouts:\n  shutdown_grace: 10s\nservices:\n  - name: slow\n    endpoints:\n      - {}\n",
        slow.addr()
    );
    let mut proxy = Proxy::start(&cfg, &[]).await;
    assert_eq!(proxy.admin_get("/ready").await.0, 200);
    let in_flight = tokio::spawn(client::get_once(proxy.outbound(), "slow", "/"));
    slow.wait_requests(1, STEP_TIMEOUT).await;
    proxy.sigterm();

    // Draining: /ready must stop saying 200 (503, or the admin port already closed).
    let admin = proxy.admin();
    eventually(
        Duration::from_secs(1),
        "/ready stops answering 200",
        || async {
            match client::get_once(admin, "admin", "/ready").await {
                Ok(resp) if resp.status() == 200 => Err("still 200".to_owned()),
                _ => Ok(()),
            }
        },
    )
    .await;
    let resp = within(STEP_TIMEOUT, "in-flight request", in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(proxy.wait_exit(Duration::from_secs(8)).await.success());
}
