//! How the rest of the control plane follows the CA: the mesh-wide security settings
//! every xDS snapshot carries ([`MeshSecurity`]), and the identity endpoint's own TLS
//! config, both rebuilt whenever a root is added, activated or removed.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tandem_xds::domain::{AuthzDefault, MeshSecurity};
use tokio::sync::watch;

use crate::identity::ca::Ca;
use crate::identity::server::tls_config;

/// The parts of [`MeshSecurity`] that come from flags and never change while running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuritySettings {
    /// `--trust-domain`.
    pub trust_domain: String,
    /// `--default-authz`.
    pub default_action: AuthzDefault,
}

/// The settings with the CA's current trust bundle.
pub fn mesh_security(ca: &Ca, settings: &SecuritySettings) -> MeshSecurity {
    MeshSecurity {
        trust_domain: settings.trust_domain.clone(),
        default_action: settings.default_action,
        trust_bundle_pem: ca.trust_bundle_pem(),
    }
}

/// A watch of the mesh's security settings that changes whenever the CA's bundle or
/// signing root does (a task follows the CA until it is dropped). The xDS server
/// rebuilds its snapshot on every change, exactly as on a store revision.
pub fn follow_ca(ca: Arc<Ca>, settings: SecuritySettings) -> watch::Receiver<MeshSecurity> {
    let mut changes = ca.subscribe();
    let (tx, rx) = watch::channel(mesh_security(&ca, &settings));
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let next = mesh_security(&ca, &settings);
            tx.send_if_modified(|current| {
                let modified = *current != next;
                *current = next;
                modified
            });
            if tx.is_closed() {
                break;
            }
        }
    });
    rx
}

/// Keeps the identity endpoint's TLS config under the CA's signing root: after every CA
/// change, a new server certificate for `names` and client roots from the new bundle.
/// A failed rebuild keeps the previous config serving (and says so).
pub async fn follow_ca_tls(
    ca: Arc<Ca>,
    names: Vec<String>,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
) {
    let mut changes = ca.subscribe();
    while changes.changed().await.is_ok() {
        match tls_config(&ca, &names, crate::resources::clock::unix_now()) {
            Ok(config) => {
                tls.store(config);
                tracing::info!(ca_sha256 = %ca.root_fingerprint(), "identity endpoint certificate re-issued after a CA change");
            }
            Err(e) => {
                tracing::error!(error = %e, "identity endpoint certificate not re-issued; the previous one keeps serving")
            }
        }
    }
}
