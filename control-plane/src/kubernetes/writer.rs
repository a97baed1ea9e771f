//! The control plane's own edits of the kinds the cluster owns — a canary's weights and
//! state, a chaos experiment's fault — written to the cluster, as Flagger does, so that
//! `kubectl get httproute -o yaml` shows them and a GitOps diff sees them. The mirror
//! brings them back into the store like any other change; [`ClusterWriter::apply`]
//! returns once it has.
//!
//! Each edit was planned from the store's copy of the object. The cluster's object is
//! replaced only if it still is what the plan read (compared in the mirror's normal form)
//! and with its `resourceVersion` as a precondition, so an edit made meanwhile with
//! `kubectl` is never overwritten: the action fails with a conflict and can be retried
//! (the canary controller does, a second later).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use serde_json::{Map, Value};

use super::kinds::{Mirrored, MIRRORED};
use super::mirror::normalize;
use crate::resources::validate::validate_document;
use crate::resources::{Kind, ResourceKey, SOURCE_ANNOTATION};
use crate::store::{Store, StoreError};

/// How long an edit waits for the mirror to bring it back.
pub const MIRROR_WAIT: Duration = Duration::from_secs(10);

/// kubectl's record of what it last applied: kept as it is in the cluster (the mirror
/// leaves it out of the store).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Why an edit did not reach the cluster.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The object changed in the cluster since the store's copy was read.
    #[error("{0} changed in the cluster since it was read; try again")]
    Moved(String),
    /// Not a kind the cluster holds for Tandem.
    #[error("{0} is not a kind the cluster holds")]
    NotMirrored(Kind),
    /// The API server refused or could not be reached.
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// The edit did not come back through the mirror in time.
    #[error("the cluster took the change but the mirror has not brought it back after {0:?}")]
    NotMirroredYet(Duration),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A document could not be read as an object.
    #[error("{0}")]
    Invalid(String),
}

/// Writes edits of cluster-owned kinds to the cluster.
#[derive(Clone)]
pub struct ClusterWriter {
    client: kube::Client,
}

impl std::fmt::Debug for ClusterWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterWriter")
    }
}

impl ClusterWriter {
    /// A writer through `client`.
    pub fn new(client: kube::Client) -> Self {
        ClusterWriter { client }
    }

    /// Creates or replaces each of `documents` (validated Tandem documents) and deletes
    /// `deletes`, each object only if it is still what `read` (the store's documents the
    /// edit was planned from) holds; then waits until the store mirrors all of it and
    /// returns the store's head revision.
    pub async fn apply(
        &self,
        store: &Arc<Store>,
        documents: &[Value],
        deletes: &[ResourceKey],
        read: &[Value],
    ) -> Result<u64, WriteError> {
        let read: BTreeMap<ResourceKey, &Value> =
            read.iter().filter_map(|d| Some((key_of(d)?, d))).collect();
        for doc in documents {
            let key = key_of(doc)
                .ok_or_else(|| WriteError::Invalid("a document without a key".into()))?;
            self.put(&key, doc, read.get(&key).copied()).await?;
        }
        for key in deletes {
            let api = self.api(key)?;
            match api.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        wait_mirrored(store, documents, deletes).await
    }

    fn api(&self, key: &ResourceKey) -> Result<Api<DynamicObject>, WriteError> {
        let m = mirrored(key.kind)?;
        Ok(Api::namespaced_with(
            self.client.clone(),
            &key.namespace,
            &m.api_resource(),
        ))
    }

    /// Creates `doc`, or replaces the cluster's object with its annotations and spec.
    async fn put(
        &self,
        key: &ResourceKey,
        doc: &Value,
        read: Option<&Value>,
    ) -> Result<(), WriteError> {
        let m = mirrored(key.kind)?;
        let api = self.api(key)?;
        let Some(existing) = api.get_opt(&key.name).await? else {
            if read.is_some() {
                // Deleted in the cluster since the plan read it.
                return Err(WriteError::Moved(key.to_string()));
            }
            let mut object = doc.clone();
            object["metadata"]["annotations"] = Value::Object(annotations(doc, None));
            let object: DynamicObject =
                serde_json::from_value(object).map_err(|e| WriteError::Invalid(e.to_string()))?;
            api.create(&PostParams::default(), &object).await?;
            return Ok(());
        };
        let mut object =
            serde_json::to_value(&existing).map_err(|e| WriteError::Invalid(e.to_string()))?;
        if !same(m, &object, read) {
            return Err(WriteError::Moved(key.to_string()));
        }
        object["metadata"]["annotations"] = Value::Object(annotations(doc, Some(&object)));
        // The store's spec is in validation's normal form; the cluster keeps the user's
        // form wherever the meaning did not change (a chaos experiment's end gives the
        // route back byte for byte).
        if spec_of(m, &object).as_ref() != Some(&doc["spec"]) {
            object["spec"] = pruned(&doc["spec"], &object["spec"]);
        }
        let object: DynamicObject =
            serde_json::from_value(object).map_err(|e| WriteError::Invalid(e.to_string()))?;
        // The object keeps its resourceVersion: a write in between fails with 409.
        match api
            .replace(&key.name, &PostParams::default(), &object)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(WriteError::Moved(key.to_string())),
            Err(e) => Err(e.into()),
        }
    }
}

