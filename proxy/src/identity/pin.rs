//! Authenticating the identity endpoint before the proxy trusts any root: the join token
//! carries the SHA-256 of the CA certificate (kubeadm's `discovery-token-ca-cert-hash`
//! idea), and the server's chain must be signed by the certificate with that hash.
//!
//! The pinned certificate becomes the one trust anchor of a normal WebPKI path check, so
//! every signature in the chain is still verified; a chain that merely *contains* a
//! certificate with the right hash but is not signed by it fails.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;

use super::cert;
use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// The SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// A SHA-256 written as 64 hex digits (either case), or `None`.
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A [`ServerCertVerifier`] that trusts exactly the CAs pinned: the join token's, and on
/// renewals also the roots the proxy trusts now (a rotation moves the identity endpoint to
/// a new root that the token predates).
#[derive(Debug)]
pub struct PinVerifier {
    pins: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
    /// Why the last handshake failed the pin check, so the caller can say "pin mismatch"
    /// instead of a generic TLS alert.
    mismatch: Mutex<Option<String>>,
}

impl PinVerifier {
    /// A verifier for the CAs whose DER hashes to one of `pins` (the first is the token's).
    pub fn new(pins: Vec<[u8; 32]>, provider: Arc<CryptoProvider>) -> Self {
        PinVerifier {
            pins,
            provider,
            mismatch: Mutex::new(None),
        }
    }

    /// The pin failure of the last handshake, if it failed on the pin.
    pub fn mismatch(&self) -> Option<String> {
        self.mismatch.lock().ok().and_then(|m| m.clone())
    }

    fn record(&self, why: String) {
        if let Ok(mut m) = self.mismatch.lock() {
            *m = Some(why);
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let anchor = intermediates
            .iter()
            .find(|c| self.pins.contains(&fingerprint(c.as_ref())));
        let Some(anchor) = anchor else {
            let presented: Vec<String> = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| hex(&fingerprint(c.as_ref())))
                .collect();
            self.record(format!(
                "CA pin mismatch: the token pins sha256 {}, the identity endpoint presented {}",
                self.pins.first().map(|p| hex(p)).unwrap_or_default(),
                presented.join(", ")
            ));
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(anchor.clone().into_owned())?;
        let others: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| c.as_ref() != anchor.as_ref())
            .cloned()
            .collect();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &others,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        // Workload certificates from the same CA carry serverAuth too; the name check keeps
        // a workload from posing as the identity endpoint (they have only a SPIFFE URI).
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        cert::refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        cert::verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        cert::schemes(&self.provider)
    }
}
