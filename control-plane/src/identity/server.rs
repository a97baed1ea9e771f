//! The identity endpoint: HTTPS (rustls, TLS 1.3 only) with a server certificate from the
//! mesh's own CA, serving `POST /v1/certificates` and, to clients with a workload
//! certificate, xDS (ADS over HTTP/2, as istiod serves both on 15012).
//!
//! Request `{"token": "...", "csr_pem": "..."}`, or, to renew, `{"csr_pem": "..."}` over a
//! TLS connection where the workload presented its current certificate (mTLS: join tokens
//! are short-lived, certificates are renewed for as long as the workload runs); answer `{"certificate_chain_pem",
//! "trust_bundle_pem", "expires_at", "spiffe_id"}`. The workload's key never travels: the
//! CSR carries only its public half, and its signature proves possession. Errors are
//! `{"error": "<one line>"}` with the status from [`IdentityError::status`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Either;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rcgen::{CertificateSigningRequestParams, IsCa, SanType};
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use tandem_xds::envoy::discovery::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::codegen::Service as _;

use super::ca::{Ca, CaError};
use super::{Authenticator, IdentityError, SpiffeId};
use crate::xds_server::{Ads, Workload};

/// Largest accepted request body: a CSR is a few hundred bytes; 64 KiB is generous.
pub const MAX_BODY: usize = 64 << 10;
/// Lifetime of the endpoint's own server certificate (re-issued at every start).
pub const SERVER_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The path prefix of ADS's gRPC methods.
const ADS_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/";
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRequest {
    /// The credential (standalone: a join token). Absent on a renewal authenticated by
    /// the client certificate.
    #[serde(default)]
    pub token: Option<String>,
    /// A PKCS#10 CSR, PEM.
    pub csr_pem: String,
}

/// The answer to a certificate request.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateResponse {
    /// The workload certificate followed by the CA chain, PEM.
    pub certificate_chain_pem: String,
    /// The root(s) to trust peers by, PEM.
    pub trust_bundle_pem: String,
    /// When the certificate expires, Unix seconds.
    pub expires_at: u64,
    /// The identity the certificate names.
    pub spiffe_id: String,
}

/// Signs CSRs for whoever an [`Authenticator`] vouches for.
pub struct IdentityService<A> {
    ca: Arc<Ca>,
    authenticator: Arc<A>,
    cert_ttl: Duration,
}

impl<A> std::fmt::Debug for IdentityService<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityService")
            .field("ca", &self.ca)
            .field("cert_ttl", &self.cert_ttl)
            .finish_non_exhaustive()
    }
}

impl<A: Authenticator> IdentityService<A> {
    /// A service signing with `ca` certificates that live `cert_ttl`.
    pub fn new(ca: Arc<Ca>, authenticator: Arc<A>, cert_ttl: Duration) -> Self {
        IdentityService {
            ca,
            authenticator,
            cert_ttl,
        }
    }

    /// Answers one certificate request at Unix time `now`. `peer` is the identity of a
    /// verified client certificate (issued by this CA), if the caller presented one: it
    /// stands in for a token, so a workload renews with the certificate it holds.
    pub async fn issue(
        &self,
        req: &CertificateRequest,
        peer: Option<&SpiffeId>,
        now: u64,
    ) -> Result<CertificateResponse, IdentityError> {
        // Authenticate before looking at the CSR: an anonymous caller learns nothing.
        let (id, how) = match (&req.token, peer) {
            (Some(token), _) => (self.authenticator.authenticate(token, now).await?, "token"),
            (None, Some(peer)) => (peer.clone(), "client certificate"),
            (None, None) => return Err(IdentityError::Unauthenticated(
                "no credential: send a join token, or renew over mTLS with the current certificate"
                    .into(),
            )),
        };
        let csr = CertificateSigningRequestParams::from_pem(&req.csr_pem).map_err(|e| {
            IdentityError::BadRequest(match e {
                rcgen::Error::InvalidCertificationRequestSignature => {
                    "the CSR's signature does not verify".to_string()
                }
                e => format!("malformed CSR: {e}"),
            })
        })?;
        check_requested(&csr, &id)?;
        let (issued, trust_bundle_pem) =
            self.ca
                .issue_workload_with_bundle(&csr.public_key, &id, self.cert_ttl, now)?;
        tracing::info!(spiffe_id = %id, expires_at = issued.not_after, credential = how, "issued a workload certificate");
        Ok(CertificateResponse {
            certificate_chain_pem: issued.chain_pem,
            trust_bundle_pem,
            expires_at: issued.not_after,
            spiffe_id: id.to_string(),
        })
    }
}

