//! The mesh's certificate authority: a root generated on first start into `DATA_DIR/ca/`
//! (dir 0700, key 0600, cert 0644), or a user-supplied root or intermediate. It signs
//! workload certificates and the identity endpoint's own server certificate.
//!
//! A generated CA can rotate its root without an outage ([`roots`](super::roots) keeps
//! the persisted set): it trusts a list of roots (the trust bundle) and signs with one of
//! them. Rotation is three steps, each observable before the next: `rotate` adds a new
//! root to the bundle (proxies learn to trust it while everything is still signed by the
//! old one), `activate` makes it the signing root (new certificates chain to it; old ones
//! still verify because the old root stays trusted), `remove` drops the old root once no
//! certificate under it is alive. Every change is announced on [`Ca::subscribe`], so the
//! xDS snapshot and the identity endpoint's own certificate follow without a restart.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use arc_swap::ArcSwap;
use rcgen::{
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, PublicKeyData, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::roots::{self, RootSet};
use super::SpiffeId;

mod build;
#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod tests;

use build::{describe, leaf_params, short, sign, signer_from_files, state_of};
pub(in crate::identity) use build::{generate_root, new_root, write_new};
pub use build::{hex, pem_blocks, pem_encode, sha256};

/// The CA directory inside the data dir.
pub const CA_DIR: &str = "ca";
/// The root certificate's file name inside [`CA_DIR`].
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// The root key's file name inside [`CA_DIR`].
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// A generated root lives ten years: rotation replaces it long before.
pub(super) const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Most trusted roots at once: a rotation needs two; more means old roots were never
/// removed, and every proxy would keep carrying them.
pub const MAX_ROOTS: usize = 8;
/// Certificates are back-dated a little so that a peer whose clock lags still accepts them.
const BACKDATE: Duration = Duration::from_secs(60);

/// Why the CA could not be loaded, created, or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A CA file is not what it should be (not PEM, not a certificate, key and
    /// certificate do not match).
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why, in one line.
        reason: String,
    },
    /// `--ca-cert` without `--ca-key` or the other way round.
    #[error("--ca-cert and --ca-key go together")]
    HalfGiven,
    /// Signing failed.
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
    /// Rotation was asked of a CA supplied with `--ca-cert/--ca-key`: its roots are the
    /// user's to rotate (the control plane never holds their keys).
    #[error("root rotation needs the CA the control plane generated in DATA_DIR/ca; this one was supplied with --ca-cert/--ca-key: rotate it outside and restart with the new files")]
    NotRotatable,
    /// No trusted root's fingerprint starts with this prefix.
    #[error("no trusted root's sha256 starts with {0:?} (see `tandemctl ca status`)")]
    UnknownRoot(String),
    /// Several trusted roots' fingerprints start with this prefix, or it is not hex.
    #[error("{0}")]
    BadPrefix(String),
    /// The operation would break the mesh (remove the signing or the last root).
    #[error("{0}")]
    Refused(String),
}

/// Where the CA comes from.
#[derive(Debug, Clone)]
pub enum CaSource {
    /// `DATA_DIR/ca/`, created on first start.
    Generated {
        /// The data dir.
        data_dir: PathBuf,
    },
    /// A user-supplied CA (a root, or an intermediate followed by its chain up to the root).
    Supplied {
        /// PEM certificate(s): the signing certificate first, the root last.
        cert: PathBuf,
        /// PEM private key (PKCS#8) of the first certificate.
        key: PathBuf,
    },
}

