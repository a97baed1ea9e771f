//! The crash-safe store: resources, numbered revisions and the head, in one redb file
//! (`DATA_DIR/store.redb`).
//!
//! Every change is one write transaction with [`redb::Durability::Immediate`] that writes
//! the changed resources, the revision's history entry and change list, and the head: an
//! acknowledged change survives `kill -9`, and a crash never leaves half a revision.
//!
//! Tables: `resources` (kind, namespace, name) → [`StoredResource`] JSON; `revisions`
//! number → [`Revision`] JSON; `changes` number → list of [`Change`] JSON (kept apart so
//! listing the history does not decode every document); `meta` `"head"` → number.
//!
//! The store's API is synchronous (redb is); async callers use `spawn_blocking`. Readers
//! see consistent snapshots (MVCC); [`Store::subscribe`] tells the xDS server when the
//! head moves.

mod checks;
mod error;
mod history;
mod ops;
mod record;

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tandem_xds::domain::{MeshConfig, ServiceRef};
use tokio::sync::watch;

pub use error::StoreError;
pub use record::{Backup, Change, Outcome, Revision, StoredResource, BACKUP_FORMAT};

use crate::proxies::ProxyBoard;
use crate::resources::{domain, Kind, ResourceKey};

/// Who changes the store through the REST API.
pub const WHO_API: &str = "api";
/// Who expires API registrations.
pub const WHO_TTL: &str = "ttl";
/// Who writes DNS-discovered endpoints.
pub const WHO_DNS: &str = "dns";
/// Who writes endpoints from the static file.
pub const WHO_STATIC_FILE: &str = "static-file";
/// `who` of changes mirrored from the Kubernetes API server.
pub const WHO_KUBERNETES: &str = "kubernetes";

pub(crate) type Key<'a> = (&'a str, &'a str, &'a str);
pub(crate) const RESOURCES: TableDefinition<Key, &[u8]> = TableDefinition::new("resources");
pub(crate) const REVISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("revisions");
pub(crate) const CHANGES: TableDefinition<u64, &[u8]> = TableDefinition::new("changes");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const HEAD: &str = "head";

/// The file name of the database inside the data dir.
pub const DB_FILE: &str = "store.redb";

/// The store. Share it as `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
    head_tx: watch::Sender<u64>,
    proxies: ProxyBoard,
}

impl Store {
    /// Opens (or creates) the store in `dir`, creating every table so readers never meet a
    /// missing one. redb repairs an interrupted commit here.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Corrupt(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path)?;
        let tx = db.begin_write()?;
        {
            tx.open_table(RESOURCES)?;
            tx.open_table(REVISIONS)?;
            tx.open_table(CHANGES)?;
            tx.open_table(META)?;
        }
        tx.commit()?;
        let head = read_head(&db.begin_read()?)?;
        let (head_tx, _) = watch::channel(head);
        Ok(Store {
            db,
            path,
            head_tx,
            proxies: ProxyBoard::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The head revision (0 before the first change).
    pub fn head(&self) -> u64 {
        *self.head_tx.borrow()
    }

    /// A receiver of the head revision: it changes after every committed revision.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head_tx.subscribe()
    }

    /// What the xDS server knows about connected proxies (reported by `GET /v1/status`).
    pub fn proxies(&self) -> &ProxyBoard {
        &self.proxies
    }

    /// One resource, if present.
    pub fn get(&self, key: &ResourceKey) -> Result<Option<StoredResource>, StoreError> {
        let rx = self.db.begin_read()?;
        let table = rx.open_table(RESOURCES)?;
        let value = table.get((key.kind.as_str(), key.namespace.as_str(), key.name.as_str()))?;
        value.map(|v| decode(v.value())).transpose()
    }

    /// Every resource of `kind`, optionally in one namespace, in (namespace, name) order.
    pub fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let rx = self.db.begin_read()?;
        let table = rx.open_table(RESOURCES)?;
        scan(&table, kind, namespace)
    }

    /// The services and fault injections that exist now: what route references resolve
    /// against ([`crate::resources::status`]).
    pub fn route_world(&self) -> Result<crate::resources::status::World, StoreError> {
        let rx = self.db.begin_read()?;
        let table = rx.open_table(RESOURCES)?;
        let mut world = crate::resources::status::World::default();
        for r in scan(&table, Kind::Service, None)? {
            world.add_service(&r.key.namespace, &r.key.name, &r.doc);
        }
        for r in scan(&table, Kind::FaultInjection, None)? {
            world.faults.insert((r.key.namespace, r.key.name));
        }
        Ok(world)
    }

    /// The whole config at the head, as the xDS layer wants it.
    pub fn mesh_config(&self) -> Result<MeshConfig, StoreError> {
        Ok(self.snapshot()?.1)
    }

