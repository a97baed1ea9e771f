//! One certificate request: a fresh key and CSR, `POST /v1/certificates` to the identity
//! endpoint over TLS 1.3 pinned to the credential's CA, and the answer checked and parsed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::pin::PinVerifier;
use super::{Identity, IdentityConfig, IdentityError, RootInfo};

/// A whole request (connect, handshake, answer) that takes longer is a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer is a few KiB of PEM; anything far larger is not the identity endpoint.
const MAX_ANSWER: usize = 1 << 20;

#[derive(serde::Serialize)]
struct CertificateRequest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    csr_pem: &'a str,
}

#[derive(serde::Deserialize)]
struct CertificateResponse {
    certificate_chain_pem: String,
    trust_bundle_pem: String,
    expires_at: u64,
    spiffe_id: String,
}

/// Obtains a certificate. `san` is the SPIFFE ID to ask for: `None` on the first request
/// (the trust domain is the control plane's to decide, and the token names the workload),
/// the current identity on renewals so the CA refuses anything else. With `client` (the
/// certificate in force) the request is authenticated by mTLS and the token is not sent:
/// the token is short-lived, the workload is not.
///
/// `trusted` are the fingerprints of roots the identity endpoint may chain to besides the
/// token's pin (the roots the proxy trusts now).
pub async fn obtain(
    cfg: &IdentityConfig,
    san: Option<&str>,
    client: Option<Arc<CertifiedKey>>,
    trusted: &[[u8; 32]],
) -> Result<Identity, IdentityError> {
    // A new key every time: a renewal never extends the life of a key.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| IdentityError::Csr(e.to_string()))?;
    let mut params = CertificateParams::default();
    if let Some(san) = san {
        let uri = san
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| IdentityError::Csr(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
    }
    let csr_pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| IdentityError::Csr(e.to_string()))?;
    let token = match client {
        Some(_) => None,
        None => Some(cfg.credential.text()?),
    };
    let body = serde_json::to_vec(&CertificateRequest {
        token: token.as_deref(),
        csr_pem: &csr_pem,
    })
    .map_err(|e| IdentityError::Csr(e.to_string()))?;
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, post(cfg, body, client, trusted))
        .await
        .map_err(|_| IdentityError::Unreachable {
            addr: cfg.addr.clone(),
            reason: format!("no answer within {REQUEST_TIMEOUT:?}"),
        })??;
    let received = super::unix_now();
    let expected = &cfg.expected;
    if !expected.matches(&answer.spiffe_id) {
        return Err(IdentityError::WrongIdentity {
            got: answer.spiffe_id,
            namespace: expected.namespace.clone(),
            account: expected.account.clone(),
        });
    }
    if let Some(asked) = san {
        if asked != answer.spiffe_id {
            return Err(IdentityError::BadAnswer(format!(
                "asked for {asked}, the answer names {}",
                answer.spiffe_id
            )));
        }
    }
    let chain = certificates(&answer.certificate_chain_pem, "certificate_chain_pem")?;
    let leaf_ids = leaf_uris(&chain[0])?;
    if leaf_ids != [answer.spiffe_id.as_str()] {
        return Err(IdentityError::BadAnswer(format!(
            "the certificate names {leaf_ids:?}, the answer says {}",
            answer.spiffe_id
        )));
    }
    let bundle = certificates(&answer.trust_bundle_pem, "trust_bundle_pem")?;
    let roots = bundle
        .iter()
        .map(root_info)
        .collect::<Result<Vec<_>, _>>()?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .map_err(|e| IdentityError::BadAnswer(format!("loading the new key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    // The leaf must be for the key this proxy just made, not any other.
    certified.keys_match().map_err(|e| {
        IdentityError::BadAnswer(format!("the certificate is not for our key: {e}"))
    })?;
    Ok(Identity {
        spiffe_id: answer.spiffe_id,
        issued_at: received,
        not_after: answer.expires_at,
        certified: Arc::new(certified),
        trust_bundle: bundle,
        roots,
    })
}

async fn post(
    cfg: &IdentityConfig,
    body: Vec<u8>,
    client: Option<Arc<CertifiedKey>>,
    trusted: &[[u8; 32]],
) -> Result<CertificateResponse, IdentityError> {
    let unreachable = |reason: String| IdentityError::Unreachable {
        addr: cfg.addr.clone(),
        reason,
    };
    let (host, _) = split_host(&cfg.addr);
    let server_name = ServerName::try_from(host.to_string())
        .map_err(|e| unreachable(format!("bad host name {host:?}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut pins = cfg.credential.pins();
    for p in trusted {
        if !pins.contains(p) {
            pins.push(*p);
        }
    }
    let verifier = Arc::new(PinVerifier::new(pins, provider.clone()));
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let tls = match client {
        Some(current) => builder.with_client_cert_resolver(Arc::new(Current(current))),
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(cfg.addr.as_str())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let stream = match TlsConnector::from(Arc::new(tls))
        .connect(server_name, tcp)
        .await
    {
        Ok(s) => s,
        Err(e) => {
            return Err(match verifier.mismatch() {
                Some(why) => IdentityError::PinMismatch(why),
                None => unreachable(format!("TLS: {e}")),
            })
        }
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unreachable(format!("HTTP: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "identity connection ended with an error");
        }
    });
    let req = Request::post("/v1/certificates")
        .header(header::HOST, host)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| unreachable(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(format!("HTTP: {e}")))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| unreachable(format!("reading the answer: {e}")))?
        .to_bytes();
    if status != StatusCode::OK {
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        return Err(if status == StatusCode::UNAUTHORIZED {
            IdentityError::BadToken(message)
        } else {
            IdentityError::Refused {
                status: status.as_u16(),
                message,
            }
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| IdentityError::BadAnswer(e.to_string()))
}

/// Presents the certificate in force (renewal over mTLS).
#[derive(Debug)]
struct Current(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for Current {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// `host:port` → (`host`, `port`), IPv6 brackets removed.
pub fn split_host(addr: &str) -> (&str, &str) {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, ""));
    (host.trim_start_matches('[').trim_end_matches(']'), port)
}

fn certificates(pem: &str, field: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::BadAnswer(format!("{field}: {e}")))?;
    if certs.is_empty() {
        return Err(IdentityError::BadAnswer(format!("{field}: no certificate")));
    }
    Ok(certs)
}

fn leaf_uris(leaf: &CertificateDer<'_>) -> Result<Vec<String>, IdentityError> {
    super::cert::CertFacts::of(leaf.as_ref())
        .map(|f| f.uris)
        .ok_or_else(|| IdentityError::BadAnswer("the certificate or its SAN does not parse".into()))
}

fn root_info(der: &CertificateDer<'_>) -> Result<RootInfo, IdentityError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| IdentityError::BadAnswer(format!("trust bundle: {e}")))?;
    Ok(RootInfo {
        subject: cert.subject().to_string(),
        not_after: u64::try_from(cert.validity().not_after.timestamp()).unwrap_or(0),
        sha256: super::pin::hex(&super::pin::fingerprint(der.as_ref())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_split_with_and_without_brackets() {
        assert_eq!(split_host("127.0.0.1:15012"), ("127.0.0.1", "15012"));
        assert_eq!(split_host("[::1]:15012"), ("::1", "15012"));
        assert_eq!(split_host("cp.example:15012"), ("cp.example", "15012"));
    }
}
