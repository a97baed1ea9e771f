//! Config reload: poll the file for changes, reload on SIGHUP, publish only valid configs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::Signal;

use crate::admin::AdminState;
use crate::config;
use crate::listener::ServiceListeners;

/// How often the file is checked. Polling (rather than inotify) also sees files replaced
/// by rename, as editors and Kubernetes ConfigMap mounts do.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Watches one config file and publishes each valid new version.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    state: Arc<AdminState>,
    listeners: Arc<ServiceListeners>,
    last_text: String,
}

impl Reloader {
    /// A reloader for `path`, whose current content `text` is already serving.
    pub fn new(
        path: PathBuf,
        text: String,
        state: Arc<AdminState>,
        listeners: Arc<ServiceListeners>,
    ) -> Self {
        Reloader {
            path,
            state,
            listeners,
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
        let prepared = match self.listeners.prepare(&config).await {
            Ok(p) => p,
            Err(e) => return self.reject(e.to_string()),
        };
        let version = match self.state.store.publish_static(config.clone()) {
            Ok(v) => v,
            Err(e) => return self.reject(e.to_string()),
        };
        self.listeners.commit(&config, prepared);
        self.state.metrics.reload(true);
        self.state.metrics.set_config_version(version);
        if let Ok(mut last) = self.state.last_error.lock() {
            *last = None;
        }
        tracing::info!(version, path = %self.path.display(), "config applied");
    }

    fn reject(&self, reason: String) {
        tracing::error!(path = %self.path.display(), "config rejected, previous config keeps serving: {reason}");
        self.state.metrics.reload(false);
        if let Ok(mut last) = self.state.last_error.lock() {
            *last = Some(reason);
        }
    }
}
