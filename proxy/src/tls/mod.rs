//! Mutual TLS 1.3 between proxies: the rustls configs built from the workload identity
//! and the trust bundle, shared by every worker so session tickets from one serve all.
//!
//! The certificate itself is read at each handshake through [`WorkloadCert`] (renewal
//! needs no rebuild, so resumption survives it). A trust-bundle change (a root added or
//! removed during rotation) rebuilds everything: server config with a fresh ticket key,
//! one client config per expected server identity (per identity because TLS 1.3
//! resumption skips verification: a session verified as A must never resume as B).
//!
//! The bundle comes from xDS when the control plane sends one (rotation reaches proxies
//! that way), else from the identity endpoint's last answer.

pub mod accept;
pub mod control_plane;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::identity::IdentityStore;
use crate::metrics::Metrics;
use verify::{SpiffeClientVerifier, SpiffeServerVerifier};

/// ALPN of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
/// Tandem's private ALPN for opaque TCP, so the server skips protocol detection (which
/// would stall on server-speaks-first protocols).
pub const ALPN_TCP: &[u8] = b"tandem-tcp";

/// The SPIFFE IDs a server may present, as one key: sorted, joined by a space (a URI
/// never holds one). One key per set keeps one client config per set, so a session
/// verified against one set never resumes against another.
pub fn expected_servers(identities: &[String]) -> Arc<str> {
    let mut ids: Vec<&str> = identities.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    Arc::from(ids.join(" "))
}

/// Whether `id` is one of the identities in an [`expected_servers`] key.
pub fn is_expected(expected: &str, id: &str) -> bool {
    expected.split(' ').any(|e| e == id)
}

/// What a connection carries, offered as its only ALPN protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    Http2,
    /// Opaque TCP.
    Tcp,
}

impl Alpn {
    fn bytes(self) -> &'static [u8] {
        match self {
            Alpn::Http1 => ALPN_HTTP1,
            Alpn::Http2 => ALPN_H2,
            Alpn::Tcp => ALPN_TCP,
        }
    }

    fn index(self) -> usize {
        match self {
            Alpn::Http1 => 0,
            Alpn::Http2 => 1,
            Alpn::Tcp => 2,
        }
    }
}

/// Why configs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the settings (an empty or unusable trust bundle).
    #[error("TLS config: {0}")]
    Config(String),
}

/// Presents the workload certificate in force, whichever it is at handshake time.
#[derive(Debug)]
pub struct WorkloadCert(Arc<IdentityStore>);

impl ResolvesServerCert for WorkloadCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().map(|id| id.certified.clone())
    }
}

impl ResolvesClientCert for WorkloadCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.load().map(|id| id.certified.clone())
    }

    fn has_certs(&self) -> bool {
        self.0.load().is_some()
    }
}

/// The configs for one trust bundle.
#[derive(Debug)]
struct Configs {
    /// The bundle's DER, in order (first: the root the CA signs with now).
    bundle: Vec<CertificateDer<'static>>,
    trust_domain: String,
    roots: Arc<RootCertStore>,
    server: Arc<ServerConfig>,
    /// For the control plane's secure xDS port: WebPKI server check (its certificate names
    /// its address), our workload certificate as the client's.
    control_plane: Arc<ClientConfig>,
    /// Per expected server identity, one config per [`Alpn`] sharing one session cache.
    clients: Mutex<HashMap<Arc<str>, [Arc<ClientConfig>; 3]>>,
}

/// The mutual-TLS settings of this proxy, present only when it has an identity.
#[derive(Debug)]
pub struct TlsState {
    identity: Arc<IdentityStore>,
    provider: Arc<CryptoProvider>,
    configs: ArcSwapOption<Configs>,
    /// The last bundle xDS announced, PEM.
    xds_bundle: Mutex<Option<String>>,
    /// The signing root an early renewal was already asked for (at most once per root).
    renewal_asked_for: Mutex<Option<Vec<u8>>>,
    /// Counts trust-bundle rebuilds and certificate renewals; part of the upstream pool
    /// key, so connections verified under an older bundle, or made with an older
    /// certificate, are not lent again (and are closed by the reaper).
    generation: std::sync::atomic::AtomicU64,
    metrics: Metrics,
}

impl TlsState {
    /// TLS over `identity`; nothing works until it holds a certificate and
    /// [`TlsState::refresh`] has run.
    pub fn new(identity: Arc<IdentityStore>, metrics: Metrics) -> Self {
        TlsState {
            identity,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            configs: ArcSwapOption::empty(),
            xds_bundle: Mutex::new(None),
            renewal_asked_for: Mutex::new(None),
            generation: std::sync::atomic::AtomicU64::new(0),
            metrics,
        }
    }

