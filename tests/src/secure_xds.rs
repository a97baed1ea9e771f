//! A hand-made xDS client for the control plane's secure port: TLS 1.3 with or without a
//! workload certificate, so tests can check who may open a stream and what it gets.
//! The server certificate is not checked: these tests probe the server's refusals.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tandem_xds::envoy::core::Node;
use tandem_xds::envoy::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use tandem_xds::envoy::discovery::{DiscoveryRequest, DiscoveryResponse};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::control_plane::{ControlPlane, TempDir};

/// Accepts any server certificate (the tests here look at the server's answers only).
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A workload certificate chain and its key, PEM.
#[derive(Debug, Clone)]
pub struct WorkloadCert {
    /// Chain, leaf first.
    pub chain_pem: String,
    /// PKCS#8 key.
    pub key_pem: String,
}

/// TLS 1.3 with ALPN `alpn`, presenting `cert` if given.
pub fn client_config(cert: Option<&WorkloadCert>, alpn: &[u8]) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer));
    let mut config = match cert {
        None => builder.with_no_client_auth(),
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(c.chain_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("chain PEM");
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client cert")
        }
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// Dials a fixed address over TLS.
#[derive(Debug, Clone)]
pub struct TlsConnector {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
}

impl TlsConnector {
    /// TLS to `addr` with `config`.
    pub fn new(addr: SocketAddr, config: Arc<ClientConfig>) -> Self {
        TlsConnector { addr, config }
    }

    /// One TLS connection.
    pub async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
    }
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(TokioIo::new(this.connect().await?)) })
    }
}

/// A certificate for `service` from `cp`'s identity endpoint, as a workload would get it:
/// a key made here (openssl), a CSR, a join token.
pub async fn issue(cp: &ControlPlane, service: &str) -> WorkloadCert {
    let dir = TempDir::new("workload-cert");
    crate::zero_trust::key_and_csr(dir.path(), "key.pem", "csr.pem");
    let csr = std::fs::read_to_string(dir.path().join("csr.pem")).expect("csr");
    let key_pem = std::fs::read_to_string(dir.path().join("key.pem")).expect("key");
    let token = crate::zero_trust::join_token(cp, service).await;
    let body = serde_json::json!({ "token": token, "csr_pem": csr }).to_string();
    let tls = TlsConnector::new(cp.identity(), client_config(None, b"http/1.1"));
    let io = tls.connect().await.expect("TLS to the identity endpoint");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("http1");
    tokio::spawn(conn);
    let req = http::Request::post("/v1/certificates")
        .header(http::header::HOST, "identity")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(crate::client::full(body))
        .expect("request");
    let resp = crate::client::collect(sender.send_request(req).await.expect("send"))
        .await
        .expect("body");
    assert_eq!(resp.status(), 200, "{resp:?}");
    let answer: serde_json::Value = serde_json::from_slice(resp.body()).expect("json");
    WorkloadCert {
        chain_pem: answer["certificate_chain_pem"]
            .as_str()
            .expect("chain")
            .to_string(),
        key_pem,
    }
}

/// Opens an ADS stream to `addr` over TLS (with `cert` if given), subscribes to every
/// listener as node `claims` (its `cluster`, the service it says it is) and to the given
/// listener names, and returns the first response or the status the server refused with.
pub async fn first_listeners(
    addr: SocketAddr,
    cert: Option<&WorkloadCert>,
    claims: &str,
    names: &[&str],
) -> Result<DiscoveryResponse, tonic::Status> {
    let connector = TlsConnector::new(addr, client_config(cert, b"h2"));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_with_connector(connector)
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
    plain_first_listeners(
        AggregatedDiscoveryServiceClient::new(channel),
        claims,
        names,
    )
    .await
}

/// Like [`first_listeners`] over an existing client (e.g. plaintext).
pub async fn plain_first_listeners(
    mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
    claims: &str,
    names: &[&str],
) -> Result<DiscoveryResponse, tonic::Status> {
    let req = DiscoveryRequest {
        node: Some(Node {
            id: format!("{claims}~test"),
            cluster: claims.to_string(),
            ..Default::default()
        }),
        type_url: tandem_xds::convert::LISTENER_TYPE.to_string(),
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(req).await.expect("queue request");
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("no response within 10 s"))??;
    drop(tx);
    first.ok_or_else(|| tonic::Status::aborted("stream ended without a response"))
}
