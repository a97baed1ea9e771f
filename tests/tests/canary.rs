//! Canary releases with the real binaries: `tandemctl canary` against the real control
//! plane, a real `tandem-proxy` in xDS mode, and two upstream versions of `web`.
//!
//! - `canary abort` sends every new request back to the stable within one second of the
//!   command returning (and the test records how soon it actually switched);
//! - `canary status` reports request rates, success rates and p99 for both backends from
//!   the proxies' own metrics once traffic flows;
//! - a guarded canary (`--auto`) that fails 20% of its requests is rolled back by the
//!   control plane within 10 s of its first failure, with at most 0.5% of the load
//!   failed; a healthy one is stepped and promoted by itself with no failed request;
//! - `tandemctl stat` shows golden signals per service, route and backend, and the
//!   connections a service's sidecars hold open.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::load::{Load, LoadSpec};
use tandem_tests::mesh::{self, docs, endpoint, service};
use tandem_tests::upstream::{self, HttpServer};
use tandem_tests::zero_trust::{register, sidecar, wait_mtls_to};
use tandem_tests::{client, eventually, within, Proxy, STEP_TIMEOUT};
use tokio::sync::watch;

/// How long a change may take to reach a proxy.
const PROPAGATION: Duration = Duration::from_secs(15);
/// The promise: every request sent this long after `canary abort` returned hits stable.
const ROLLBACK: Duration = Duration::from_secs(1);
/// How long the test keeps sending after the abort (bounded by count too).
const OBSERVE: Duration = Duration::from_millis(2500);
const MAX_PROBES: usize = 5000;

/// Two versions of `web` behind their own services, registered with the control plane,
/// and a client-side proxy in xDS mode. No route yet: `canary start` creates one.
async fn mesh_with_two_versions() -> (HttpServer, HttpServer, ControlPlane, Proxy) {
    mesh_of(HttpServer::echo("web-v2").await, &[]).await
}

/// web-v1 (healthy) and `v2` registered as the backends of `web`, with `extra`
/// documents, and a client-side proxy in xDS mode.
async fn mesh_of(
    v2: HttpServer,
    extra: &[String],
) -> (HttpServer, HttpServer, ControlPlane, Proxy) {
    let v1 = HttpServer::echo("web-v1").await;
    let cp = ControlPlane::start().await;
    let mut documents = vec![
        service("web"),
        service("web-v1"),
        service("web-v2"),
        endpoint("web-v1", v1.addr()),
        endpoint("web-v2", v2.addr()),
    ];
    documents.extend_from_slice(extra);
    cp.apply_ok(&docs(&documents)).await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    (v1, v2, cp, proxy)
}

async fn ctl_ok(cp: &ControlPlane, args: &[&str]) -> String {
    cp.tandemctl(args)
        .await
        .expect_ok(&args.join(" "))
        .to_owned()
}

/// `canary start web` from web-v1 to web-v2 in steps 50,100; returns once the proxy
/// routes 50/50.
async fn start_canary_at_half(cp: &ControlPlane, proxy: &Proxy) {
    ctl_ok(
        cp,
        &[
            "canary", "start", "web", "--stable", "web-v1", "--canary", "web-v2", "--steps",
            "50,100",
        ],
    )
    .await;
    mesh::wait_split(proxy, "web", &[("web-v1", 50), ("web-v2", 50)], PROPAGATION).await;
}

/// Which upstream answered one fresh-connection `GET http://web/` via `outbound`.
async fn probe(outbound: SocketAddr, i: usize) -> String {
    let resp = within(
        STEP_TIMEOUT,
        &format!("probe #{i}"),
        client::get_once(outbound, "web", "/"),
    )
    .await
    .unwrap_or_else(|e| panic!("probe #{i} via {outbound}: {e}"));
    assert_eq!(resp.status(), 200, "probe #{i}: {:?}", resp.headers());
    client::header(&resp, upstream::SERVER)
        .unwrap_or_else(|| panic!("probe #{i}: no {} header", upstream::SERVER))
        .to_owned()
}