    /// Rebuilds whenever the identity store holds a new identity (its trust bundle may
    /// differ); runs until the store is gone.
    pub async fn follow_identity(self: Arc<Self>) {
        let mut changes = self.identity.subscribe();
        loop {
            self.refresh();
            // A renewed certificate retires pooled connections and session tickets too: the
            // server closes a connection when the certificate it was accepted with expires
            // (a request racing that close would fail), and a resumed session would carry
            // the old certificate along. New connections make a full handshake with the
            // new one.
            if let Some(c) = self.configs.load().as_ref() {
                if let Ok(mut clients) = c.clients.lock() {
                    clients.clear();
                }
            }
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Waits until the first workload certificate is held and the configs are built.
    pub async fn ready(&self) {
        let mut changes = self.identity.subscribe();
        let _ = changes.wait_for(|n| *n > 0).await;
        if self.configs.load().is_none() {
            self.refresh();
        }
    }

    /// The trust-bundle generation (see the field).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The metrics handshakes are counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Takes note of the bundle xDS announced (`None`: none) and rebuilds if the trusted
    /// roots or the identity changed.
    pub fn set_xds_bundle(&self, pem: Option<&str>) {
        if let Ok(mut b) = self.xds_bundle.lock() {
            if b.as_deref() == pem {
                return;
            }
            *b = pem.map(str::to_string);
        }
        self.refresh();
    }

    /// Rebuilds the configs if the bundle or trust domain changed; asks for an early
    /// renewal when the CA now signs with a root our certificate does not chain to.
    pub fn refresh(&self) {
        let Some(id) = self.identity.load() else {
            return;
        };
        let xds = self.xds_bundle.lock().ok().and_then(|b| b.clone());
        let bundle: Vec<CertificateDer<'static>> = match xds.as_deref() {
            Some(pem) => CertificateDer::pem_slice_iter(pem.as_bytes())
                .filter_map(Result::ok)
                .collect(),
            None => id.trust_bundle.clone(),
        };
        if bundle.is_empty() {
            tracing::warn!("trust bundle has no usable certificate; keeping the previous one");
            return;
        }
        let trust_domain = id
            .spiffe_id
            .strip_prefix("spiffe://")
            .and_then(|r| r.split('/').next())
            .unwrap_or_default()
            .to_string();
        if xds.is_some() {
            self.identity.set_announced_roots(
                bundle
                    .iter()
                    .map(|r| crate::identity::pin::fingerprint(r.as_ref()))
                    .collect(),
            );
            self.renew_if_resigned(&id, &bundle[0]);
            let earliest = bundle
                .iter()
                .filter_map(|r| crate::identity::cert::CertFacts::of(r.as_ref()))
                .map(|f| f.not_after)
                .min();
            if let Some(t) = earliest {
                self.metrics.set_bundle_expiry(t);
            }
        }
        let current = self.configs.load();
        if current
            .as_ref()
            .is_some_and(|c| c.bundle == bundle && c.trust_domain == trust_domain)
        {
            return;
        }
        match self.build(bundle, trust_domain) {
            Ok(c) => {
                tracing::info!(roots = c.bundle.len(), "mutual TLS configured");
                self.configs.store(Some(Arc::new(c)));
                self.generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot build TLS configs; keeping the previous ones")
            }
        }
    }

    fn renew_if_resigned(&self, id: &crate::identity::Identity, signing: &CertificateDer<'_>) {
        let Some(leaf) = id.certified.cert.first() else {
            return;
        };
        if crate::identity::cert::signed_by(leaf, signing) {
            return;
        }
        let Ok(mut asked) = self.renewal_asked_for.lock() else {
            return;
        };
        if asked.as_deref() == Some(signing.as_ref()) {
            return;
        }
        *asked = Some(signing.to_vec());
        tracing::info!("the CA signs with a new root: renewing the workload certificate now");
        self.identity.renew_now();
    }

    fn build(
        &self,
        bundle: Vec<CertificateDer<'static>>,
        trust_domain: String,
    ) -> Result<Configs, TlsError> {
        let err = |e: &dyn std::fmt::Display| TlsError::Config(e.to_string());
        let mut store = RootCertStore::empty();
        for der in &bundle {
            store.add(der.clone()).map_err(|e| err(&e))?;
        }
        let roots = Arc::new(store);
        let webpki =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), self.provider.clone())
                .build()
                .map_err(|e| err(&e))?;
        let verifier = SpiffeClientVerifier::new(webpki, trust_domain.clone());
        let mut server = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| err(&e))?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(WorkloadCert(self.identity.clone())));
        server.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec(), ALPN_TCP.to_vec()];
        // Stateless tickets: any worker resumes any session, and a fresh key per bundle
        // means no session outlives the roots it was verified under.
        server.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| err(&e))?;
        let server_check = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| err(&e))?;
        let mut control_plane = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| err(&e))?
            .with_webpki_verifier(server_check)
            .with_client_cert_resolver(Arc::new(WorkloadCert(self.identity.clone())));
        control_plane.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Configs {
            bundle,
            trust_domain,
            roots,
            server: Arc::new(server),
            control_plane: Arc::new(control_plane),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The server config, once there is an identity and a bundle.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.configs.load().as_ref().map(|c| c.server.clone())
    }

    /// What `/config_dump` shows: the trusted roots by fingerprint (signing root first),
    /// the trust domain and how many server identities have a client config.
    pub fn dump(&self) -> serde_json::Value {
        let Some(c) = self.configs.load_full() else {
            return serde_json::json!({ "state": "pending" });
        };
        let roots: Vec<String> = c
            .bundle
            .iter()
            .map(|r| crate::identity::pin::hex(&crate::identity::pin::fingerprint(r.as_ref())))
            .collect();
        let issuer = self.identity.load().and_then(|id| {
            let leaf = id.certified.cert.first()?.clone();
            c.bundle
                .iter()
                .position(|r| crate::identity::cert::signed_by(&leaf, r))
                .map(|i| roots[i].clone())
        });
        let identities = c.clients.lock().map(|m| m.len()).unwrap_or(0);
        serde_json::json!({
            "state": "ready",
            "trust_domain": c.trust_domain,
            "roots_sha256": roots,
            "certificate_issuer_sha256": issuer,
            "client_identities": identities,
        })
    }

    /// The config for the control plane's secure xDS port, once there is an identity.
    pub fn control_plane_config(&self) -> Option<Arc<ClientConfig>> {
        self.configs
            .load()
            .as_ref()
            .map(|c| c.control_plane.clone())
    }

    /// This mesh's trust domain, once known.
    pub fn trust_domain(&self) -> Option<String> {
        self.configs.load().as_ref().map(|c| c.trust_domain.clone())
    }

    /// The client config for servers that must be `expected`, offering `alpn`.
    pub fn client_config(&self, expected: &Arc<str>, alpn: Alpn) -> Option<Arc<ClientConfig>> {
        let configs = self.configs.load_full()?;
        let mut clients = configs.clients.lock().ok()?;
        if let Some(set) = clients.get(expected) {
            return Some(set[alpn.index()].clone());
        }
        let verifier = SpiffeServerVerifier::new(
            configs.roots.clone(),
            expected.clone(),
            configs.trust_domain.clone(),
            self.provider.clone(),
        );
        let base = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .ok()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(WorkloadCert(self.identity.clone())));
        // Clones share the session store, so the three ALPN variants resume each other's
        // sessions with the same server.
        let with = |a: Alpn| {
            let mut c = base.clone();
            c.alpn_protocols = vec![a.bytes().to_vec()];
            Arc::new(c)
        };
        let set = [with(Alpn::Http1), with(Alpn::Http2), with(Alpn::Tcp)];
        let chosen = set[alpn.index()].clone();
        // Bounded: identities come from the config, but a mesh can churn through many.
        if clients.len() >= 4096 {
            clients.clear();
        }
        clients.insert(expected.clone(), set);
        Some(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expected_set_accepts_each_member_and_nothing_else() {
        let a = "spiffe://td/ns/shop/sa/web".to_string();
        let b = "spiffe://td/ns/shop/sa/default".to_string();
        let key = expected_servers(&[a.clone(), b.clone(), a.clone()]);
        assert_eq!(
            &*key,
            "spiffe://td/ns/shop/sa/default spiffe://td/ns/shop/sa/web"
        );
        assert_eq!(key, expected_servers(&[b.clone(), a.clone()]));
        assert!(is_expected(&key, &a) && is_expected(&key, &b));
        assert!(!is_expected(&key, "spiffe://td/ns/shop/sa/we"));
        assert!(!is_expected(
            &key,
            "spiffe://td/ns/shop/sa/default spiffe://td/ns/shop/sa/web"
        ));
        assert!(!is_expected(&key, ""));
    }
}
