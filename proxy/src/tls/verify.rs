//! Certificate checks between workloads: the chain must end in a root of the trust bundle,
//! and the peer is known by the one SPIFFE ID in its certificate.
//!
//! Workload certificates carry no DNS name, so the WebPKI name check cannot be used on the
//! client side: [`SpiffeServerVerifier`] checks the chain like WebPKI does, then compares
//! the URI SAN with the identity the control plane announced for the endpoint.

use std::sync::Arc;

use crate::identity::cert::{refuse_tls12, schemes, spiffe_id_of, verify_tls13};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, RootCertStore,
    SignatureScheme,
};

fn rejected(why: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
        IdentityMismatch(why),
    ))))
}

/// Why a peer certificate was refused although its chain is good.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct IdentityMismatch(String);

/// Client side: the server must chain to the bundle and be one of `expected`
/// ([`super::expected_servers`]).
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
            Some(id) if super::is_expected(&self.expected, &id) => {
                Ok(ServerCertVerified::assertion())
            }
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
