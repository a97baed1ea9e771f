//! Steady, bounded background load through proxies, recording every failure.
//!
//! Each target (a proxy's outbound listener) gets two workers: one reusing keep-alive
//! connections (a pooled client, so long-lived connections cross config changes) and one
//! opening a fresh connection per request. A worker sends `GET http://HOST/`, waits
//! [`LoadSpec::interval`], and stops at the first of: [`Load::stop`], its request budget,
//! its time budget. Anything but a `200` within [`STEP_TIMEOUT`] is a failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{client, upstream, STEP_TIMEOUT};

/// Bounds and pacing of a [`Load`].
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// `Host` of every request (the service addressed).
    pub host: String,
    /// Pause between two requests of one worker.
    pub interval: Duration,
    /// Request budget per worker.
    pub max_requests: u64,
    /// Time budget of the whole load.
    pub max_duration: Duration,
}

impl LoadSpec {
    /// Requests to `host`, 10 ms apart per worker, at most 6000 per worker and 90 s.
    pub fn new(host: &str) -> LoadSpec {
        LoadSpec {
            host: host.to_owned(),
            interval: Duration::from_millis(10),
            max_requests: 6000,
            max_duration: Duration::from_secs(90),
        }
    }
}

/// What a load saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Requests answered `200`.
    pub ok: u64,
    /// Requests that failed (error, timeout, non-200).
    pub failed: u64,
    /// The first few failures, described.
    pub failures: Vec<String>,
    /// Successful answers per upstream name, per target.
    pub by_target: BTreeMap<SocketAddr, BTreeMap<String, u64>>,
    /// Whether a worker ran out of its request or time budget before being stopped
    /// (the test's phases took longer than the load was sized for).
    pub exhausted: bool,
    /// When the first failed request was sent.
    pub first_failure: Option<tokio::time::Instant>,
}

impl LoadReport {
    fn merge(&mut self, target: SocketAddr, other: LoadReport) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.exhausted |= other.exhausted;
        self.first_failure = match (self.first_failure, other.first_failure) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for f in other.failures {
            if self.failures.len() < 10 {
                self.failures.push(f);
            }
        }
        let mine = self.by_target.entry(target).or_default();
        for by in other.by_target.into_values() {
            for (server, n) in by {
                *mine.entry(server).or_default() += n;
            }
        }
    }

    /// Answers per upstream name, over all targets.
    pub fn by_server(&self) -> BTreeMap<String, u64> {
        let mut all = BTreeMap::new();
        for by in self.by_target.values() {
            for (server, n) in by {
                *all.entry(server.clone()).or_default() += n;
            }
        }
        all
    }

    /// Panics unless no request failed, some succeeded, and the load was not cut short.
    pub fn assert_no_failures(&self, what: &str) {
        assert!(
            self.failed == 0,
            "{what}: {} of {} requests failed; first failures: {:#?}",
            self.failed,
            self.ok + self.failed,
            self.failures
        );
        assert!(self.ok > 0, "{what}: no request was answered");
        assert!(
            !self.exhausted,
            "{what}: the load ran out of budget before the test finished its steps ({} requests)",
            self.ok
        );
    }
}

/// A running load; [`Load::stop`] ends it and returns the report.
#[derive(Debug)]
pub struct Load {
    stop: watch::Sender<bool>,
    done: Arc<AtomicU64>,
    workers: Vec<(SocketAddr, JoinHandle<LoadReport>)>,
}

impl Load {
    /// Starts two workers per target.
    pub fn start(targets: &[SocketAddr], spec: LoadSpec) -> Load {
        let (stop, stop_rx) = watch::channel(false);
        let done = Arc::new(AtomicU64::new(0));
        let deadline = tokio::time::Instant::now() + spec.max_duration;
        let mut workers = Vec::new();
        for &target in targets {
            for pooled in [true, false] {
                let task = tokio::spawn(worker(
                    target,
                    pooled,
                    spec.clone(),
                    deadline,
                    stop_rx.clone(),
                    done.clone(),
                ));
                workers.push((target, task));
            }
        }
        Load {
            stop,
            done,
            workers,
        }
    }

    /// Requests completed so far (answered or failed).
    pub fn completed(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `n` more requests than now have completed: proof the load
    /// is flowing across whatever the test does in between.
    pub async fn wait_more(&self, n: u64, limit: Duration) {
        let start = self.completed();
        crate::eventually(limit, &format!("{n} more load requests"), || async {
            let c = self.completed();
            if c >= start + n {
                Ok(())
            } else {
                Err(format!("{} completed since", c - start))
            }
        })
        .await;
    }

    /// Stops every worker (after its request in flight) and merges their reports.
    pub async fn stop(self) -> LoadReport {
        self.stop.send_replace(true);
        let mut report = LoadReport::default();
        for (target, task) in self.workers {
            let one = crate::within(STEP_TIMEOUT * 2, "load worker to stop", task)
                .await
                .expect("load worker panicked");
            report.merge(target, one);
        }
        report
    }
}

async fn worker(
    target: SocketAddr,
    pooled: bool,
    spec: LoadSpec,
    deadline: tokio::time::Instant,
    stop: watch::Receiver<bool>,
    done: Arc<AtomicU64>,
) -> LoadReport {
    let pool = client::http1(target);
    let uri = format!("http://{}/", spec.host);
    let mut report = LoadReport::default();
    let mut by = BTreeMap::new();
    let mut sent = 0u64;
    loop {
        if *stop.borrow() {
            break;
        }
        if sent >= spec.max_requests || tokio::time::Instant::now() >= deadline {
            report.exhausted = true;
            break;
        }
        sent += 1;
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(STEP_TIMEOUT, async {
            if pooled {
                client::send(&pool, client::request("GET", &uri, client::empty())).await
            } else {
                client::get_once(target, &spec.host, "/").await
            }
        })
        .await;
        done.fetch_add(1, Ordering::Relaxed);
        let kind = if pooled { "pooled" } else { "fresh" };
        let failure = match result {
            Ok(Ok(resp)) if resp.status() == 200 => {
                let server = client::header(&resp, upstream::SERVER)
                    .unwrap_or("(no x-server)")
                    .to_owned();
                *by.entry(server).or_default() += 1;
                report.ok += 1;
                None
            }
            Ok(Ok(resp)) => Some(format!(
                "{} {:?} {}",
                resp.status(),
                resp.headers().get(client::ERROR_HEADER),
                String::from_utf8_lossy(resp.body()).trim_end()
            )),
            Ok(Err(e)) => Some(format!("error: {e}")),
            Err(_) => Some(format!("no answer within {STEP_TIMEOUT:?}")),
        };
        if let Some(f) = failure {
            report.failed += 1;
            report.first_failure.get_or_insert(started);
            if report.failures.len() < 10 {
                report.failures.push(format!(
                    "{kind} request #{sent} via {target} (took {:?}): {f}",
                    started.elapsed()
                ));
            }
        }
        tokio::time::sleep(spec.interval).await;
    }
    report.by_target.insert(target, by);
    report
}
