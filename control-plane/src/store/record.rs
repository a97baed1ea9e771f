//! What the store keeps, in the form it is encoded (JSON) in redb values and in backups.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resources::ResourceKey;

/// One stored resource: its normalized document and the revisions that created and last
/// changed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResource {
    /// Identity.
    #[serde(flatten)]
    pub key: ResourceKey,
    /// The revision that first created it.
    pub created: u64,
    /// The revision that last changed it.
    pub updated: u64,
    /// The normalized document.
    pub doc: Value,
}

impl StoredResource {
    /// The document as the API shows it: the stored document plus
    /// `status: {createdRevision, updatedRevision}`.
    pub fn to_api(&self) -> Value {
        let mut doc = self.doc.clone();
        if let Some(map) = doc.as_object_mut() {
            map.insert(
                "status".into(),
                serde_json::json!({"createdRevision": self.created, "updatedRevision": self.updated}),
            );
        }
        doc
    }
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Number, from 1.
    pub revision: u64,
    /// When it was committed.
    pub time_unix: u64,
    /// Who made it: `api`, `ttl`, `dns`, `static-file`.
    pub who: String,
    /// One line.
    pub summary: String,
}

/// One resource changed by a revision: its new value, or `None` for a deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Which resource.
    pub key: ResourceKey,
    /// New value, or `None` when deleted.
    pub value: Option<StoredResource>,
}

/// The result of a change request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The new revision, or the current head when nothing changed.
    pub revision: u64,
    /// What changed (`HTTPRoute default/reviews-split`); empty when nothing did.
    pub changed: Vec<String>,
}

/// The format tag of backups.
pub const BACKUP_FORMAT: &str = "tandem.dev/backup/v1";

/// The whole store as one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backup {
    /// [`BACKUP_FORMAT`].
    pub format: String,
    /// Head revision when taken.
    pub revision: u64,
    /// When taken.
    pub time_unix: u64,
    /// Every resource.
    pub resources: Vec<StoredResource>,
    /// The history (informational: restore does not rewrite history).
    #[serde(default)]
    pub history: Vec<Revision>,
}
