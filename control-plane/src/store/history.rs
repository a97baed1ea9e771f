//! Reading the past: the history, a revision's change list, the content at any revision
//! (by replaying change lists), and backups.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};

use super::record::{Backup, Change, Revision, StoredResource, BACKUP_FORMAT};
use super::{read_all, read_head, Store, StoreError, CHANGES, REVISIONS};
use crate::resources::clock::unix_now;
use crate::resources::ResourceKey;

impl Store {
    /// Every revision, oldest first.
    pub fn history(&self) -> Result<Vec<Revision>, StoreError> {
        let rx = self.db.begin_read()?;
        let table = rx.open_table(REVISIONS)?;
        let mut out = Vec::new();
        for item in table.iter()? {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// The changes one revision made.
    pub fn changes(&self, revision: u64) -> Result<Vec<Change>, StoreError> {
        let rx = self.db.begin_read()?;
        let table = rx.open_table(CHANGES)?;
        match table.get(revision)? {
            Some(v) => Ok(serde_json::from_slice(v.value())?),
            None => Err(StoreError::NotFound(format!("revision {revision}"))),
        }
    }

    /// The content as of `revision` (0: empty), by replaying change lists 1..=revision.
    pub fn state_at(
        &self,
        revision: u64,
    ) -> Result<BTreeMap<ResourceKey, StoredResource>, StoreError> {
        let rx = self.db.begin_read()?;
        let head = read_head(&rx)?;
        if revision > head {
            return Err(StoreError::NotFound(format!("revision {revision}")));
        }
        let table = rx.open_table(CHANGES)?;
        let mut state = BTreeMap::new();
        for item in table.range(1..=revision)? {
            let (_, v) = item?;
            let changes: Vec<Change> = serde_json::from_slice(v.value())?;
            for c in changes {
                match c.value {
                    Some(value) => {
                        state.insert(c.key, value);
                    }
                    None => {
                        state.remove(&c.key);
                    }
                }
            }
        }
        Ok(state)
    }

    /// The whole store (every resource, and the history for information) as of now.
    pub fn backup(&self) -> Result<Backup, StoreError> {
        let rx = self.db.begin_read()?;
        let head = read_head(&rx)?;
        let resources = read_all(&rx)?;
        let mut history = Vec::new();
        for item in rx.open_table(REVISIONS)?.range(..=head)? {
            let (_, v) = item?;
            history.push(serde_json::from_slice(v.value())?);
        }
        Ok(Backup {
            format: BACKUP_FORMAT.to_string(),
            revision: head,
            time_unix: unix_now(),
            resources,
            history,
        })
    }
}
