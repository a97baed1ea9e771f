//! Support library for Tandem's integration tests.
//!
//! The tests start the real `tandem-proxy` binary ([`proxy::Proxy`]) in front of real
//! servers bound to `127.0.0.1:0` ([`upstream`], [`tcp`], [`grpc`]) and talk to it with
//! ordinary clients ([`client`], [`raw`]). Nothing listens on a fixed port, every wait is
//! bounded, and readiness is signalled (the proxy's ready line, request counters), never
//! guessed with sleeps.
//!
//! Helpers panic with context instead of returning errors: a failed helper is a failed
//! test, and the message says what was expected. A test that panics while a [`Proxy`] is
//! alive prints the proxy's stderr.
//!
//! The xDS tests (`tests/xds_*.rs`) add the real control plane
//! ([`control_plane::ControlPlane`], driven through `tandemctl` and its REST API), a fake
//! ADS server that can put invalid resources on the wire ([`fake_ads`]), bounded background
//! load ([`load`]), and proxyless gRPC clients in Python ([`proxyless`]).
//!
//! Run with `cargo nextest run -p tandem-tests` (or `cargo test -p tandem-tests`). The
//! first use of a binary in a test process runs `cargo build -p PACKAGE --bin NAME` so a
//! stale binary is never tested ([`bins`]). Environment:
//! - `TANDEM_PROXY_BIN`, `TANDEM_CONTROL_PLANE_BIN`, `TANDEMCTL_BIN`: test these binaries
//!   instead (nothing is built);
//! - `TANDEM_TEST_LOG=FILTER`: pass `--log FILTER` to every proxy and control plane;
//! - `TANDEM_TEST_PYTHON=PATH`: a Python with grpcio for the proxyless tests.

// Test support: panicking with a message is how a helper reports a failed expectation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod bins;
pub mod client;
pub mod control_plane;
pub mod fake_ads;
pub mod grafana;
pub mod grpc;
pub mod kube_api;
pub mod kube_validate;
pub mod load;
pub mod mesh;

pub mod metrics;
pub mod otlp;
pub mod pods;
pub mod promql;
pub mod proxy;
pub mod proxyless;
pub mod raw;
pub mod ready;
pub mod secure_xds;
pub mod tcp;
pub mod traffic;
pub mod upstream;
pub mod zero_trust;

use std::future::Future;
use std::time::Duration;

pub use proxy::Proxy;

/// Default bound for a single exchange in a test (connect, request, response).
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `fut` for at most `limit`, panicking with `what` when it takes longer.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
///
/// Panics with `what` and the last observation (formatted by `check` as `Err`) on timeout.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?}: {what}; last observation: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends everything `pipe` yields to `sink` until it closes (a child's stderr, say), in a
/// task aborted when the handle is dropped.
pub fn capture<R>(mut pipe: R, sink: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> AbortOnDrop
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    AbortOnDrop(tokio::spawn(async move {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("capture lock")
                .extend_from_slice(&buf[..n]);
        }
    }))
}

/// A spawned task that is aborted when this handle is dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
