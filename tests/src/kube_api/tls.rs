//! The server's certificates and the kubeconfig that trusts them: a CA made for this one
//! server signs a certificate for `127.0.0.1`, `::1` and `localhost`, and the kubeconfig
//! carries the CA and a bearer token, as a cluster's admin kubeconfig does.

use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;

/// Why the server's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating a key or certificate failed.
    #[error("generating the test API server's certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("configuring TLS for the test API server: {0}")]
    Config(#[from] rustls::Error),
}

/// The CA (PEM, for clients) and the server's rustls configuration.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The CA certificate clients must trust.
    pub ca_pem: String,
    /// TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN (kubectl speaks HTTP/2, kube-rs HTTP/1.1).
    pub server: Arc<rustls::ServerConfig>,
}

/// A fresh CA and a server certificate for the loopback names.
pub fn generate() -> Result<Certs, TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tandem-kube-api-test-ca");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "tandem-kube-api");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca)?;

    let chain = vec![
        cert.der().clone(),
        CertificateDer::from(ca.as_ref().der().to_vec()),
    ];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Certs {
        ca_pem: ca.as_ref().pem(),
        server: Arc::new(server),
    })
}

/// A kubeconfig (YAML) whose one context reaches `server_url` with `token`, trusting
/// `ca_pem`, in namespace `default`.
pub fn kubeconfig(server_url: &str, ca_pem: &str, token: &str) -> String {
    let ca_data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": "tandem-test",
            "cluster": { "server": server_url, "certificate-authority-data": ca_data },
        }],
        "users": [{ "name": "tandem-test-admin", "user": { "token": token } }],
        "contexts": [{
            "name": "tandem-test",
            "context": { "cluster": "tandem-test", "user": "tandem-test-admin", "namespace": "default" },
        }],
        "current-context": "tandem-test",
        "preferences": {},
    });
    // A JSON document is YAML too; the YAML form is the one people read.
    serde_yaml::to_string(&config).unwrap_or_else(|_| config.to_string())
}
