//! Changes: each public method here is one write transaction and at most one revision.
//!
//! A method plans its change against the current content (read inside the same write
//! transaction, so plans never race), [`Store::commit`] drops the no-op parts, and when
//! anything is left writes resources, the revision and the head, then commits durably.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use redb::{Durability, ReadableTable, Table};
use serde_json::Value;
use tandem_xds::domain::ServiceRef;

use super::record::{Backup, Change, Outcome, Revision, StoredResource, BACKUP_FORMAT};
use super::{checks, decode, endpoint_service, scan, Key, Store, StoreError};
use super::{CHANGES, HEAD, META, RESOURCES, REVISIONS};
use crate::resources::clock::unix_now;
use crate::resources::validate::{policy_targets_unique, validate_document};
use crate::resources::{
    domain, Kind, Resource, ResourceKey, SOURCE_ANNOTATION, TANDEM_API_VERSION,
};

/// One planned write: a new document (or deletion) for a key, optionally keeping the
/// `created` revision it had (rollback, restore).
#[derive(Debug)]
struct Put {
    key: ResourceKey,
    doc: Option<Value>,
    created: Option<u64>,
}

impl Put {
    fn set(r: Resource) -> Put {
        Put {
            key: r.key,
            doc: Some(r.doc),
            created: None,
        }
    }
    fn delete(key: ResourceKey) -> Put {
        Put {
            key,
            doc: None,
            created: None,
        }
    }
}

/// Read access to the content inside a write transaction.
pub(super) struct View<'t, 'txn> {
    table: &'t Table<'txn, Key<'static>, &'static [u8]>,
}

impl View<'_, '_> {
    pub(super) fn get(&self, key: &ResourceKey) -> Result<Option<StoredResource>, StoreError> {
        let v = self
            .table
            .get((key.kind.as_str(), key.namespace.as_str(), key.name.as_str()))?;
        v.map(|v| decode(v.value())).transpose()
    }
    pub(super) fn list(
        &self,
        kind: Kind,
        ns: Option<&str>,
    ) -> Result<Vec<StoredResource>, StoreError> {
        scan(self.table, kind, ns)
    }
    /// The endpoint of `service` at `address` in `namespace`, whatever its name.
    pub(super) fn find_endpoint(
        &self,
        namespace: &str,
        service: &str,
        address: &SocketAddr,
    ) -> Result<Option<StoredResource>, StoreError> {
        Ok(self
            .list(Kind::Endpoint, Some(namespace))?
            .into_iter()
            .find(|r| {
                domain::endpoint(&r.doc)
                    .is_ok_and(|e| e.service.name == service && e.address == *address)
            }))
    }
}

/// A service with no ports, as created for endpoints of an unknown service.
pub(crate) fn implicit_service(namespace: &str, name: &str) -> Result<Resource, StoreError> {
    let doc = serde_json::json!({
        "apiVersion": TANDEM_API_VERSION,
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": []},
    });
    Ok(validate_document("service", doc)?)
}

impl Store {
    /// Applies validated documents as one revision (`who` = `api`). Documents equal to
    /// what is stored are no-ops; when nothing changes, no revision is made and the
    /// outcome carries the current head.
    /// A `DestinationPolicy` whose service already has another one is rejected with the
    /// path `documents[i].spec.targetRef` (`i` = its index in `resources`).
    pub fn apply(&self, resources: Vec<Resource>, who: &str) -> Result<Outcome, StoreError> {
        self.apply_checked(resources, who, "apply", false)
    }

    /// [`Store::apply`] with the revision's summary starting with `what` instead of
    /// `apply` (the canary controller says what it decided and why).
    pub fn apply_as(
        &self,
        resources: Vec<Resource>,
        who: &str,
        what: &str,
    ) -> Result<Outcome, StoreError> {
        self.apply_checked(resources, who, what, false)
    }

    /// [`Store::apply`], refusing (with the field path) a route that names a Service,
    /// mirror or FaultInjection that would not exist once the documents are applied.
    pub fn apply_strict(&self, resources: Vec<Resource>, who: &str) -> Result<Outcome, StoreError> {
        self.apply_checked(resources, who, "apply", true)
    }

