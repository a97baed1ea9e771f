//! Test support: the fixtures, applying a webhook's answer with the `json-patch` crate,
//! and the `kubernetes-validate` Python package, which checks documents strictly against
//! the OpenAPI schemas of a given Kubernetes version.
//!
//! The validator lives in a virtualenv: `TANDEM_TEST_K8S_VALIDATE` (a `kubernetes-validate`
//! executable), else `<target>/py-venv-k8s` (which `.ci/run` creates), else one is created
//! there with `python3 -m venv` and `pip install kubernetes-validate`. Only when pip cannot
//! reach the package index outside CI does the test skip, saying why; in CI (`CI` set) or
//! on any other failure it panics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

/// Environment variable naming a `kubernetes-validate` executable to use.
pub const VALIDATE_ENV: &str = "TANDEM_TEST_K8S_VALIDATE";

/// The Kubernetes versions every injected pod is validated against: the first with
/// native sidecars on by default, and a recent one.
pub const VERSIONS: [&str; 2] = ["1.29.0", "1.33.0"];

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

/// `<target>` of `<target>/<profile>/deps/<exe>`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| workspace().join("target"))
}

/// The `kubernetes-validate` executable, set up on first use; `Err` (a reason to skip)
/// only when the package index cannot be reached outside CI.
pub fn validator() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(VALIDATE_ENV) {
        return Ok(PathBuf::from(path));
    }
    let venv = target_dir().join("py-venv-k8s");
    let exe = venv.join("bin").join("kubernetes-validate");
    if exe.exists() {
        return Ok(exe);
    }
    let python = venv.join("bin").join("python");
    if !python.exists() {
        let out = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("python3 -m venv {}: {e}", venv.display()));
        assert!(
            out.status.success(),
            "python3 -m venv {}: {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--timeout", "30", "kubernetes-validate"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{} -m pip: {e}", python.display()));
    if out.status.success() && exe.exists() {
        return Ok(exe);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let unreachable = [
        "Failed to establish a new connection",
        "No matching distribution found",
        "Temporary failure in name resolution",
        "Network is unreachable",
        "Read timed out",
        "ProxyError",
    ]
    .iter()
    .any(|s| stderr.contains(s));
    if unreachable && std::env::var_os("CI").is_none() {
        return Err(format!(
            "pip install kubernetes-validate could not reach the package index: {}",
            stderr.lines().last().unwrap_or_default()
        ));
    }
    panic!("pip install kubernetes-validate failed:\n{stderr}");
}

/// Validates every file in `files` strictly against Kubernetes `version`; the
/// validator's output on failure.
pub fn validate(exe: &Path, version: &str, files: &[PathBuf]) -> Result<(), String> {
    let out = Command::new(exe)
        .args(["--strict", "--quiet", "-k", version])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A document of a kind without a schema is only a warning to the tool: not here.
    if out.status.success() && !text.contains("Couldn't find schema") {
        Ok(())
    } else {
        Err(text)
    }
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
