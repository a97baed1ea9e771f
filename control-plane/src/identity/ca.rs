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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use arc_swap::ArcSwap;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};

use super::roots::{self, RootSet};
use super::SpiffeId;

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
                    not_after_rfc3339: crate::util::rfc3339(not_after),
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
}

fn sign(
    signer: &Signer,
    params: CertificateParams,
    public_key: &impl PublicKeyData,
    now: u64,
    ttl: Duration,
) -> Result<Issued, CaError> {
    let cert = params.signed_by(public_key, &signer.issuer)?;
    let leaf_der = cert.der().to_vec();
    let mut chain_pem = pem_encode("CERTIFICATE", &leaf_der);
    for der in &signer.chain_der {
        chain_pem.push_str(&pem_encode("CERTIFICATE", der));
    }
    Ok(Issued {
        chain_pem,
        leaf_der,
        ca_chain_der: signer.chain_der.clone(),
        not_after: now + ttl.as_secs(),
    })
}

/// The first 16 hex digits of a fingerprint, for messages.
fn short(sha256: &str) -> &str {
    sha256.get(..16).unwrap_or(sha256)
}

/// A root certificate's subject common name and not-after (Unix seconds).
fn describe(der: &[u8]) -> (String, u64) {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let cn = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or_default()
                .to_string();
            let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
            (cn, not_after)
        }
        Err(_) => (String::new(), 0),
    }
}

/// The CA state of a generated CA's root set: the signing root's key and every root.
fn state_of(dir: &Path, set: &RootSet) -> Result<State, CaError> {
    let signing = set
        .roots
        .iter()
        .find(|r| r.sha256 == set.signing)
        .ok_or_else(|| CaError::Invalid {
            path: roots::manifest_path(dir),
            reason: format!("the signing root {} is not in the set", set.signing),
        })?;
    let (signer, _) = signer_from_files(&dir.join(&signing.cert), &dir.join(&signing.key))?;
    let mut ders = vec![signer.chain_der.last().cloned().unwrap_or_default()];
    for r in set.roots.iter().filter(|r| r.sha256 != set.signing) {
        ders.push(roots::read_cert(dir, r)?);
    }
    Ok(State::new(signer, ders))
}

/// A signer from a PEM certificate file (chain, signing certificate first) and its key,
/// with the chain's last certificate (the root), DER.
fn signer_from_files(cert_path: &Path, key_path: &Path) -> Result<(Signer, Vec<u8>), CaError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| CaError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    let invalid = |p: &Path, reason: String| CaError::Invalid {
        path: p.to_path_buf(),
        reason,
    };
    let cert_text = read(cert_path)?;
    let key_text = read(key_path)?;
    let key = KeyPair::from_pem(&key_text)
        .map_err(|e| invalid(key_path, format!("not a PEM private key: {e}")))?;
    let chain_der: Vec<Vec<u8>> = pem_blocks(&cert_text, "CERTIFICATE");
    let Some(first) = chain_der.first() else {
        return Err(invalid(cert_path, "no PEM certificate in the file".into()));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(first)
        .map_err(|e| invalid(cert_path, format!("not an X.509 certificate: {e}")))?;
    if !parsed.is_ca() {
        return Err(invalid(
            cert_path,
            "the first certificate is not a CA (basicConstraints CA:TRUE missing)".into(),
        ));
    }
    if parsed.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(invalid(
            key_path,
            format!(
                "the key does not match the certificate {}",
                cert_path.display()
            ),
        ));
    }
    let issuer = Issuer::from_ca_cert_der(&first.clone().into(), key)
        .map_err(|e| invalid(cert_path, format!("cannot sign with it: {e}")))?;
    let root = chain_der.last().cloned().unwrap_or_default();
    Ok((Signer { issuer, chain_der }, root))
}

