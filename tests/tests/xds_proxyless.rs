//! Proxyless gRPC: a grpcio client resolves `xds:///echo` from the control plane itself
//! (no sidecar) and splits its calls by the HTTPRoute's weights.
//!
//! Needs Python 3 with grpcio (see `tandem_tests::proxyless`); skipped, saying why, only
//! when pip cannot reach the package index.

// Test helpers panic on failure by design, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tandem_tests::control_plane::ControlPlane;
use tandem_tests::mesh::{docs, endpoint, service_with_protocol, split_route};
use tandem_tests::proxyless::{self, PyBackend};

const CALLS: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_proxyless_grpc_client_follows_the_weighted_route() {
    let python = match tokio::task::spawn_blocking(proxyless::python)
        .await
        .expect("python setup task")
    {
        Ok(python) => python,
        Err(why) => {
            eprintln!(
                "SKIPPED xds_proxyless_grpc_client_follows_the_weighted_route: {}",
                why.0
            );
            return;
        }
    };
    let (a, b) = tokio::join!(
        PyBackend::start(&python, "echo-a"),
        PyBackend::start(&python, "echo-b")
    );
    let cp = ControlPlane::start().await;
    cp.apply_ok(&docs(&[
        service_with_protocol("echo", "grpc"),
        service_with_protocol("echo-a", "grpc"),
        service_with_protocol("echo-b", "grpc"),
        endpoint("echo-a", a.addr()),
        endpoint("echo-b", b.addr()),
        split_route("echo-split", "echo", &[("echo-a", 70), ("echo-b", 30)]),
    ]))
    .await;

    let bootstrap = proxyless::bootstrap(cp.xds(), "proxyless-test");
    let result =
        proxyless::run_client(&python, &bootstrap, "echo", CALLS, Duration::from_secs(120)).await;
    eprintln!("client.py: {result}");
    let count = |k: &str| result[k].as_u64().unwrap_or(0);
    assert_eq!(count("errors"), 0, "no failed call: {result}");
    assert_eq!(
        count("echo-a") + count("echo-b"),
        u64::from(CALLS),
        "every call answered by echo-a or echo-b: {result}"
    );
    let share_a = count("echo-a") as f64 * 100.0 / f64::from(CALLS);
    assert!(
        (65.0..=75.0).contains(&share_a),
        "echo-a got {share_a:.1}% of the calls, want 70 ± 5: {result}"
    );
}
