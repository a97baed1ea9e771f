//! The webhook's serving certificate: issued by the mesh CA (the same
//! [`Ca::issue_server`] the identity endpoint uses) for the webhook Service's names, so
//! the `caBundle` of the MutatingWebhookConfiguration is the mesh's trust bundle.
//!
//! Renewed without a restart: at two thirds of its lifetime, and after every CA change
//! (a rotation step changes the signing root or the bundle). The API server verifies
//! against `caBundle`, so during a root rotation the bundle there must hold both roots
//! before the new one signs (see docs/kubernetes.md).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::identity::ca::{Ca, CaError};
use crate::resources::clock::unix_now;

/// A serving certificate's lifetime unless `--injector-cert-ttl` says otherwise.
pub const DEFAULT_CERT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// When to renew a certificate that lives `ttl`: at two thirds, so that a failed renewal
/// has a third of the lifetime to be retried.
pub fn renew_after(ttl: Duration) -> Duration {
    ttl * 2 / 3
}

/// The TLS config: a fresh certificate for `names`, TLS 1.2 and 1.3 (kube-apiserver's
/// webhook client is Go's, which may be configured down to 1.2), no client certificate
/// (the API server authenticates the webhook, not the reverse), HTTP/2 or HTTP/1.1.
pub fn config(
    ca: &Ca,
    names: &[String],
    ttl: Duration,
) -> Result<Arc<rustls::ServerConfig>, CaError> {
    let (chain, key) = ca.issue_server_tls(names, ttl, unix_now())?;
    let tls_err = |e: rustls::Error| CaError::Invalid {
        path: "injector TLS".into(),
        reason: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Keeps `tls` fresh: a new certificate every [`renew_after`]`(ttl)` and after every CA
/// change. A failed renewal keeps the current one serving and is retried in a minute.
pub async fn renew(
    ca: Arc<Ca>,
    names: Vec<String>,
    ttl: Duration,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
) {
    let mut changes = ca.subscribe();
    let mut wait = renew_after(ttl);
    loop {
        let why = tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return; // the CA is gone: the process is ending
                }
                "CA change"
            }
            _ = tokio::time::sleep(wait) => "renewal",
        };
        match config(&ca, &names, ttl) {
            Ok(next) => {
                tls.store(next);
                wait = renew_after(ttl);
                tracing::info!(why, "injector certificate re-issued");
            }
            Err(e) => {
                wait = Duration::from_secs(60).min(renew_after(ttl));
                tracing::error!(error = %e, why, "injector certificate not re-issued; the current one keeps serving");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_leaves_a_third_of_the_lifetime() {
        assert_eq!(
            renew_after(Duration::from_secs(30)),
            Duration::from_secs(20)
        );
        assert_eq!(
            renew_after(DEFAULT_CERT_TTL),
            Duration::from_secs(20 * 24 * 3600)
        );
    }
}
