//! The guarded-canary controller: once per [`ANALYSIS_INTERVAL`] it finds every running
//! canary started with objectives, judges it on the proxies' metrics since its step began
//! ([`super::guard::judge`]), and acts — next step, promotion, or rollback to 100% stable
//! — as one store revision whose summary says why, with the figures
//! (`tandemctl history`). The state it works from is the routes' annotations, so a
//! restarted control plane picks every canary up where it was.
//!
//! While a guarded canary runs, the scraper reads the proxies every second
//! ([`Telemetry::hurry`]), so a breach is acted on about two seconds after the requests
//! that show it. A person can still `set`, `step`, `pause`, `resume`, `promote` or
//! `abort`: every action, the controller's included, plans under one lock from the state
//! the previous left.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::guard::{judge, Decision, Figures};
use super::{Action, CanaryError, Phase, Plan, Target, AUTO_ANNOTATION, STATE_ANNOTATION};
use crate::edits::{Edit, EditError, Edits};
use crate::resources::{domain, Kind};
use crate::store::{Store, StoreError};
use crate::telemetry::{Telemetry, RETENTION};

/// How often running guarded canaries are judged.
pub const ANALYSIS_INTERVAL: Duration = Duration::from_secs(1);
/// `who` of the controller's revisions.
pub const WHO_CONTROLLER: &str = "canary-controller";

/// Serializes canary actions (the API's and the controller's): plan and apply happen
/// under it, so an action always plans from the state the previous one left.
pub static ACTIONS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What a plan needs from the store: the namespace's services (with their first port)
/// and every HTTPRoute document.
#[derive(Debug)]
pub struct World {
    /// Services of the namespace by name, with their first port.
    pub services: BTreeMap<String, Option<u16>>,
    /// Every HTTPRoute document.
    pub routes: Vec<Value>,
}

impl World {
    /// The target `namespace/service` in this world.
    pub fn target<'a>(&'a self, namespace: &'a str, service: &'a str) -> Target<'a> {
        Target {
            namespace,
            service,
            services: &self.services,
            routes: &self.routes,
        }
    }
}

/// Reads what planning a canary of `namespace` needs.
pub fn read_world(store: &Store, namespace: &str) -> Result<World, StoreError> {
    let mut services = BTreeMap::new();
    for s in store.list(Kind::Service, Some(namespace))? {
        let port = domain::service(&s.doc)
            .ok()
            .and_then(|svc| svc.ports.first().map(|p| p.port));
        services.insert(s.key.name.clone(), port);
    }
    let routes = store
        .list(Kind::HttpRoute, None)?
        .into_iter()
        .map(|r| r.doc)
        .collect();
    Ok(World { services, routes })
}

/// Why an action could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// The action does not fit the canary's state.
    #[error(transparent)]
    Canary(#[from] CanaryError),
    /// The planned documents do not validate, or the store refused them.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A planned document does not validate (a bug: plans edit valid routes).
    #[error("{0}")]
    Invalid(String),
    /// The edit was not made (in Kubernetes mode: the cluster refused it, changed
    /// meanwhile, or was not reachable).
    #[error(transparent)]
    Edit(#[from] EditError),
}

/// The edit that carries out `plan`, planned from `world`'s routes.
pub fn edit_of(plan: &Plan, world: &World) -> Edit {
    Edit {
        documents: plan.documents.clone(),
        deletes: Vec::new(),
        read: world.routes.clone(),
    }
}

/// The controller's latest judgement of each guarded canary, for `canary status`.
#[derive(Debug, Default)]
pub struct Judgements(Mutex<BTreeMap<String, Judgement>>);

/// One judgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    /// When (Unix seconds).
    pub at: u64,
    /// `hold`, `advance`, `promote` or `rollback`.
    pub decision: &'static str,
    /// Why, with the figures.
    pub reason: String,
}

impl Judgements {
    /// The latest judgement of `namespace/service`.
    pub fn get(&self, id: &str) -> Option<Judgement> {
        self.0.lock().ok()?.get(id).cloned()
    }

    fn set(&self, id: &str, j: Judgement) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(id.to_string(), j);
        }
    }

    fn retain(&self, ids: &BTreeSet<String>) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|k, _| ids.contains(k));
        }
    }
}

/// What the controller works with.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Where the routes are read.
    pub store: Arc<Store>,
    /// The proxies' metrics.
    pub telemetry: Arc<Telemetry>,
    /// Where its latest judgements are kept.
    pub judgements: Arc<Judgements>,
    /// Where its decisions are written.
    pub edits: Edits,
    /// Kubernetes mode: whether this replica holds the Lease (only the holder acts).
    pub leader: Option<watch::Receiver<bool>>,
}

