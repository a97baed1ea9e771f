//! Locating the workspace binaries under test, building them first so a stale one is never
//! tested.
//!
//! Each binary is built at most once per test process (`cargo build -p PACKAGE --bin BIN`,
//! a no-op when it is fresh) into the target directory the test executable itself lives in,
//! so the profile and `CARGO_TARGET_DIR` in use are honoured without reading them. An
//! environment variable per binary names a prebuilt one instead (nothing is built).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};

/// A binary of the workspace: its package, its name, and the variable that overrides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Bin {
    /// Cargo package (`-p`).
    pub package: &'static str,
    /// Binary name (`--bin`).
    pub name: &'static str,
    /// Environment variable naming a prebuilt binary to use instead.
    pub env: &'static str,
}

/// The sidecar.
pub const PROXY: Bin = Bin {
    package: "tandem-proxy",
    name: "tandem-proxy",
    env: "TANDEM_PROXY_BIN",
};

/// The control plane server.
pub const CONTROL_PLANE: Bin = Bin {
    package: "tandem-control-plane",
    name: "tandem-control-plane",
    env: "TANDEM_CONTROL_PLANE_BIN",
};

/// The control plane's CLI (its own package, linking no server code).
pub const TANDEMCTL: Bin = Bin {
    package: "tandemctl",
    name: "tandemctl",
    env: "TANDEMCTL_BIN",
};

/// The mesh-unaware app of the pod tests.
pub const POD_APP: Bin = Bin {
    package: "tandem-tests",
    name: "tandem-pod-app",
    env: "TANDEM_POD_APP_BIN",
};

type Built = Arc<OnceLock<Result<PathBuf, String>>>;

static BUILT: OnceLock<Mutex<HashMap<Bin, Built>>> = OnceLock::new();

/// The path of `bin`, built on first use in this process (blocking: call it from
/// `spawn_blocking` in async code). A build failure is returned, not panicked.
pub fn locate(bin: Bin) -> Result<PathBuf, String> {
    let cell = {
        let mut map = BUILT
            .get_or_init(Default::default)
            .lock()
            .expect("bins lock");
        map.entry(bin).or_default().clone()
    };
    cell.get_or_init(|| build(bin)).clone()
}

/// Like [`locate`], from async code, panicking with the build output on failure.
pub async fn path(bin: Bin) -> PathBuf {
    match tokio::task::spawn_blocking(move || locate(bin)).await {
        Ok(Ok(path)) => path,
        Ok(Err(e)) => panic!("{e}"),
        Err(e) => panic!("building {}: {e}", bin.name),
    }
}

fn build(bin: Bin) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(bin.env) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // <target>/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable location {}", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("no target dir above {}", profile_dir.display()))?;
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let workspace = workspace_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", bin.package, "--bin", bin.name])
        .arg("--profile")
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_MAKEFLAGS")
        // Inherited from the test, these differ from a shell's build, and build scripts
        // that watch them (ring's) would run again on every switch between the two.
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_MANIFEST_PATH")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running cargo build for {}: {e}", bin.name))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p {} --bin {} failed ({}):\n{}",
            bin.package,
            bin.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = profile_dir.join(bin.name);
    if !path.exists() {
        return Err(format!(
            "built {} but {} is missing",
            bin.name,
            path.display()
        ));
    }
    Ok(path)
}

/// The workspace root (the parent of this crate).
pub fn workspace_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent folder")
}

/// The target directory the test executable runs from (`<target>` of
/// `<target>/<profile>/deps/<exe>`), or `<workspace>/target` when that cannot be told.
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| workspace_dir().join("target"))
}
