//! Chaos experiments with the real binaries: `tandemctl chaos run` against the real
//! control plane, a client proxy in xDS mode under steady load, and an echo upstream.
//!
//! - a fault that breaks the steady state ends the experiment by itself within seconds:
//!   `run` exits non-zero with the figures, the fault is gone from the proxy, and the
//!   history records why;
//! - a fault the steady state absorbs runs to its deadline, `run` exits 0, and a route the
//!   service already had gets back exactly what it had;
//! - `chaos stop` ends one at once; bad requests are refused with the field;
//! - ejecting an endpoint takes it out of the caller's load balancing for the experiment
//!   and gives it back at the end, with no failed request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::load::{Load, LoadSpec};
use tandem_tests::mesh::{docs, endpoint, service};
use tandem_tests::upstream::HttpServer;
use tandem_tests::{eventually, Proxy};

const PROPAGATION: Duration = Duration::from_secs(15);

/// `api` (an echo upstream) in the control plane, a client proxy, and load on it.
async fn mesh(extra: &[String]) -> (HttpServer, ControlPlane, Proxy, Load) {
    let api = HttpServer::echo("api").await;
    let cp = ControlPlane::start().await;
    let mut documents = vec![service("api"), endpoint("api", api.addr())];
    documents.extend_from_slice(extra);
    cp.apply_ok(&docs(&documents)).await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    let load = Load::start(&[proxy.outbound()], LoadSpec::new("api"));
    load.wait_more(50, PROPAGATION).await;
    (api, cp, proxy, load)
}

