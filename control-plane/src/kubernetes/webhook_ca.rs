//! The injector webhook's `caBundle`, kept equal to the mesh's trust bundle by the replica
//! holding the Lease: the API server verifies the injector's certificate (signed by the
//! mesh CA) against it, so it must name every trusted root, before and after each
//! rotation step. Istio's istiod patches its webhook the same way; with Tandem nobody
//! runs `kubectl patch` after an install or a rotation.
//!
//! The holder rechecks when the CA changes, when it becomes the holder, when the webhook
//! configuration changes (a re-applied manifest without `caBundle`), and every minute.
//! Each patch is a JSON Patch that first tests the `resourceVersion` it read, so a
//! concurrent edit is never overwritten with stale webhooks: the next round reads again.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use crate::identity::ca::Ca;

/// The default name of the injector's MutatingWebhookConfiguration (what `tandemctl
/// install` renders).
pub const DEFAULT_WEBHOOK: &str = "tandem-injector";
/// How often the holder rechecks without any event.
const RECHECK: Duration = Duration::from_secs(60);

/// Keeps `caBundle` of every webhook in the configuration `name` equal to `ca`'s trust
/// bundle while `leader` says this replica holds the Lease; runs until the process exits.
pub async fn run(
    client: kube::Client,
    name: String,
    ca: Arc<Ca>,
    mut leader: watch::Receiver<bool>,
) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut changes = ca.subscribe();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api.clone(), config)
        .default_backoff()
        .applied_objects());
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        if *leader.borrow_and_update() {
            match reconcile(&api, &name, &ca).await {
                Ok(Some(patched)) => tracing::info!(
                    webhook = %name,
                    webhooks = patched,
                    roots = ca.status().len(),
                    "caBundle set to the mesh's trust bundle"
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(webhook = %name, error = %e, "cannot set the webhook's caBundle; retrying")
                }
            }
        }
        tokio::select! {
            changed = leader.changed() => if changed.is_err() { return },
            changed = changes.changed() => if changed.is_err() { return },
            event = events.next() => if let Some(Err(e)) = event {
                tracing::debug!(webhook = %name, error = %e, "watching the webhook configuration");
            },
            _ = recheck.tick() => {}
        }
    }
}

/// One round: patches the webhooks whose `caBundle` differs from the bundle; how many it
/// patched, or `None` when nothing differed or the configuration does not exist.
async fn reconcile(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    ca: &Ca,
) -> Result<Option<usize>, kube::Error> {
    let Some(current) = api.get_opt(name).await? else {
        tracing::debug!(webhook = %name, "no such MutatingWebhookConfiguration (injection not installed?)");
        return Ok(None);
    };
    let want = ByteString(ca.trust_bundle_pem().into_bytes());
    let ops = patch_ops(&current, &want);
    if ops.is_empty() {
        return Ok(None);
    }
    let patched = ops.len();
    let mut all = vec![json!({
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": current.metadata.resource_version,
    })];
    all.extend(ops);
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::Value::Array(all)).map_err(kube::Error::SerdeError)?;
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    Ok(Some(patched))
}

/// One `add` of `clientConfig/caBundle` per webhook whose bundle is not `want`.
fn patch_ops(current: &MutatingWebhookConfiguration, want: &ByteString) -> Vec<serde_json::Value> {
    current
        .webhooks
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, w)| w.client_config.ca_bundle.as_ref() != Some(want))
        .map(|(i, _)| {
            json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": want,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_webhooks_with_another_bundle_are_patched_with_it_in_base64() {
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": "tandem-injector"},
            "webhooks": [
                {"name": "a.tandem.dev", "clientConfig": {"service": {"name": "x", "namespace": "y"}},
                 "admissionReviewVersions": ["v1"], "sideEffects": "None"},
                {"name": "b.tandem.dev", "clientConfig": {"caBundle": "UEVN"},
                 "admissionReviewVersions": ["v1"], "sideEffects": "None"},
                {"name": "c.tandem.dev", "clientConfig": {"caBundle": "b2xk"},
                 "admissionReviewVersions": ["v1"], "sideEffects": "None"},
            ]
        }))
        .unwrap();
        let ops = patch_ops(&config, &ByteString(b"PEM".to_vec()));
        assert_eq!(
            ops,
            [
                json!({"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "UEVN"}),
                json!({"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": "UEVN"}),
            ]
        );
    }
}