/// The kind's place in the cluster.
fn mirrored(kind: Kind) -> Result<&'static Mirrored, WriteError> {
    MIRRORED
        .iter()
        .find(|m| m.kind == kind)
        .ok_or(WriteError::NotMirrored(kind))
}

/// A document's key (`kind`, namespace, name).
fn key_of(doc: &Value) -> Option<ResourceKey> {
    let kind = Kind::from_kind_field(doc["kind"].as_str()?)?;
    Some(ResourceKey::new(
        kind,
        doc["metadata"]["namespace"].as_str()?,
        doc["metadata"]["name"].as_str()?,
    ))
}

/// The annotations to write: the document's, without the store's source marker, and the
/// cluster object's kubectl record.
fn annotations(doc: &Value, existing: Option<&Value>) -> Map<String, Value> {
    let mut out = doc["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    out.remove(SOURCE_ANNOTATION);
    if let Some(v) = existing.and_then(|e| e["metadata"]["annotations"].get(LAST_APPLIED)) {
        out.insert(LAST_APPLIED.into(), v.clone());
    }
    out
}

/// Whether the cluster's `object` is, in the store's form, the document `read`.
fn same(m: &Mirrored, object: &Value, read: Option<&Value>) -> bool {
    let Some(read) = read else {
        return false;
    };
    match validate_document("", normalize(m, object)) {
        Ok(r) => r.doc == *read,
        Err(_) => false,
    }
}

/// The spec of the cluster's `object` in the store's form.
fn spec_of(m: &Mirrored, object: &Value) -> Option<Value> {
    validate_document("", normalize(m, object))
        .ok()
        .map(|r| r.doc["spec"].clone())
}

/// `new` without the empty lists and maps that validation added where `old` (the
/// cluster's form) has no such key, pairing list items by position.
fn pruned(new: &Value, old: &Value) -> Value {
    match (new, old) {
        (Value::Object(n), Value::Object(o)) => Value::Object(
            n.iter()
                .filter(|(k, v)| o.contains_key(*k) || !is_empty(v))
                .map(|(k, v)| (k.clone(), pruned(v, o.get(k).unwrap_or(&Value::Null))))
                .collect(),
        ),
        (Value::Object(n), _) => Value::Object(
            n.iter()
                .filter(|(_, v)| !is_empty(v))
                .map(|(k, v)| (k.clone(), pruned(v, &Value::Null)))
                .collect(),
        ),
        (Value::Array(n), _) => Value::Array(
            n.iter()
                .enumerate()
                .map(|(i, v)| pruned(v, old.get(i).unwrap_or(&Value::Null)))
                .collect(),
        ),
        _ => new.clone(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// What the store must hold for an edit to count as mirrored: the annotations (but the
/// source marker) and the spec.
type Essence = (Map<String, Value>, Value);

/// A document's [`Essence`].
fn essence(doc: &Value) -> Essence {
    (annotations(doc, None), doc["spec"].clone())
}

/// Waits until the store holds every document (as validated) and none of `deletes`.
async fn wait_mirrored(
    store: &Arc<Store>,
    documents: &[Value],
    deletes: &[ResourceKey],
) -> Result<u64, WriteError> {
    let want: Vec<(ResourceKey, Essence)> = documents
        .iter()
        .filter_map(|d| {
            let r = validate_document("", d.clone()).ok()?;
            Some((r.key, essence(&r.doc)))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + MIRROR_WAIT;
    let mut head = store.subscribe();
    loop {
        let s = store.clone();
        let (want, deletes) = (want.clone(), deletes.to_vec());
        let done = tokio::task::spawn_blocking(move || -> Result<bool, StoreError> {
            for (key, essence_wanted) in &want {
                match s.get(key)? {
                    Some(r) if essence(&r.doc) == *essence_wanted => {}
                    _ => return Ok(false),
                }
            }
            for key in &deletes {
                if s.get(key)?.is_some() {
                    return Ok(false);
                }
            }
            Ok(true)
        })
        .await
        .map_err(|e| WriteError::Invalid(e.to_string()))??;
        if done {
            return Ok(store.head());
        }
        match tokio::time::timeout_at(deadline, head.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(WriteError::NotMirroredYet(MIRROR_WAIT)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pruning_drops_only_the_empty_defaults_the_cluster_form_lacks() {
        let old =
            json!({"rules": [{"backendRefs": [{"name": "a", "weight": 100}], "filters": []}]});
        let new = json!({"rules": [
            {"backendRefs": [{"name": "a", "weight": 90}], "filters": [], "matches": []},
            {"backendRefs": [{"name": "b"}], "matches": [], "filters": [{"type": "x"}]},
        ]});
        assert_eq!(
            pruned(&new, &old),
            json!({"rules": [
                {"backendRefs": [{"name": "a", "weight": 90}], "filters": []},
                {"backendRefs": [{"name": "b"}], "filters": [{"type": "x"}]},
            ]})
        );
    }
}