fn chaos_summaries(history: &[serde_json::Value]) -> Vec<String> {
    history
        .iter()
        .filter_map(|h| h["summary"].as_str())
        .filter(|s| s.starts_with("chaos "))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_steady_state_ends_the_experiment_by_itself() {
    let (_api, cp, proxy, load) = mesh(&[]).await;
    let started = Instant::now();
    let out = cp
        .tandemctl(&[
            "chaos",
            "run",
            "api",
            "--abort",
            "30%",
            "--for",
            "60s",
            "--max-error-rate",
            "5%",
        ])
        .await;
    let took = started.elapsed();
    assert!(
        !out.status.success(),
        "a broken steady state exits non-zero: {out:?}"
    );
    assert!(out.stdout.contains("chaos default/api started"), "{out:?}");
    assert!(
        out.stderr.contains("broken") && out.stderr.contains("api error rate"),
        "the reason with its figures: {out:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "ended after {took:?}, not at the 60 s deadline"
    );

    // The fault is gone: every request succeeds again.
    eventually(PROPAGATION, "the fault to leave the proxy", || async {
        let seen = tandem_tests::mesh::try_answered_by(&proxy, "api", 30).await;
        match seen {
            Ok(by) if by.get("api") == Some(&30) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let routes = cp.api_get("/v1/routes").await;
    assert_eq!(
        routes["items"],
        serde_json::json!([]),
        "the owned route is deleted"
    );
    let faults = cp.api_get("/v1/faults").await;
    assert_eq!(
        faults["items"],
        serde_json::json!([]),
        "the FaultInjection is deleted"
    );
    let summaries = chaos_summaries(&cp.history().await);
    assert_eq!(summaries.len(), 2, "{summaries:?}");
    assert!(summaries[0].starts_with("chaos default/api started: abort 30% (503) for 60s"));
    assert!(
        summaries[1].starts_with("chaos default/api ended: steady state broken: api error rate"),
        "{summaries:?}"
    );
    let report = load.stop().await;
    assert!(report.failed > 0, "the fault was injected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_state_that_holds_runs_to_the_deadline_and_restores_the_route() {
    let route = r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: api-route, namespace: default }
spec:
  parentRefs: [ { kind: Service, name: api } ]
  rules:
    - backendRefs: [ { name: api, port: 80 } ]
      timeouts: { request: 5s }
"#
    .to_string();
    let (_api, cp, _proxy, load) = mesh(&[route]).await;
    let before = cp.api_get("/v1/routes/default/api-route").await;
    let out = cp
        .tandemctl(&[
            "chaos",
            "run",
            "api",
            "--delay",
            "20ms",
            "--delay-percent",
            "50%",
            "--for",
            "4s",
            "--max-p99",
            "2s",
            "--max-error-rate",
            "1%",
        ])
        .await;
    let stdout = out.expect_ok("chaos run (holds)");
    assert!(stdout.contains("held"), "{stdout}");
    assert!(
        stdout.contains("steady state held for 4s: api:"),
        "{stdout}"
    );
    let after = cp.api_get("/v1/routes/default/api-route").await;
    assert_eq!(
        after["spec"], before["spec"],
        "the route gets back what it had"
    );
    assert_eq!(
        after["metadata"]["annotations"],
        before["metadata"]["annotations"]
    );
    load.stop()
        .await
        .assert_no_failures("a delay within the timeouts fails nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_an_experiment_at_once_and_bad_requests_are_refused() {
    let (_api, cp, _proxy, load) = mesh(&[]).await;
    let out = cp
        .tandemctl(&[
            "chaos",
            "run",
            "api",
            "--delay",
            "10ms",
            "--for",
            "10m",
            "--max-p99",
            "5s",
            "--detach",
        ])
        .await;
    out.expect_ok("chaos run --detach");
    let status = cp.tandemctl(&["chaos", "status"]).await;
    assert!(
        status.expect_ok("status").contains("delay 10ms on 100%"),
        "{status:?}"
    );
    let again = cp
        .tandemctl(&[
            "chaos",
            "run",
            "api",
            "--abort",
            "1%",
            "--max-error-rate",
            "5%",
        ])
        .await;
    assert!(
        !again.status.success() && again.stderr.contains("already running"),
        "{again:?}"
    );
    cp.tandemctl(&["chaos", "stop", "api"])
        .await
        .expect_ok("stop");
    let faults = cp.api_get("/v1/faults").await;
    assert_eq!(faults["items"], serde_json::json!([]));
    let one = cp.tandemctl(&["chaos", "status", "api"]).await;
    assert!(one.expect_ok("status api").contains("stopped"), "{one:?}");

    for (args, want) in [
        (
            vec!["chaos", "run", "api", "--max-error-rate", "1%"],
            "a fault is needed",
        ),
        (
            vec!["chaos", "run", "api", "--abort", "5%"],
            "a steady state is needed",
        ),
        (
            vec![
                "chaos",
                "run",
                "ghost",
                "--abort",
                "5%",
                "--max-error-rate",
                "1%",
            ],
            "not found",
        ),
        (
            vec!["chaos", "run", "api", "--abort", "5%", "--max-p99", "1.5x"],
            "absolute limits",
        ),
        (
            vec![
                "chaos",
                "run",
                "api",
                "--abort",
                "5%",
                "--max-error-rate",
                "1%",
                "--for",
                "2h",
            ],
            "duration",
        ),
    ] {
        let out = cp.tandemctl(&args).await;
        assert!(
            !out.status.success() && out.stderr.contains(want),
            "{args:?}: {out:?}"
        );
    }
    load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejected_endpoints_leave_the_callers_balancing_and_come_back_at_the_end() {
    let a = HttpServer::echo("api-a").await;
    let b = HttpServer::echo("api-b").await;
    let cp = ControlPlane::start().await;
    cp.apply_ok(&docs(&[
        service("api"),
        endpoint("api", a.addr()),
        endpoint("api", b.addr()),
    ]))
    .await;
    let proxy = Proxy::start_xds(cp.xds(), "client", &["--workers", "1"]).await;
    eventually(PROPAGATION, "both endpoints answering", || async {
        let by = tandem_tests::mesh::answered_by(&proxy, "api", 40).await;
        (by.len() == 2).then_some(()).ok_or(format!("{by:?}"))
    })
    .await;
    let load = Load::start(&[proxy.outbound()], LoadSpec::new("api"));
    load.wait_more(50, PROPAGATION).await;

    // The lower address is the one chosen.
    let (ejected, kept) = if a.addr() < b.addr() {
        ("api-a", "api-b")
    } else {
        ("api-b", "api-a")
    };
    let out = cp
        .tandemctl(&[
            "chaos",
            "run",
            "api",
            "--eject",
            "1",
            "--for",
            "4s",
            "--max-error-rate",
            "5%",
            "--detach",
        ])
        .await;
    let text = out.expect_ok("chaos run --eject");
    assert!(text.contains("eject 1 endpoint(s) of api"), "{text}");
    // While it runs, only the kept endpoint answers.
    eventually(PROPAGATION, "the endpoint ejected", || async {
        let by = tandem_tests::mesh::answered_by(&proxy, "api", 20).await;
        (by.get(kept) == Some(&20))
            .then_some(())
            .ok_or(format!("{by:?}"))
    })
    .await;
    let status = cp.tandemctl(&["chaos", "status", "api"]).await;
    assert!(
        status.stdout.contains(&format!(
            "{}",
            if ejected == "api-a" {
                a.addr()
            } else {
                b.addr()
            }
        )),
        "{status:?}"
    );
    // At the deadline it ends by itself and both answer again.
    eventually(Duration::from_secs(20), "the endpoint back", || async {
        let by = tandem_tests::mesh::answered_by(&proxy, "api", 40).await;
        (by.get(ejected).is_some_and(|n| *n > 0))
            .then_some(())
            .ok_or(format!("{by:?}"))
    })
    .await;
    let summaries = chaos_summaries(&cp.history().await);
    assert!(
        summaries
            .iter()
            .any(|s| s.starts_with("chaos default/api ended: steady state held")),
        "{summaries:?}"
    );
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "no request failed: {report:?}");
}
