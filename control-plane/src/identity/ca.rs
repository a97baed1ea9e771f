//! The mesh's certificate authority: a root generated on first start into `DATA_DIR/ca/`
//! (dir 0700, key 0600, cert 0644), or a user-supplied root or intermediate. It signs
//! workload certificates and the identity endpoint's own server certificate.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};

use super::SpiffeId;

/// The CA directory inside the data dir.
pub const CA_DIR: &str = "ca";
/// The root certificate's file name inside [`CA_DIR`].
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// The root key's file name inside [`CA_DIR`].
pub const ROOT_KEY_FILE: &str = "root-key.pem";

/// A generated root lives ten years: rotation (a later slice) replaces it long before.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
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

/// The loaded CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate and its chain (DER), signing certificate first.
    chain_der: Vec<Vec<u8>>,
    /// The root (last of the chain), PEM: the trust bundle.
    root_pem: String,
    root_sha256: [u8; 32],
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
    pub fn load(source: &CaSource, trust_domain: &str) -> Result<Ca, CaError> {
        match source {
            CaSource::Generated { data_dir } => {
                let dir = data_dir.join(CA_DIR);
                let cert = dir.join(ROOT_CERT_FILE);
                let key = dir.join(ROOT_KEY_FILE);
                if !key.exists() && !cert.exists() {
                    generate_root(&dir, &cert, &key, trust_domain)?;
                }
                Ca::from_files(&cert, &key)
            }
            CaSource::Supplied { cert, key } => Ca::from_files(cert, key),
        }
    }

    /// Loads a CA from a PEM certificate file (chain, signing certificate first) and its key.
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<Ca, CaError> {
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
        let root_sha256 = sha256(&root);
        Ok(Ca {
            issuer,
            root_pem: pem_encode("CERTIFICATE", &root),
            chain_der,
            root_sha256,
        })
    }

    /// The trust bundle: the root certificate, PEM.
    pub fn trust_bundle_pem(&self) -> &str {
        &self.root_pem
    }

    /// The root certificate's SHA-256 (of its DER), lowercase hex: what a join token pins.
    pub fn root_fingerprint(&self) -> String {
        hex(&self.root_sha256)
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
        let uri = id.to_string().try_into()?;
        let mut params = leaf_params(now, ttl)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        self.sign(params, public_key, now, ttl)
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
        let issued = self.sign(params, &key, now, ttl)?;
        Ok((issued, key.serialize_der()))
    }

    fn sign(
        &self,
        params: CertificateParams,
        public_key: &impl PublicKeyData,
        now: u64,
        ttl: Duration,
    ) -> Result<Issued, CaError> {
        let cert = params.signed_by(public_key, &self.issuer)?;
        let leaf_der = cert.der().to_vec();
        let mut chain_pem = pem_encode("CERTIFICATE", &leaf_der);
        for der in &self.chain_der {
            chain_pem.push_str(&pem_encode("CERTIFICATE", der));
        }
        Ok(Issued {
            chain_pem,
            leaf_der,
            ca_chain_der: self.chain_der.clone(),
            not_after: now + ttl.as_secs(),
        })
    }
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

fn generate_root(dir: &Path, cert: &Path, key: &Path, trust_domain: &str) -> Result<(), CaError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CaError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
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
    // The key first, created 0600 from the start (never briefly world-readable); the
    // certificate last, so a crash in between leaves a state `load` reports, not a
    // half-made CA silently replaced.
    write_new(key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_new(cert, root.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
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
