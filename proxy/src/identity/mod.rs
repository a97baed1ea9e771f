//! The workload's identity: a key made here, a certificate from the control plane's CA,
//! renewed at half life.
//!
//! Path: [`JoinToken`] (from `--token`) → [`request::obtain`] makes a P-256 key and a CSR
//! and posts it over TLS 1.3 to the identity endpoint, which it authenticates by the CA
//! pin in the token ([`pin::PinVerifier`]) → the answer becomes one [`Identity`] in the
//! [`IdentityStore`] (one `ArcSwap`: chain, key, trust bundle and expiry change together)
//! → [`run`] sleeps until half life and does it again with a new key.
//!
//! The private key exists only in memory, inside the [`Identity`]'s `CertifiedKey`; no
//! `Debug`, log line or dump prints it.
//!
//! Renewals authenticate with the certificate in force (mTLS to the identity endpoint),
//! not the join token: the token is short-lived (1 h by default), the workload is not.

pub mod cert;
pub mod pin;
pub mod request;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The port of the identity endpoint when only the control plane's address is given.
pub const DEFAULT_IDENTITY_PORT: u16 = 15012;

/// A join token `tdm1.<id>.<secret>.<ca-sha256>`, parsed.
#[derive(Clone)]
pub struct JoinToken {
    text: String,
    /// SHA-256 of the CA certificate the identity endpoint must chain to.
    pub pin: [u8; 32],
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret is a credential: only the pin is shown.
        write!(f, "JoinToken(pin={})", pin::hex(&self.pin))
    }
}

impl JoinToken {
    /// Parses a token; the error says which part is wrong, never echoing the secret.
    pub fn parse(text: &str) -> Result<JoinToken, IdentityError> {
        let text = text.trim();
        let parts: Vec<&str> = text.split('.').collect();
        let bad = |why: &str| IdentityError::MalformedToken(why.to_string());
        let [version, id, secret, pin_hex] = parts[..] else {
            return Err(bad(
                "expected tdm1.<id>.<secret>.<ca-sha256> (four dot-separated parts)",
            ));
        };
        if version != "tdm1" {
            return Err(bad("it does not start with tdm1."));
        }
        let is_hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hex(id, 16) || !is_hex(secret, 64) {
            return Err(bad("the id must be 16 and the secret 64 hex digits"));
        }
        let pin = pin::parse_hex(pin_hex)
            .ok_or_else(|| bad("the CA pin (last part) must be 64 hex digits"))?;
        Ok(JoinToken {
            text: text.to_string(),
            pin,
        })
    }

    /// The whole token, for the request body only.
    pub fn secret(&self) -> &str {
        &self.text
    }
}

/// What the proxy presents for its first certificate (renewals present the certificate
/// in force instead).
#[derive(Debug, Clone)]
pub enum Credential {
    /// A join token (standalone), which also pins the CA.
    Join(JoinToken),
    /// A Kubernetes ServiceAccount token (projected, audience `tandem`), re-read from its
    /// file at every request because the kubelet rotates it; the CA is pinned separately.
    ServiceAccount {
        /// The token file.
        path: std::path::PathBuf,
        /// SHA-256 of the roots the identity endpoint may chain to (`--ca-pins`).
        pins: Vec<[u8; 32]>,
    },
}

impl Credential {
    /// The credential's text as the request sends it.
    pub fn text(&self) -> Result<String, IdentityError> {
        match self {
            Credential::Join(t) => Ok(t.secret().to_string()),
            Credential::ServiceAccount { path, .. } => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| IdentityError::TokenFile(format!("{}: {e}", path.display())))?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(IdentityError::TokenFile(format!(
                        "{} is empty",
                        path.display()
                    )));
                }
                Ok(text.to_string())
            }
        }
    }

    /// The roots the identity endpoint is pinned to before anything else is trusted.
    pub fn pins(&self) -> Vec<[u8; 32]> {
        match self {
            Credential::Join(t) => vec![t.pin],
            Credential::ServiceAccount { pins, .. } => pins.clone(),
        }
    }
}

/// Parses `--ca-pins`: SHA-256 fingerprints, 64 hex digits each, separated by commas.
pub fn parse_pins(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let pins: Vec<[u8; 32]> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| pin::parse_hex(p).ok_or_else(|| format!("{p:?} is not a SHA-256 (64 hex digits)")))
        .collect::<Result<_, _>>()?;
    if pins.is_empty() {
        return Err("no pin given".into());
    }
    Ok(pins)
}