    fn apply_checked(
        &self,
        resources: Vec<Resource>,
        who: &str,
        what: &str,
        strict: bool,
    ) -> Result<Outcome, StoreError> {
        self.commit(who, what, |view| {
            for r in &resources {
                if r.key.kind == Kind::Endpoint {
                    checks::endpoint_conflict(view, r)?;
                }
            }
            if resources
                .iter()
                .any(|r| r.key.kind == Kind::Service && checks::has_addresses(r))
            {
                checks::address_conflicts(view, &resources)?;
            }
            if strict {
                checks::route_references(view, &resources)?;
            }
            // Only an applied policy can clash: most applies skip reading the stored ones.
            if resources
                .iter()
                .any(|r| r.key.kind == Kind::DestinationPolicy)
            {
                let stored = view
                    .list(Kind::DestinationPolicy, None)?
                    .into_iter()
                    .map(|p| Ok((p.key, domain::policy_target(&p.doc)?)))
                    .collect::<Result<Vec<_>, StoreError>>()?;
                policy_targets_unique(&resources, &stored, |i| format!("documents[{i}]"))?;
            }
            Ok(resources.into_iter().map(Put::set).collect())
        })
    }

    /// Sets `resources` and deletes `deletes` (those still present) as one revision by
    /// `who`, its summary starting with `what`: a change that must land whole or not at
    /// all, such as a chaos experiment's end (its fault gone and the routes restored).
    pub fn change_as(
        &self,
        resources: Vec<Resource>,
        deletes: Vec<ResourceKey>,
        who: &str,
        what: &str,
    ) -> Result<Outcome, StoreError> {
        self.commit(who, what, |view| {
            let mut puts: Vec<Put> = resources.into_iter().map(Put::set).collect();
            for key in deletes {
                if view.get(&key)?.is_some() {
                    puts.push(Put::delete(key));
                }
            }
            Ok(puts)
        })
    }

    /// Deletes one resource; deleting a service deletes its endpoints in the same revision.
    pub fn delete(&self, key: &ResourceKey, who: &str) -> Result<Outcome, StoreError> {
        self.commit(who, "delete", |view| {
            if view.get(key)?.is_none() {
                return Err(StoreError::NotFound(key.to_string()));
            }
            let mut puts = vec![Put::delete(key.clone())];
            if key.kind == Kind::Service {
                let id = ServiceRef::new(key.namespace.clone(), key.name.clone());
                for ep in view.list(Kind::Endpoint, Some(&key.namespace))? {
                    if endpoint_service(&ep).as_ref() == Some(&id) {
                        puts.push(Put::delete(ep.key));
                    }
                }
            }
            Ok(puts)
        })
    }

    /// Registers (creates or replaces) one endpoint, creating its service if unknown.
    /// An endpoint of the same service and address under another name is replaced.
    pub fn register_endpoint(&self, endpoint: Resource, who: &str) -> Result<Outcome, StoreError> {
        self.commit(who, "register", |view| {
            let mut puts = Vec::new();
            let e = domain::endpoint(&endpoint.doc)?;
            if let Some(old) =
                view.find_endpoint(&e.service.namespace, &e.service.name, &e.address)?
            {
                if old.key != endpoint.key {
                    puts.push(Put::delete(old.key));
                }
            }
            puts.push(Put::set(endpoint));
            Ok(puts)
        })
    }

    /// Deregisters the endpoint of `service` at `address`.
    pub fn deregister_endpoint(
        &self,
        namespace: &str,
        service: &str,
        address: &SocketAddr,
        who: &str,
    ) -> Result<Outcome, StoreError> {
        self.commit(who, "deregister", |view| {
            match view.find_endpoint(namespace, service, address)? {
                Some(r) => Ok(vec![Put::delete(r.key)]),
                None => Err(StoreError::NotFound(format!(
                    "endpoint {address} of service {namespace}/{service}"
                ))),
            }
        })
    }

    /// Removes the given resources that still exist, as one revision (e.g. TTL expiry).
    pub fn remove(
        &self,
        keys: &[ResourceKey],
        who: &str,
        what: &str,
    ) -> Result<Outcome, StoreError> {
        self.commit(who, what, |_| {
            Ok(keys.iter().cloned().map(Put::delete).collect())
        })
    }

