//! Kubernetes mode (`--kubernetes`): the cluster is where users write configuration.
//!
//! Services and EndpointSlices are discovery ([`discovery`]). Gateway API `HTTPRoute`s
//! and `GRPCRoute`s (mesh form) and Tandem's own kinds are
//! watched in the cluster ([`mirror`]) and mirrored into the store, owned by the source
//! `kubernetes`, through the same validation as the REST API, so everything downstream
//! (xDS, history, the REST API's reads) works as it does on one machine. An object that
//! does not validate is not mirrored: the version before it keeps serving, and the
//! route's status says why. Route status is written back to the cluster the Gateway API
//! way ([`status`]). Writes of those kinds through the REST API are refused: the cluster
//! is their source of truth. The CA's roots live in a Secret ([`ca_secret`]) that
//! every replica follows; the Lease holder keeps the injector webhook's `caBundle` equal
//! to them ([`webhook_ca`]).

pub mod ca_secret;
pub mod discovery;
pub mod kinds;
pub mod lease;
pub mod mirror;
pub mod status;
pub mod token_review;
pub mod webhook_ca;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

use crate::store::Store;

/// The `tandem.dev/source` of resources mirrored from the cluster.
pub const SOURCE: &str = "kubernetes";
/// Kubernetes' annotation for why an object last changed (`kubectl rollout history`
/// reads it): set on the control plane's own edits in the cluster.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// Why the cluster cannot be reached at startup.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig (or in-cluster configuration) is missing or invalid.
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
    /// The client could not be built.
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from `kubeconfig`, else the environment (`KUBECONFIG`, `~/.kube/config`, or
/// the in-cluster service account).
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| KubeError::Config(e.to_string()))?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Makes the store's resources of `kinds` owned by the cluster exactly `desired`, as one
/// revision (on the blocking pool: the store fsyncs), logging what changed as `what`.
async fn sync(
    store: &Arc<Store>,
    kinds: Vec<crate::resources::Kind>,
    desired: Vec<crate::resources::Resource>,
    what: &'static str,
) {
    let store = store.clone();
    let synced = tokio::task::spawn_blocking(move || {
        let summary = change_causes(&store, &desired);
        store.replace_owned(
            SOURCE,
            &kinds,
            desired,
            crate::store::WHO_KUBERNETES,
            summary.as_deref().unwrap_or(SOURCE),
        )
    })
    .await;
    match synced {
        Ok(Ok(out)) if !out.changed.is_empty() => {
            tracing::info!(
                revision = out.revision,
                changed = out.changed.len(),
                "{what} mirrored from the cluster"
            );
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot mirror the cluster's {what}"),
        Err(e) => tracing::warn!(error = %e, "mirroring the cluster's {what} failed"),
    }
}

/// The `kubernetes.io/change-cause` of each desired object whose cause is new (the
/// control plane's own edits carry one: "canary default/web rolled back: ..."), so the
/// revision that mirrors them says why in `tandemctl history`.
fn change_causes(store: &Store, desired: &[crate::resources::Resource]) -> Option<String> {
    let mut causes: Vec<&str> = Vec::new();
    for r in desired {
        let Some(cause) = r.doc["metadata"]["annotations"][CHANGE_CAUSE].as_str() else {
            continue;
        };
        let before = store.get(&r.key).ok().flatten();
        let old = before
            .as_ref()
            .and_then(|b| b.doc["metadata"]["annotations"][CHANGE_CAUSE].as_str());
        if old != Some(cause) && !causes.contains(&cause) {
            causes.push(cause);
        }
    }
    (!causes.is_empty()).then(|| causes.join("; "))
}

/// What the Lease holder does besides route status.
pub struct LeaderWork {
    /// The mesh CA, whose bundle goes into the webhook's `caBundle`.
    pub ca: Arc<crate::identity::ca::Ca>,
    /// The injector's MutatingWebhookConfiguration (`None`: leave `caBundle` alone).
    pub webhook: Option<String>,
}

/// Starts mirroring the cluster's configuration into `store` (every replica), competing
/// for the Lease, and, on the Lease holder only, writing route status back and keeping
/// the webhook's `caBundle`; runs until the process exits. Returns whether this replica
/// holds the Lease, for the other once-only work (guarded canaries, chaos experiments).
pub fn start(
    client: kube::Client,
    store: Arc<Store>,
    lease: lease::LeaseConfig,
    leader_work: LeaderWork,
) -> tokio::sync::watch::Receiver<bool> {
    let (published_tx, published_rx) = tokio::sync::watch::channel(Default::default());
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(mirror::run(client.clone(), store.clone(), published_tx));
    tokio::spawn(discovery::run(client.clone(), store.clone()));
    tokio::spawn(lease::run(client.clone(), lease, leader_tx));
    if let Some(name) = leader_work.webhook {
        tokio::spawn(webhook_ca::run(
            client.clone(),
            name,
            leader_work.ca,
            leader_rx.clone(),
        ));
    }
    tokio::spawn(status::run(client, store, published_rx, leader_rx.clone()));
    leader_rx
}