/// Which workload this proxy is: the certificate must name it.
#[derive(Debug, Clone)]
pub struct Expected {
    /// `--namespace`.
    pub namespace: String,
    /// The service account: `--service-account`, else `--service` (standalone).
    pub account: String,
}

impl Expected {
    /// Whether `spiffe_id` is `spiffe://<any trust domain>/ns/<namespace>/sa/<account>`.
    /// The trust domain is the control plane's to choose.
    pub fn matches(&self, spiffe_id: &str) -> bool {
        let Some(rest) = spiffe_id.strip_prefix("spiffe://") else {
            return false;
        };
        let Some((domain, path)) = rest.split_once('/') else {
            return false;
        };
        !domain.is_empty() && path == format!("ns/{}/sa/{}", self.namespace, self.account)
    }
}

/// How to obtain the identity.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The credential.
    pub credential: Credential,
    /// The identity endpoint, `host:port`.
    pub addr: String,
    /// Who this proxy is.
    pub expected: Expected,
}

/// One root of the trust bundle, as reported.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RootInfo {
    /// Its subject DN.
    pub subject: String,
    /// Its expiry, Unix seconds.
    pub not_after: u64,
    /// SHA-256 of its DER, hex.
    pub sha256: String,
}

/// The certificate in force, with its key and the roots to trust peers by.
pub struct Identity {
    /// `spiffe://<td>/ns/<ns>/sa/<service>`.
    pub spiffe_id: String,
    /// When the answer arrived, Unix seconds (the start of the half-life clock: the
    /// certificate's notBefore is backdated for clock skew).
    pub issued_at: u64,
    /// The certificate's expiry, Unix seconds.
    pub not_after: u64,
    /// Chain (leaf first) and private key, ready for a rustls resolver.
    pub certified: Arc<CertifiedKey>,
    /// The trust bundle, DER.
    pub trust_bundle: Vec<CertificateDer<'static>>,
    /// The trust bundle, described.
    pub roots: Vec<RootInfo>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The earliest expiry among the trust bundle's roots.
    pub fn bundle_not_after(&self) -> Option<u64> {
        self.roots.iter().map(|r| r.not_after).min()
    }

    /// When to renew: half way from issue to expiry, ±5% of the lifetime so a fleet
    /// started together does not renew in lockstep.
    pub fn renew_in(&self, now: u64) -> Duration {
        let life_ms = self.not_after.saturating_sub(self.issued_at) * 1000;
        let jitter = crate::random::random_below(life_ms / 10 + 1) as i64 - (life_ms / 20) as i64;
        let at_ms = (self.issued_at * 1000 + life_ms / 2) as i64 + jitter;
        Duration::from_millis(u64::try_from(at_ms - (now * 1000) as i64).unwrap_or(0))
    }
}

/// The identity in force, swapped whole.
#[derive(Debug)]
pub struct IdentityStore {
    current: ArcSwapOption<Identity>,
    renewals_ok: std::sync::atomic::AtomicU64,
    /// Counts stored identities, so TLS can rebuild when the bundle that came with one
    /// differs.
    changed: watch::Sender<u64>,
    /// Wakes the renewal loop before half life (the CA switched roots).
    renew: tokio::sync::Notify,
    /// Fingerprints of the roots xDS announced: the identity endpoint may move to one of
    /// them during a rotation, before any answer of its own lists it.
    announced: std::sync::Mutex<Vec<[u8; 32]>>,
}

