//! Strict validation of Kubernetes documents against the OpenAPI schemas of a given
//! Kubernetes version, with the `kubernetes-validate` Python package (its schemas ship
//! inside it: no cluster, no network once installed).
//!
//! The validator lives in a virtualenv: `TANDEM_TEST_K8S_VALIDATE` (a `kubernetes-validate`
//! executable), else `<target>/py-venv-k8s` (which `.ci/run` creates), else one is created
//! there with `python3 -m venv` and `pip install kubernetes-validate`. Only when pip cannot
//! reach the package index outside CI does [`validator`] return `Err` (a reason to skip);
//! in CI (`CI` set) or on any other failure it panics. The same venv has `jsonschema` (a
//! dependency of kubernetes-validate): [`python`] is its interpreter.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable naming a `kubernetes-validate` executable to use.
pub const VALIDATE_ENV: &str = "TANDEM_TEST_K8S_VALIDATE";

/// The Kubernetes versions manifests are validated against: the first with native
/// sidecars on by default, and a recent one.
pub const VERSIONS: [&str; 2] = ["1.29.0", "1.33.0"];

/// `<target>` of `<target>/<profile>/deps/<test exe>`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn venv() -> PathBuf {
    target_dir().join("py-venv-k8s")
}

/// The venv's Python (with `jsonschema`), once [`validator`] has set it up.
pub fn python() -> PathBuf {
    venv().join("bin").join("python")
}

/// The `kubernetes-validate` executable, set up on first use; `Err` (a reason to skip)
/// only when the package index cannot be reached outside CI.
pub fn validator() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(VALIDATE_ENV) {
        return Ok(PathBuf::from(path));
    }
    let venv = venv();
    let exe = venv.join("bin").join("kubernetes-validate");
    if exe.exists() {
        return Ok(exe);
    }
    let python = python();
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

/// Validates every file in `files` strictly (unknown fields are errors) against
/// Kubernetes `version`; the validator's output on failure. A document of a kind the
/// tool has no schema for is a failure too (the tool itself only warns).
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
    if out.status.success() && !text.contains("Couldn't find schema") {
        Ok(())
    } else {
        Err(text)
    }
}