    /// Makes the endpoints owned by discovery `source` (annotation `tandem.dev/source`),
    /// optionally only those of `scope`, exactly `desired`, as one revision (or none when
    /// they already are). The caller sets the annotation on `desired`.
    pub fn replace_endpoints(
        &self,
        source: &str,
        scope: Option<&ServiceRef>,
        desired: Vec<Resource>,
        who: &str,
    ) -> Result<Outcome, StoreError> {
        self.commit(who, source, |view| {
            let wanted: BTreeSet<ResourceKey> = desired.iter().map(|r| r.key.clone()).collect();
            let mut puts = Vec::new();
            for ep in view.list(Kind::Endpoint, scope.map(|s| s.namespace.as_str()))? {
                let owner = ep
                    .doc
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(SOURCE_ANNOTATION))
                    .and_then(Value::as_str);
                let in_scope = scope.is_none_or(|s| endpoint_service(&ep).as_ref() == Some(s));
                if owner == Some(source) && in_scope && !wanted.contains(&ep.key) {
                    puts.push(Put::delete(ep.key));
                }
            }
            puts.extend(desired.into_iter().map(Put::set));
            Ok(puts)
        })
    }

    /// Makes the resources of `kinds` owned by `source` (annotation `tandem.dev/source`)
    /// exactly `desired`, as one revision (or none when they already are) whose summary
    /// starts with `what`: what the source no longer has is deleted. The caller sets the
    /// annotation on `desired`.
    pub fn replace_owned(
        &self,
        source: &str,
        kinds: &[Kind],
        desired: Vec<Resource>,
        who: &str,
        what: &str,
    ) -> Result<Outcome, StoreError> {
        self.commit(who, what, |view| {
            let wanted: BTreeSet<ResourceKey> = desired.iter().map(|r| r.key.clone()).collect();
            let mut puts = Vec::new();
            for kind in kinds {
                for r in view.list(*kind, None)? {
                    let owner = r
                        .doc
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(SOURCE_ANNOTATION))
                        .and_then(Value::as_str);
                    if owner == Some(source) && !wanted.contains(&r.key) {
                        puts.push(Put::delete(r.key));
                    }
                }
            }
            puts.extend(desired.into_iter().map(Put::set));
            Ok(puts)
        })
    }

    /// Restores every kind but endpoints (services, routes, policies, faults) as it was at
    /// `revision`, as a new revision. Endpoints are kept (they come from live sources); a
    /// kept endpoint whose service did not exist then keeps a port-less service.
    pub fn rollback(&self, revision: u64, who: &str) -> Result<Outcome, StoreError> {
        let head = self.head();
        if revision > head {
            return Err(StoreError::NotFound(format!("revision {revision}")));
        }
        let target = self.state_at(revision)?;
        self.commit(who, &format!("rollback to {revision}"), |view| {
            let mut puts = Vec::new();
            let mut services = BTreeSet::new();
            for kind in Kind::ALL.into_iter().filter(|k| *k != Kind::Endpoint) {
                for cur in view.list(kind, None)? {
                    if !target.contains_key(&cur.key) {
                        puts.push(Put::delete(cur.key));
                    }
                }
            }
            for r in target.values().filter(|r| r.key.kind != Kind::Endpoint) {
                if r.key.kind == Kind::Service {
                    services.insert((r.key.namespace.clone(), r.key.name.clone()));
                }
                puts.push(Put {
                    key: r.key.clone(),
                    doc: Some(r.doc.clone()),
                    created: Some(r.created),
                });
            }
            for ep in view.list(Kind::Endpoint, None)? {
                if let Some(s) = endpoint_service(&ep) {
                    if services.insert((s.namespace.clone(), s.name.clone())) {
                        puts.push(Put::set(implicit_service(&s.namespace, &s.name)?));
                    }
                }
            }
            Ok(puts)
        })
    }

    /// Replaces every resource with the backup's, as one new revision. History is kept
    /// (revision numbers only grow, so proxies never see an older version number).
    pub fn restore(&self, backup: Backup, who: &str) -> Result<Outcome, StoreError> {
        if backup.format != BACKUP_FORMAT {
            return Err(StoreError::Invalid(crate::resources::ResourceError::new(
                "format",
                format!("expected {BACKUP_FORMAT:?}"),
            )));
        }
        let mut wanted = BTreeMap::new();
        let mut valids = Vec::new();
        for (i, r) in backup.resources.into_iter().enumerate() {
            let valid = validate_document(&format!("resources[{i}].doc"), r.doc)?;
            if valid.key != r.key {
                return Err(StoreError::Invalid(crate::resources::ResourceError::new(
                    format!("resources[{i}]"),
                    format!("key {} does not match its document ({})", r.key, valid.key),
                )));
            }
            wanted.insert(valid.key.clone(), (valid.doc.clone(), r.created));
            valids.push(valid);
        }
        // A hand-edited backup must not sneak in two policies for one service.
        policy_targets_unique(&valids, &[], |i| format!("resources[{i}]"))?;
        self.commit(who, "restore", |view| {
            let mut puts = Vec::new();
            for kind in Kind::ALL {
                for cur in view.list(kind, None)? {
                    if !wanted.contains_key(&cur.key) {
                        puts.push(Put::delete(cur.key));
                    }
                }
            }
            for (key, (doc, created)) in wanted {
                puts.push(Put {
                    key,
                    doc: Some(doc),
                    created: Some(created),
                });
            }
            Ok(puts)
        })
    }

    /// Plans with `plan`, drops no-op writes, adds port-less services for endpoints of
    /// unknown services, and commits what is left as one revision.
    fn commit<F>(&self, who: &str, what: &str, plan: F) -> Result<Outcome, StoreError>
    where
        F: FnOnce(&View<'_, '_>) -> Result<Vec<Put>, StoreError>,
    {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        let (revision, changes, summary) = {
            let mut table = tx.open_table(RESOURCES)?;
            let mut meta = tx.open_table(META)?;
            let head = meta.get(HEAD)?.map(|g| g.value()).unwrap_or(0);
            let next = head + 1;
            let puts = plan(&View { table: &table })?;
            let described = diff(&View { table: &table }, puts, next)?;
            let summary = summarize(what, &described);
            let changes: Vec<Change> = described.into_iter().map(|(c, _)| c).collect();
            if changes.is_empty() {
                drop((table, meta));
                tx.abort()?;
                return Ok(Outcome {
                    revision: head,
                    changed: Vec::new(),
                });
            }
            for c in &changes {
                let k = (
                    c.key.kind.as_str(),
                    c.key.namespace.as_str(),
                    c.key.name.as_str(),
                );
                match &c.value {
                    Some(v) => {
                        table.insert(k, serde_json::to_vec(v)?.as_slice())?;
                    }
                    None => {
                        table.remove(k)?;
                    }
                }
            }
            let entry = Revision {
                revision: next,
                time_unix: unix_now(),
                who: who.to_string(),
                summary: summary.clone(),
            };
            tx.open_table(REVISIONS)?
                .insert(next, serde_json::to_vec(&entry)?.as_slice())?;
            tx.open_table(CHANGES)?
                .insert(next, serde_json::to_vec(&changes)?.as_slice())?;
            meta.insert(HEAD, next)?;
            (next, changes, summary)
        };
        tx.commit()?;
        self.head_tx.send_replace(revision);
        tracing::info!(revision, who, %summary, "committed");
        Ok(Outcome {
            revision,
            changed: changes.iter().map(|c| c.key.to_string()).collect(),
        })
    }
}

