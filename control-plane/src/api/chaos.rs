//! `/v1/chaos`: chaos experiments over the REST API.
//!
//! - `GET /v1/chaos` → `{"items": [experiment...]}`: the running experiments.
//! - `GET /v1/chaos/{namespace}/{service}` → the experiment (running, or how the last one
//!   ended: `verdict.state` `held` | `broken` | `stopped`), 404 if there never was one
//!   since the control plane started and none runs.
//! - `POST /v1/chaos/{namespace}/{service}` with a [`ChaosSpec`] → starts it (one
//!   revision: the FaultInjection and the routes that carry it); 409 if one runs.
//! - `POST /v1/chaos/{namespace}/{service}/stop` → ends it now (one revision).
//!
//! In Kubernetes mode the experiment's FaultInjection and route edits are written to the
//! cluster (which owns those kinds there) and mirrored back; the controller runs on the
//! Lease holder.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::request::{blocking, body};
use super::{ApiError, ApiState, Call};
use crate::canary::controller::{read_world, ACTIONS};
use crate::chaos::controller::{end, experiments, Verdict};
use crate::chaos::{plan_start, ChaosError, ChaosSpec, Experiment, Instance};
use crate::edits::Edit;
use crate::resources::validate::{dns_label, validate_documents};
use crate::store::WHO_API;

type Answer = Result<(StatusCode, Option<Value>), ApiError>;

/// Handles `/v1/chaos` and below (`rest`: the segments after `chaos`).
pub(crate) async fn handle(state: &ApiState, call: &Call, rest: &[&str]) -> Answer {
    match (rest, &call.method) {
        ([], &Method::GET) => list(state).await,
        ([ns, svc], &Method::GET) => {
            names(ns, svc)?;
            one(state, ns, svc).await
        }
        ([ns, svc], &Method::POST) => {
            names(ns, svc)?;
            start(state, call, ns, svc).await
        }
        ([ns, svc, "stop"], &Method::POST) => {
            names(ns, svc)?;
            stop(state, ns, svc).await
        }
        ([] | [_, _] | [_, _, "stop"], _) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NotFound(format!("no route {}", call.path))),
    }
}

fn names(ns: &str, svc: &str) -> Result<(), ApiError> {
    dns_label("namespace", ns)?;
    dns_label("service", svc)?;
    Ok(())
}

fn experiment_json(e: &Experiment, verdict: Option<Verdict>) -> Value {
    json!({
        "service": e.id(),
        "fault": e.fault,
        "description": e.describe(),
        "started": crate::resources::clock::rfc3339(e.started),
        "durationSeconds": e.duration.as_secs(),
        "endsIn": e.deadline().saturating_sub(crate::resources::clock::unix_now()),
        "steadyState": e.steady_state,
        "objectives": e.objectives(),
        "verdict": verdict,
    })
}

async fn list(state: &ApiState) -> Answer {
    let found = blocking(state, experiments).await?;
    let items: Vec<Value> = found
        .values()
        .map(|e| experiment_json(e, state.chaos.get(&e.id())))
        .collect();
    Ok((StatusCode::OK, Some(json!({ "items": items }))))
}

async fn one(state: &ApiState, ns: &str, svc: &str) -> Answer {
    let id = format!("{ns}/{svc}");
    let found = blocking(state, experiments).await?;
    let verdict = state.chaos.get(&id);
    match (found.get(&id), verdict) {
        (Some(e), v) => Ok((StatusCode::OK, Some(experiment_json(e, v)))),
        (None, Some(v)) => Ok((StatusCode::OK, Some(json!({"service": id, "verdict": v})))),
        (None, None) => Err(ChaosError::NotRunning(id).into()),
    }
}

async fn start(state: &ApiState, call: &Call, ns: &str, svc: &str) -> Answer {
    let spec: ChaosSpec = body(call)?;
    // One planner at a time, canary actions included: both edit the same routes.
    let _serial = ACTIONS.lock().await;
    let id = format!("{ns}/{svc}");
    if blocking(state, experiments).await?.contains_key(&id) {
        return Err(ChaosError::Running(id, svc.to_string()).into());
    }
    let namespace = ns.to_string();
    let world = blocking(state, move |s| read_world(s, &namespace)).await?;
    let instances = match spec.eject {
        Some(_) => {
            let (namespace, service) = (ns.to_string(), svc.to_string());
            blocking(state, move |s| instances(s, &namespace, &service)).await?
        }
        None => Vec::new(),
    };
    let now = crate::resources::clock::unix_now();
    let docs = plan_start(&world.target(ns, svc), &spec, &instances, now)?;
    let experiment = validate_documents(docs.clone())?
        .iter()
        .find_map(|r| Experiment::from_fault(&r.doc))
        .ok_or_else(|| ApiError::Internal("the planned experiment is unreadable".into()))?;
    let what = format!("chaos {id} started: {}", experiment.describe());
    // In Kubernetes mode the FaultInjection and the route edits go to the cluster.
    let edit = Edit {
        documents: docs,
        deletes: Vec::new(),
        read: world.routes.clone(),
    };
    let outcome = state
        .edits
        .apply(&state.store, edit, WHO_API, &what)
        .await?;
    state.telemetry.hurry();
    state.chaos.set(
        &id,
        Verdict {
            at: now,
            state: "running",
            reason: "started".into(),
            revision: None,
        },
    );
    tracing::info!(experiment = %id, revision = outcome.revision, "chaos experiment started");
    let mut answer = experiment_json(&experiment, state.chaos.get(&id));
    answer["revision"] = json!(outcome.revision);
    Ok((StatusCode::OK, Some(answer)))
}

/// The endpoints of `namespace/service`, as the planner chooses among them.
fn instances(
    store: &crate::store::Store,
    namespace: &str,
    service: &str,
) -> Result<Vec<Instance>, crate::store::StoreError> {
    let mut out = Vec::new();
    for r in store.list(crate::resources::Kind::Endpoint, Some(namespace))? {
        let e = crate::resources::domain::endpoint(&r.doc)?;
        if e.service.name == service {
            out.push(Instance {
                address: e.address.to_string(),
                labels: e.labels,
            });
        }
    }
    Ok(out)
}

async fn stop(state: &ApiState, ns: &str, svc: &str) -> Answer {
    let _serial = ACTIONS.lock().await;
    let id = format!("{ns}/{svc}");
    let found = blocking(state, experiments).await?;
    let experiment = found
        .get(&id)
        .cloned()
        .ok_or_else(|| ChaosError::NotRunning(id.clone()))?;
    let reason = "stopped by hand".to_string();
    let summary = format!("chaos {id} ended: {reason}");
    let revision = end(&state.store, &state.edits, &experiment, &summary).await?;
    let verdict = Verdict {
        at: crate::resources::clock::unix_now(),
        state: "stopped",
        reason,
        revision: Some(revision),
    };
    state.chaos.set(&id, verdict.clone());
    Ok((
        StatusCode::OK,
        Some(json!({"service": id, "revision": revision, "verdict": verdict})),
    ))
}
