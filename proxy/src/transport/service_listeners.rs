//! The per-service outbound listeners (`services[].listen`, `--listen NAME=ADDR`), kept
//! in step with the config: bound before a config is published (a port conflict rejects
//! the config), stopped when it no longer names them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::listener::accept_loop;
use super::workers::Workers;
use crate::config::{Config, ConfigError};
use crate::drain::Watch;
use crate::forward::ListenerKind;

/// The per-service listeners (`services[].listen`), kept in step with the config.
#[derive(Debug)]
pub struct ServiceListeners {
    workers: Arc<Workers>,
    active: Mutex<HashMap<(String, SocketAddr), Active>>,
    watch: Mutex<Option<Watch>>,
}

#[derive(Debug)]
struct Active {
    local: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Listeners bound for a config that is not yet published.
#[derive(Debug, Default)]
pub struct Prepared {
    bound: Vec<((String, SocketAddr), TcpListener)>,
}

impl ServiceListeners {
    /// No listeners yet; `watch` is cloned into each accept loop.
    pub fn new(workers: Arc<Workers>, watch: Watch) -> Self {
        ServiceListeners {
            workers,
            active: Mutex::new(HashMap::new()),
            watch: Mutex::new(Some(watch)),
        }
    }

    /// Binds every listener `config` names that is not bound yet. Nothing changes for
    /// traffic until [`ServiceListeners::commit`]; on error the new sockets are closed.
    pub async fn prepare(&self, config: &Config) -> Result<Prepared, ConfigError> {
        let wanted: Vec<(String, SocketAddr)> = config
            .services
            .values()
            .filter_map(|s| s.listen.map(|a| (s.name.clone(), a)))
            .collect();
        let mut prepared = Prepared::default();
        for key in wanted {
            let exists = self
                .active
                .lock()
                .map(|a| a.contains_key(&key))
                .unwrap_or(false);
            if exists {
                continue;
            }
            let listener = TcpListener::bind(key.1).await.map_err(|e| ConfigError {
                path: format!("services[name={}].listen", key.0),
                reason: format!("cannot listen on {}: {e}", key.1),
            })?;
            prepared.bound.push((key, listener));
        }
        Ok(prepared)
    }

    /// Starts the prepared listeners and stops those `config` no longer names. Connections
    /// already accepted by a stopped listener carry on.
    pub fn commit(&self, config: &Config, prepared: Prepared) {
        let Ok(mut active) = self.active.lock() else {
            return;
        };
        active.retain(|(name, addr), _| {
            config
                .services
                .get(name)
                .is_some_and(|s| s.listen == Some(*addr))
        });
        let Some(watch) = self.watch.lock().ok().and_then(|w| w.clone()) else {
            return;
        };
        for (key, listener) in prepared.bound {
            let local = listener.local_addr().unwrap_or(key.1);
            let (stop_tx, stop_rx) = oneshot::channel();
            let kind = ListenerKind::Service(key.0.as_str().into());
            tracing::info!(service = %key.0, addr = %local, "service listener started");
            tokio::spawn(accept_loop(
                listener,
                kind,
                self.workers.clone(),
                watch.clone(),
                Some(stop_rx),
            ));
            active.insert(
                key,
                Active {
                    local,
                    _stop: stop_tx,
                },
            );
        }
    }

    /// The bound address of every service listener, by service name.
    pub fn addresses(&self) -> BTreeMap<String, SocketAddr> {
        self.active
            .lock()
            .map(|a| {
                a.iter()
                    .map(|((name, _), act)| (name.clone(), act.local))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Lets a drain complete: no new service listeners start after this.
    pub fn release_drain(&self) {
        if let Ok(mut w) = self.watch.lock() {
            w.take();
        }
    }
}
