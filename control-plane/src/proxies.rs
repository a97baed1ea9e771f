//! What the xDS server reports about connected proxies, for `GET /v1/status` and for the
//! metrics scraper ([`crate::telemetry`]), which reads each proxy's announced admin address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One connected proxy (an xDS node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// xDS node id.
    pub node: String,
    /// The service it runs for (node cluster or metadata), if known.
    pub service: Option<String>,
    /// Type URL (or short type name) → last ACKed version.
    pub acked: BTreeMap<String, String>,
    /// Type URL → the error detail of the last NACK, while it stands.
    pub nacked: BTreeMap<String, String>,
    /// Where its admin port (`/metrics`) answers, from the node metadata
    /// `tandem.admin_addr`; an unspecified IP (`0.0.0.0`) is replaced by the address the
    /// xDS stream came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_addr: Option<SocketAddr>,
}

/// The connected proxies, keyed by node id. The xDS server updates it; the API reads it.
#[derive(Debug, Default)]
pub struct ProxyBoard {
    proxies: Mutex<BTreeMap<String, ProxyStatus>>,
}

impl ProxyBoard {
    /// Records (replaces) a proxy's status.
    pub fn upsert(&self, status: ProxyStatus) {
        if let Ok(mut map) = self.proxies.lock() {
            map.insert(status.node.clone(), status);
        }
    }

    /// Changes a proxy's status in place (inserting a blank one first if absent).
    pub fn update(&self, node: &str, f: impl FnOnce(&mut ProxyStatus)) {
        if let Ok(mut map) = self.proxies.lock() {
            let entry = map.entry(node.to_string()).or_insert_with(|| ProxyStatus {
                node: node.to_string(),
                ..ProxyStatus::default()
            });
            f(entry);
        }
    }

    /// Forgets a proxy (its stream ended).
    pub fn remove(&self, node: &str) {
        if let Ok(mut map) = self.proxies.lock() {
            map.remove(node);
        }
    }

    /// Every connected proxy, by node id.
    pub fn list(&self) -> Vec<ProxyStatus> {
        self.proxies
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