/// Turns planned writes into real changes: equal documents dropped, `created` kept or
/// assigned, and port-less services added for endpoints of unknown services.
fn diff(
    view: &View<'_, '_>,
    puts: Vec<Put>,
    next: u64,
) -> Result<Vec<(Change, &'static str)>, StoreError> {
    let mut out: BTreeMap<ResourceKey, (Option<StoredResource>, &'static str)> = BTreeMap::new();
    let mut needed_services = BTreeSet::new();
    for put in puts {
        let old = view.get(&put.key)?;
        let verb = if old.is_some() { "updated" } else { "created" };
        let value = match put.doc {
            None if old.is_none() => {
                out.remove(&put.key);
                continue;
            }
            None => (None, "deleted"),
            Some(doc) => {
                if put.key.kind == Kind::Endpoint {
                    if let Ok(spec) = domain::endpoint_spec(&doc) {
                        needed_services.insert((put.key.namespace.clone(), spec.service));
                    }
                }
                if old.as_ref().is_some_and(|o| o.doc == doc) {
                    out.remove(&put.key);
                    continue;
                }
                let created = old
                    .as_ref()
                    .map(|o| o.created)
                    .or(put.created)
                    .unwrap_or(next);
                (
                    Some(StoredResource {
                        key: put.key.clone(),
                        created,
                        updated: next,
                        doc,
                    }),
                    verb,
                )
            }
        };
        out.insert(put.key, value);
    }
    for (ns, name) in needed_services {
        let key = ResourceKey::new(Kind::Service, ns.clone(), name.clone());
        let planned = out.get(&key).map(|(v, _)| v.is_some());
        let exists = match planned {
            Some(p) => p,
            None => view.get(&key)?.is_some(),
        };
        if !exists {
            let svc = implicit_service(&ns, &name)?;
            let verb = if view.get(&key)?.is_some() {
                "updated"
            } else {
                "created"
            };
            out.insert(
                key.clone(),
                (
                    Some(StoredResource {
                        key,
                        created: next,
                        updated: next,
                        doc: svc.doc,
                    }),
                    verb,
                ),
            );
        }
    }
    Ok(out
        .into_iter()
        .map(|(key, (value, verb))| (Change { key, value }, verb))
        .collect())
}

fn summarize(what: &str, changes: &[(Change, &'static str)]) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = changes
        .iter()
        .take(SHOWN)
        .map(|(c, verb)| format!("{verb} {}", c.key))
        .collect();
    if changes.len() > SHOWN {
        parts.push(format!("and {} more", changes.len() - SHOWN));
    }
    format!("{what}: {}", parts.join(", "))
}