/// The CSR may leave the identity out (it is filled in) or ask for exactly the
/// credential's one; anything else — another SPIFFE ID, DNS names, IPs, a CA — is refused.
fn check_requested(
    csr: &CertificateSigningRequestParams,
    id: &SpiffeId,
) -> Result<(), IdentityError> {
    let want = id.to_string();
    for san in &csr.params.subject_alt_names {
        match san {
            SanType::URI(uri) if uri.as_str() == want => {}
            SanType::URI(uri) => {
                return Err(IdentityError::Forbidden(format!(
                    "the CSR asks for {}, but the token is for {want}",
                    uri.as_str()
                )))
            }
            other => {
                return Err(IdentityError::Forbidden(format!(
                    "the CSR asks for {other:?}; workload certificates name only {want}"
                )))
            }
        }
    }
    if matches!(csr.params.is_ca, IsCa::Ca(_)) {
        return Err(IdentityError::Forbidden(
            "the CSR asks for a CA certificate; workloads get leaf certificates only".into(),
        ));
    }
    Ok(())
}

/// The SPIFFE ID a verified client certificate names: exactly one URI SAN of the mesh's
/// shape. The chain was verified against this CA's roots during the handshake, and this
/// CA puts only the identity it vouched for into a leaf, so the name is trusted as is.
pub fn peer_identity(leaf: &[u8]) -> Option<SpiffeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let (uri, None) = (uris.next()?, uris.next()) else {
        return None;
    };
    let rest = uri.strip_prefix("spiffe://")?;
    let (trust_domain, path) = rest.split_once('/')?;
    let mut parts = path.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None)
            if !trust_domain.is_empty() && !ns.is_empty() && !sa.is_empty() =>
        {
            Some(SpiffeId {
                trust_domain: trust_domain.to_string(),
                namespace: ns.to_string(),
                service_account: sa.to_string(),
            })
        }
        _ => None,
    }
}

/// The endpoint's TLS config: TLS 1.3 only, a server certificate for `names` issued by
/// `ca` (its chain sent along), `http/1.1` over ALPN. A client certificate is optional
/// and, when sent, must chain to the CA's trust bundle (renewal over mTLS).
pub fn tls_config(
    ca: &Ca,
    names: &[String],
    now: u64,
) -> Result<Arc<rustls::ServerConfig>, CaError> {
    let (chain, key) = ca.issue_server_tls(names, SERVER_CERT_TTL, now)?;
    let tls_err = |e: rustls::Error| CaError::Invalid {
        path: "identity endpoint TLS".into(),
        reason: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for der in super::ca::pem_blocks(&ca.trust_bundle_pem(), "CERTIFICATE") {
        roots.add(CertificateDer::from(der)).map_err(tls_err)?;
    }
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| CaError::Invalid {
        path: "identity endpoint TLS".into(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves the identity endpoint on `listener` until the process exits. `tls` is read
/// at every accept, so a config swapped in after a root rotation (a server certificate
/// under the new signing root, client roots from the new bundle) serves the next
/// connection without a restart.
///
/// gRPC requests to the ADS service go to `ads` with the client certificate's workload
/// attached as a [`Workload`] extension (none without a certificate: ADS refuses those).
pub async fn serve<A: Authenticator>(
    listener: TcpListener,
    tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    service: Arc<IdentityService<A>>,
    ads: AggregatedDiscoveryServiceServer<Ads>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "identity accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, service) = (TlsAcceptor::from(tls.load_full()), service.clone());
        let ads = ads.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "identity TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "identity TLS handshake timed out");
                    return;
                }
            };
            let peer_id = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| peer_identity(leaf.as_ref()));
            let workload = peer_id.as_ref().map(|id| Workload {
                namespace: id.namespace.clone(),
                service_account: id.service_account.clone(),
            });
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let (service, peer_id) = (service.clone(), peer_id.clone());
                let (mut ads, workload) = (ads.clone(), workload.clone());
                async move {
                    if req.uri().path().starts_with(ADS_PATH) {
                        if let Some(w) = workload {
                            req.extensions_mut().insert(w);
                        }
                        let resp = match ads.call(req).await {
                            Ok(resp) => resp,
                            Err(never) => match never {},
                        };
                        return Ok::<_, Infallible>(resp.map(Either::Right));
                    }
                    let resp = handle(&service, peer_id.as_ref(), req).await;
                    Ok(resp.map(Either::Left))
                }
            });
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // A client may hold a connection only while it talks: HTTP/1 must send its
            // request headers in time, HTTP/2 (xDS streams) must answer keep-alive pings.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(Duration::from_secs(30)))
                .keep_alive_timeout(Duration::from_secs(10))
                .max_concurrent_streams(16);
            if let Err(e) = builder.serve_connection(TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, error = %e, "identity connection ended with an error");
            }
        });
    }
}

