//! `/v1/canaries/{namespace}/{service}`: canary releases over the REST API.
//!
//! - `GET` → the canary's state, the current weights and, per backend, request rate,
//!   success rate and p99 from the proxies' metrics (`?window=SECONDS`, default 30).
//! - `POST {"action": "start", "stable", "canary", "steps"?, "auto"?}` | `{"action":
//!   "set", "percent"}` | `{"action": "step"}` | `{"action": "pause"}` | `{"action":
//!   "resume"}` | `{"action": "promote"}` | `{"action": "abort"}` → the state after, with
//!   the revision it made. `auto` (`maxErrorRate`, `maxP99`, `minRequests`, `stepTime`)
//!   makes the canary guarded: the controller ([`crate::canary::controller`]) moves it.
//!   `GET` adds the controller's latest `judgement`.
//!
//! Every action is planned by [`crate::canary`] (pure) and its route documents applied
//! through [`crate::edits`]: one revision covering every touched route, or nothing; in
//! Kubernetes mode, written to the cluster's HTTPRoutes and mirrored back. Actions
//! are serialized by a lock so two canary commands never plan from the same state; a
//! concurrent `apply` of the same routes by hand is last-writer-wins, as any apply.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::request::{blocking, body};
use super::{ApiError, ApiState, Call};
use crate::canary::controller::{edit_of, read_world, ActError, ACTIONS};
use crate::canary::guard::join;
use crate::canary::{self, Action, CanaryState};
use crate::resources::validate::dns_label;
use crate::store::WHO_API;
use crate::telemetry::BackendStats;

type Answer = Result<(StatusCode, Option<Value>), ApiError>;

/// Handles `/v1/canaries/{namespace}/{service}`.
pub(crate) async fn handle(
    state: &ApiState,
    call: &Call,
    namespace: &str,
    service: &str,
) -> Answer {
    dns_label("namespace", namespace)?;
    dns_label("service", service)?;
    match call.method {
        Method::GET => status(state, call, namespace, service).await,
        Method::POST => act(state, call, namespace, service).await,
        _ => Err(ApiError::MethodNotAllowed),
    }
}

async fn act(state: &ApiState, call: &Call, namespace: &str, service: &str) -> Answer {
    let action: Action = body(call)?;
    let _serial = ACTIONS.lock().await;
    let ns = namespace.to_string();
    let world = blocking(state, move |s| read_world(s, &ns)).await?;
    let target = world.target(namespace, service);
    let plan = canary::plan(&target, &action)?;
    if plan.state.as_ref().is_some_and(|s| s.guard.is_some()) {
        // The guard's first judgement needs fresh readings: start them now.
        state.telemetry.hurry();
    }
    let what = format!("canary {namespace}/{service} {}", action.name());
    // In Kubernetes mode the routes are written to the cluster (the mirror brings them
    // back): a canary is the control plane's own edit, as Flagger's are.
    let outcome = state
        .edits
        .apply(&state.store, edit_of(&plan, &world), WHO_API, &what)
        .await
        .map_err(ActError::from)?;
    tracing::info!(
        namespace,
        service,
        action = action.name(),
        revision = outcome.revision,
        "canary"
    );
    Ok((
        StatusCode::OK,
        Some(json!({
            "service": format!("{namespace}/{service}"),
            "action": action.name(),
            "revision": outcome.revision,
            "changed": outcome.changed,
            "state": plan.state.as_ref().map(state_json),
            "routes": plan.routes,
            "weights": plan.weights,
        })),
    ))
}

fn state_json(s: &CanaryState) -> Value {
    let mut v = json!({
        "phase": s.phase,
        "stable": s.stable,
        "canary": s.canary,
        "steps": s.steps,
        "step": s.step,
        "percent": s.percent,
    });
    if let Some(g) = &s.guard {
        v["auto"] = json!({
            "maxErrorRate": join(&g.max_error_rate),
            "maxP99": join(&g.max_p99),
            "minRequests": g.min_requests,
            "stepTimeSeconds": g.step_time.as_secs(),
            "stepStarted": s.step_started.map(crate::resources::clock::rfc3339),
            "paused": s.paused,
        });
    }
    v
}

/// `GET /v1/canaries/{namespace}/{service}`: also what the web page shows of a canary.
pub(crate) async fn status(
    state: &ApiState,
    call: &Call,
    namespace: &str,
    service: &str,
) -> Answer {
    let window = super::stat::window(call)?;
    let ns = namespace.to_string();
    let world = blocking(state, move |s| read_world(s, &ns)).await?;
    let target = world.target(namespace, service);
    let (current, routes) = canary::current(&target)?;
    let weights =
        canary::observed_weights(&target, &current.stable, &current.canary).unwrap_or_default();
    let stats = state.telemetry.stats(window);
    let backend = |name: &str, role: &str| {
        let s: BackendStats = stats.backends.get(name).cloned().unwrap_or_default();
        json!({
            "name": name,
            "role": role,
            "weight": weights.get(name),
            "requests_per_second": s.requests_per_second,
            "requests": s.requests,
            "success_rate": s.success_rate,
            "p99_seconds": s.p99_seconds,
        })
    };
    Ok((
        StatusCode::OK,
        Some(json!({
            "service": format!("{namespace}/{service}"),
            "revision": state.store.head(),
            "state": state_json(&current),
            "routes": routes,
            "weights": weights,
            "judgement": state.judgements.get(&format!("{namespace}/{service}")),
            "backends": [backend(&current.stable, "stable"), backend(&current.canary, "canary")],
            "metrics": {
                "window_seconds": stats.window_seconds,
                "proxies_scraped": stats.proxies_scraped,
                "proxies_reporting": stats.proxies_reporting,
            },
        })),
    ))
}
