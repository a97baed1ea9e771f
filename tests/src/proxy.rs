//! Running the real `tandem-proxy` binary: build, start, signal, stop, and its admin port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::StatusCode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::metrics::Metrics;
use crate::{client, within, AbortOnDrop, STEP_TIMEOUT};

/// How long the proxy may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variable naming a prebuilt proxy binary; when set, nothing is built.
pub const BIN_ENV: &str = "TANDEM_PROXY_BIN";

/// Environment variable with a `--log` filter passed to every proxy the tests start.
pub const LOG_ENV: &str = "TANDEM_TEST_LOG";

static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// The path of a freshly built `tandem-proxy` binary.
///
/// The first call in a process runs `cargo build -p tandem-proxy --bin tandem-proxy` (a
/// no-op when the binary is fresh) so a stale binary is never tested. The binary lives next
/// to the test executable's `deps/` folder, so the target directory in use (including
/// `CARGO_TARGET_DIR`) is honoured without reading it. Blocking: call it from
/// `spawn_blocking` in async code.
pub fn binary() -> PathBuf {
    match BINARY.get_or_init(build_binary) {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

fn build_binary() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os(BIN_ENV) {
        return Ok(PathBuf::from(bin));
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
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("tests crate has no parent folder")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", "tandem-proxy", "--bin", "tandem-proxy"])
        .arg("--profile")
        .arg(profile)
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_MAKEFLAGS")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running cargo build for tandem-proxy: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p tandem-proxy failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let bin = profile_dir.join("tandem-proxy");
    if !bin.exists() {
        return Err(format!("built tandem-proxy but {} is missing", bin.display()));
    }
    Ok(bin)
}

/// A running `tandem-proxy` with its config in a private temp dir.
///
/// Dropping it kills the process and removes the dir. If the test is panicking, the proxy's
/// stderr (its log) is printed so the failure shows what the proxy saw.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    pid: Pid,
    dir: PathBuf,
    outbound: SocketAddr,
    inbound: SocketAddr,
    admin: SocketAddr,
    services: HashMap<String, SocketAddr>,
    stderr: Arc<Mutex<Vec<u8>>>,
    _readers: Vec<AbortOnDrop>,
}

impl Proxy {
    /// Writes `config_yaml` to a temp file and starts the proxy with every listener on
    /// `127.0.0.1:0`, then waits (bounded by [`READY_TIMEOUT`]) for its ready line.
    ///
    /// `extra_args` are appended to the command line; unless they contain `--app-port`,
    /// `--app-port 1` (where nothing listens) is used.
    pub async fn start(config_yaml: &str, extra_args: &[&str]) -> Proxy {
        let bin = tokio::task::spawn_blocking(binary)
            .await
            .expect("building tandem-proxy panicked");
        let dir = std::env::temp_dir().join(format!(
            "tandem-tests-{}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        let config = dir.join("config.yaml");
        std::fs::write(&config, config_yaml).expect("write config");

        let mut cmd = Command::new(&bin);
        cmd.arg("--config").arg(&config);
        for (flag, value) in [
            ("--outbound-addr", "127.0.0.1:0"),
            ("--inbound-addr", "127.0.0.1:0"),
            ("--admin-addr", "127.0.0.1:0"),
        ] {
            cmd.args([flag, value]);
        }
        if !extra_args.contains(&"--app-port") {
            cmd.args(["--app-port", "1"]);
        }
        if let Ok(filter) = std::env::var(LOG_ENV) {
            cmd.args(["--log", &filter]);
        }
        cmd.args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let pid = Pid::from_raw(
            i32::try_from(child.id().expect("fresh child has a pid")).expect("pid fits i32"),
        );

        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err_pipe = child.stderr.take().expect("stderr piped");
        let sink = stderr.clone();
        let err_reader = AbortOnDrop(tokio::spawn(async move {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().expect("stderr lock").extend_from_slice(&buf[..n]);
            }
        }));

        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let line = tokio::time::timeout(READY_TIMEOUT, read_ready_line(&mut stdout)).await;
        let line = match line {
            Ok(Ok(line)) => line,
            Ok(Err(why)) => {
                let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                let log = wait_for_stderr(&stderr).await;
                panic!("tandem-proxy did not become ready: {why}; exit: {status:?}\nstderr:\n{log}");
            }
            Err(_) => {
                let log = String::from_utf8_lossy(&stderr.lock().expect("lock")).into_owned();
                panic!("tandem-proxy printed no ready line within {READY_TIMEOUT:?}\nstderr:\n{log}");
            }
        };
        let out_reader = AbortOnDrop(tokio::spawn(async move {
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest).await;
        }));
        let ready = parse_ready_line(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Proxy {
            child,
            pid,
            dir,
            outbound: ready.outbound,
            inbound: ready.inbound,
            admin: ready.admin,
            services: ready.services,
            stderr,
            _readers: vec![err_reader, out_reader],
        }
    }

    /// The outbound (app → mesh) listener.
    pub fn outbound(&self) -> SocketAddr {
        self.outbound
    }

    /// The inbound (mesh → app) listener.
    pub fn inbound(&self) -> SocketAddr {
        self.inbound
    }

    /// The admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The dedicated listener of service `name` (`service.NAME=ADDR` on the ready line).
    pub fn service_addr(&self, name: &str) -> SocketAddr {
        match self.services.get(name) {
            Some(addr) => *addr,
            None => panic!("ready line has no service.{name}=; has {:?}", self.services),
        }
    }

    /// The config file the proxy watches.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// Replaces the config file atomically (write a sibling, then rename over it).
    pub fn rewrite_config(&self, yaml: &str) {
        self.rewrite_config_with(yaml, None);
    }

    /// Like [`Proxy::rewrite_config`], optionally giving the new file a chosen mtime (to
    /// make a change invisible to mtime polling, so only `SIGHUP` can reveal it).
    pub fn rewrite_config_with(&self, yaml: &str, mtime: Option<SystemTime>) {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!("config.yaml.tmp{n}"));
        let file = std::fs::File::create(&tmp).expect("create temp config");
        std::io::Write::write_all(&mut &file, yaml.as_bytes()).expect("write temp config");
        if let Some(mtime) = mtime {
            file.set_modified(mtime).expect("set mtime");
        }
        file.sync_all().expect("sync temp config");
        drop(file);
        std::fs::rename(&tmp, self.config_path()).expect("rename config into place");
    }

    /// Sends `SIGHUP` (reload now).
    pub fn sighup(&self) {
        self.signal(Signal::SIGHUP);
    }

    /// Sends `SIGTERM` (drain, then exit).
    pub fn sigterm(&self) {
        self.signal(Signal::SIGTERM);
    }

    /// Sends `SIGINT` (same as `SIGTERM`).
    pub fn sigint(&self) {
        self.signal(Signal::SIGINT);
    }

    fn signal(&self, sig: Signal) {
        kill(self.pid, sig).unwrap_or_else(|e| panic!("kill({}, {sig}): {e}", self.pid));
    }

    /// Waits (bounded by `limit`) for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for tandem-proxy"),
            Err(_) => panic!(
                "tandem-proxy did not exit within {limit:?}\nstderr:\n{}",
                self.stderr()
            ),
        }
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Everything the proxy wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr lock")).into_owned()
    }

    /// `GET path` on the admin port: status and body.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let resp = within(
            STEP_TIMEOUT,
            &format!("admin GET {path}"),
            client::get_once(self.admin, "admin", path),
        )
        .await
        .unwrap_or_else(|e| panic!("admin GET {path}: {e}"));
        let body = String::from_utf8_lossy(resp.body()).into_owned();
        (resp.status(), body)
    }

    /// The `/metrics` text; panics unless it answers 200.
    pub async fn metrics_text(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, StatusCode::OK, "/metrics status; body: {body}");
        body
    }

    /// `/metrics`, parsed.
    pub async fn metrics(&self) -> Metrics {
        Metrics::parse(&self.metrics_text().await)
    }

    /// `/config_dump` as JSON; panics unless it answers 200 with JSON.
    pub async fn config_dump(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/config_dump").await;
        assert_eq!(status, StatusCode::OK, "/config_dump status; body: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/config_dump is not JSON ({e}): {body}"))
    }

    /// The snapshot version from `/config_dump` (field `version`, number or string),
    /// rendered as a string: versions are opaque and only compared for equality.
    pub async fn config_version(&self) -> String {
        let dump = self.config_dump().await;
        match dump.get("version") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(v @ serde_json::Value::Number(_)) => v.to_string(),
            _ => panic!("/config_dump has no top-level `version` (number or string): {dump}"),
        }
    }

    /// Polls `/config_dump` until its version differs from `old`; returns the new one.
    pub async fn wait_version_change(&self, old: &str, limit: Duration) -> String {
        crate::eventually(limit, "config version change", || async {
            let v = self.config_version().await;
            if v != old {
                Ok(v)
            } else {
                Err(format!("version still {v}"))
            }
        })
        .await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "---- tandem-proxy stderr (outbound={} inbound={} admin={}) ----\n{}",
                self.outbound,
                self.inbound,
                self.admin,
                self.stderr()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The addresses announced by the ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyLine {
    /// `outbound=`
    pub outbound: SocketAddr,
    /// `inbound=`
    pub inbound: SocketAddr,
    /// `admin=`
    pub admin: SocketAddr,
    /// `service.NAME=` entries.
    pub services: HashMap<String, SocketAddr>,
}

/// Parses `tandem-proxy ready outbound=A inbound=A admin=A [service.NAME=A ...]`.
pub fn parse_ready_line(line: &str) -> Result<ReadyLine, String> {
    let rest = line
        .trim_end()
        .strip_prefix("tandem-proxy ready ")
        .ok_or("not a ready line")?;
    let (mut outbound, mut inbound, mut admin) = (None, None, None);
    let mut services = HashMap::new();
    for token in rest.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| format!("token {token:?} is not key=value"))?;
        let addr: SocketAddr = value
            .parse()
            .map_err(|e| format!("{key}: bad address {value:?}: {e}"))?;
        match key {
            "outbound" => outbound = Some(addr),
            "inbound" => inbound = Some(addr),
            "admin" => admin = Some(addr),
            _ => match key.strip_prefix("service.") {
                Some(name) => {
                    services.insert(name.to_owned(), addr);
                }
                None => return Err(format!("unknown key {key:?}")),
            },
        }
    }
    Ok(ReadyLine {
        outbound: outbound.ok_or("no outbound=")?,
        inbound: inbound.ok_or("no inbound=")?,
        admin: admin.ok_or("no admin=")?,
        services,
    })
}