impl CaSource {
    /// The source for the flags `--ca-cert`/`--ca-key` (both or neither).
    pub fn from_flags(
        data_dir: &Path,
        cert: Option<&PathBuf>,
        key: Option<&PathBuf>,
    ) -> Result<CaSource, CaError> {
        match (cert, key) {
            (None, None) => Ok(CaSource::Generated {
                data_dir: data_dir.to_path_buf(),
            }),
            (Some(cert), Some(key)) => Ok(CaSource::Supplied {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => Err(CaError::HalfGiven),
        }
    }
}

/// A certificate the CA issued, with the chain a peer needs.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf followed by the CA's chain (without the root when the CA is an
    /// intermediate, the root itself when the CA is the root), PEM.
    pub chain_pem: String,
    /// The leaf, DER.
    pub leaf_der: Vec<u8>,
    /// The CA chain after the leaf, DER, in order.
    pub ca_chain_der: Vec<Vec<u8>>,
    /// When the leaf expires (Unix seconds).
    pub not_after: u64,
}

/// One trusted root as `tandemctl ca status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RootStatus {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub sha256: String,
    /// The certificate's subject common name.
    pub subject: String,
    /// Not valid after, Unix seconds.
    pub not_after: u64,
    /// Not valid after, RFC 3339 (UTC).
    pub not_after_rfc3339: String,
    /// `signing` (new certificates chain to it; also trusted) or `trusted`.
    pub state: String,
}

/// What signs now: the signing certificate's issuer and its chain (DER), signing
/// certificate first.
struct Signer {
    issuer: Issuer<'static, KeyPair>,
    chain_der: Vec<Vec<u8>>,
}

/// One consistent view of the CA, swapped as a whole so that a certificate, its chain
/// and the bundle handed out with it always belong together.
struct State {
    signer: Signer,
    /// Trusted roots (DER), the signing root first: the bundle order.
    roots: Vec<Vec<u8>>,
    /// The roots as PEM, in the same order.
    bundle_pem: String,
}

impl State {
    fn new(signer: Signer, roots: Vec<Vec<u8>>) -> State {
        let bundle_pem = roots.iter().map(|r| pem_encode("CERTIFICATE", r)).collect();
        State {
            signer,
            roots,
            bundle_pem,
        }
    }
}

/// The loaded CA.
pub struct Ca {
    state: ArcSwap<State>,
    /// `DATA_DIR/ca` of a generated CA; `None` for a supplied one (not rotatable).
    dir: Option<PathBuf>,
    trust_domain: String,
    /// Serializes rotate/activate/remove: each reads the set, writes files, then swaps.
    ops: Mutex<()>,
    /// Bumped after every change of the bundle or the signing root.
    changes: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("root_sha256", &self.root_fingerprint())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `source`, generating a root under `DATA_DIR/ca/` on first start.
    /// A data dir from before rotation existed (one root, no `roots.json`) loads as a set
    /// of one, unchanged on disk until the first rotation.
    pub fn load(source: &CaSource, trust_domain: &str) -> Result<Ca, CaError> {
        match source {
            CaSource::Generated { data_dir } => {
                let dir = data_dir.join(CA_DIR);
                let cert = dir.join(ROOT_CERT_FILE);
                let key = dir.join(ROOT_KEY_FILE);
                if !roots::manifest_path(&dir).exists() && !key.exists() && !cert.exists() {
                    generate_root(&dir, &cert, &key, trust_domain)?;
                }
                let set = RootSet::load(&dir)?;
                let state = state_of(&dir, &set)?;
                Ok(Ca::with_state(state, Some(dir), trust_domain))
            }
            CaSource::Supplied { cert, key } => {
                let (signer, root) = signer_from_files(cert, key)?;
                let state = State::new(signer, vec![root]);
                Ok(Ca::with_state(state, None, trust_domain))
            }
        }
    }

    /// A new self-signed root for `trust_domain`, as (certificate PEM, PKCS#8 key PEM),
    /// for a CA kept somewhere other than the data dir (Kubernetes mode keeps it in a
    /// Secret that every replica reads).
    pub fn new_root_pem(trust_domain: &str) -> Result<(String, String), CaError> {
        let root = build::new_root(trust_domain)?;
        Ok((root.cert_pem, root.key_pem))
    }