/// Parameters every leaf shares: random serial, validity `now - BACKDATE .. now + ttl`,
/// not a CA, digitalSignature, serverAuth + clientAuth (a sidecar is both).
fn leaf_params(now: u64, ttl: Duration) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.serial_number = Some(random_serial()?);
    params.not_before = time_at(now.saturating_sub(BACKDATE.as_secs()));
    params.not_after = time_at(now + ttl.as_secs());
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Generates a root into `cert` and `key` (which must not exist), creating `dir` 0700.
pub(super) fn generate_root(
    dir: &Path,
    cert: &Path,
    key: &Path,
    trust_domain: &str,
) -> Result<(), CaError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CaError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    let root = new_root(trust_domain)?;
    // The key first, created 0600 from the start (never briefly world-readable); the
    // certificate last, so a crash in between leaves a state `load` reports, not a
    // half-made CA silently replaced.
    write_new(key, root.key_pem.as_bytes(), 0o600)?;
    write_new(cert, root.cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

/// A freshly generated root, not yet on disk.
pub(super) struct NewRoot {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its key, PKCS#8 PEM.
    pub key_pem: String,
    /// SHA-256 of the certificate's DER, hex.
    pub sha256: String,
}

/// A self-signed P-256 root living [`ROOT_LIFETIME`].
pub(super) fn new_root(trust_domain: &str) -> Result<NewRoot, CaError> {
    let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let now = crate::util::unix_now();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Tandem");
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Tandem root CA {trust_domain}"));
    params.serial_number = Some(random_serial()?);
    params.not_before = time_at(now.saturating_sub(BACKDATE.as_secs()));
    params.not_after = time_at(now + ROOT_LIFETIME.as_secs());
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = params.self_signed(&key_pair)?;
    Ok(NewRoot {
        cert_pem: root.pem(),
        key_pem: key_pair.serialize_pem(),
        sha256: hex(&sha256(root.der())),
    })
}

pub(super) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let err = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    crate::util::write_new(path, bytes, mode).map_err(err)
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = crate::util::random_bytes(16).map_err(|source| CaError::Io {
        path: PathBuf::from("/dev/urandom"),
        source,
    })?;
    // A positive INTEGER of at most 20 bytes (RFC 5280 4.1.2.2), never zero.
    if let Some(b) = bytes.first_mut() {
        *b = (*b & 0x7f) | 0x01;
    }
    Ok(SerialNumber::from(bytes))
}

fn time_at(unix: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(i64::MAX))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DER contents of every PEM block labelled `label` in `text`.
pub fn pem_blocks(text: &str, label: &str) -> Vec<Vec<u8>> {
    pem::parse_many(text)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.tag() == label)
        .map(|p| p.into_contents())
        .collect()
}

/// One PEM block.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-ca-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_root_is_generated_once_with_restricted_modes() {
        let dir = temp("gen");
        let source = CaSource::Generated {
            data_dir: dir.clone(),
        };
        let first = Ca::load(&source, "cluster.local").unwrap();
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(dir.join(CA_DIR)), 0o700);
        assert_eq!(mode(dir.join(CA_DIR).join(ROOT_KEY_FILE)), 0o600);
        assert_eq!(mode(dir.join(CA_DIR).join(ROOT_CERT_FILE)), 0o644);
        let again = Ca::load(&source, "cluster.local").unwrap();
        assert_eq!(first.root_fingerprint(), again.root_fingerprint());
        assert_eq!(first.root_fingerprint().len(), 64);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_names_the_file() {
        let (a, b) = (temp("a"), temp("b"));
        Ca::load(
            &CaSource::Generated {
                data_dir: a.clone(),
            },
            "td",
        )
        .unwrap();
        Ca::load(
            &CaSource::Generated {
                data_dir: b.clone(),
            },
            "td",
        )
        .unwrap();
        let key = b.join(CA_DIR).join(ROOT_KEY_FILE);
        let err = Ca::from_files(&a.join(CA_DIR).join(ROOT_CERT_FILE), &key).unwrap_err();
        assert!(
            err.to_string().contains(&key.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("does not match"), "{err}");
        let missing = a.join("nope.pem");
        let err = Ca::from_files(&missing, &key).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
    }

    #[test]
    fn half_given_flags_are_refused() {
        let p = PathBuf::from("x");
        assert!(matches!(
            CaSource::from_flags(Path::new("."), Some(&p), None),
            Err(CaError::HalfGiven)
        ));
    }
}

