//! What the mesh reads from certificates (their SPIFFE ID and expiry, from one parse),
//! and the checks every verifier of this crate shares: TLS 1.3 only, signatures by the
//! provider's algorithms, and whether a leaf chains to a given root. The identity
//! endpoint's pin check and the mesh's SPIFFE verifiers ([`crate::tls`]) are built on
//! these; certificates are identity's business, so they live here and TLS looks down at
//! them.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// What the mesh reads from a certificate, from one parse: its URI SANs and its expiry.
#[derive(Debug, Clone, Default)]
pub struct CertFacts {
    /// Every URI SAN.
    pub uris: Vec<String>,
    /// Expiry, Unix seconds.
    pub not_after: u64,
}

impl CertFacts {
    /// Parses `der`; `None` if it is not a certificate.
    pub fn of(der: &[u8]) -> Option<CertFacts> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()?;
        let uris = san
            .map(|s| {
                s.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let not_after = u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0);
        Some(CertFacts { uris, not_after })
    }

    /// The single `spiffe://<trust_domain>/...` URI SAN, if there is exactly one.
    pub fn spiffe_id(&self, trust_domain: &str) -> Option<&str> {
        let mut spiffe = self.uris.iter().filter(|u| u.starts_with("spiffe://"));
        let id = spiffe.next()?;
        if spiffe.next().is_some() {
            return None;
        }
        let domain = id.strip_prefix("spiffe://")?.split('/').next()?;
        (domain == trust_domain).then_some(id.as_str())
    }
}

/// The peer's SPIFFE ID: the single `spiffe://<trust_domain>/...` URI SAN of `der`.
pub fn spiffe_id_of(der: &[u8], trust_domain: &str) -> Option<String> {
    CertFacts::of(der)?
        .spiffe_id(trust_domain)
        .map(str::to_string)
}

/// The TLS 1.2 signature check of a TLS 1.3-only client: mesh and identity-endpoint
/// connections never negotiate 1.2, so a 1.2 signature is never legitimate.
pub fn refuse_tls12() -> Result<HandshakeSignatureValid, Error> {
    Err(Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// The TLS 1.3 handshake signature, checked with `provider`'s algorithms.
pub fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// The signature schemes `provider` verifies.
pub fn schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

/// Whether `leaf` chains to `root` (used to notice that the CA now signs with another root).
pub fn signed_by(leaf: &CertificateDer<'_>, root: &CertificateDer<'_>) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(leaf) else {
        return false;
    };
    let mut roots = RootCertStore::empty();
    if roots.add(root.clone().into_owned()).is_err() {
        return false;
    }
    let provider = rustls::crypto::ring::default_provider();
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &[],
        UnixTime::now(),
        provider.signature_verification_algorithms.all,
    )
    .is_ok()
}