    /// Loads a CA from a PEM certificate file (chain, signing certificate first) and its
    /// key; it cannot rotate.
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
        let (signer, root) = signer_from_files(cert_path, key_path)?;
        Ok(Ca::with_state(State::new(signer, vec![root]), None, ""))
    }

    fn with_state(state: State, dir: Option<PathBuf>, trust_domain: &str) -> Ca {
        Ca {
            state: ArcSwap::from_pointee(state),
            dir,
            trust_domain: trust_domain.to_string(),
            ops: Mutex::new(()),
            changes: tokio::sync::watch::channel(0).0,
        }
    }

    /// The trust bundle: every trusted root, PEM, the signing root first.
    pub fn trust_bundle_pem(&self) -> String {
        self.state.load().bundle_pem.clone()
    }

    /// The signing root's SHA-256 (of its DER), lowercase hex: what a join token pins.
    pub fn root_fingerprint(&self) -> String {
        self.state
            .load()
            .roots
            .first()
            .map(|r| hex(&sha256(r)))
            .unwrap_or_default()
    }

    /// Whether roots can be rotated (a generated CA).
    pub fn rotatable(&self) -> bool {
        self.dir.is_some()
    }

    /// A receiver that sees a new value after every change of the bundle or of the
    /// signing root.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every trusted root, in bundle order (the signing root first).
    pub fn status(&self) -> Vec<RootStatus> {
        let state = self.state.load();
        state
            .roots
            .iter()
            .enumerate()
            .map(|(i, der)| {
                let (subject, not_after) = describe(der);
                RootStatus {
                    sha256: hex(&sha256(der)),
                    subject,
                    not_after,
                    not_after_rfc3339: crate::resources::clock::rfc3339(not_after),
                    state: if i == 0 { "signing" } else { "trusted" }.to_string(),
                }
            })
            .collect()
    }

    /// Rotation step 1: generates a new root and adds it to the bundle after the signing
    /// root, which keeps signing. Returns the new root's status.
    pub fn rotate(&self) -> Result<RootStatus, CaError> {
        let dir = self.dir.as_ref().ok_or(CaError::NotRotatable)?;
        let _guard = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let mut set = RootSet::load(dir)?;
        if set.roots.len() >= MAX_ROOTS {
            return Err(CaError::Refused(format!(
                "{MAX_ROOTS} roots are trusted already: remove one that no longer signs first (`tandemctl ca remove <sha256-prefix>`)"
            )));
        }
        let files = roots::generate_into(dir, &self.trust_domain)?;
        let fingerprint = files.sha256.clone();
        set.roots.push(files);
        set.save(dir)?;
        self.reload(dir, &set)?;
        self.find_status(&fingerprint)
    }

    /// Rotation step 2: the root whose fingerprint starts with `prefix` becomes the
    /// signing root (first in the bundle); the previous one stays trusted.
    pub fn activate(&self, prefix: &str) -> Result<RootStatus, CaError> {
        let dir = self.dir.as_ref().ok_or(CaError::NotRotatable)?;
        let _guard = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let mut set = RootSet::load(dir)?;
        let fingerprint = set.find(prefix)?.sha256.clone();
        if set.signing != fingerprint {
            set.signing = fingerprint.clone();
            set.save(dir)?;
            self.reload(dir, &set)?;
        }
        self.find_status(&fingerprint)
    }

    /// Rotation step 3: removes a trusted, non-signing root from the bundle and deletes
    /// its files.
    pub fn remove(&self, prefix: &str) -> Result<RootStatus, CaError> {
        let dir = self.dir.as_ref().ok_or(CaError::NotRotatable)?;
        let _guard = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let mut set = RootSet::load(dir)?;
        let gone = set.find(prefix)?.clone();
        if set.roots.len() == 1 {
            return Err(CaError::Refused(format!(
                "root {} is the last trusted root; nothing would verify without it",
                short(&gone.sha256)
            )));
        }
        if gone.sha256 == set.signing {
            return Err(CaError::Refused(format!(
                "root {} is the signing root: activate another root first (`tandemctl ca activate <sha256-prefix>`)",
                short(&gone.sha256)
            )));
        }
        let removed = self.find_status(&gone.sha256)?;
        set.roots.retain(|r| r.sha256 != gone.sha256);
        set.save(dir)?;
        self.reload(dir, &set)?;
        // The manifest no longer names them: a crash before these leaves only litter.
        roots::delete_files(dir, &gone);
        Ok(removed)
    }

    /// Re-reads the root set from the CA directory after something other than this CA
    /// changed it (in Kubernetes mode: another replica's rotation step, arriving through
    /// the CA Secret); announces a change only when the bundle or the signing root differ.
    pub fn reload_from_dir(&self) -> Result<bool, CaError> {
        let dir = self.dir.as_ref().ok_or(CaError::NotRotatable)?;
        let _guard = self.ops.lock().unwrap_or_else(|e| e.into_inner());
        let set = RootSet::load(dir)?;
        let next = state_of(dir, &set)?;
        let current = self.state.load();
        if next.roots == current.roots {
            return Ok(false);
        }
        self.state.store(std::sync::Arc::new(next));
        self.changes.send_modify(|n| *n += 1);
        Ok(true)
    }

    /// The CA directory of a generated CA.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn reload(&self, dir: &Path, set: &RootSet) -> Result<(), CaError> {
        self.state.store(std::sync::Arc::new(state_of(dir, set)?));
        self.changes.send_modify(|n| *n += 1);
        Ok(())
    }

    fn find_status(&self, sha256: &str) -> Result<RootStatus, CaError> {
        self.status()
            .into_iter()
            .find(|r| r.sha256 == sha256)
            .ok_or_else(|| CaError::UnknownRoot(sha256.to_string()))
    }

    /// Issues a workload certificate for `id` over `public_key` (taken from a verified CSR):
    /// the only SAN is the SPIFFE ID, no CA, digitalSignature, serverAuth + clientAuth.
    pub fn issue_workload(
        &self,
        public_key: &impl PublicKeyData,
        id: &SpiffeId,
        ttl: Duration,
        now: u64,
    ) -> Result<Issued, CaError> {
        self.issue_workload_with_bundle(public_key, id, ttl, now)
            .map(|(issued, _)| issued)
    }

    /// As [`Ca::issue_workload`], with the trust bundle of the same CA state (so a
    /// rotation between the two cannot hand out a bundle that does not hold the issuer).
    pub fn issue_workload_with_bundle(
        &self,
        public_key: &impl PublicKeyData,
        id: &SpiffeId,
        ttl: Duration,
        now: u64,
    ) -> Result<(Issued, String), CaError> {
        let uri = id.to_string().try_into()?;
        let mut params = leaf_params(now, ttl)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let state = self.state.load();
        let issued = sign(&state.signer, params, public_key, now, ttl)?;
        Ok((issued, state.bundle_pem.clone()))
    }

    /// Issues the identity endpoint's own server certificate for `names` (DNS names or IP
    /// addresses), with a fresh key; returns the issued chain and the key (PKCS#8 DER).
    pub fn issue_server(
        &self,
        names: &[String],
        ttl: Duration,
        now: u64,
    ) -> Result<(Issued, Vec<u8>), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = leaf_params(now, ttl)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "tandem-control-plane");
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into()?),
            });
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let issued = sign(&self.state.load().signer, params, &key, now, ttl)?;
        Ok((issued, key.serialize_der()))
    }

    /// [`Ca::issue_server`] as a TLS server takes it: the chain (leaf first, then the CA
    /// chain) and the key, for the control plane's HTTPS endpoints (identity, injector).
    pub fn issue_server_tls(
        &self,
        names: &[String],
        ttl: Duration,
        now: u64,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), CaError> {
        let (issued, key) = self.issue_server(names, ttl, now)?;
        let mut chain = vec![CertificateDer::from(issued.leaf_der)];
        chain.extend(issued.ca_chain_der.into_iter().map(CertificateDer::from));
        Ok((chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key))))
    }
}