#[cfg(test)]
mod rotation_tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-rot-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn generated(dir: &Path) -> Ca {
        Ca::load(
            &CaSource::Generated {
                data_dir: dir.to_path_buf(),
            },
            "cluster.local",
        )
        .unwrap()
    }

    fn id() -> SpiffeId {
        SpiffeId {
            trust_domain: "cluster.local".into(),
            namespace: "default".into(),
            service_account: "a".into(),
        }
    }

    /// The root (DER) that signed a freshly issued workload certificate.
    fn issuer_of(ca: &Ca) -> String {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let issued = ca
            .issue_workload(
                &key,
                &id(),
                Duration::from_secs(3600),
                crate::util::unix_now(),
            )
            .unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&issued.leaf_der).unwrap();
        let roots = pem_blocks(&ca.trust_bundle_pem(), "CERTIFICATE");
        let signer = roots
            .iter()
            .find(|r| {
                let (_, root) = x509_parser::parse_x509_certificate(r).unwrap();
                leaf.verify_signature(Some(root.public_key())).is_ok()
            })
            .expect("the leaf chains to a root of the bundle");
        hex(&sha256(signer))
    }

    #[test]
    fn rotate_activate_remove_survive_a_restart() {
        let dir = temp("steps");
        let ca = generated(&dir);
        let mut changes = ca.subscribe();
        let old = ca.root_fingerprint();
        assert_eq!(issuer_of(&ca), old);

        // Step 1: two roots, the old one still signing and first in the bundle.
        let new = ca.rotate().unwrap().sha256;
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        let status = ca.status();
        assert_eq!(status.len(), 2);
        assert_eq!(
            (status[0].sha256.as_str(), status[0].state.as_str()),
            (old.as_str(), "signing")
        );
        assert_eq!(
            (status[1].sha256.as_str(), status[1].state.as_str()),
            (new.as_str(), "trusted")
        );
        assert!(status[1].not_after_rfc3339.ends_with('Z'));
        assert_eq!(pem_blocks(&ca.trust_bundle_pem(), "CERTIFICATE").len(), 2);
        assert_eq!(issuer_of(&ca), old);
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let ca_dir = dir.join(CA_DIR);
        assert_eq!(
            mode(ca_dir.join(format!("root-{}-key.pem", &new[..16]))),
            0o600
        );
        assert_eq!(mode(roots::manifest_path(&ca_dir)), 0o600);

        // Refusals: the signing root, unknown and non-hex prefixes.
        let e = ca.remove(&old[..8]).unwrap_err();
        assert!(matches!(e, CaError::Refused(_)), "{e}");
        assert!(e.to_string().contains("signing root"), "{e}");
        assert!(matches!(ca.activate("zz"), Err(CaError::BadPrefix(_))));
        let unknown = if old.starts_with('0') || new.starts_with('0') {
            "f"
        } else {
            "0"
        };
        if !old.starts_with(unknown) && !new.starts_with(unknown) {
            assert!(matches!(ca.activate(unknown), Err(CaError::UnknownRoot(_))));
        }

        // Step 2: the new root signs and comes first; the old one stays trusted.
        ca.activate(&new[..12]).unwrap();
        assert!(changes.has_changed().unwrap());
        assert_eq!(ca.root_fingerprint(), new);
        assert_eq!(issuer_of(&ca), new);
        let status = ca.status();
        assert_eq!(status[0].state, "signing");
        assert_eq!(status[1].sha256, old);

        // A restart keeps it all.
        drop(ca);
        let ca = generated(&dir);
        assert_eq!(ca.root_fingerprint(), new);
        assert_eq!(ca.status().len(), 2);
        assert_eq!(issuer_of(&ca), new);

        // Step 3: the old root goes; its files too. The last root cannot go.
        ca.remove(&old).unwrap();
        assert_eq!(ca.status().len(), 1);
        assert!(!ca_dir.join(ROOT_KEY_FILE).exists());
        let e = ca.remove(&new).unwrap_err();
        assert!(e.to_string().contains("last trusted root"), "{e}");
        drop(ca);
        let ca = generated(&dir);
        assert_eq!(ca.status().len(), 1);
        assert_eq!(ca.root_fingerprint(), new);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_supplied_ca_does_not_rotate() {
        let dir = temp("supplied");
        let first = generated(&dir);
        let ca_dir = dir.join(CA_DIR);
        let supplied = Ca::load(
            &CaSource::Supplied {
                cert: ca_dir.join(ROOT_CERT_FILE),
                key: ca_dir.join(ROOT_KEY_FILE),
            },
            "cluster.local",
        )
        .unwrap();
        assert!(!supplied.rotatable());
        assert_eq!(supplied.root_fingerprint(), first.root_fingerprint());
        let e = supplied.rotate().unwrap_err();
        assert!(matches!(e, CaError::NotRotatable));
        assert!(e.to_string().contains("--ca-cert"), "{e}");
        assert_eq!(supplied.status()[0].state, "signing");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
