//! Which replica does the once-only work (route status writes now; CA rotation and the
//! canary controller later): the holder of the `coordination.k8s.io/v1` Lease
//! `tandem-control-plane` in the control plane's namespace.
//!
//! Every replica tries every third of the lease duration: the holder renews; another
//! replica takes the lease only once it has not been renewed for a whole duration. Every
//! write carries the resourceVersion it read, so two replicas racing for an expired lease
//! cannot both win (the API server answers the loser 409 Conflict). A holder that cannot
//! renew steps down on its own once its last renewal is a duration old, before another can
//! take over, so two replicas never both believe they lead.

use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::resources::clock::{parse_rfc3339, rfc3339_micro, unix_now};

/// The Lease's name.
pub const LEASE_NAME: &str = "tandem-control-plane";

/// Who competes for the lease, where, and for how long a lease holds.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The control plane's namespace.
    pub namespace: String,
    /// This replica's name (its pod name in a cluster).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
}

/// Competes for the lease until the process exits, publishing whether this replica holds
/// it on `leader`.
pub async fn run(client: kube::Client, config: LeaseConfig, leader: watch::Sender<bool>) {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client, &config.namespace, &lease_resource());
    let period = (config.duration / 3).max(Duration::from_millis(200));
    let mut renewed: Option<Instant> = None;
    loop {
        match attempt(&api, &config).await {
            Ok(true) => renewed = Some(Instant::now()),
            Ok(false) => renewed = None,
            Err(e) => tracing::warn!(error = %e, "lease: the API call failed"),
        }
        // Stepping down a round before the lease can expire for the others: the lease's
        // renewTime has whole seconds, so another replica may see it expire up to a
        // second early.
        let holds = renewed.is_some_and(|at| at.elapsed() < config.duration.saturating_sub(period));
        if leader.send_replace(holds) != holds {
            tracing::info!(identity = %config.identity, leader = holds, "lease {}", if holds { "acquired" } else { "lost" });
        }
        tokio::time::sleep(period).await;
    }
}

/// One round: takes or renews the lease if it may; whether this replica holds it now.
async fn attempt(api: &Api<DynamicObject>, config: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = unix_now();
    let seconds = i64::try_from(config.duration.as_secs().max(1)).unwrap_or(i64::MAX);
    let current = match api.get_opt(LEASE_NAME).await? {
        None => {
            let lease = lease_object(
                config,
                &json!({
                    "holderIdentity": config.identity,
                    "leaseDurationSeconds": seconds,
                    "acquireTime": rfc3339_micro(now),
                    "renewTime": rfc3339_micro(now),
                    "leaseTransitions": 0,
                }),
            );
            return created(api.create(&PostParams::default(), &lease).await);
        }
        Some(l) => l,
    };
    let spec = current
        .data
        .get("spec")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let holder = spec["holderIdentity"].as_str().unwrap_or_default();
    let renewed = spec["renewTime"]
        .as_str()
        .and_then(parse_rfc3339)
        .unwrap_or(0);
    let held_for = spec["leaseDurationSeconds"].as_u64().unwrap_or(0);
    let mine = holder == config.identity;
    let expired = holder.is_empty() || now >= renewed.saturating_add(held_for);
    if !mine && !expired {
        return Ok(false);
    }
    let mut spec = spec;
    spec["holderIdentity"] = json!(config.identity);
    spec["leaseDurationSeconds"] = json!(seconds);
    spec["renewTime"] = json!(rfc3339_micro(now));
    if !mine {
        spec["acquireTime"] = json!(rfc3339_micro(now));
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0);
        spec["leaseTransitions"] = json!(transitions + 1);
    }
    let mut next = lease_object(config, &spec);
    next.metadata.resource_version = current.metadata.resource_version.clone();
    created(api.replace(LEASE_NAME, &PostParams::default(), &next).await)
}

/// A lease write's outcome: written, or lost to another replica (409).
fn created(result: Result<DynamicObject, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// `coordination.k8s.io/v1` `leases`.
fn lease_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
        "leases",
    )
}

fn lease_object(config: &LeaseConfig, spec: &Value) -> DynamicObject {
    let mut lease = DynamicObject::new(LEASE_NAME, &lease_resource()).within(&config.namespace);
    lease.data = json!({"spec": spec});
    lease
}
