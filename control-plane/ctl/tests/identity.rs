//! Workload identity end to end: the real control plane and tandemctl; CSRs made here
//! with rcgen, sent to the identity endpoint over TLS 1.3 pinned to the CA.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use rcgen::{CertificateParams, KeyPair, SanType};
use serde_json::{json, Value};
use support::{ControlPlane, TempDir};
use tandem_control_plane::identity::ca::{hex, pem_blocks, sha256};
use x509_parser::extensions::GeneralName;

fn root_pem(cp: &ControlPlane) -> String {
    std::fs::read_to_string(cp.data_dir.join("ca/root-cert.pem")).unwrap()
}

fn token(cp: &ControlPlane, service: &str, ttl: &str) -> String {
    cp.ok(&["token", "create", "--service", service, "--ttl", ttl])
        .trim()
        .to_string()
}

fn csr_for(uri: Option<&str>) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    if let Some(u) = uri {
        params.subject_alt_names = vec![SanType::URI(u.to_string().try_into().unwrap())];
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// POSTs `body` to the identity endpoint over TLS 1.3, trusting only `root_pem`.
fn post_certificates(cp: &ControlPlane, root_pem: &str, body: &Value) -> (u16, Value) {
    let answer = support::post_certificates(cp, root_pem, body);
    assert!(answer.tls13, "the identity endpoint speaks TLS 1.3");
    (answer.code, answer.body)
}

#[test]
fn a_token_for_a_gets_a_certificate_for_a_only() {
    let dir = TempDir::new("id-a");
    let cp = ControlPlane::start(dir.path(), &[]);
    let root = root_pem(&cp);
    let tok = token(&cp, "a", "1h");
    // The token pins the CA: its last field is the root's SHA-256.
    let root_der = pem_blocks(&root, "CERTIFICATE").remove(0);
    assert!(tok.starts_with("tdm1."), "{tok}");
    assert!(tok.ends_with(&hex(&sha256(&root_der))), "{tok}");

    let (code, answer) = post_certificates(
        &cp,
        &root,
        &json!({"token": tok, "csr_pem": csr_for(Some("spiffe://cluster.local/ns/default/sa/a"))}),
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["trust_bundle_pem"].as_str().unwrap(), root);
    let chain = pem_blocks(
        answer["certificate_chain_pem"].as_str().unwrap(),
        "CERTIFICATE",
    );
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let (_, bundle) = x509_parser::parse_x509_certificate(&root_der).unwrap();
    leaf.verify_signature(Some(bundle.public_key()))
        .expect("the leaf chains to the trust bundle");
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(sans, ["spiffe://cluster.local/ns/default/sa/a"]);
    let lifetime = leaf.validity().not_after.timestamp() - answer["expires_at"].as_i64().unwrap();
    assert_eq!(lifetime, 0);

    // The same token asking for b: 403, with the reason.
    let (code, answer) = post_certificates(
        &cp,
        &root,
        &json!({"token": tok, "csr_pem": csr_for(Some("spiffe://cluster.local/ns/default/sa/b"))}),
    );
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("sa/b"),
        "{answer}"
    );

    // Garbage CSR: 400; no token: 401.
    let (code, _) = post_certificates(&cp, &root, &json!({"token": tok, "csr_pem": "x"}));
    assert_eq!(code, 400);
    let (code, _) = post_certificates(
        &cp,
        &root,
        &json!({"token": "tdm1.x", "csr_pem": csr_for(None)}),
    );
    assert_eq!(code, 401);
}

#[test]
fn an_expired_token_is_refused() {
    let dir = TempDir::new("id-exp");
    let cp = ControlPlane::start(dir.path(), &[]);
    let root = root_pem(&cp);
    let tok = token(&cp, "a", "1s");
    // Expiry is wall-clock seconds: wait until the second after it has begun.
    std::thread::sleep(Duration::from_millis(2100));
    let (code, answer) =
        post_certificates(&cp, &root, &json!({"token": tok, "csr_pem": csr_for(None)}));
    assert_eq!(code, 401, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("expired"),
        "{answer}"
    );
    // And a TTL over 24 h is refused at creation.
    let out = cp.ctl(&["token", "create", "--service", "a", "--ttl", "25h"]);
    assert!(!out.status.success());
}

#[test]
fn the_ca_key_is_0600_and_a_restart_keeps_the_root_and_the_tokens() {
    let dir = TempDir::new("id-restart");
    let cp = ControlPlane::start(dir.path(), &[]);
    let mode = |p: &str| {
        std::fs::metadata(dir.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca/root-key.pem"), 0o600);
    assert_eq!(mode("ca"), 0o700);
    let root = root_pem(&cp);
    let tok = token(&cp, "a", "1h");
    assert_eq!(mode("join-tokens.json"), 0o600);
    assert!(
        !std::fs::read_to_string(dir.path().join("join-tokens.json"))
            .unwrap()
            .contains(tok.split('.').nth(2).unwrap())
    );
    cp.kill9();

    let cp = ControlPlane::start(dir.path(), &[]);
    assert_eq!(root_pem(&cp), root, "same root after a restart");
    let (code, answer) =
        post_certificates(&cp, &root, &json!({"token": tok, "csr_pem": csr_for(None)}));
    assert_eq!(code, 200, "a token survives a restart: {answer}");
}

#[test]
fn a_supplied_ca_is_used_and_a_mismatched_key_stops_the_start() {
    let gen = TempDir::new("id-gen");
    drop(ControlPlane::start(gen.path(), &[]));
    let cert = gen.path().join("ca/root-cert.pem");
    let key = gen.path().join("ca/root-key.pem");
    let dir = TempDir::new("id-supplied");
    let cp = ControlPlane::start(
        dir.path(),
        &[
            "--ca-cert",
            cert.to_str().unwrap(),
            "--ca-key",
            key.to_str().unwrap(),
        ],
    );
    let root = std::fs::read_to_string(&cert).unwrap();
    let tok = token(&cp, "a", "1h");
    let (code, answer) =
        post_certificates(&cp, &root, &json!({"token": tok, "csr_pem": csr_for(None)}));
    assert_eq!(code, 200, "{answer}");
    assert!(
        !dir.path().join("ca").exists(),
        "no root generated beside a supplied one"
    );
    drop(cp);

    let other = TempDir::new("id-other");
    drop(ControlPlane::start(other.path(), &[]));
    let wrong_key = other.path().join("ca/root-key.pem");
    let out = std::process::Command::new(support::control_plane_bin())
        .args(["--api-addr", "127.0.0.1:0", "--xds-addr", "127.0.0.1:0"])
        .args(["--identity-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--ca-cert")
        .arg(&cert)
        .arg("--ca-key")
        .arg(&wrong_key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&wrong_key.display().to_string()),
        "{stderr}"
    );
}
