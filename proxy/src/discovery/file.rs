//! A static config file as the source of snapshots: poll the file for changes, reload on
//! SIGHUP, publish only valid configs (the previous one keeps serving otherwise).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::signal::unix::Signal;

use crate::config;
use crate::metrics::Metrics;
use crate::snapshot::Store;
use crate::transport::service_listeners::ServiceListeners;

/// How often the file is checked. Polling (rather than inotify) also sees files replaced
/// by rename, as editors and Kubernetes ConfigMap mounts do.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Why the last reload was rejected (`None` after a good one); the admin port shows it.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    last_error: Mutex<Option<String>>,
}

impl ReloadStatus {
    /// The reason the last reload was rejected, if it was.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn set(&self, error: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }
}

/// Where a reloaded config goes.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The snapshot store.
    pub store: Arc<Store>,
    /// Reload counters and the config version.
    pub metrics: Metrics,
    /// The last rejection.
    pub status: Arc<ReloadStatus>,
    /// The per-service listeners the config names.
    pub listeners: Arc<ServiceListeners>,
}

/// Watches one config file and publishes each valid new version.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    targets: Targets,
    last_text: String,
}

impl Reloader {
    /// A reloader for `path`, whose current content `text` is already serving.
    pub fn new(path: PathBuf, text: String, targets: Targets) -> Self {
        Reloader {
            path,
            targets,
            last_text: text,
        }
    }

    /// Runs until the process exits; `hup` (if any) forces a reload on SIGHUP.
    pub async fn run(mut self, mut hup: Option<Signal>) {
        if hup.is_none() {
            tracing::warn!("SIGHUP reload unavailable");
        }
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
            };
            self.check(forced).await;
        }
    }

    /// Reloads if the file changed (or `forced`, for SIGHUP).
    async fn check(&mut self, forced: bool) {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(t) => t,
            Err(e) => {
                if forced {
                    self.reject(format!("{}: cannot read: {e}", self.path.display()));
                }
                return;
            }
        };
        if !forced && text == self.last_text {
            return;
        }
        self.last_text.clone_from(&text);
        let config = match config::parse(&text) {
            Ok(c) => c,
            Err(e) => return self.reject(e.to_string()),
        };
        let prepared = match self.targets.listeners.prepare(&config).await {
            Ok(p) => p,
            Err(e) => return self.reject(e.to_string()),
        };
        let version = match self.targets.store.publish_static(config.clone()) {
            Ok(v) => v,
            Err(e) => return self.reject(e.to_string()),
        };
        self.targets.listeners.commit(&config, prepared);
        self.targets.metrics.reload(true);
        self.targets.metrics.set_config_version(version);
        self.targets.status.set(None);
        tracing::info!(version, path = %self.path.display(), "config applied");
    }

    fn reject(&self, reason: String) {
        tracing::error!(path = %self.path.display(), "config rejected, previous config keeps serving: {reason}");
        self.targets.metrics.reload(false);
        self.targets.status.set(Some(reason));
    }
}
