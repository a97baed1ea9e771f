use std::os::unix::fs::PermissionsExt;

use super::*;

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-rot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn generated(dir: &Path) -> Ca {
    Ca::load(
        &CaSource::Generated {
            data_dir: dir.to_path_buf(),
        },
        "cluster.local",
    )
    .unwrap()
}

fn id() -> SpiffeId {
    SpiffeId {
        trust_domain: "cluster.local".into(),
        namespace: "default".into(),
        service_account: "a".into(),
    }
}

/// The root (DER) that signed a freshly issued workload certificate.
fn issuer_of(ca: &Ca) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issued = ca
        .issue_workload(
            &key,
            &id(),
            Duration::from_secs(3600),
            crate::resources::clock::unix_now(),
        )
        .unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&issued.leaf_der).unwrap();
    let roots = pem_blocks(&ca.trust_bundle_pem(), "CERTIFICATE");
    let signer = roots
        .iter()
        .find(|r| {
            let (_, root) = x509_parser::parse_x509_certificate(r).unwrap();
            leaf.verify_signature(Some(root.public_key())).is_ok()
        })
        .expect("the leaf chains to a root of the bundle");
    hex(&sha256(signer))
}

#[test]
fn rotate_activate_remove_survive_a_restart() {
    let dir = temp("steps");
    let ca = generated(&dir);
    let mut changes = ca.subscribe();
    let old = ca.root_fingerprint();
    assert_eq!(issuer_of(&ca), old);

    // Step 1: two roots, the old one still signing and first in the bundle.
    let new = ca.rotate().unwrap().sha256;
    assert!(changes.has_changed().unwrap());
    changes.mark_unchanged();
    let status = ca.status();
    assert_eq!(status.len(), 2);
    assert_eq!(
        (status[0].sha256.as_str(), status[0].state.as_str()),
        (old.as_str(), "signing")
    );
    assert_eq!(
        (status[1].sha256.as_str(), status[1].state.as_str()),
        (new.as_str(), "trusted")
    );
    assert!(status[1].not_after_rfc3339.ends_with('Z'));
    assert_eq!(pem_blocks(&ca.trust_bundle_pem(), "CERTIFICATE").len(), 2);
    assert_eq!(issuer_of(&ca), old);
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let ca_dir = dir.join(CA_DIR);
    assert_eq!(
        mode(ca_dir.join(format!("root-{}-key.pem", &new[..16]))),
        0o600
    );
    assert_eq!(mode(roots::manifest_path(&ca_dir)), 0o600);

    // Refusals: the signing root, unknown and non-hex prefixes.
    let e = ca.remove(&old[..8]).unwrap_err();
    assert!(matches!(e, CaError::Refused(_)), "{e}");
    assert!(e.to_string().contains("signing root"), "{e}");
    assert!(matches!(ca.activate("zz"), Err(CaError::BadPrefix(_))));
    let unknown = if old.starts_with('0') || new.starts_with('0') {
        "f"
    } else {
        "0"
    };
    if !old.starts_with(unknown) && !new.starts_with(unknown) {
        assert!(matches!(ca.activate(unknown), Err(CaError::UnknownRoot(_))));
    }

    // Step 2: the new root signs and comes first; the old one stays trusted.
    ca.activate(&new[..12]).unwrap();
    assert!(changes.has_changed().unwrap());
    assert_eq!(ca.root_fingerprint(), new);
    assert_eq!(issuer_of(&ca), new);
    let status = ca.status();
    assert_eq!(status[0].state, "signing");
    assert_eq!(status[1].sha256, old);

    // A restart keeps it all.
    drop(ca);
    let ca = generated(&dir);
    assert_eq!(ca.root_fingerprint(), new);
    assert_eq!(ca.status().len(), 2);
    assert_eq!(issuer_of(&ca), new);

    // Step 3: the old root goes; its files too. The last root cannot go.
    ca.remove(&old).unwrap();
    assert_eq!(ca.status().len(), 1);
    assert!(!ca_dir.join(ROOT_KEY_FILE).exists());
    let e = ca.remove(&new).unwrap_err();
    assert!(e.to_string().contains("last trusted root"), "{e}");
    drop(ca);
    let ca = generated(&dir);
    assert_eq!(ca.status().len(), 1);
    assert_eq!(ca.root_fingerprint(), new);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_supplied_ca_does_not_rotate() {
    let dir = temp("supplied");
    let first = generated(&dir);
    let ca_dir = dir.join(CA_DIR);
    let supplied = Ca::load(
        &CaSource::Supplied {
            cert: ca_dir.join(ROOT_CERT_FILE),
            key: ca_dir.join(ROOT_KEY_FILE),
        },
        "cluster.local",
    )
    .unwrap();
    assert!(!supplied.rotatable());
    assert_eq!(supplied.root_fingerprint(), first.root_fingerprint());
    let e = supplied.rotate().unwrap_err();
    assert!(matches!(e, CaError::NotRotatable));
    assert!(e.to_string().contains("--ca-cert"), "{e}");
    assert_eq!(supplied.status()[0].state, "signing");
    let _ = std::fs::remove_dir_all(&dir);
}