/// Judges every running guarded canary each [`ANALYSIS_INTERVAL`], forever (in
/// Kubernetes mode, while this replica holds the Lease).
pub async fn run(c: Controller) {
    let Controller {
        store,
        telemetry,
        judgements,
        edits,
        leader,
    } = c;
    let mut tick = tokio::time::interval(ANALYSIS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if leader.as_ref().is_some_and(|l| !*l.borrow()) {
            judgements.retain(&BTreeSet::new());
            continue;
        }
        let s = store.clone();
        let found = match tokio::task::spawn_blocking(move || guarded(&s)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "canary controller: cannot read the routes");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "canary controller: the read failed");
                continue;
            }
        };
        judgements.retain(&found.iter().map(|(ns, s)| format!("{ns}/{s}")).collect());
        if found.is_empty() {
            continue;
        }
        telemetry.hurry();
        for (namespace, service) in found {
            if let Err(e) = judge_one(
                &store,
                &telemetry,
                &judgements,
                &edits,
                &namespace,
                &service,
            )
            .await
            {
                tracing::warn!(namespace, service, error = %e, "canary controller");
            }
        }
    }
}

/// The parents (namespace, service) of every running guarded canary, from the routes'
/// annotations.
fn guarded(store: &Store) -> Result<BTreeSet<(String, String)>, StoreError> {
    let mut out = BTreeSet::new();
    for r in store.list(Kind::HttpRoute, None)? {
        let a = &r.doc["metadata"]["annotations"];
        if a[STATE_ANNOTATION] != "running" || a[AUTO_ANNOTATION] != "true" {
            continue;
        }
        let own = r.key.namespace.clone();
        for p in r.doc["spec"]["parentRefs"].as_array().into_iter().flatten() {
            if let Some(name) = p["name"].as_str() {
                let ns = p["namespace"].as_str().unwrap_or(&own).to_string();
                out.insert((ns, name.to_string()));
            }
        }
    }
    Ok(out)
}

/// Judges one canary and acts on the judgement.
async fn judge_one(
    store: &Arc<Store>,
    telemetry: &Telemetry,
    judgements: &Judgements,
    edits: &Edits,
    namespace: &str,
    service: &str,
) -> Result<(), ActError> {
    let _serial = ACTIONS.lock().await;
    let s = store.clone();
    let ns = namespace.to_string();
    let world = tokio::task::spawn_blocking(move || read_world(&s, &ns))
        .await
        .map_err(|e| ActError::Invalid(e.to_string()))??;
    let target = world.target(namespace, service);
    let (state, _) = match super::current(&target) {
        Ok(found) => found,
        // Promoted or edited away since the routes were listed.
        Err(CanaryError::NotInProgress(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let Some(guard) = state
        .guard
        .clone()
        .filter(|_| state.phase == Phase::Running)
    else {
        return Ok(());
    };
    let now = crate::resources::clock::unix_now();
    let elapsed = Duration::from_secs(now.saturating_sub(state.step_started.unwrap_or(now)));
    let window = elapsed.clamp(ANALYSIS_INTERVAL, RETENTION);
    let stats = telemetry.stats(window);
    let figures = |name: &str| {
        stats
            .backends
            .get(name)
            .map(Figures::from_stats)
            .unwrap_or_default()
    };
    let decision = judge(
        &guard,
        &state.canary,
        &figures(&state.canary),
        &figures(&state.stable),
        elapsed,
        state.at_last_step(),
    );
    let id = format!("{namespace}/{service}");
    let (name, action, reason) = match decision {
        Decision::Hold(why) => ("hold", None, why),
        Decision::Advance(why) if state.paused => ("hold", None, format!("paused ({why})")),
        Decision::Promote(why) if state.paused => ("hold", None, format!("paused ({why})")),
        Decision::Advance(why) => ("advance", Some(Action::Step {}), why),
        Decision::Promote(why) => ("promote", Some(Action::Promote {}), why),
        Decision::RollBack(why) => ("rollback", Some(Action::Abort {}), why),
    };
    judgements.set(
        &id,
        Judgement {
            at: now,
            decision: name,
            reason: reason.clone(),
        },
    );
    let Some(action) = action else {
        return Ok(());
    };
    let plan = super::plan_at(&target, &action, now)?;
    let what = match &action {
        Action::Step {} => format!(
            "canary {id} stepped to {}%: {reason}",
            plan.state.as_ref().map_or(0, |s| s.percent)
        ),
        Action::Promote {} => format!("canary {id} promoted: {reason}"),
        _ => format!("canary {id} rolled back: {reason}"),
    };
    let outcome = edits
        .apply(store, edit_of(&plan, &world), WHO_CONTROLLER, &what)
        .await?;
    tracing::info!(
        namespace,
        service,
        decision = name,
        revision = outcome.revision,
        %reason,
        "guarded canary"
    );
    Ok(())
}
