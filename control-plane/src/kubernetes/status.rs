//! Route status written back to the cluster, the Gateway API way: one entry under
//! `status.parents` per parent Service, `controllerName: tandem.dev/mesh`, with the
//! `Accepted` and `ResolvedRefs` conditions of [`crate::resources::status`]. A route that
//! does not validate gets `Accepted: False` with reason `UnsupportedValue` and the field
//! path. Entries of other controllers are kept; a condition keeps its
//! `lastTransitionTime` while its status and reason stay the same; nothing is written
//! when nothing changed, so the status writes caused by this writer's own updates end
//! there.
//!
//! It recomputes whenever the mirrored routes or the store (which the routes' references
//! resolve against) change, and when this replica becomes the Lease holder; only the
//! holder writes ([`super::lease`]).

use std::sync::Arc;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::kinds::MIRRORED;
use super::mirror::Published;
use crate::resources::clock::{rfc3339, unix_now};
use crate::resources::status::{self, CONTROLLER_NAME};
use crate::store::Store;

/// Writes status until the process exits, while `leader` says this replica holds the
/// Lease.
pub async fn run(
    client: kube::Client,
    store: Arc<Store>,
    mut published: watch::Receiver<Published>,
    mut leader: watch::Receiver<bool>,
) {
    let mut head = store.subscribe();
    loop {
        tokio::select! {
            changed = published.changed() => if changed.is_err() { return },
            changed = head.changed() => if changed.is_err() { return },
            changed = leader.changed() => if changed.is_err() { return },
        }
        if !*leader.borrow_and_update() {
            continue;
        }
        let snapshot = published.borrow_and_update().clone();
        head.borrow_and_update();
        let world = {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.route_world()).await {
                Ok(Ok(world)) => world,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "route status: cannot read the store");
                    continue;
                }
                Err(_) => continue,
            }
        };
        for (i, object) in &snapshot.routes {
            if let Err(e) = write(&client, *i, object, &snapshot, &world).await {
                tracing::warn!(error = %e, "route status: write failed");
            }
        }
    }
}

/// Writes one route's status if ours changed.
async fn write(
    client: &kube::Client,
    i: usize,
    object: &Value,
    snapshot: &Published,
    world: &status::World,
) -> Result<(), kube::Error> {
    let m = &MIRRORED[i];
    let meta = &object["metadata"];
    let (Some(ns), Some(name)) = (meta["namespace"].as_str(), meta["name"].as_str()) else {
        return Ok(());
    };
    let generation = meta["generation"].as_u64().unwrap_or(0);
    let current = object["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let error = snapshot
        .errors
        .get(&(m.kind, ns.to_string(), name.to_string()));
    let mut ours = match error {
        None => status::route_status(object, world, generation),
        Some(message) => rejected(object, message, generation),
    };
    keep_transition_times(&mut ours, &current);
    let mine = |p: &&Value| p["controllerName"] == CONTROLLER_NAME;
    let before: Vec<&Value> = current.iter().filter(mine).collect();
    let after: Vec<&Value> = ours
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    if before == after {
        return Ok(());
    }
    let mut parents: Vec<Value> = current.iter().filter(|p| !mine(p)).cloned().collect();
    parents.extend(after.into_iter().cloned());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &m.api_resource());
    let patch = json!({"status": {"parents": parents}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::debug!(kind = m.name, namespace = ns, name, "route status written");
    Ok(())
}

/// The status of a route that did not validate: not accepted by any parent, with why.
fn rejected(object: &Value, message: &str, generation: u64) -> Value {
    let parents = object["spec"]["parentRefs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Value::Array(
        parents
            .into_iter()
            .map(|parent| {
                json!({
                    "parentRef": parent,
                    "controllerName": CONTROLLER_NAME,
                    "conditions": [{
                        "type": "Accepted",
                        "status": "False",
                        "reason": "UnsupportedValue",
                        "message": format!("not applied, the previous version (if any) keeps serving: {message}"),
                        "observedGeneration": generation,
                    }],
                })
            })
            .collect(),
    )
}

/// Gives every condition a `lastTransitionTime` (Gateway API requires one): the one it
/// had while its status and reason are unchanged, else now.
fn keep_transition_times(ours: &mut Value, current: &[Value]) {
    let now = rfc3339(unix_now());
    let Some(parents) = ours.as_array_mut() else {
        return;
    };
    for p in parents {
        let previous = current
            .iter()
            .find(|c| c["controllerName"] == CONTROLLER_NAME && c["parentRef"] == p["parentRef"]);
        for c in p["conditions"].as_array_mut().into_iter().flatten() {
            let same = previous
                .and_then(|prev| prev["conditions"].as_array())
                .and_then(|cs| cs.iter().find(|o| o["type"] == c["type"]))
                .filter(|o| o["status"] == c["status"] && o["reason"] == c["reason"]);
            let time = same
                .and_then(|o| o["lastTransitionTime"].as_str())
                .map_or_else(|| now.clone(), str::to_string);
            c["lastTransitionTime"] = Value::String(time);
        }
    }
}
