//! Watches every running experiment once per [`ANALYSIS_INTERVAL`]: the steady-state
//! services' figures since the start (the callers' view, from the proxies' metrics)
//! judged by [`crate::canary::guard::judge`], and the experiment ended — fault removed
//! and routes restored in one revision whose summary says why — at the first breach or
//! at its deadline. `POST /v1/chaos/.../stop` ends it early the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::{plan_end, running, Experiment};
use crate::canary::controller::{ActError, ANALYSIS_INTERVAL};
use crate::canary::guard::{judge, Decision, Figures};
use crate::edits::{Edit, Edits};
use crate::resources::Kind;
use crate::store::{Store, StoreError};
use crate::telemetry::{Group, Telemetry, RETENTION};

/// `who` of the experiments' revisions.
pub const WHO_CHAOS: &str = "chaos";

/// The last word on each experiment, for `chaos status` and a waiting `chaos run`.
#[derive(Debug, Default)]
pub struct Verdicts(Mutex<BTreeMap<String, Verdict>>);

/// How an experiment stands or ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// When (Unix seconds).
    pub at: u64,
    /// `running`, `held` (the time is up, the steady state held), `broken` (ended at a
    /// breach) or `stopped` (by a person).
    pub state: &'static str,
    /// Why, with the figures.
    pub reason: String,
    /// The revision that ended it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

impl Verdicts {
    /// The latest verdict on `namespace/service`.
    pub fn get(&self, id: &str) -> Option<Verdict> {
        self.0.lock().ok()?.get(id).cloned()
    }

    /// Records a verdict.
    pub fn set(&self, id: &str, v: Verdict) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(id.to_string(), v);
        }
    }
}

/// Every experiment stored (FaultInjections with the chaos annotations).
pub fn experiments(store: &Store) -> Result<BTreeMap<String, Experiment>, StoreError> {
    let faults: Vec<_> = store
        .list(Kind::FaultInjection, None)?
        .into_iter()
        .map(|r| r.doc)
        .collect();
    Ok(running(&faults))
}

/// Ends `experiment` as one revision by [`WHO_CHAOS`] (in Kubernetes mode, one edit of
/// the cluster, mirrored back): `summary` says why.
pub async fn end(
    store: &Arc<Store>,
    edits: &Edits,
    experiment: &Experiment,
    summary: &str,
) -> Result<u64, ActError> {
    let s = store.clone();
    let ns = experiment.namespace.clone();
    let (routes, faults) = tokio::task::spawn_blocking(move || {
        let docs = |kind| -> Result<Vec<Value>, StoreError> {
            Ok(s.list(kind, Some(&ns))?
                .into_iter()
                .map(|r| r.doc)
                .collect())
        };
        Ok::<_, StoreError>((docs(Kind::HttpRoute)?, docs(Kind::FaultInjection)?))
    })
    .await
    .map_err(|e| ActError::Invalid(e.to_string()))??;
    let (documents, deletes) = plan_end(&experiment.namespace, &experiment.service, &routes);
    let mut read = routes;
    read.extend(faults);
    let edit = Edit {
        documents,
        deletes,
        read,
    };
    Ok(edits.apply(store, edit, WHO_CHAOS, summary).await?.revision)
}

/// Judges every running experiment each [`ANALYSIS_INTERVAL`], forever (in Kubernetes
/// mode, while this replica holds the Lease: `leader`).
pub async fn run(
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    verdicts: Arc<Verdicts>,
    edits: Edits,
    leader: Option<watch::Receiver<bool>>,
) {
    let mut tick = tokio::time::interval(ANALYSIS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if leader.as_ref().is_some_and(|l| !*l.borrow()) {
            continue;
        }
        let s = store.clone();
        let found = match tokio::task::spawn_blocking(move || experiments(&s)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "chaos: cannot read the experiments");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "chaos: the read failed");
                continue;
            }
        };
        if found.is_empty() {
            continue;
        }
        telemetry.hurry();
        for experiment in found.into_values() {
            if let Err(e) = judge_one(&store, &telemetry, &verdicts, &edits, &experiment).await {
                tracing::warn!(experiment = %experiment.id(), error = %e, "chaos");
            }
        }
    }
}

/// What one look at an experiment concludes.
#[derive(Debug, Clone, PartialEq)]
pub enum Look {
    /// Keep going; the figures so far.
    Steady(String),
    /// The steady state broke: end now.
    Broken(String),
    /// The time is up with the steady state intact.
    Held(String),
}

/// Judges `experiment` at `now` on `stats` (per called service, since its start).
pub fn look(
    experiment: &Experiment,
    stats: &BTreeMap<String, crate::telemetry::BackendStats>,
    now: u64,
) -> Look {
    let elapsed = Duration::from_secs(now.saturating_sub(experiment.started));
    let mut so_far = Vec::new();
    for service in &experiment.steady_state {
        let figures = stats
            .get(service)
            .map(Figures::from_stats)
            .unwrap_or_default();
        // Judged as a canary in its only step that never promotes: a breach is a
        // rollback, anything else a hold.
        match judge(
            &experiment.guard,
            service,
            &figures,
            &Figures::default(),
            Duration::ZERO,
            false,
        ) {
            Decision::RollBack(why) => return Look::Broken(why),
            _ => so_far.push(format!(
                "{service}: {} requests, error rate {}{}",
                figures.requests.round(),
                crate::canary::guard::percent(figures.error_rate()),
                figures
                    .p99_seconds
                    .map(|p| format!(", p99 {:.0}ms", p * 1e3))
                    .unwrap_or_default()
            )),
        }
    }
    let text = so_far.join("; ");
    if elapsed >= experiment.duration {
        Look::Held(format!(
            "steady state held for {}s: {text}",
            experiment.duration.as_secs()
        ))
    } else {
        Look::Steady(text)
    }
}

async fn judge_one(
    store: &Arc<Store>,
    telemetry: &Telemetry,
    verdicts: &Verdicts,
    edits: &Edits,
    experiment: &Experiment,
) -> Result<(), ActError> {
    let now = crate::resources::clock::unix_now();
    let elapsed = Duration::from_secs(now.saturating_sub(experiment.started));
    let window = elapsed.clamp(ANALYSIS_INTERVAL, RETENTION);
    let stats = telemetry.stats_by(window, Group::Service).backends;
    let id = experiment.id();
    let (state, reason) = match look(experiment, &stats, now) {
        Look::Steady(text) => {
            verdicts.set(
                &id,
                Verdict {
                    at: now,
                    state: "running",
                    reason: format!(
                        "{}s of {}s; {text}",
                        elapsed.as_secs(),
                        experiment.duration.as_secs()
                    ),
                    revision: None,
                },
            );
            return Ok(());
        }
        Look::Broken(why) => ("broken", format!("steady state broken: {why}")),
        Look::Held(why) => ("held", why),
    };
    let summary = format!("chaos {id} ended: {reason}");
    // Under the lock canary actions and `chaos stop` take: all of them edit routes.
    let _serial = crate::canary::controller::ACTIONS.lock().await;
    let revision = end(store, edits, experiment, &summary).await?;
    tracing::info!(experiment = %id, state, revision, %reason, "chaos experiment ended");
    verdicts.set(
        &id,
        Verdict {
            at: now,
            state,
            reason,
            revision: Some(revision),
        },
    );
    Ok(())
}
