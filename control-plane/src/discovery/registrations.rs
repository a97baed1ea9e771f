//! Endpoints registered through the API, kept alive by heartbeats.
//!
//! A registration is an `Endpoint` in the store with annotations `tandem.dev/source:
//! registration`, its id and its TTL, so it survives a restart of the control plane.
//! Heartbeat times live in memory only (heartbeats are not revisions); after a restart,
//! every stored registration gets one TTL of grace. The expiry task deregisters those
//! whose last heartbeat is older than their TTL, as one revision by `ttl`.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::Source;
use crate::resources::validate::validate_document;
use crate::resources::{
    Kind, ResourceKey, REGISTRATION_ID_ANNOTATION, REGISTRATION_TTL_ANNOTATION, SOURCE_ANNOTATION,
    TANDEM_API_VERSION,
};
use crate::store::{Outcome, Store, StoreError, WHO_TTL};

/// The `tandem.dev/source` of API registrations.
pub const SOURCE: &str = "registration";

/// How often expiry is checked.
const TICK: Duration = Duration::from_secs(1);

/// What `POST /v1/endpoints/register` asks for.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Namespace.
    pub namespace: String,
    /// Service.
    pub service: String,
    /// Address.
    pub address: SocketAddr,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Expire without a heartbeat for this long; `None`: never.
    pub ttl: Option<Duration>,
}

#[derive(Debug)]
struct Beat {
    key: ResourceKey,
    ttl: Option<Duration>,
    last: Instant,
}

/// The live registrations' heartbeat times.
#[derive(Debug, Default)]
pub struct Registrations {
    beats: Mutex<HashMap<String, Beat>>,
}

impl Registrations {
    /// No registrations known yet (stored ones are picked up on the first sync).
    pub fn new() -> Arc<Registrations> {
        Arc::new(Registrations::default())
    }

    /// Registers an endpoint (one revision, unless identical) and returns its id. Blocking.
    pub fn register(
        &self,
        store: &Store,
        reg: Registration,
    ) -> Result<(Outcome, String), StoreError> {
        let id = crate::util::random_hex(16)
            .map_err(|e| StoreError::Corrupt(format!("no randomness: {e}")))?;
        let mut annotations = serde_json::Map::new();
        annotations.insert(SOURCE_ANNOTATION.into(), SOURCE.into());
        annotations.insert(REGISTRATION_ID_ANNOTATION.into(), id.clone().into());
        if let Some(ttl) = reg.ttl {
            annotations.insert(
                REGISTRATION_TTL_ANNOTATION.into(),
                ttl.as_secs().to_string().into(),
            );
        }
        let doc = serde_json::json!({
            "apiVersion": TANDEM_API_VERSION,
            "kind": "Endpoint",
            "metadata": {"namespace": reg.namespace, "annotations": annotations},
            "spec": {"service": reg.service, "address": reg.address.to_string(), "labels": reg.labels},
        });
        let resource = validate_document("registration", doc)?;
        let key = resource.key.clone();
        let outcome = store.register_endpoint(resource, crate::store::WHO_API)?;
        if let Ok(mut beats) = self.beats.lock() {
            beats.retain(|_, b| b.key != key);
            beats.insert(
                id.clone(),
                Beat {
                    key,
                    ttl: reg.ttl,
                    last: Instant::now(),
                },
            );
        }
        Ok((outcome, id))
    }

    /// Records a heartbeat; `false` when the id is unknown or already expired. Blocking
    /// (it may read the store to pick up registrations made before a restart).
    pub fn heartbeat(&self, store: &Store, id: &str) -> Result<bool, StoreError> {
        if self.touch(id) {
            return Ok(true);
        }
        self.sync(store)?;
        Ok(self.touch(id))
    }

    fn touch(&self, id: &str) -> bool {
        match self.beats.lock() {
            Ok(mut beats) => match beats.get_mut(id) {
                Some(b) => {
                    b.last = Instant::now();
                    true
                }
                None => false,
            },
            Err(_) => false,
        }
    }

    /// Aligns the heartbeat table with the store: stored registrations not yet known get
    /// a fresh heartbeat (a TTL of grace), known ones no longer stored are forgotten.
    fn sync(&self, store: &Store) -> Result<(), StoreError> {
        let stored: HashMap<String, (ResourceKey, Option<Duration>)> = store
            .list(Kind::Endpoint, None)?
            .into_iter()
            .filter_map(|r| {
                let a = r.doc.pointer("/metadata/annotations")?;
                if a.get(SOURCE_ANNOTATION).and_then(Value::as_str) != Some(SOURCE) {
                    return None;
                }
                let id = a.get(REGISTRATION_ID_ANNOTATION)?.as_str()?.to_string();
                let ttl = a
                    .get(REGISTRATION_TTL_ANNOTATION)
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .map(Duration::from_secs);
                Some((id, (r.key, ttl)))
            })
            .collect();
        if let Ok(mut beats) = self.beats.lock() {
            beats.retain(|id, _| stored.contains_key(id));
            let now = Instant::now();
            for (id, (key, ttl)) in stored {
                beats.entry(id).or_insert(Beat {
                    key,
                    ttl,
                    last: now,
                });
            }
        }
        Ok(())
    }

    /// Deregisters every registration whose heartbeat is older than its TTL, as one
    /// revision by `ttl`. Blocking.
    pub fn expire_due(&self, store: &Store) -> Result<Option<Outcome>, StoreError> {
        self.sync(store)?;
        let now = Instant::now();
        let due: Vec<(String, ResourceKey)> = match self.beats.lock() {
            Ok(beats) => beats
                .iter()
                .filter(|(_, b)| b.ttl.is_some_and(|ttl| now.duration_since(b.last) > ttl))
                .map(|(id, b)| (id.clone(), b.key.clone()))
                .collect(),
            Err(_) => Vec::new(),
        };
        if due.is_empty() {
            return Ok(None);
        }
        let keys: Vec<ResourceKey> = due.iter().map(|(_, k)| k.clone()).collect();
        let outcome = store.remove(&keys, WHO_TTL, "ttl expired")?;
        if let Ok(mut beats) = self.beats.lock() {
            for (id, _) in &due {
                beats.remove(id);
            }
        }
        Ok(Some(outcome))
    }
}

/// The expiry task, as a discovery [`Source`].
#[derive(Debug)]
pub struct Expiry(pub Arc<Registrations>);

impl Source for Expiry {
    fn name(&self) -> &'static str {
        "registrations"
    }

    fn run(self: Box<Self>, store: Arc<Store>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let (regs, store) = (self.0.clone(), store.clone());
                match tokio::task::spawn_blocking(move || regs.expire_due(&store)).await {
                    Ok(Ok(Some(out))) if !out.changed.is_empty() => {
                        tracing::info!(revision = out.revision, expired = ?out.changed, "registrations expired");
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "registration expiry failed"),
                    Err(e) => tracing::warn!(error = %e, "registration expiry task failed"),
                }
            }
        })
    }
}