    /// The head revision and the config at that revision, read from one snapshot.
    pub fn snapshot(&self) -> Result<(u64, MeshConfig), StoreError> {
        let rx = self.db.begin_read()?;
        let all = read_all(&rx)?;
        Ok((read_head(&rx)?, mesh_config_of(all.iter())?))
    }
}

/// Builds a [`MeshConfig`] from stored resources.
pub fn mesh_config_of<'a>(
    resources: impl Iterator<Item = &'a StoredResource>,
) -> Result<MeshConfig, StoreError> {
    let mut config = MeshConfig::default();
    let mut ejected: Vec<(ServiceRef, Vec<String>)> = Vec::new();
    for r in resources {
        match r.key.kind {
            Kind::Service => {
                let s = domain::service(&r.doc)?;
                config.services.insert(s.id.clone(), s);
            }
            Kind::Endpoint => {
                let e = domain::endpoint(&r.doc)?;
                config
                    .endpoints
                    .entry(e.service.clone())
                    .or_default()
                    .push(e);
            }
            // Both route kinds land in one map: a GRPCRoute's domain name carries the
            // `grpc:` prefix, which no stored name can, so the keys never collide.
            Kind::HttpRoute | Kind::GrpcRoute => {
                let route = if r.key.kind == Kind::HttpRoute {
                    domain::http_route(&r.doc, r.created)?
                } else {
                    domain::grpc_route(&r.doc, r.created)?
                };
                config
                    .routes
                    .insert((route.namespace.clone(), route.name.clone()), route);
            }
            Kind::DestinationPolicy => {
                let p = domain::destination_policy(&r.doc)?;
                config
                    .policies
                    .insert((p.namespace.clone(), p.name.clone()), p);
            }
            Kind::FaultInjection => {
                // A chaos experiment that ejects endpoints keeps the list on its record.
                if let Some(target) = r.doc["metadata"]["annotations"]
                    [crate::resources::CHAOS_TARGET_ANNOTATION]
                    .as_str()
                {
                    let addresses = crate::resources::chaos_ejected(&r.doc);
                    if !addresses.is_empty() {
                        let service = ServiceRef::new(r.key.namespace.clone(), target);
                        ejected.push((service, addresses));
                    }
                }
                let f = domain::fault_injection(&r.doc)?;
                config
                    .faults
                    .insert((r.key.namespace.clone(), r.key.name.clone()), f);
            }
            Kind::AuthorizationPolicy => {
                let p = domain::authorization_policy(&r.doc)?;
                config
                    .authz
                    .insert((p.namespace.clone(), p.name.clone()), p);
            }
        }
    }
    for list in config.endpoints.values_mut() {
        list.sort_by_key(|e| e.address);
        list.dedup_by(|a, b| a.address == b.address);
    }
    for (service, addresses) in ejected {
        if let Some(list) = config.endpoints.get_mut(&service) {
            list.retain(|e| !addresses.contains(&e.address.to_string()));
        }
    }
    Ok(config)
}

/// The service an endpoint document belongs to.
pub fn endpoint_service(r: &StoredResource) -> Option<ServiceRef> {
    let spec = domain::endpoint_spec(&r.doc).ok()?;
    Some(ServiceRef::new(r.key.namespace.clone(), spec.service))
}

/// The head revision as one read transaction sees it (0 before the first change).
pub(crate) fn read_head(rx: &redb::ReadTransaction) -> Result<u64, StoreError> {
    Ok(rx
        .open_table(META)?
        .get(HEAD)?
        .map(|g| g.value())
        .unwrap_or(0))
}

/// Every stored resource of every kind, as one read transaction sees them.
pub(crate) fn read_all(rx: &redb::ReadTransaction) -> Result<Vec<StoredResource>, StoreError> {
    let table = rx.open_table(RESOURCES)?;
    let mut all = Vec::new();
    for kind in Kind::ALL {
        all.extend(scan(&table, kind, None)?);
    }
    Ok(all)
}

pub(crate) fn decode(bytes: &[u8]) -> Result<StoredResource, StoreError> {
    Ok(serde_json::from_slice(bytes)?)
}

pub(crate) fn scan(
    table: &impl ReadableTable<Key<'static>, &'static [u8]>,
    kind: Kind,
    namespace: Option<&str>,
) -> Result<Vec<StoredResource>, StoreError> {
    let start = (kind.as_str(), namespace.unwrap_or(""), "");
    let mut out = Vec::new();
    for item in table.range(start..)? {
        let (k, v) = item?;
        let (k_kind, k_ns, _) = k.value();
        if k_kind != kind.as_str() || namespace.is_some_and(|ns| ns != k_ns) {
            break;
        }
        out.push(decode(v.value())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
