//! The access log the control plane asks for: a Service annotated
//! `config.tandem.dev/access-log` has its workloads' proxies log the requests they
//! receive, carried as the access log of their inbound listener. The writer starts on the
//! first request after the ask and is replaced when the target changes; when the ask is
//! withdrawn, nothing is written and the old writer ends with its last handle.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tandem_xds::domain::AccessLogTarget;

use super::access_log::AccessLog;
use crate::metrics::ObserveMetrics;

/// The writer for the target asked for most recently.
#[derive(Debug)]
pub struct AskedLog {
    current: ArcSwapOption<Started>,
    /// Held while a writer starts, so two first requests start one writer.
    starting: Mutex<()>,
    metrics: ObserveMetrics,
}

/// A target and its writer (`None`: it could not be opened; not retried until the target
/// changes, so a bad path costs one warning, not one per request).
#[derive(Debug)]
struct Started {
    target: AccessLogTarget,
    log: Option<AccessLog>,
}

impl AskedLog {
    /// Nothing started yet; writers will count their lines in `metrics`.
    pub fn new(metrics: ObserveMetrics) -> Self {
        AskedLog {
            current: ArcSwapOption::empty(),
            starting: Mutex::new(()),
            metrics,
        }
    }

    /// The writer for `target`, started if it is new.
    pub fn get(&self, target: &AccessLogTarget) -> Option<AccessLog> {
        if let Some(s) = self.current.load().as_ref().filter(|s| s.target == *target) {
            return s.log.clone();
        }
        let _one = self.starting.lock().ok()?;
        if let Some(s) = self.current.load().as_ref().filter(|s| s.target == *target) {
            return s.log.clone();
        }
        let log = match AccessLog::start(target, &self.metrics) {
            Ok(log) => {
                tracing::info!(%target, "access log asked for by the control plane: started");
                Some(log)
            }
            Err(e) => {
                tracing::warn!(%target, error = %e, "access log asked for by the control plane: cannot start");
                None
            }
        };
        self.current.store(Some(Arc::new(Started {
            target: target.clone(),
            log: log.clone(),
        })));
        log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_per_target_and_a_bad_path_is_not_retried() {
        let registry = prometheus::Registry::new();
        let metrics = ObserveMetrics::register(&registry).unwrap();
        let asked = AskedLog::new(metrics.clone());
        let dir = std::env::temp_dir().join(format!("tandem-asked-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = AccessLogTarget::File(dir.join("a.log"));
        assert!(asked.get(&a).is_some());
        let first = asked.current.load_full().unwrap();
        assert!(asked.get(&a).is_some());
        assert!(Arc::ptr_eq(&first, &asked.current.load_full().unwrap()));
        let bad = AccessLogTarget::File(dir.join("missing-dir/b.log"));
        assert!(asked.get(&bad).is_none());
        let failed = asked.current.load_full().unwrap();
        assert!(asked.get(&bad).is_none());
        assert!(Arc::ptr_eq(&failed, &asked.current.load_full().unwrap()));
        assert!(asked.get(&a).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