impl Default for IdentityStore {
    fn default() -> Self {
        IdentityStore {
            current: ArcSwapOption::empty(),
            renewals_ok: Default::default(),
            changed: watch::channel(0).0,
            renew: tokio::sync::Notify::new(),
            announced: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl IdentityStore {
    /// Fires after each new identity is stored.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Records the roots xDS announced (see the field's doc).
    pub fn set_announced_roots(&self, roots: Vec<[u8; 32]>) {
        if let Ok(mut a) = self.announced.lock() {
            *a = roots;
        }
    }

    /// Every root the identity endpoint may chain to now: the last answer's bundle and
    /// the roots xDS announced.
    fn trusted_roots(&self) -> Vec<[u8; 32]> {
        let mut all: Vec<[u8; 32]> = self
            .load()
            .map(|id| {
                id.trust_bundle
                    .iter()
                    .map(|r| pin::fingerprint(r.as_ref()))
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(a) = self.announced.lock() {
            all.extend(a.iter().copied());
        }
        all
    }

    /// Asks the renewal loop to renew now rather than at half life.
    pub fn renew_now(&self) {
        self.renew.notify_one();
    }

    /// The identity in force, if any yet.
    pub fn load(&self) -> Option<Arc<Identity>> {
        self.current.load_full()
    }

    fn store(&self, identity: Identity, metrics: &Metrics) {
        metrics.set_identity_expiry(identity.not_after, identity.bundle_not_after());
        self.current.store(Some(Arc::new(identity)));
        self.changed.send_modify(|n| *n += 1);
    }

    /// What `/config_dump` shows: names and dates, never key material.
    pub fn dump(&self) -> serde_json::Value {
        match self.load() {
            None => serde_json::json!({ "state": "pending" }),
            Some(id) => serde_json::json!({
                "state": "ready",
                "spiffe_id": id.spiffe_id,
                "not_after": id.not_after,
                "renewals": self.renewals_ok.load(std::sync::atomic::Ordering::Relaxed),
                "trust_bundle": id.roots,
            }),
        }
    }
}

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `--token` is not a join token.
    #[error("--token is not a join token: {0}")]
    MalformedToken(String),
    /// The endpoint's chain does not end in the pinned CA: never proceed.
    #[error("{0} (wrong token, or not the mesh's identity endpoint)")]
    PinMismatch(String),
    /// The endpoint refused the credential (401).
    #[error("the identity endpoint refused the token: {0}")]
    BadToken(String),
    /// Any other refusal (403: the CSR asks for what the token does not allow; 400; 5xx).
    #[error("the identity endpoint refused the request ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The endpoint's one-line reason.
        message: String,
    },
    /// The credential is for another workload than `--namespace` and the account.
    #[error("the credential is for {got}, but this proxy runs as --namespace {namespace}, service account {account}; refusing that identity")]
    WrongIdentity {
        /// What the endpoint issued.
        got: String,
        /// `--namespace`.
        namespace: String,
        /// `--service-account`, else `--service`.
        account: String,
    },
    /// The ServiceAccount token file cannot be read (the kubelet may not have written it
    /// yet: retried).
    #[error("the service account token file: {0}")]
    TokenFile(String),
    /// Network, TLS or HTTP failure.
    #[error("identity endpoint {addr}: {reason}")]
    Unreachable {
        /// The endpoint.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// The answer is not usable.
    #[error("the identity endpoint's answer is unusable: {0}")]
    BadAnswer(String),
    /// Key or CSR generation failed.
    #[error("making the key or CSR: {0}")]
    Csr(String),
}

impl IdentityError {
    /// Whether trying again can help. A token for another workload never turns into
    /// this one, so that stops the proxy.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            IdentityError::WrongIdentity { .. } | IdentityError::MalformedToken(_)
        )
    }
}

/// Obtains the first certificate (retrying with jittered backoff, each failure logged on
/// one line), signals `ready`, then renews at half life forever. Returns only on a
/// failure that retrying cannot fix.
pub async fn run(
    cfg: IdentityConfig,
    store: Arc<IdentityStore>,
    metrics: Metrics,
    ready: watch::Sender<bool>,
) -> Result<(), IdentityError> {
    let mut attempt = 0u32;
    let first = loop {
        match request::obtain(&cfg, None, None, &store.trusted_roots()).await {
            Ok(id) => break id,
            Err(e) if e.is_retryable() => {
                let wait = backoff(attempt, Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in = ?wait, "no workload certificate yet");
                tokio::time::sleep(wait).await;
                attempt = attempt.saturating_add(1);
            }
            Err(e) => return Err(e),
        }
    };
    tracing::info!(spiffe_id = %first.spiffe_id, not_after = first.not_after, "workload certificate obtained");
    store.store(first, &metrics);
    ready.send_replace(true);
    loop {
        let Some(current) = store.load() else {
            return Ok(());
        };
        tokio::select! {
            () = tokio::time::sleep(current.renew_in(unix_now())) => {}
            () = store.renew.notified() => {}
        }
        let mut attempt = 0u32;
        loop {
            // mTLS with the certificate in force; once it has expired (say, the host slept
            // through the renewal window) only the token is left, if it is still valid.
            let client = (unix_now() < current.not_after).then(|| current.certified.clone());
            let trusted = store.trusted_roots();
            match request::obtain(&cfg, Some(&current.spiffe_id), client, &trusted).await {
                Ok(id) => {
                    tracing::info!(spiffe_id = %id.spiffe_id, not_after = id.not_after, "workload certificate renewed");
                    metrics.identity_renewal(true);
                    store
                        .renewals_ok
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    store.store(id, &metrics);
                    break;
                }
                Err(e) => {
                    metrics.identity_renewal(false);
                    // Retry quickly while the certificate in force still lives; an expired
                    // one is logged as such, and retrying continues.
                    let wait = backoff(attempt, Duration::from_secs(5));
                    if unix_now() >= current.not_after {
                        tracing::error!(error = %e, "workload certificate expired and renewal fails");
                    } else {
                        tracing::warn!(error = %e, retry_in = ?wait, "certificate renewal failed");
                    }
                    tokio::time::sleep(wait).await;
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }
}

/// Doubles from 200 ms up to `cap`, jittered.
fn backoff(attempt: u32, cap: Duration) -> Duration {
    crate::backoff::jittered(Duration::from_millis(200), attempt, cap)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "tdm1.0123456789abcdef.0000000000000000000000000000000000000000000000000000000000000000.ff00000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn a_token_parses_and_its_debug_hides_the_secret() {
        let t = JoinToken::parse(TOKEN).unwrap();
        assert_eq!(t.pin[0], 0xff);
        assert_eq!(t.pin[31], 0x01);
        let shown = format!("{t:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        for bad in [
            "",
            "tdm1.a.b.c",
            "tdm2.0123456789abcdef.00.ff",
            &TOKEN[..TOKEN.len() - 1],
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_expected_identity_matches_any_trust_domain_but_only_this_workload() {
        let e = Expected {
            namespace: "default".into(),
            account: "web".into(),
        };
        assert!(e.matches("spiffe://cluster.local/ns/default/sa/web"));
        assert!(e.matches("spiffe://other.td/ns/default/sa/web"));
        assert!(!e.matches("spiffe://cluster.local/ns/default/sa/web2"));
        assert!(!e.matches("spiffe://cluster.local/ns/prod/sa/web"));
        assert!(!e.matches("spiffe:///ns/default/sa/web"));
        assert!(!e.matches("https://cluster.local/ns/default/sa/web"));
    }

    #[test]
    fn pins_parse_from_a_comma_list_and_junk_is_named() {
        let a = "ab".repeat(32);
        let b = "CD".repeat(32);
        let pins = parse_pins(&format!("{a}, {b},")).unwrap();
        assert_eq!(pins, vec![[0xab; 32], [0xcd; 32]]);
        let err = parse_pins(&format!("{a},xyz")).unwrap_err();
        assert!(err.contains("\"xyz\""), "{err}");
        assert!(parse_pins(" , ").is_err());
        assert!(parse_pins(&a[..63]).is_err());
    }

    #[test]
    fn a_service_account_token_is_read_fresh_and_an_empty_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("tandem-sa-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let cred = Credential::ServiceAccount {
            path: path.clone(),
            pins: vec![[1; 32]],
        };
        assert!(matches!(cred.text(), Err(IdentityError::TokenFile(_))));
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(cred.text().unwrap(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(cred.text().unwrap(), "second", "the kubelet rotates it");
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(cred.text(), Err(IdentityError::TokenFile(_))));
        assert!(cred.text().unwrap_err().is_retryable());
        assert_eq!(cred.pins(), vec![[1; 32]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn renewal_is_due_near_half_life() {
        let provider = rustls::crypto::ring::default_provider();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::default()
            .self_signed(&key)
            .unwrap();
        let signing = provider
            .key_provider
            .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
                key.serialize_der().into(),
            ))
            .unwrap();
        let id = Identity {
            spiffe_id: "spiffe://cluster.local/ns/default/sa/web".into(),
            issued_at: 1_000,
            not_after: 1_000 + 86_400,
            certified: Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)),
            trust_bundle: vec![],
            roots: vec![],
        };
        for _ in 0..100 {
            let d = id.renew_in(1_000).as_secs();
            assert!((43_200 - 4_320..=43_200 + 4_320).contains(&d), "{d}");
        }
        assert_eq!(id.renew_in(1_000 + 86_400), Duration::ZERO);
        assert!(!format!("{id:?}").contains("PRIVATE"));
    }

    #[test]
    fn backoff_stays_under_its_cap() {
        for attempt in 0..20 {
            assert!(backoff(attempt, Duration::from_secs(5)) <= Duration::from_millis(7_500));
        }
    }
}
