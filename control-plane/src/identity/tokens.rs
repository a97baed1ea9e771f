//! Join tokens: short-lived, single-purpose credentials that let a standalone proxy
//! obtain its first certificate.
//!
//! Format: `tdm1.<id>.<secret>.<ca-sha256>` — `id` 16 hex digits (the lookup key),
//! `secret` 64 hex digits (32 random bytes), `ca-sha256` the SHA-256 of the signing root
//! certificate's DER in 64 hex digits (read from the CA at creation, so it follows a root
//! activation), so that the proxy can pin the CA before it trusts
//! anything the identity endpoint says (kubeadm's discovery-token-ca-cert-hash idea).
//! The control plane keeps only `SHA-256(secret)`, bound to one namespace and service,
//! in `DATA_DIR/join-tokens.json` (0600), so tokens survive a restart and a leaked data
//! dir leaks no usable token. A token may be used by several replicas until it expires.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ca::{hex, sha256, Ca};
use super::{Authenticator, IdentityError, SpiffeId};

/// The token file inside the data dir.
pub const TOKENS_FILE: &str = "join-tokens.json";
/// The token format's prefix (and version).
pub const PREFIX: &str = "tdm1";
/// The default lifetime of a join token.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The longest lifetime of a join token: it is a bootstrap credential, not a key.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a token could not be created or persisted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The request is not acceptable (name, TTL).
    #[error("{0}")]
    Invalid(String),
    /// The token file could not be read or written.
    #[error("{path}: {reason}")]
    Persist {
        /// The token file.
        path: PathBuf,
        /// Why, in one line.
        reason: String,
    },
}

/// What is stored per token: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// SHA-256 of the secret part, hex.
    pub secret_sha256: String,
    /// The namespace the token is bound to.
    pub namespace: String,
    /// The service (account) the token is bound to.
    pub service: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
}

/// A token just created: the only time its text exists on the control plane.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedToken {
    /// The token text.
    pub token: String,
    /// Its id (also the second field of the token).
    pub id: String,
    /// The identity it can obtain.
    pub identity: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// The parts of a token's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    /// The id.
    pub id: &'a str,
    /// The secret.
    pub secret: &'a str,
    /// The pinned root's SHA-256, hex.
    pub ca_sha256: &'a str,
}

/// Splits a token into its parts; `None` unless it has the `tdm1` format.
pub fn parse(token: &str) -> Option<ParsedToken<'_>> {
    let mut parts = token.trim().split('.');
    let (prefix, id, secret, ca) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.next().is_none()
        && prefix == PREFIX
        && hex_of(id, 16)
        && hex_of(secret, 64)
        && hex_of(ca, 64))
    .then_some(ParsedToken {
        id,
        secret,
        ca_sha256: ca,
    })
}

/// The token book: pure state, tested without files.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenBook {
    /// Records by token id.
    pub tokens: BTreeMap<String, TokenRecord>,
}

impl TokenBook {
    /// Adds a token bound to `namespace`/`service` built from random `id` and `secret`;
    /// drops expired records on the way.
    pub fn insert(
        &mut self,
        id: &str,
        secret: &str,
        namespace: &str,
        service: &str,
        expires_at: u64,
        now: u64,
    ) {
        self.tokens.retain(|_, r| r.expires_at > now);
        self.tokens.insert(
            id.to_string(),
            TokenRecord {
                secret_sha256: hex(&sha256(secret.as_bytes())),
                namespace: namespace.to_string(),
                service: service.to_string(),
                expires_at,
            },
        );
    }

    /// The record a token's text opens at `now`, or why not (one line, no secret in it).
    pub fn check(&self, token: &str, now: u64) -> Result<&TokenRecord, String> {
        let parsed = parse(token).ok_or("not a join token (tdm1.<id>.<secret>.<ca-sha256>)")?;
        let record = self
            .tokens
            .get(parsed.id)
            .ok_or_else(|| format!("unknown join token {}", parsed.id))?;
        let presented = hex(&sha256(parsed.secret.as_bytes()));
        if !crate::auth::constant_time_eq(&presented, &record.secret_sha256) {
            return Err(format!("wrong secret for join token {}", parsed.id));
        }
        if now >= record.expires_at {
            return Err(format!("join token {} has expired", parsed.id));
        }
        Ok(record)
    }
}

/// What a new token pins.
#[derive(Debug)]
enum Pin {
    /// This SHA-256 (tests, or a CA that never rotates).
    Fixed(String),
    /// The CA's signing root at creation time.
    Ca(Arc<Ca>),
}

/// Join tokens, persisted in `DATA_DIR/join-tokens.json`.
#[derive(Debug)]
pub struct JoinTokens {
    path: PathBuf,
    trust_domain: String,
    /// Where new tokens' pin comes from.
    pin: Pin,
    book: Mutex<TokenBook>,
}

impl JoinTokens {
    /// Loads the token file of `data_dir` (absent: no tokens yet).
    pub fn load(data_dir: &Path, trust_domain: &str, ca_sha256: &str) -> Result<Self, TokenError> {
        let path = data_dir.join(TOKENS_FILE);
        let persist = |reason: String| TokenError::Persist {
            path: path.clone(),
            reason,
        };
        let book = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| persist(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => TokenBook::default(),
            Err(e) => return Err(persist(e.to_string())),
        };
        Ok(JoinTokens {
            path,
            trust_domain: trust_domain.to_string(),
            pin: Pin::Fixed(ca_sha256.to_string()),
            book: Mutex::new(book),
        })
    }

    /// Pins the CA's signing root as it is when each token is created, so a token made
    /// right after `tandemctl ca activate` pins the new root (no copy to keep in step).
    pub fn follow_ca(mut self, ca: Arc<Ca>) -> Self {
        self.pin = Pin::Ca(ca);
        self
    }

