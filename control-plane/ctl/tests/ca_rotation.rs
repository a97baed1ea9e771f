//! Root rotation end to end with the real control plane and tandemctl: rotate → activate →
//! remove, each observed through `tandemctl ca status`, the identity endpoint (issued
//! chains, the endpoint's own server certificate, the bundle it hands out), join tokens,
//! a restart, and `tandemctl check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use rcgen::{CertificateParams, KeyPair};
use serde_json::json;
use support::{eventually, ControlPlane, TempDir};
use tandem_control_plane::identity::ca::{hex, pem_blocks, sha256};

/// POSTs a fresh CSR with `token` to the identity endpoint, trusting `bundle_pem`.
fn request_cert(cp: &ControlPlane, bundle_pem: &str, token: &str) -> support::CertAnswer {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    support::post_certificates(cp, bundle_pem, &json!({"token": token, "csr_pem": csr}))
}

/// Whether `leaf` (DER) is signed by the root with this sha256 among `roots` (DER).
fn signed_by(leaf: &[u8], root_sha: &str, roots: &[Vec<u8>]) -> bool {
    let root = roots
        .iter()
        .find(|r| hex(&sha256(r)) == root_sha)
        .expect("root in the bundle");
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf).unwrap();
    let (_, root) = x509_parser::parse_x509_certificate(root).unwrap();
    leaf.verify_signature(Some(root.public_key())).is_ok()
}

fn roots(cp: &ControlPlane) -> Vec<(String, String)> {
    cp.json(&["ca", "status"])["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sha256"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn token(cp: &ControlPlane) -> String {
    cp.ok(&["token", "create", "--service", "a"])
        .trim()
        .to_string()
}

#[test]
fn rotate_activate_remove_without_an_outage() {
    let dir = TempDir::new("ca-rotation");
    let cp = ControlPlane::start(dir.path(), &[]);
    let initial = roots(&cp);
    assert_eq!(initial.len(), 1);
    let old = initial[0].0.clone();
    assert_eq!(initial[0].1, "signing");
    let table = cp.ok(&["ca", "status"]);
    assert!(table.starts_with("SHA256"), "{table}");
    assert!(table.contains(&old) && table.contains("signing"), "{table}");
    let old_token = token(&cp);
    assert!(old_token.ends_with(&old));

    // Step 1: a second root, trusted but not signing; the bundle lists the old one first.
    let rotated = cp.json(&["ca", "rotate"]);
    let new = rotated["added"]["sha256"].as_str().unwrap().to_string();
    assert_eq!(
        roots(&cp),
        vec![
            (old.clone(), "signing".into()),
            (new.clone(), "trusted".into())
        ]
    );
    let a = request_cert(
        &cp,
        &std::fs::read_to_string(dir.path().join("ca/root-cert.pem")).unwrap(),
        &old_token,
    );
    assert_eq!(a.code, 200, "{}", a.body);
    let bundle = a.body["trust_bundle_pem"].as_str().unwrap().to_string();
    let bundle_der = pem_blocks(&bundle, "CERTIFICATE");
    assert_eq!(
        bundle_der
            .iter()
            .map(|d| hex(&sha256(d)))
            .collect::<Vec<_>>(),
        vec![old.clone(), new.clone()]
    );
    let leaf = pem_blocks(
        a.body["certificate_chain_pem"].as_str().unwrap(),
        "CERTIFICATE",
    );
    assert!(
        signed_by(&leaf[0], &old, &bundle_der),
        "still signed by the old root"
    );

    // The signing root cannot be removed: 409 with the reason, from the API and the CLI.
    let out = cp.ctl(&["ca", "remove", &old[..12]]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is the signing root"), "{err}");
    let (code, answer) = cp.raw(&format!(
        "DELETE /v1/ca/roots/{old} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\nconnection: close\r\n\r\n",
        cp.token()
    ));
    assert_eq!(code, 409, "{answer}");

    // Step 2: the new root signs; the old one stays trusted; new tokens pin the new root.
    let activated = cp.json(&["ca", "activate", &new[..10]]);
    assert_eq!(activated["activated"]["sha256"], new.as_str());
    assert_eq!(
        roots(&cp),
        vec![
            (new.clone(), "signing".into()),
            (old.clone(), "trusted".into())
        ]
    );
    let new_token = token(&cp);
    assert!(new_token.ends_with(&new), "{new_token}");
    // The identity endpoint's own certificate follows the signing root without a restart.
    assert!(
        eventually(Duration::from_secs(10), || {
            let a = request_cert(&cp, &bundle, &new_token);
            a.code == 200 && signed_by(&a.server_chain[0], &new, &bundle_der)
        }),
        "the identity endpoint serves a certificate under the new root"
    );
    let a = request_cert(&cp, &bundle, &new_token);
    let leaf = pem_blocks(
        a.body["certificate_chain_pem"].as_str().unwrap(),
        "CERTIFICATE",
    );
    assert!(
        signed_by(&leaf[0], &new, &bundle_der),
        "new certificates chain to the new root"
    );
    let bundle_now = pem_blocks(a.body["trust_bundle_pem"].as_str().unwrap(), "CERTIFICATE");
    assert_eq!(
        hex(&sha256(&bundle_now[0])),
        new,
        "the signing root comes first"
    );
    assert_eq!(
        hex(&sha256(&bundle_now[1])),
        old,
        "the old root is still trusted"
    );

    // A restart keeps the set and the signing root.
    cp.kill9();
    let cp = ControlPlane::start(dir.path(), &[]);
    assert_eq!(
        roots(&cp),
        vec![
            (new.clone(), "signing".into()),
            (old.clone(), "trusted".into())
        ]
    );
    assert!(
        token(&cp).ends_with(&new),
        "tokens pin the signing root after a restart"
    );

    // Step 3: the old root goes, and stays gone after a restart.
    let removed = cp.json(&["ca", "remove", &old[..16]]);
    assert_eq!(removed["removed"]["sha256"], old.as_str());
    assert_eq!(roots(&cp), vec![(new.clone(), "signing".into())]);
    let out = cp.ctl(&["ca", "remove", &new]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("last trusted root"));
    cp.kill9();
    let cp = ControlPlane::start(dir.path(), &[]);
    assert_eq!(roots(&cp), vec![(new.clone(), "signing".into())]);

    // `tandemctl check`: a ten-year root is fine within 30 days, not within 5000.
    let ok = cp.ok(&["check"]);
    assert!(
        ok.starts_with(&format!("ok   root {} (signing) expires at", &new[..16])),
        "{ok}"
    );
    let out = cp.ctl(&["check", "--warn-within", "5000d"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("warn root"), "{stdout}");
}

#[test]
fn a_supplied_ca_refuses_rotation_with_the_reason() {
    let gen = TempDir::new("ca-rot-gen");
    drop(ControlPlane::start(gen.path(), &[]));
    let dir = TempDir::new("ca-rot-supplied");
    let (cert, key) = (
        gen.path().join("ca/root-cert.pem"),
        gen.path().join("ca/root-key.pem"),
    );
    let cp = ControlPlane::start(
        dir.path(),
        &[
            "--ca-cert",
            cert.to_str().unwrap(),
            "--ca-key",
            key.to_str().unwrap(),
        ],
    );
    let status = cp.json(&["ca", "status"]);
    assert_eq!(status["rotatable"], false);
    let out = cp.ctl(&["ca", "rotate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("root rotation needs the CA the control plane generated"),
        "{err}"
    );
    let (code, _) = cp.raw(&format!(
        "POST /v1/ca/roots HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        cp.token()
    ));
    assert_eq!(code, 409);
}
