//! Building certificates (roots, workload and server leaves) and the hashes and PEM
//! framing the CA and its callers share.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};

use super::{CaError, Issued, Signer, State, BACKDATE, ROOT_LIFETIME};
use crate::identity::roots::{self, RootSet};

pub(super) fn sign(
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
pub(super) fn short(sha256: &str) -> &str {
    sha256.get(..16).unwrap_or(sha256)
}

/// A root certificate's subject common name and not-after (Unix seconds).
pub(super) fn describe(der: &[u8]) -> (String, u64) {
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
pub(super) fn state_of(dir: &Path, set: &RootSet) -> Result<State, CaError> {
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
pub(super) fn signer_from_files(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Signer, Vec<u8>), CaError> {
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
pub(super) fn leaf_params(now: u64, ttl: Duration) -> Result<CertificateParams, CaError> {
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
pub(in crate::identity) fn generate_root(
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
pub(in crate::identity) struct NewRoot {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its key, PKCS#8 PEM.
    pub key_pem: String,
    /// SHA-256 of the certificate's DER, hex.
    pub sha256: String,
}

/// A self-signed P-256 root living [`ROOT_LIFETIME`].
pub(in crate::identity) fn new_root(trust_domain: &str) -> Result<NewRoot, CaError> {
    let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let now = crate::resources::clock::unix_now();
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

pub(in crate::identity) fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
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