/// Milliseconds from `from` to `to`, negative when `to` is earlier.
fn signed_ms(from: Duration, to: Duration) -> i128 {
    to.as_millis() as i128 - from.as_millis() as i128
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_abort_returns_every_new_request_to_stable_within_a_second() {
    let (_v1, _v2, cp, proxy) = mesh_with_two_versions().await;
    start_canary_at_half(&cp, &proxy).await;
    let before = mesh::answered_by(&proxy, "web", 60).await;
    assert!(
        before.get("web-v1").is_some_and(|n| *n > 0)
            && before.get("web-v2").is_some_and(|n| *n > 0),
        "both versions serve at 50/50 before the abort: {before:?}"
    );

    // Probe continuously from before the abort until OBSERVE after it returned (a fresh
    // connection each, so each request sees the proxy's current config), remembering
    // when each was sent and who answered. Bounded by MAX_PROBES and the stop signal.
    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let outbound = proxy.outbound();
    let prober = tokio::spawn(async move {
        let mut probes: Vec<(Duration, String)> = Vec::new();
        while !*stop_rx.borrow() && probes.len() < MAX_PROBES {
            let sent = started.elapsed();
            let server = probe(outbound, probes.len()).await;
            probes.push((sent, server));
        }
        probes
    });
    let command = started.elapsed();
    ctl_ok(&cp, &["canary", "abort", "web"]).await;
    let returned = started.elapsed();
    // The observation period itself, not a wait for readiness.
    tokio::time::sleep(OBSERVE).await;
    stop_tx.send_replace(true);
    let probes = within(STEP_TIMEOUT * 2, "prober to stop", prober)
        .await
        .expect("prober panicked");

    let late: Vec<&(Duration, String)> = probes
        .iter()
        .filter(|(t, _)| *t >= returned + ROLLBACK)
        .collect();
    assert!(
        late.len() >= 10,
        "enough probes after {ROLLBACK:?} to mean something: {} of {}",
        late.len(),
        probes.len()
    );
    let strays: Vec<_> = late.iter().filter(|(_, s)| s != "web-v1").collect();
    assert!(
        strays.is_empty(),
        "every request sent ≥ {ROLLBACK:?} after `canary abort` returned hits web-v1; strays: {strays:?}"
    );
    // How soon it switched: the send time of the last request the canary answered.
    let last_canary = probes
        .iter()
        .filter(|(_, s)| s == "web-v2")
        .map(|(t, _)| *t)
        .max();
    let by: BTreeMap<&str, usize> = probes.iter().fold(BTreeMap::new(), |mut m, (_, s)| {
        *m.entry(s.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "canary abort: the command took {} ms; {} probes ({by:?}); the last request answered by the canary was sent {} ms after the command started ({} ms relative to its return)",
        signed_ms(command, returned),
        probes.len(),
        last_canary.map_or(-1, |t| signed_ms(command, t)),
        last_canary.map_or(0, |t| signed_ms(returned, t)),
    );
    mesh::wait_split(
        &proxy,
        "web",
        &[("web-v1", 100), ("web-v2", 0)],
        PROPAGATION,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_status_reports_rates_for_both_backends_from_the_proxies_metrics() {
    let (_v1, _v2, cp, proxy) = mesh_with_two_versions().await;

    // The proxy announced its admin address over xDS; the control plane lists it.
    let admin = proxy.admin().to_string();
    eventually(
        PROPAGATION,
        "/v1/status to list the proxy's admin address",
        || async {
            let status = cp.api_get("/v1/status").await;
            let listed = status["proxies"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["admin_addr"] == admin.as_str()));
            if listed {
                Ok(())
            } else {
                Err(status.to_string())
            }
        },
    )
    .await;

    start_canary_at_half(&cp, &proxy).await;

    let load = Load::start(&[proxy.outbound()], LoadSpec::new("web"));
    load.wait_more(50, Duration::from_secs(20)).await;
    // Rates need two scrapes (every 5 s by default) that both saw traffic.
    let status = eventually(
        Duration::from_secs(40),
        "canary status to show traffic on both backends",
        || async {
            let s = cp.api_get("/v1/canaries/default/web").await;
            let backends = s["backends"].as_array().cloned().unwrap_or_default();
            let flowing = backends.len() == 2
                && backends.iter().all(|b| {
                    b["requests_per_second"].as_f64().is_some_and(|r| r > 0.0)
                        && b["success_rate"].as_f64() == Some(1.0)
                        && b["p99_seconds"]
                            .as_f64()
                            .is_some_and(|p| p > 0.0 && p < 5.0)
                });
            if flowing {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    assert_eq!(
        status["weights"],
        serde_json::json!({"web-v1": 50, "web-v2": 50})
    );
    assert!(
        status["metrics"]["proxies_reporting"].as_u64() >= Some(1),
        "{status}"
    );

    let text = ctl_ok(&cp, &["canary", "status", "web"]).await;
    eprintln!("tandemctl canary status web:\n{text}");
    assert!(text.contains("web-v1") && text.contains("web-v2"), "{text}");
    assert!(text.contains("100.00%"), "{text}");
    assert!(!text.contains("no metrics"), "{text}");

    let report = load.stop().await;
    report.assert_no_failures("load during canary status");
}

/// How long a guarded-canary experiment keeps its load going after `canary start`.
const EXPERIMENT: Duration = Duration::from_secs(15);

/// `web` → web-v1 (healthy) and web-v2 (`v2`), routed 100/0 by an HTTPRoute, a client
/// proxy, and steady load through it.
async fn loaded_mesh(v2: HttpServer) -> (HttpServer, HttpServer, ControlPlane, Proxy, Load) {
    let route = mesh::split_route("web", "web", &[("web-v1", 100), ("web-v2", 0)]);
    let (v1, v2, cp, proxy) = mesh_of(v2, &[route]).await;
    mesh::wait_split(
        &proxy,
        "web",
        &[("web-v1", 100), ("web-v2", 0)],
        PROPAGATION,
    )
    .await;
    let load = Load::start(&[proxy.outbound()], LoadSpec::new("web"));
    load.wait_more(100, Duration::from_secs(30)).await;
    (v1, v2, cp, proxy, load)
}

/// `canary start web` from web-v1 to web-v2 with `--auto` and `objectives`.
fn guarded_start<'a>(objectives: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "canary", "start", "web", "--stable", "web-v1", "--canary", "web-v2", "--auto",
    ];
    args.extend_from_slice(objectives);
    args
}

/// The newest revision in `tandemctl history -o json`.
async fn last_revision(cp: &ControlPlane) -> serde_json::Value {
    cp.history()
        .await
        .into_iter()
        .max_by_key(|r| r["revision"].as_u64())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_canary_that_fails_is_rolled_back_by_the_control_plane() {
    let failing = HttpServer::builder("web-v2").fail_ratio(0.2).start().await;
    let (_v1, v2, cp, proxy, load) = loaded_mesh(failing).await;
    let started = tokio::time::Instant::now();
    ctl_ok(
        &cp,
        &guarded_start(&[
            "--max-error-rate",
            "1%",
            "--min-requests",
            "20",
            "--step-time",
            "30s",
        ]),
    )
    .await;
    // No person acts from here: the guard sees web-v2 fail and puts everything back.
    eventually(PROPAGATION, "the controller's decision", || async {
        let last = last_revision(&cp).await;
        (last["who"] == "canary-controller")
            .then_some(())
            .ok_or(last.to_string())
    })
    .await;
    mesh::wait_split(
        &proxy,
        "web",
        &[("web-v1", 100), ("web-v2", 0)],
        PROPAGATION,
    )
    .await;
    let rolled_back = tokio::time::Instant::now();
    // The experiment: steady load from before the start until EXPERIMENT after it.
    tokio::time::sleep_until(started + EXPERIMENT).await;
    let report = load.stop().await;

    let decision = last_revision(&cp).await;
    assert_eq!(decision["who"], "canary-controller", "{decision}");
    let summary = decision["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("canary default/web rolled back: web-v2 error rate ")
            && summary.contains("> 1% over"),
        "{summary}"
    );
    let status = ctl_ok(&cp, &["canary", "status", "web", "-o", "json"]).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["state"]["phase"], "aborted", "{status}");

    let first_failure = report
        .first_failure
        .expect("the canary failed some requests");
    let detect = rolled_back.duration_since(first_failure);
    let total = report.ok + report.failed;
    let share = report.failed as f64 / total as f64;
    eprintln!(
        "guarded rollback, {EXPERIMENT:?} of load from the start: {} of {total} requests failed ({:.3}%), web-v2 answered {}; \
         first failure {:?} after start, rolled back on the proxy {detect:?} after it ({summary})",
        report.failed,
        share * 100.0,
        v2.requests(),
        first_failure.duration_since(started),
    );
    assert!(detect < Duration::from_secs(10), "rollback took {detect:?}");
    assert!(
        share <= 0.005,
        "{} of {total} requests failed",
        report.failed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_guarded_canary_is_promoted_by_the_control_plane_with_no_failed_request() {
    let healthy = HttpServer::echo("web-v2").await;
    let (_v1, _v2, mut cp, proxy, load) = loaded_mesh(healthy).await;
    let started = tokio::time::Instant::now();
    ctl_ok(
        &cp,
        &guarded_start(&[
            "--steps",
            "20,50,100",
            "--max-error-rate",
            "1%",
            "--max-p99",
            "1s",
            "--min-requests",
            "10",
            "--step-time",
            "2s",
        ]),
    )
    .await;
    // The control plane restarts after the first decision: the guard's state is in the
    // routes, so the release goes on from where it was.
    mesh::wait_split(
        &proxy,
        "web",
        &[("web-v1", 50), ("web-v2", 50)],
        PROPAGATION,
    )
    .await;
    cp.kill().await;
    cp.restart().await;
    mesh::wait_split(
        &proxy,
        "web",
        &[("web-v1", 0), ("web-v2", 100)],
        Duration::from_secs(40),
    )
    .await;
    // The last step holds for its time too, then the canary ends in promotion.
    eventually(Duration::from_secs(20), "the promotion", || async {
        let (code, body) = cp.api_call("GET", "/v1/canaries/default/web", None).await;
        (code == 404).then_some(()).ok_or(body.to_string())
    })
    .await;
    let promoted = started.elapsed();
    load.wait_more(100, Duration::from_secs(30)).await;
    let report = load.stop().await;
    report.assert_no_failures("a healthy guarded canary from start to promotion, across a restart");

    // Each decision is a revision by the controller, with its reason.
    let mut decisions: Vec<serde_json::Value> = cp
        .history()
        .await
        .into_iter()
        .filter(|r| r["who"] == "canary-controller")
        .collect();
    decisions.sort_by_key(|r| r["revision"].as_u64());
    let steps: Vec<String> = decisions
        .iter()
        .map(|r| r["summary"].as_str().unwrap().to_string())
        .collect();
    eprintln!("guarded promotion in {promoted:?}: {steps:#?}");
    assert_eq!(steps.len(), 3, "{steps:#?}");
    assert!(
        steps[0].starts_with("canary default/web stepped to 50%: web-v2 healthy for "),
        "{steps:#?}"
    );
    assert!(
        steps[1].starts_with("canary default/web stepped to 100%: "),
        "{steps:#?}"
    );
    assert!(
        steps[2].starts_with("canary default/web promoted: "),
        "{steps:#?}"
    );
}

/// `tandemctl stat` of `what`, as JSON, once its item `name` has requests.
async fn stat_item(cp: &ControlPlane, what: &str, name: &str) -> serde_json::Value {
    eventually(
        Duration::from_secs(30),
        &format!("stat {what} {name}"),
        || async {
            let out = cp
                .tandemctl(&["stat", what, "--window", "10", "-o", "json"])
                .await;
            let v: serde_json::Value =
                serde_json::from_str(out.expect_ok("stat")).map_err(|e| e.to_string())?;
            v["items"]
                .as_array()
                .and_then(|items| items.iter().find(|i| i["name"] == name))
                .filter(|i| i["requests"].as_f64().unwrap_or(0.0) > 0.0)
                .cloned()
                .ok_or(v.to_string())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_shows_golden_signals_per_service_route_and_backend() {
    let cp = ControlPlane::start().await;
    cp.apply_ok(&docs(&[service("web"), service("api")])).await;
    let app = HttpServer::echo("api-app").await;
    let server = sidecar(&cp, "api", app.addr().port(), &[]).await;
    register(&cp, "api", server.inbound()).await;
    let client = sidecar(&cp, "web", 1, &[]).await;
    wait_mtls_to(&client, "api").await;
    let load = Load::start(&[client.outbound()], LoadSpec::new("api"));
    load.wait_more(100, Duration::from_secs(30)).await;

    let api = stat_item(&cp, "services", "api").await;
    assert!(api["requests_per_second"].as_f64().unwrap() > 1.0, "{api}");
    assert_eq!(api["success_rate"], 1.0, "{api}");
    let (p50, p95, p99) = (
        api["p50_seconds"].as_f64().unwrap(),
        api["p95_seconds"].as_f64().unwrap(),
        api["p99_seconds"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99 && p99 < 1.0, "{api}");
    // The pooled load worker keeps a connection open to api's sidecar.
    eventually(
        Duration::from_secs(20),
        "api's open connections",
        || async {
            let out = cp.tandemctl(&["stat", "-o", "json"]).await;
            let v: serde_json::Value = serde_json::from_str(out.expect_ok("stat")).unwrap();
            let open = v["items"]
                .as_array()
                .and_then(|i| i.iter().find(|i| i["name"] == "api"))
                .and_then(|i| i["tcp_open_inbound"].as_f64())
                .unwrap_or(0.0);
            (open >= 1.0).then_some(()).ok_or(v.to_string())
        },
    )
    .await;
    let backend = stat_item(&cp, "backends", "api").await;
    assert_eq!(backend["success_rate"], 1.0, "{backend}");
    let routes = cp.tandemctl(&["stat", "routes", "-o", "json"]).await;
    let routes: serde_json::Value = serde_json::from_str(routes.expect_ok("stat routes")).unwrap();
    assert_eq!(routes["by"], "route", "{routes}");
    let table = ctl_ok(&cp, &["stat"]).await;
    assert!(
        table.starts_with("SERVICE") && table.contains("\napi "),
        "{table}"
    );
    assert!(table.contains("TCP_CONN"), "{table}");
    eprintln!("{table}{routes}");
    load.stop()
        .await
        .assert_no_failures("load while stat reads");
}
