//! Proxyless gRPC: Python grpcio clients and servers (`tests/proxyless/*.py`) that talk
//! xDS to the control plane themselves.
//!
//! grpcio lives in a virtualenv: `TANDEM_TEST_PYTHON` (an interpreter that has grpcio),
//! else `<target>/py-venv` (which `.ci/run` creates), else one is created there with
//! `python3 -m venv` and `pip install grpcio`. Only when pip cannot reach the package
//! index is that reported as [`PythonUnavailable`] (the test then skips, saying why); any
//! other failure panics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::within;

/// Environment variable naming a Python interpreter that already has grpcio.
pub const PYTHON_ENV: &str = "TANDEM_TEST_PYTHON";

/// Why proxyless tests cannot run here (pip could not reach the package index).
#[derive(Debug, Clone)]
pub struct PythonUnavailable(pub String);

static PYTHON: OnceLock<Mutex<Option<Result<PathBuf, PythonUnavailable>>>> = OnceLock::new();

/// The folder of the Python scripts.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proxyless")
}

/// An interpreter with grpcio, set up on first use (blocking: call it from
/// `spawn_blocking`).
pub fn python() -> Result<PathBuf, PythonUnavailable> {
    let cell = PYTHON.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().expect("python lock");
    guard.get_or_insert_with(setup_python).clone()
}

fn has_grpcio(python: &Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import grpc"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn setup_python() -> Result<PathBuf, PythonUnavailable> {
    if let Some(python) = std::env::var_os(PYTHON_ENV) {
        let python = PathBuf::from(python);
        assert!(
            has_grpcio(&python),
            "{PYTHON_ENV}={} cannot `import grpc`",
            python.display()
        );
        return Ok(python);
    }
    let venv = crate::bins::target_dir().join("py-venv");
    let python = venv.join("bin").join("python");
    if python.exists() && has_grpcio(&python) {
        return Ok(python);
    }
    if !python.exists() {
        let out = std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("python3 -m venv {}: {e}", venv.display()));
        assert!(
            out.status.success(),
            "python3 -m venv {} failed: {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--timeout",
            "30",
            "grpcio",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{} -m pip: {e}", python.display()));
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let unreachable = [
            "Failed to establish a new connection",
            "Could not find a version that satisfies",
            "No matching distribution found",
            "Temporary failure in name resolution",
            "Network is unreachable",
            "Connection refused",
            "Read timed out",
            "ProxyError",
        ]
        .iter()
        .any(|s| stderr.contains(s));
        if unreachable {
            return Err(PythonUnavailable(format!(
                "pip install grpcio could not reach the package index: {}",
                stderr.lines().last().unwrap_or_default()
            )));
        }
        panic!("pip install grpcio failed ({}):\n{stderr}", out.status);
    }
    assert!(
        has_grpcio(&python),
        "pip installed grpcio but {} cannot import it",
        python.display()
    );
    Ok(python)
}

/// A running `backend.py NAME`: a gRPC server answering `/echo.Echo/Say` with its name.
#[derive(Debug)]
pub struct PyBackend {
    child: Child,
    addr: SocketAddr,
}

impl PyBackend {
    /// Starts the backend and waits (bounded) for its `listening PORT` line.
    pub async fn start(python: &Path, name: &str) -> PyBackend {
        let mut child = Command::new(python)
            .arg(scripts_dir().join("backend.py"))
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn backend.py: {e}"));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let line = within(
            Duration::from_secs(30),
            &format!("backend.py {name} to print `listening PORT`"),
            lines.next_line(),
        )
        .await
        .expect("read backend stdout")
        .unwrap_or_else(|| panic!("backend.py {name} exited before listening"));
        let port: u16 = line
            .strip_prefix("listening ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("backend.py {name} printed {line:?}"));
        PyBackend {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for PyBackend {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A gRPC xDS bootstrap (JSON) naming the ADS server `xds` and node `node_id`.
pub fn bootstrap(xds: SocketAddr, node_id: &str) -> String {
    serde_json::json!({
        "xds_servers": [{
            "server_uri": xds.to_string(),
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3"],
        }],
        "node": { "id": node_id, "cluster": "proxyless-client", "locality": { "zone": "local" } },
    })
    .to_string()
}

/// Runs `client.py TARGET CALLS` with `GRPC_XDS_BOOTSTRAP_CONFIG=bootstrap`, bounded by
/// `limit`; returns its JSON result (`{backend: count, "errors": n, "error_details": [..]}`).
pub async fn run_client(
    python: &Path,
    bootstrap: &str,
    target: &str,
    calls: u32,
    limit: Duration,
) -> serde_json::Value {
    let out = within(
        limit,
        &format!("client.py {target} {calls}"),
        Command::new(python)
            .arg(scripts_dir().join("client.py"))
            .arg(target)
            .arg(calls.to_string())
            .env("GRPC_XDS_BOOTSTRAP_CONFIG", bootstrap)
            .env_remove("GRPC_XDS_BOOTSTRAP")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("run client.py: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client.py failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client.py printed no JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
