//! The cluster's routes and policies, mirrored into the store.
//!
//! One kube-rs watcher per kind (list, then watch; a relist after `410 Gone` or a lost
//! connection replaces that kind's objects wholesale, so nothing still in the cluster is
//! ever dropped and nothing deleted meanwhile lingers). After each batch of events the
//! store's resources owned by the source `kubernetes` are made exactly the valid objects,
//! as one revision. An object that fails validation keeps its last valid version in the
//! store (the config it replaced keeps serving) and its error goes to the status writer.
//! Nothing is written before every kind has been listed once, so a restart never deletes
//! one kind's resources while another is still being listed.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::{Api, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;

use super::kinds::{owned_kinds, Mirrored, MIRRORED};
use super::SOURCE;
use crate::resources::validate::validate_document;
use crate::resources::{Kind, Resource, SOURCE_ANNOTATION};
use crate::store::Store;

/// Why each current cluster object is not mirrored, by (kind, namespace, name): the
/// validation error with its field path.
pub type Errors = BTreeMap<(Kind, String, String), String>;

/// What the status writer needs: the cluster's routes as last seen (with their
/// generation and status) and why any of them is not mirrored.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Route objects, with the index of their kind in [`MIRRORED`].
    pub routes: Vec<(usize, Value)>,
    /// Validation errors.
    pub errors: Errors,
}

/// One watcher event, tagged with the index of its kind in [`MIRRORED`].
type Tagged = (usize, Result<Event<DynamicObject>, watcher::Error>);

/// The cluster's objects of every kind, as last seen.
#[derive(Default)]
struct Cluster {
    /// Objects by (kind index, namespace, name).
    objects: BTreeMap<(usize, String, String), Value>,
    /// A relist in progress, per kind index.
    relisting: BTreeMap<usize, BTreeMap<(usize, String, String), Value>>,
    /// Kinds listed at least once.
    listed: Vec<bool>,
    /// The last valid version of each object, kept while a newer one is invalid.
    last_good: BTreeMap<(usize, String, String), Resource>,
}

/// Mirrors until the process exits; routes and validation errors are published on
/// `published` once everything is mirrored.
pub async fn run(client: kube::Client, store: Arc<Store>, published: watch::Sender<Published>) {
    let (tx, mut rx) = mpsc::channel::<Tagged>(256);
    for (i, m) in MIRRORED.iter().enumerate() {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &m.api_resource());
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut events =
                std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
            while let Some(event) = events.next().await {
                if tx.send((i, event)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut cluster = Cluster {
        listed: vec![false; MIRRORED.len()],
        ..Default::default()
    };
    while let Some(first) = rx.recv().await {
        let mut changed = cluster.take(first);
        // Drain what is already queued: one revision for a burst of events.
        while let Ok(next) = rx.try_recv() {
            changed |= cluster.take(next);
        }
        if changed && cluster.listed.iter().all(|l| *l) {
            let (desired, errs) = cluster.desired();
            super::sync(&store, owned_kinds(), desired, "routes and policies").await;
            let routes = cluster
                .objects
                .iter()
                .filter(|(k, _)| MIRRORED[k.0].route)
                .map(|(k, v)| (k.0, v.clone()))
                .collect();
            published.send_replace(Published {
                routes,
                errors: errs,
            });
        }
    }
}

impl Cluster {
    /// Takes one event; whether the objects changed.
    fn take(&mut self, (i, event): Tagged) -> bool {
        let m = &MIRRORED[i];
        match event {
            Ok(Event::Init) => {
                self.relisting.insert(i, BTreeMap::new());
                false
            }
            Ok(Event::InitApply(o)) => {
                if let Some((key, value)) = keyed(i, o) {
                    self.relisting.entry(i).or_default().insert(key, value);
                }
                false
            }
            Ok(Event::InitDone) => {
                let fresh = self.relisting.remove(&i).unwrap_or_default();
                self.objects.retain(|k, _| k.0 != i);
                self.objects.extend(fresh);
                self.listed[i] = true;
                true
            }
            Ok(Event::Apply(o)) => match keyed(i, o) {
                Some((key, value)) => self.objects.insert(key, value.clone()) != Some(value),
                None => false,
            },
            Ok(Event::Delete(o)) => match keyed(i, o) {
                Some((key, _)) => self.objects.remove(&key).is_some(),
                None => false,
            },
            Err(e) => {
                // A kind the cluster does not serve (its CRD is not installed) counts as
                // listed and empty, so the others are mirrored; the watcher keeps trying.
                if !self.listed[i] && not_served(&e) {
                    tracing::warn!(
                        kind = m.name,
                        "the cluster does not serve {}: not mirrored until it does",
                        m.plural
                    );
                    self.listed[i] = true;
                    return true;
                }
                tracing::warn!(kind = m.name, error = %e, "watching the cluster failed; retrying");
                false
            }
        }
    }

    /// The resources to mirror, and why the others are not.
    fn desired(&mut self) -> (Vec<Resource>, Errors) {
        let mut desired = Vec::with_capacity(self.objects.len());
        let mut errors = Errors::new();
        self.last_good.retain(|k, _| self.objects.contains_key(k));
        for (key, object) in &self.objects {
            let m = &MIRRORED[key.0];
            match validate_document("", normalize(m, object)) {
                Ok(r) => {
                    self.last_good.insert(key.clone(), r.clone());
                    desired.push(r);
                }
                Err(e) => {
                    let message = e.to_string();
                    let message = message.strip_prefix('.').unwrap_or(&message).to_string();
                    tracing::warn!(kind = m.name, namespace = %key.1, name = %key.2, error = %message, "not mirrored: invalid");
                    errors.insert((m.kind, key.1.clone(), key.2.clone()), message);
                    if let Some(previous) = self.last_good.get(key) {
                        desired.push(previous.clone());
                    }
                }
            }
        }
        (desired, errors)
    }
}

/// An object's key and JSON.
fn keyed(i: usize, o: DynamicObject) -> Option<((usize, String, String), Value)> {
    let ns = o.metadata.namespace.clone().unwrap_or_default();
    let name = o.metadata.name.clone()?;
    let value = serde_json::to_value(&o).ok()?;
    Some(((i, ns, name), value))
}

/// The document Tandem validates: the object's kind, name, namespace, labels, annotations
/// (plus the source annotation) and spec; everything the API server adds (uid,
/// resourceVersion, managedFields, status, ...) left out.
pub fn normalize(m: &Mirrored, object: &Value) -> Value {
    let meta = &object["metadata"];
    let mut annotations: Map<String, Value> =
        meta["annotations"].as_object().cloned().unwrap_or_default();
    // kubectl's record of the last applied document says nothing to the mesh.
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    annotations.insert(SOURCE_ANNOTATION.into(), SOURCE.into());
    let mut metadata = json!({
        "name": meta["name"],
        "namespace": meta["namespace"],
        "annotations": annotations,
    });
    if let Some(labels) = meta["labels"].as_object().filter(|l| !l.is_empty()) {
        metadata["labels"] = Value::Object(labels.clone());
    }
    json!({
        "apiVersion": format!("{}/{}", m.group, m.version),
        "kind": m.name,
        "metadata": metadata,
        "spec": object.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

fn not_served(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(status)) => status.is_not_found(),
        _ => false,
    }
}