    fn pin(&self) -> String {
        match &self.pin {
            Pin::Fixed(sha) => sha.clone(),
            Pin::Ca(ca) => ca.root_fingerprint(),
        }
    }

    /// Creates a token for `namespace`/`service` living `ttl` (at most [`MAX_TTL`]) and
    /// persists its hash before answering, so an answered token survives a crash.
    pub fn create(
        &self,
        namespace: &str,
        service: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<CreatedToken, TokenError> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(TokenError::Invalid(format!(
                "ttl {}s: must be between 1s and {}s (24h)",
                ttl.as_secs(),
                MAX_TTL.as_secs()
            )));
        }
        for (what, name) in [("namespace", namespace), ("service", service)] {
            crate::resources::validate::dns_label(what, name)
                .map_err(|e| TokenError::Invalid(e.to_string()))?;
        }
        let random = |n| {
            crate::util::random_hex(n).map_err(|e| TokenError::Persist {
                path: PathBuf::from("/dev/urandom"),
                reason: e.to_string(),
            })
        };
        let (id, secret) = (random(8)?, random(32)?);
        let expires_at = now + ttl.as_secs().max(1);
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = book.clone();
        next.insert(&id, &secret, namespace, service, expires_at, now);
        self.persist(&next)?;
        *book = next;
        Ok(CreatedToken {
            token: format!("{PREFIX}.{id}.{secret}.{}", self.pin()),
            identity: self.identity(namespace, service).to_string(),
            id,
            expires_at,
        })
    }

    fn identity(&self, namespace: &str, service: &str) -> SpiffeId {
        SpiffeId {
            trust_domain: self.trust_domain.clone(),
            namespace: namespace.to_string(),
            service_account: service.to_string(),
        }
    }

    /// Writes the book to a temp file (0600), fsyncs and renames it over the old one.
    fn persist(&self, book: &TokenBook) -> Result<(), TokenError> {
        let err = |e: std::io::Error| TokenError::Persist {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let tmp = self.path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let bytes = serde_json::to_vec_pretty(book).map_err(|e| TokenError::Persist {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        crate::util::write_new(&tmp, &bytes, 0o600).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)
    }
}

impl JoinTokens {
    /// The identity a join token opens at `now`.
    pub fn check(&self, credential: &str, now: u64) -> Result<SpiffeId, IdentityError> {
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let record = book
            .check(credential, now)
            .map_err(IdentityError::Unauthenticated)?;
        Ok(self.identity(&record.namespace, &record.service))
    }
}

impl Authenticator for JoinTokens {
    fn authenticate(
        &self,
        credential: &str,
        now: u64,
    ) -> impl std::future::Future<Output = Result<SpiffeId, IdentityError>> + Send {
        std::future::ready(self.check(credential, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef";
    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const CA: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn token() -> String {
        format!("tdm1.{ID}.{SECRET}.{CA}")
    }

    #[test]
    fn parse_wants_the_exact_format() {
        let t = token();
        let p = parse(&t).unwrap();
        assert_eq!((p.id, p.secret, p.ca_sha256), (ID, SECRET, CA));
        assert!(parse(&format!("tdm2.{ID}.{SECRET}.{CA}")).is_none());
        assert!(parse(&format!("tdm1.{ID}.{SECRET}")).is_none());
        assert!(parse(&format!("{t}.x")).is_none());
        assert!(parse(&format!("tdm1.{ID}.{}.{CA}", &SECRET[1..])).is_none());
    }

    #[test]
    fn only_the_hash_is_stored_and_it_opens_until_expiry() {
        let mut book = TokenBook::default();
        book.insert(ID, SECRET, "default", "a", 1_000, 500);
        let stored = serde_json::to_string(&book).unwrap();
        assert!(!stored.contains(SECRET), "{stored}");
        assert_eq!(book.check(&token(), 999).unwrap().service, "a");
        let expired = book.check(&token(), 1_000).unwrap_err();
        assert!(expired.contains("expired"), "{expired}");
        let wrong = format!("tdm1.{ID}.{}.{CA}", SECRET.replace('0', "1"));
        assert!(book
            .check(&wrong, 999)
            .unwrap_err()
            .contains("wrong secret"));
        let unknown = format!("tdm1.{}.{SECRET}.{CA}", "f".repeat(16));
        assert!(book.check(&unknown, 999).unwrap_err().contains("unknown"));
        assert!(book.check("garbage", 999).is_err());
    }

    #[test]
    fn insert_drops_expired_records() {
        let mut book = TokenBook::default();
        book.insert(ID, SECRET, "default", "a", 1_000, 500);
        book.insert(&"1".repeat(16), SECRET, "default", "b", 3_000, 2_000);
        assert_eq!(book.tokens.len(), 1);
    }

    #[test]
    fn tokens_survive_a_reload_and_ttl_is_bounded() {
        let dir = std::env::temp_dir().join(format!("tandem-jt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = JoinTokens::load(&dir, "cluster.local", CA).unwrap();
        let created = tokens
            .create("default", "a", Duration::from_secs(60), 100)
            .unwrap();
        assert!(created.token.ends_with(CA));
        assert_eq!(created.identity, "spiffe://cluster.local/ns/default/sa/a");
        assert_eq!(created.expires_at, 160);
        assert!(tokens
            .create("default", "a", MAX_TTL + Duration::from_secs(1), 100)
            .is_err());
        assert!(tokens.create("default", "A_b", DEFAULT_TTL, 100).is_err());
        let again = JoinTokens::load(&dir, "cluster.local", CA).unwrap();
        let id = again.check(&created.token, 159).unwrap();
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/a");
        assert!(matches!(
            again.check(&created.token, 160),
            Err(IdentityError::Unauthenticated(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
