//! Where the control plane's own edits of routes and policies land — a canary's steps, a
//! chaos experiment's fault: the store, as one revision; or, in Kubernetes mode, the
//! cluster, which owns those kinds there ([`crate::kubernetes::writer`]), with the store
//! following through the mirror. Callers plan the same way in both modes.

use std::sync::Arc;

use serde_json::Value;

use crate::kubernetes::writer::{ClusterWriter, WriteError};
use crate::kubernetes::CHANGE_CAUSE;
use crate::resources::validate::validate_documents;
use crate::resources::{ResourceError, ResourceKey};
use crate::store::{Outcome, Store, StoreError};

/// One edit: whole documents to set, keys to delete, and the documents it was planned
/// from (so that a cluster object changed meanwhile is not overwritten).
#[derive(Debug, Clone, Default)]
pub struct Edit {
    /// Documents to create or replace.
    pub documents: Vec<Value>,
    /// Resources to delete (absent ones are fine).
    pub deletes: Vec<ResourceKey>,
    /// The store's documents the plan read.
    pub read: Vec<Value>,
}

/// Why an edit was not made; nothing of it was, except as [`EditError::Cluster`] says.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// A planned document does not validate (a bug: plans edit valid documents).
    #[error("a planned document does not validate: {0}")]
    Invalid(#[from] ResourceError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster refused, changed meanwhile, or could not be reached.
    #[error(transparent)]
    Cluster(#[from] WriteError),
}

/// Where edits go.
#[derive(Debug, Clone)]
pub enum Edits {
    /// The store (one machine).
    Store,
    /// The cluster (Kubernetes mode).
    Cluster(ClusterWriter),
}

impl Edits {
    /// Makes `edit` by `who`, the store's revision summary starting with `what` (in
    /// Kubernetes mode the revision is the mirror's, whose summary carries the canary's
    /// decision annotation); returns the revision it is in.
    pub async fn apply(
        &self,
        store: &Arc<Store>,
        edit: Edit,
        who: &str,
        what: &str,
    ) -> Result<Outcome, EditError> {
        let mut documents = edit.documents;
        if self.to_cluster() {
            for d in &mut documents {
                if let Some(a) = d["metadata"].as_object_mut() {
                    let annotations = a
                        .entry("annotations")
                        .or_insert_with(|| Value::Object(Default::default()));
                    annotations[CHANGE_CAUSE] = Value::String(what.to_string());
                }
            }
        }
        let resources = validate_documents(documents)?;
        match self {
            Edits::Store => {
                let s = store.clone();
                let (who, what) = (who.to_string(), what.to_string());
                let outcome = tokio::task::spawn_blocking(move || {
                    s.change_as(resources, edit.deletes, &who, &what)
                })
                .await
                .map_err(|e| EditError::Store(StoreError::Corrupt(e.to_string())))??;
                Ok(outcome)
            }
            Edits::Cluster(writer) => {
                let mut changed: Vec<String> =
                    resources.iter().map(|r| r.key.to_string()).collect();
                changed.extend(edit.deletes.iter().map(ToString::to_string));
                let documents: Vec<Value> = resources.into_iter().map(|r| r.doc).collect();
                let revision = writer
                    .apply(store, &documents, &edit.deletes, &edit.read)
                    .await?;
                Ok(Outcome { revision, changed })
            }
        }
    }

    /// Whether edits go to the cluster.
    pub fn to_cluster(&self) -> bool {
        matches!(self, Edits::Cluster(_))
    }
}
