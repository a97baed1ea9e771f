//! Certificate checks between workloads: the chain must end in a root of the trust bundle,
//! and the peer is known by the one SPIFFE ID in its certificate.
//!
//! Workload certificates carry no DNS name, so the WebPKI name check cannot be used on the
//! client side: [`SpiffeServerVerifier`] checks the chain like WebPKI does, then compares
//! the URI SAN with the identity the control plane announced for the endpoint.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

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

fn rejected(why: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityMismatch(why),
    ))))
}

/// Why a peer certificate was refused although its chain is good.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct IdentityMismatch(String);

/// Client side: the server must chain to the bundle and be exactly `expected`.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Arc<str>,
    trust_domain: String,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    /// A verifier for servers that must be `expected`, trusting `roots`.
    pub fn new(
        roots: Arc<RootCertStore>,
        expected: Arc<str>,
        trust_domain: String,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        SpiffeServerVerifier {
            roots,
            expected,
            trust_domain,
            provider,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match spiffe_id_of(end_entity.as_ref(), &self.trust_domain) {
            Some(id) if *id == *self.expected => Ok(ServerCertVerified::assertion()),
            Some(id) => Err(rejected(format!(
                "the server is {id}, the control plane announced {}",
                self.expected
            ))),
            None => Err(rejected(format!(
                "the server certificate has no single SPIFFE ID in trust domain {}",
                self.trust_domain
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes(&self.provider)
    }
}

/// The TLS 1.2 signature check of a TLS 1.3-only client: mesh and identity-endpoint
/// connections never negotiate 1.2, so a 1.2 signature is never legitimate.
pub(crate) fn refuse_tls12() -> Result<HandshakeSignatureValid, Error> {
    Err(Error::PeerIncompatible(
        rustls::PeerIncompatible::Tls12NotOffered,
    ))
}

/// The TLS 1.3 handshake signature, checked with `provider`'s algorithms.
pub(crate) fn verify_tls13(
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
pub(crate) fn schemes(provider: &CryptoProvider) -> Vec<SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

/// Server side: WebPKI client authentication (a certificate is required), plus a single
/// SPIFFE ID in this mesh's trust domain, so authorization always has a name to check.
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl SpiffeClientVerifier {
    /// Wraps a WebPKI verifier built over the trust bundle.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, trust_domain: String) -> Self {
        SpiffeClientVerifier {
            inner,
            trust_domain,
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if spiffe_id_of(end_entity.as_ref(), &self.trust_domain).is_none() {
            return Err(rejected(format!(
                "the client certificate has no single SPIFFE ID in trust domain {}",
                self.trust_domain
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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
