//! The object store: what etcd and the API server's registry are to a real cluster, in
//! memory. One resourceVersion counter orders every write across all types (as etcd's
//! revision does); every write is logged as a watch event, so a watch from version N replays
//! exactly what happened after N, until a compaction drops the log and such a watch gets
//! `410 Gone`.
//!
//! All operations take one short lock and never await inside it; watch events are published
//! under the same lock, so their order on every stream is the order of the writes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use super::error::ApiError;
use super::resources::{ResourceType, TYPES};
use super::selector::{FieldSelector, LabelSelector};

/// Events kept for watches that resume from an older version; older ones are compacted.
const LOG_CAPACITY: usize = 50_000;
/// Events a slow watch may fall behind before it is ended with `410 Gone`.
const STREAM_CAPACITY: usize = 8_192;

/// What a watch event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created (or, in a watch's initial state, present).
    Added,
    /// Changed.
    Modified,
    /// Removed; the object is its last state.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One logged write.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion the write produced.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// The object's type.
    pub ty: &'static ResourceType,
    /// The object after the write (before it, for a deletion, with the deletion's version).
    pub object: Value,
    /// The object before a modification: a watch with a selector turns a change that moves
    /// an object into or out of its selection into `ADDED` or `DELETED`, as a real one does.
    pub previous: Option<Value>,
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object itself; `.status` is kept when the type has a `status` subresource.
    Main,
    /// The `status` subresource: only `.status` changes.
    Status,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// Now, with a synthetic `ADDED` for every object that exists (`resourceVersion` unset
    /// or `0`, or `sendInitialEvents=true`).
    InitialState,
    /// After this version: every event newer than it, replayed from the log.
    Version(u64),
}

/// One page of a list.
#[derive(Debug, Clone)]
pub struct Page {
    /// The matching objects, ordered by namespace and name.
    pub items: Vec<Value>,
    /// The store's version when the list was read.
    pub rv: u64,
    /// Where the next page starts, when `limit` cut the list short.
    pub continue_token: Option<String>,
}

/// A watch's start: what to send first, then the live stream.
#[derive(Debug)]
pub struct Subscription {
    /// Events to send before the live ones.
    pub backlog: Vec<Event>,
    /// Every later write (of any type: the watch filters).
    pub live: broadcast::Receiver<Arc<Event>>,
    /// The version the backlog brings the watcher up to.
    pub rv: u64,
}

type Key = (usize, String, String);

#[derive(Debug)]
struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    log: VecDeque<Event>,
    /// Watches from a version below this get `410 Gone`: the log no longer covers them.
    compacted: u64,
    names: u64,
}

/// The store shared by the HTTP server and the test's handle.
#[derive(Debug)]
pub struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<Event>>,
    compacted: watch::Sender<u64>,
    paused: watch::Sender<bool>,
    seed: u64,
}

fn type_index(ty: &ResourceType) -> usize {
    TYPES.iter().position(|t| t == ty).unwrap_or(usize::MAX)
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A DNS-1123 subdomain, the rule every object name follows.
fn valid_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    name.len() <= 253
        && name.chars().all(ok_char)
        && alnum(name.chars().next())
        && alnum(name.chars().last())
}

/// The object without the parts a spec change is not measured by.
fn spec_of(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(map) = rest.as_object_mut() {
        for k in ["metadata", "status", "kind", "apiVersion"] {
            map.remove(k);
        }
    }
    rest
}

/// Sets (`Some`) or removes (`None`) `metadata.<key>`, making `metadata` an object first.
fn set_meta(object: &mut Value, key: &str, value: Option<Value>) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let m = map.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    if let Some(m) = m.as_object_mut() {
        match value {
            Some(v) => m.insert(key.to_string(), v),
            None => m.remove(key),
        };
    }
}

/// A hard-to-guess number (tokens, uids) without a random-number crate: std's hasher keys
/// are random per process.
pub fn random_u64(salt: u64) -> u64 {
    std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), salt)
}