async fn handle<A: Authenticator>(
    service: &IdentityService<A>,
    peer: Option<&SpiffeId>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (status, body) = match handle_inner(service, peer, req).await {
        Ok(answer) => (
            StatusCode::OK,
            serde_json::to_value(answer).unwrap_or_default(),
        ),
        Err(e) => (e.status(), serde_json::json!({"error": e.to_string()})),
    };
    let mut bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

async fn handle_inner<A: Authenticator>(
    service: &IdentityService<A>,
    peer: Option<&SpiffeId>,
    req: Request<Incoming>,
) -> Result<CertificateResponse, IdentityError> {
    if req.uri().path() != "/v1/certificates" || req.method() != Method::POST {
        return Err(IdentityError::NotFound(
            "the identity endpoint serves only POST /v1/certificates".into(),
        ));
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                IdentityError::TooLarge(MAX_BODY)
            } else {
                IdentityError::BadRequest(format!("reading the body: {e}"))
            }
        })?
        .to_bytes();
    let request: CertificateRequest = serde_json::from_slice(&body)
        .map_err(|e| IdentityError::BadRequest(format!("body: {e}")))?;
    service
        .issue(&request, peer, crate::resources::clock::unix_now())
        .await
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair};
    use x509_parser::extensions::{GeneralName, ParsedExtension};

    use super::*;
    use crate::identity::ca::{pem_blocks, CaSource};

    const NOW: u64 = 1_800_000_000;

    /// Vouches for `ns/default/sa/a` when the credential is "good".
    struct Fixed;

    impl Authenticator for Fixed {
        fn authenticate(
            &self,
            credential: &str,
            _now: u64,
        ) -> impl std::future::Future<Output = Result<SpiffeId, IdentityError>> + Send {
            std::future::ready(
                (credential == "good")
                    .then(|| SpiffeId {
                        trust_domain: "cluster.local".into(),
                        namespace: "default".into(),
                        service_account: "a".into(),
                    })
                    .ok_or_else(|| IdentityError::Unauthenticated("bad token".into())),
            )
        }
    }

    impl<A: Authenticator> IdentityService<A> {
        /// [`IdentityService::issue`], run to completion here.
        fn issue_now(
            &self,
            req: &CertificateRequest,
            peer: Option<&SpiffeId>,
            now: u64,
        ) -> Result<CertificateResponse, IdentityError> {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(self.issue(req, peer, now))
        }
    }

    fn service(tag: &str) -> (IdentityService<Fixed>, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("tandem-id-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = Ca::load(
            &CaSource::Generated {
                data_dir: dir.clone(),
            },
            "cluster.local",
        )
        .unwrap();
        let svc = IdentityService::new(Arc::new(ca), Arc::new(Fixed), Duration::from_secs(86_400));
        (svc, dir)
    }

    fn csr(sans: &[SanType]) -> String {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans.to_vec();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.to_string().try_into().unwrap())
    }

    fn req(token: &str, csr_pem: String) -> CertificateRequest {
        CertificateRequest {
            token: Some(token.into()),
            csr_pem,
        }
    }

    #[test]
    fn a_csr_becomes_a_leaf_with_exactly_the_token_identity_and_lifetime() {
        let (svc, dir) = service("ok");
        for sans in [vec![], vec![uri("spiffe://cluster.local/ns/default/sa/a")]] {
            let answer = svc.issue_now(&req("good", csr(&sans)), None, NOW).unwrap();
            assert_eq!(answer.spiffe_id, "spiffe://cluster.local/ns/default/sa/a");
            assert_eq!(answer.expires_at, NOW + 86_400);
            let chain = pem_blocks(&answer.certificate_chain_pem, "CERTIFICATE");
            assert_eq!(chain.len(), 2, "leaf + root");
            let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
            let (_, root) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
            leaf.verify_signature(Some(root.public_key())).unwrap();
            assert!(!leaf.is_ca());
            let names: Vec<String> = leaf
                .subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => format!("uri:{u}"),
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(names, ["uri:spiffe://cluster.local/ns/default/sa/a"]);
            let validity = leaf.validity();
            assert_eq!(validity.not_after.timestamp(), (NOW + 86_400) as i64);
            assert!(validity.not_before.timestamp() <= NOW as i64);
            let ku = leaf.key_usage().unwrap().unwrap().value;
            assert!(ku.digital_signature() && !ku.key_cert_sign());
            let eku = leaf.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            let exts = leaf.extensions();
            assert!(exts.iter().all(|e| !matches!(
                e.parsed_extension(),
                ParsedExtension::UnsupportedExtension { .. }
            )));
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn another_identity_a_dns_name_or_a_ca_is_refused() {
        let (svc, dir) = service("refused");
        let other = svc
            .issue_now(
                &req(
                    "good",
                    csr(&[uri("spiffe://cluster.local/ns/default/sa/b")]),
                ),
                None,
                NOW,
            )
            .unwrap_err();
        assert_eq!(other.status(), StatusCode::FORBIDDEN);
        assert!(other.to_string().contains("sa/b"), "{other}");
        let dns = svc
            .issue_now(
                &req(
                    "good",
                    csr(&[SanType::DnsName("b.example".try_into().unwrap())]),
                ),
                None,
                NOW,
            )
            .unwrap_err();
        assert_eq!(dns.status(), StatusCode::FORBIDDEN);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let ca = svc.issue_now(&req("good", ca_csr), None, NOW).unwrap_err();
        assert_eq!(ca.status(), StatusCode::FORBIDDEN);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_verified_client_certificate_renews_exactly_its_own_identity() {
        let (svc, dir) = service("peer");
        let first = svc.issue_now(&req("good", csr(&[])), None, NOW).unwrap();
        let leaf = pem_blocks(&first.certificate_chain_pem, "CERTIFICATE").remove(0);
        let peer = peer_identity(&leaf).unwrap();
        assert_eq!(peer.to_string(), "spiffe://cluster.local/ns/default/sa/a");
        let renew = |csr_pem| CertificateRequest {
            token: None,
            csr_pem,
        };
        let again = svc
            .issue_now(
                &renew(csr(&[uri("spiffe://cluster.local/ns/default/sa/a")])),
                Some(&peer),
                NOW,
            )
            .unwrap();
        assert_eq!(again.spiffe_id, first.spiffe_id);
        let other = svc
            .issue_now(
                &renew(csr(&[uri("spiffe://cluster.local/ns/default/sa/b")])),
                Some(&peer),
                NOW,
            )
            .unwrap_err();
        assert_eq!(other.status(), StatusCode::FORBIDDEN);
        let anonymous = svc.issue_now(&renew(csr(&[])), None, NOW).unwrap_err();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        // The endpoint's own server certificate names no workload.
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(uri("spiffe://cluster.local/ns/x"));
        let odd = params.self_signed(&key).unwrap();
        assert!(peer_identity(odd.der()).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_token_is_401_and_malformed_csr_is_400() {
        let (svc, dir) = service("bad");
        let e = svc.issue_now(&req("bad", csr(&[])), None, NOW).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let e = svc
            .issue_now(&req("good", "not a csr".into()), None, NOW)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        // A CSR whose signature was made over other content.
        let mut der = pem_blocks(&csr(&[]), "CERTIFICATE REQUEST").remove(0);
        let n = der.len();
        der[n - 3] ^= 0x01;
        let tampered = crate::identity::ca::pem_encode("CERTIFICATE REQUEST", &der);
        let e = svc
            .issue_now(&req("good", tampered), None, NOW)
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