async fn read_ready_line(stdout: &mut BufReader<ChildStdout>) -> Result<String, String> {
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = stdout
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading stdout: {e}"))?;
        if n == 0 {
            return Err(format!("stdout closed before the ready line; stdout was {seen:?}"));
        }
        if line.starts_with("tandem-proxy ready ") {
            return Ok(line);
        }
        seen.push(line);
    }
}

/// Gives the stderr reader a moment to drain the pipe of a process that just exited.
async fn wait_for_stderr(stderr: &Arc<Mutex<Vec<u8>>>) -> String {
    let mut last = usize::MAX;
    for _ in 0..20 {
        let len = stderr.lock().expect("lock").len();
        if len == last {
            break;
        }
        last = len;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    String::from_utf8_lossy(&stderr.lock().expect("lock")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_line_with_services() {
        let r = parse_ready_line(
            "tandem-proxy ready outbound=127.0.0.1:1 inbound=0.0.0.0:2 admin=127.0.0.1:3 service.db=127.0.0.1:4\n",
        )
        .unwrap();
        assert_eq!(r.outbound.port(), 1);
        assert_eq!(r.inbound.port(), 2);
        assert_eq!(r.admin.port(), 3);
        assert_eq!(r.services["db"].port(), 4);
        assert!(parse_ready_line("tandem-proxy ready outbound=127.0.0.1:1").is_err());
    }
}
