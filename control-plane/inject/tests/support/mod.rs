//! Test support: the fixtures, applying a webhook's answer with the `json-patch` crate,
//! and the `kubernetes-validate` Python package, which checks documents strictly against
//! the OpenAPI schemas of a given Kubernetes version (shared with `tandemctl install`'s
//! tests: `tandem_tests::kube_validate`, which says where the validator comes from and
//! when a test skips).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;

// Not every test binary that includes this module validates (robustness.rs does not).
#[allow(unused_imports)]
pub use tandem_tests::kube_validate::{validate, validator, VALIDATE_ENV, VERSIONS};

/// `testdata/<rel>`.
pub fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fixture as JSON.
pub fn fixture(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(testdata(rel)).unwrap()).unwrap()
}

/// The decoded JSON Patch of an AdmissionReview answer, if it has one.
pub fn patch_of(answer: &Value) -> Option<json_patch::Patch> {
    let b64 = answer["response"]["patch"].as_str()?;
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// `doc` with `patch` applied.
pub fn applied(doc: &Value, patch: &json_patch::Patch) -> Value {
    let mut out = doc.clone();
    json_patch::patch(&mut out, patch).unwrap();
    out
}

/// A temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh one named after `tag`.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tandem-inject-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
