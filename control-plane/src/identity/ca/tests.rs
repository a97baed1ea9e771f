use std::os::unix::fs::PermissionsExt;

use super::*;

fn temp(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-ca-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_root_is_generated_once_with_restricted_modes() {
    let dir = temp("gen");
    let source = CaSource::Generated {
        data_dir: dir.clone(),
    };
    let first = Ca::load(&source, "cluster.local").unwrap();
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.join(CA_DIR)), 0o700);
    assert_eq!(mode(dir.join(CA_DIR).join(ROOT_KEY_FILE)), 0o600);
    assert_eq!(mode(dir.join(CA_DIR).join(ROOT_CERT_FILE)), 0o644);
    let again = Ca::load(&source, "cluster.local").unwrap();
    assert_eq!(first.root_fingerprint(), again.root_fingerprint());
    assert_eq!(first.root_fingerprint().len(), 64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_key_that_does_not_match_the_certificate_names_the_file() {
    let (a, b) = (temp("a"), temp("b"));
    Ca::load(
        &CaSource::Generated {
            data_dir: a.clone(),
        },
        "td",
    )
    .unwrap();
    Ca::load(
        &CaSource::Generated {
            data_dir: b.clone(),
        },
        "td",
    )
    .unwrap();
    let key = b.join(CA_DIR).join(ROOT_KEY_FILE);
    let err = Ca::from_files(&a.join(CA_DIR).join(ROOT_CERT_FILE), &key).unwrap_err();
    assert!(
        err.to_string().contains(&key.display().to_string()),
        "{err}"
    );
    assert!(err.to_string().contains("does not match"), "{err}");
    let missing = a.join("nope.pem");
    let err = Ca::from_files(&missing, &key).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let _ = std::fs::remove_dir_all(&a);
    let _ = std::fs::remove_dir_all(&b);
}

#[test]
fn half_given_flags_are_refused() {
    let p = PathBuf::from("x");
    assert!(matches!(
        CaSource::from_flags(Path::new("."), Some(&p), None),
        Err(CaError::HalfGiven)
    ));
}