/// A resourceVersion as sent by a client; empty means none.
pub fn parse_rv(s: &str) -> Result<Option<u64>, ApiError> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// An empty store holding the namespaces every cluster has.
    pub fn new() -> Self {
        let store = Self {
            inner: Mutex::new(Inner {
                rv: 0,
                objects: BTreeMap::new(),
                log: VecDeque::new(),
                compacted: 0,
                names: 0,
            }),
            events: broadcast::channel(STREAM_CAPACITY).0,
            compacted: watch::channel(0).0,
            paused: watch::channel(false).0,
            seed: random_u64(0),
        };
        let ns = super::resources::find("", "v1", "namespaces");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if let Some(ty) = ns {
                // Cannot fail on an empty store; a failure would only leave one out.
                let _ = store.create(ty, None, json!({ "metadata": { "name": name } }));
            }
        }
        store
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every write is one insert
        // plus one log push), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    fn publish(&self, inner: &mut Inner, event: Event) {
        inner.log.push_back(event.clone());
        while inner.log.len() > LOG_CAPACITY {
            if let Some(old) = inner.log.pop_front() {
                inner.compacted = old.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.events.send(Arc::new(event));
    }

    /// The object, or 404.
    pub fn get(&self, ty: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = (type_index(ty), ns.to_string(), name.to_string());
        self.lock()
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(ty.plural, name))
    }

    /// Objects of `ty` (in `ns`, or all) matching the selectors, `limit` at a time.
    pub fn list(
        &self,
        ty: &ResourceType,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> Result<Page, ApiError> {
        let inner = self.lock();
        // The token is the version of the first page and the key of the last item sent.
        let (rv, after) = match continue_token {
            Some(token) => {
                let (rv, rest) = token
                    .split_once(':')
                    .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
                let (ns, name) = rest.split_once('/').unwrap_or(("", rest));
                let rv = parse_rv(rv)?.unwrap_or(inner.rv);
                (rv, Some((ns.to_string(), name.to_string())))
            }
            None => (inner.rv, None),
        };
        if rv < inner.compacted {
            return Err(ApiError::expired(rv, inner.compacted));
        }
        let idx = type_index(ty);
        let mut items = Vec::new();
        let mut continue_token = None;
        for ((t, o_ns, o_name), object) in &inner.objects {
            if *t != idx || ns.is_some_and(|n| n != o_ns) {
                continue;
            }
            if after
                .as_ref()
                .is_some_and(|(a_ns, a_name)| (o_ns, o_name) <= (a_ns, a_name))
            {
                continue;
            }
            if !labels.matches(object) || !fields.matches(object) {
                continue;
            }
            if limit.is_some_and(|l| l > 0 && items.len() >= l) {
                if let Some(last) = items.last() {
                    let last: &Value = last;
                    continue_token = Some(format!(
                        "{rv}:{}/{}",
                        last["metadata"]["namespace"].as_str().unwrap_or_default(),
                        last["metadata"]["name"].as_str().unwrap_or_default()
                    ));
                }
                break;
            }
            items.push(object.clone());
        }
        Ok(Page {
            items,
            rv,
            continue_token,
        })
    }

    /// Stores a new object: names it (`generateName`), stamps the metadata the server owns,
    /// and refuses a taken name (409) or a missing namespace (404).
    pub fn create(
        &self,
        ty: &'static ResourceType,
        url_ns: Option<&str>,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        check_type(ty, &object)?;
        let mut inner = self.lock();
        let ns = match (ty.namespaced, url_ns, object["metadata"]["namespace"].as_str()) {
            (false, _, _) => String::new(),
            (true, Some(url), Some(body)) if url != body => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({body}) does not match the namespace on the request ({url})"
                )))
            }
            (true, Some(url), _) => url.to_string(),
            (true, None, Some(body)) if !body.is_empty() => body.to_string(),
            (true, None, _) => "default".to_string(),
        };
        let name = match object["metadata"]["name"].as_str() {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => match object["metadata"]["generateName"].as_str() {
                Some(prefix) if !prefix.is_empty() => {
                    inner.names += 1;
                    format!("{prefix}{}", self.suffix(inner.names))
                }
                _ => {
                    return Err(ApiError::invalid(
                        ty.plural,
                        "",
                        "metadata.name: name or generateName is required",
                    ))
                }
            },
        };
        if !valid_name(&name) {
            return Err(ApiError::invalid(
                ty.plural,
                &name,
                "metadata.name: must consist of lower case alphanumeric characters, '-' or '.', \
                 and start and end with an alphanumeric character",
            ));
        }
        if ty.namespaced {
            let ns_key = (type_index(namespaces()), String::new(), ns.clone());
            if !inner.objects.contains_key(&ns_key) {
                return Err(ApiError::not_found("namespaces", &ns));
            }
        }
        let key = (type_index(ty), ns.clone(), name.clone());
        if inner.objects.contains_key(&key) {
            return Err(ApiError::already_exists(ty.plural, &name));
        }
        if ty.status_subresource {
            // The status subresource alone writes status, also on create.
            if let Some(map) = object.as_object_mut() {
                map.remove("status");
            }
        }
        inner.rv += 1;
        let rv = inner.rv;
        object["apiVersion"] = json!(ty.api_version());
        object["kind"] = json!(ty.kind);
        set_meta(&mut object, "name", Some(json!(name)));
        set_meta(&mut object, "namespace", ty.namespaced.then(|| json!(ns)));
        set_meta(&mut object, "uid", Some(json!(self.uid(rv))));
        set_meta(&mut object, "resourceVersion", Some(json!(rv.to_string())));
        set_meta(&mut object, "generation", Some(json!(1)));
        set_meta(&mut object, "creationTimestamp", Some(json!(now_rfc3339())));
        inner.objects.insert(key, object.clone());
        self.publish(
            &mut inner,
            Event {
                rv,
                kind: EventType::Added,
                ty,
                object: object.clone(),
                previous: None,
            },
        );
        Ok(object)
    }

    /// Replaces `name` with `object` (PUT), or its status alone (`Part::Status`).
    pub fn update(
        &self,
        ty: &'static ResourceType,
        ns: &str,
        name: &str,
        object: Value,
        part: Part,
    ) -> Result<Value, ApiError> {
        self.modify(ty, ns, name, part, |_| Ok(object), None)
    }

    /// Changes `name` to `change(current)`; when it does not exist, creates `change(seed)`
    /// if a seed is given (server-side apply creates), else 404. The changed object's
    /// `metadata.resourceVersion`, when it differs from the stored one, is a precondition
    /// that fails with 409, as on a real server.
    pub fn modify(
        &self,
        ty: &'static ResourceType,
        ns: &str,
        name: &str,
        part: Part,
        change: impl FnOnce(&Value) -> Result<Value, ApiError>,
        seed: Option<Value>,
    ) -> Result<Value, ApiError> {
        let key = (type_index(ty), ns.to_string(), name.to_string());
        let inner = self.lock();
        let Some(stored) = inner.objects.get(&key).cloned() else {
            drop(inner);
            return match seed {
                Some(seed) if part == Part::Main => {
                    let object = change(&seed)?;
                    self.create(ty, ty.namespaced.then_some(ns), object)
                }
                _ => Err(ApiError::not_found(ty.plural, name)),
            };
        };
        // The change is computed under the lock, so a patch never applies to a stale copy.
        let mut inner = inner;
        let new = change(&stored)?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        check_type(ty, &new)?;
        if let Some(body_name) = new["metadata"]["name"].as_str() {
            if body_name != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        if ty.namespaced {
            if let Some(body_ns) = new["metadata"]["namespace"].as_str() {
                if !body_ns.is_empty() && body_ns != ns {
                    return Err(ApiError::bad_request(format!(
                        "the namespace of the object ({body_ns}) does not match the namespace on the URL ({ns})"
                    )));
                }
            }
        }
        let wanted_rv = parse_rv(
            new["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default(),
        )?;
        let stored_rv = parse_rv(
            stored["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default(),
        )?;
        if wanted_rv.is_some_and(|w| Some(w) != stored_rv) {
            return Err(ApiError::conflict(ty.plural, name));
        }
        if let Some(uid) = new["metadata"]["uid"].as_str() {
            if !uid.is_empty() && Some(uid) != stored["metadata"]["uid"].as_str() {
                return Err(ApiError::conflict(ty.plural, name));
            }
        }
        let mut next = match part {
            Part::Main => {
                let mut next = new;
                if ty.status_subresource {
                    match stored.get("status") {
                        Some(status) => next["status"] = status.clone(),
                        None => {
                            if let Some(map) = next.as_object_mut() {
                                map.remove("status");
                            }
                        }
                    }
                }
                for k in [
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "name",
                    "namespace",
                ] {
                    set_meta(&mut next, k, stored["metadata"].get(k).cloned());
                }
                next
            }
            Part::Status => {
                let mut next = stored.clone();
                match new.get("status") {
                    Some(status) => next["status"] = status.clone(),
                    None => {
                        if let Some(map) = next.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
                next
            }
        };
        next["apiVersion"] = json!(ty.api_version());
        next["kind"] = json!(ty.kind);
        set_meta(
            &mut next,
            "resourceVersion",
            Some(stored["metadata"]["resourceVersion"].clone()),
        );
        if next == stored {
            // A write that changes nothing is not a write: no new version, no event.
            return Ok(stored);
        }
        if spec_of(&next) != spec_of(&stored) {
            let generation = stored["metadata"]["generation"].as_u64().unwrap_or(0) + 1;
            set_meta(&mut next, "generation", Some(json!(generation)));
        }
        inner.rv += 1;
        let rv = inner.rv;
        set_meta(&mut next, "resourceVersion", Some(json!(rv.to_string())));
        inner.objects.insert(key, next.clone());
        self.publish(
            &mut inner,
            Event {
                rv,
                kind: EventType::Modified,
                ty,
                object: next.clone(),
                previous: Some(stored),
            },
        );
        Ok(next)
    }

    /// Removes `name`, returning its last state stamped with the deletion's version.
    pub fn delete(
        &self,
        ty: &'static ResourceType,
        ns: &str,
        name: &str,
        precondition_rv: Option<u64>,
    ) -> Result<Value, ApiError> {
        let key = (type_index(ty), ns.to_string(), name.to_string());
        let mut inner = self.lock();
        let stored = inner
            .objects
            .get(&key)
            .ok_or_else(|| ApiError::not_found(ty.plural, name))?;
        let stored_rv = parse_rv(
            stored["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default(),
        )?;
        if precondition_rv.is_some_and(|p| Some(p) != stored_rv) {
            return Err(ApiError::conflict(ty.plural, name));
        }
        let mut object = inner.objects.remove(&key).unwrap_or_default();
        inner.rv += 1;
        let rv = inner.rv;
        set_meta(&mut object, "resourceVersion", Some(json!(rv.to_string())));
        self.publish(
            &mut inner,
            Event {
                rv,
                kind: EventType::Deleted,
                ty,
                object: object.clone(),
                previous: None,
            },
        );
        Ok(object)
    }

    /// Starts a watch of `ty`: the backlog to send first and the live stream, taken under one
    /// lock so nothing falls between them. A version older than the compaction point is 410.
    pub fn subscribe(&self, ty: &ResourceType, since: Since) -> Result<Subscription, ApiError> {
        let inner = self.lock();
        let live = self.events.subscribe();
        let idx = type_index(ty);
        let backlog = match since {
            Since::Version(v) if v < inner.compacted => {
                return Err(ApiError::expired(v, inner.compacted))
            }
            Since::Version(v) => inner
                .log
                .iter()
                .filter(|e| e.rv > v && type_index(e.ty) == idx)
                .cloned()
                .collect(),
            Since::InitialState => inner
                .objects
                .iter()
                .filter(|((t, _, _), _)| *t == idx)
                .map(|(_, object)| Event {
                    rv: parse_rv(
                        object["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap_or_default(),
                    )
                    .ok()
                    .flatten()
                    .unwrap_or(0),
                    kind: EventType::Added,
                    ty: &TYPES[idx],
                    object: object.clone(),
                    previous: None,
                })
                .collect(),
        };
        Ok(Subscription {
            backlog,
            live,
            rv: inner.rv,
        })
    }

    /// Drops the event log: a watch from any version before now gets `410 Gone`, and so does
    /// every open watch that has not yet been sent everything up to now. Returns the
    /// compaction point.
    pub fn compact(&self) -> u64 {
        let mut inner = self.lock();
        inner.log.clear();
        inner.compacted = inner.rv;
        let rv = inner.rv;
        self.compacted.send_replace(rv);
        rv
    }

    /// The compaction point, watched: open watches end with 410 when it passes them.
    pub fn compaction(&self) -> watch::Receiver<u64> {
        self.compacted.subscribe()
    }

    /// Holds back (`true`) or releases live events on every open watch, so a test can make
    /// writes a watcher does not see before a compaction.
    pub fn pause_watches(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Whether live events are held back, watched.
    pub fn paused(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    fn uid(&self, rv: u64) -> String {
        let x = self.seed ^ rv.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (x >> 32) as u32,
            (x >> 16) as u16,
            rv & 0xfff,
            (x >> 4) & 0xfff,
            rv
        )
    }

    /// Five characters as a real server appends to `generateName` (no vowels, no lookalikes).
    fn suffix(&self, n: u64) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut x = self.seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (0..5)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
            })
            .collect()
    }
}

fn namespaces() -> &'static ResourceType {
    &TYPES[0]
}

/// A body's `apiVersion` and `kind`, when given, must be the URL's type's.
fn check_type(ty: &ResourceType, object: &Value) -> Result<(), ApiError> {
    if let Some(kind) = object["kind"].as_str() {
        if !kind.is_empty() && kind != ty.kind {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({kind}) does not match the request ({})",
                ty.kind
            )));
        }
    }
    if let Some(v) = object["apiVersion"].as_str() {
        if !v.is_empty() && v != ty.api_version() {
            return Err(ApiError::bad_request(format!(
                "the apiVersion of the object ({v}) does not match the request ({})",
                ty.api_version()
            )));
        }
    }
    Ok(())
}
