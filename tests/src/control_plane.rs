//! Running the real `tandem-control-plane` (on `127.0.0.1:0`, in a private data dir), its
//! REST API (with the admin token), and `tandemctl` against it.
//!
//! The control plane can be killed (`SIGKILL`, as a crash) and restarted on the same data
//! dir and the same xDS port, which is what proxies reconnect to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::bins::{self, CONTROL_PLANE, TANDEMCTL};
use crate::{client, within, AbortOnDrop, STEP_TIMEOUT};

/// How long the control plane may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a restart keeps retrying while the old xDS port is not free yet.
pub const REBIND_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory under the system temp dir; `tag` goes into its name.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "tandem-tests-{tag}-{}-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The addresses of the ready line
/// `tandem-control-plane ready api=A xds=A data-dir=D identity=A`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpReadyLine {
    /// `api=`
    pub api: SocketAddr,
    /// `xds=`
    pub xds: SocketAddr,
    /// `data-dir=`
    pub data_dir: PathBuf,
    /// `identity=` (the identity endpoint; absent from control planes older than it)
    pub identity: Option<SocketAddr>,
}

/// Parses the control plane's ready line.
pub fn parse_ready_line(line: &str) -> Result<CpReadyLine, String> {
    let rest = line
        .trim_end()
        .strip_prefix("tandem-control-plane ready ")
        .ok_or("not a control plane ready line")?;
    let (mut api, mut xds, mut data_dir, mut identity) = (None, None, None, None);
    for token in rest.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| format!("token {token:?} is not key=value"))?;
        let addr = || {
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("{key}: bad address {value:?}: {e}"))
        };
        match key {
            "api" => api = Some(addr()?),
            "xds" => xds = Some(addr()?),
            "data-dir" => data_dir = Some(PathBuf::from(value)),
            "identity" => identity = Some(addr()?),
            _ => return Err(format!("unknown key {key:?}")),
        }
    }
    Ok(CpReadyLine {
        api: api.ok_or("no api=")?,
        xds: xds.ok_or("no xds=")?,
        data_dir: data_dir.ok_or("no data-dir=")?,
        identity,
    })
}

/// What one `tandemctl` run produced.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CtlOutput {
    /// Panics (with both streams) unless the command exited 0; returns stdout.
    pub fn expect_ok(&self, what: &str) -> &str {
        assert!(
            self.status.success(),
            "tandemctl {what} failed ({}):\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }
}

/// A running `tandem-control-plane`.
///
/// Dropping it kills the process and removes its data dir (unless the dir was given by
/// the test). If the test is panicking, its stderr (the log) is printed.
#[derive(Debug)]
pub struct ControlPlane {
    child: Option<Child>,
    data: Arc<TempDir>,
    api: SocketAddr,
    xds: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<AbortOnDrop>,
    files: TempDir,
    identity: Option<SocketAddr>,
    extra: Vec<String>,
}

impl ControlPlane {
    /// Starts a control plane in a fresh data dir with both listeners on `127.0.0.1:0`,
    /// and waits (bounded) for its ready line.
    pub async fn start() -> ControlPlane {
        Self::start_with(&[]).await
    }

    /// Like [`ControlPlane::start`], with extra flags (kept for restarts), e.g.
    /// `["--cert-ttl", "10s"]`. Plaintext xDS is on (`--plaintext-xds`): most tests run
    /// proxies without identities; [`ControlPlane::start_secure`] leaves it off.
    pub async fn start_with(extra: &[&str]) -> ControlPlane {
        let mut flags = vec!["--plaintext-xds"];
        flags.extend_from_slice(extra);
        Self::start_exactly(&flags).await
    }

    /// A control plane with its defaults: xDS only over mutual TLS on the identity port.
    pub async fn start_secure() -> ControlPlane {
        Self::start_exactly(&[]).await
    }

    async fn start_exactly(extra: &[&str]) -> ControlPlane {
        // The loopback control plane of most tests: everything on 127.0.0.1, port 0.
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), extra).await
    }

    /// A control plane whose xDS and identity endpoints listen on `ip` (port 0), for
    /// proxies in other network namespaces; with exactly the flags `extra` (no
    /// `--plaintext-xds` unless given).
    pub async fn start_on(ip: std::net::IpAddr, extra: &[&str]) -> ControlPlane {
        Self::start_at(SocketAddr::new(ip, 0), 0, extra).await
    }

    /// Like [`ControlPlane::start_on`], with xDS on `xds` and the identity endpoint on
    /// `identity_port` of the same IP (`15010` and `15012` where proxies derive one from
    /// the other).
    pub async fn start_at(xds: SocketAddr, identity_port: u16, extra: &[&str]) -> ControlPlane {
        let data = Arc::new(TempDir::new("cp-data"));
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.push("--identity-addr".into());
        extra.push(SocketAddr::new(xds.ip(), identity_port).to_string());
        match Self::spawn(data, xds, Arc::default(), extra).await {
            Ok(cp) => cp,
            Err(e) => panic!("{e}"),
        }
    }

    async fn spawn(
        data: Arc<TempDir>,
        xds: SocketAddr,
        stderr: Arc<Mutex<Vec<u8>>>,
        extra: Vec<String>,
    ) -> Result<ControlPlane, String> {
        let bin = bins::path(CONTROL_PLANE).await;
        let mut cmd = Command::new(&bin);
        remove_tandem_env(&mut cmd);
        cmd.arg("--data-dir")
            .arg(data.path())
            .args(["--xds-addr", &xds.to_string(), "--api-addr", "127.0.0.1:0"])
            .args(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Ok(filter) = std::env::var(crate::proxy::LOG_ENV) {
            cmd.args(["--log", &filter]);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let err_reader = crate::capture(child.stderr.take().expect("stderr piped"), stderr.clone());
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let line = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                let mut line = String::new();
                match stdout.read_line(&mut line).await {
                    Ok(0) => return Err("stdout closed before the ready line".to_string()),
                    Ok(_) if line.starts_with("tandem-control-plane ready ") => return Ok(line),
                    Ok(_) => {}
                    Err(e) => return Err(format!("reading stdout: {e}")),
                }
            }
        })
        .await;
        let line = match line {
            Ok(Ok(line)) => line,
            Ok(Err(why)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                drain_pipe(&stderr).await;
                return Err(format!(
                    "tandem-control-plane did not become ready: {why}; exit {:?}\nstderr:\n{}",
                    status.ok().and_then(Result::ok),
                    String::from_utf8_lossy(&stderr.lock().expect("lock"))
                ));
            }
            Err(_) => {
                return Err(format!(
                    "tandem-control-plane printed no ready line within {READY_TIMEOUT:?}\nstderr:\n{}",
                    String::from_utf8_lossy(&stderr.lock().expect("lock"))
                ));
            }
        };
        let out_reader = AbortOnDrop(tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink).await;
        }));
        let ready = parse_ready_line(&line).map_err(|e| format!("{e}: {line:?}"))?;
        if xds.port() != 0 && ready.xds != xds {
            return Err(format!(
                "asked for --xds-addr {xds}, ready line says {}",
                ready.xds
            ));
        }
        Ok(ControlPlane {
            child: Some(child),
            data,
            api: ready.api,
            xds: ready.xds,
            stderr,
            readers: vec![err_reader, out_reader],
            files: TempDir::new("cp-files"),
            identity: ready.identity,
            extra,
        })
    }

    /// The REST API address.
    pub fn api(&self) -> SocketAddr {
        self.api
    }

    /// The xDS (ADS) address.
    pub fn xds(&self) -> SocketAddr {
        self.xds
    }

    /// The identity endpoint (CSRs with join tokens).
    pub fn identity(&self) -> SocketAddr {
        self.identity
            .expect("the control plane's ready line has no identity=")
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The admin token file (`DATA/admin-token`).
    pub fn token_file(&self) -> PathBuf {
        self.data_dir().join("admin-token")
    }

    /// The admin token.
    pub fn token(&self) -> String {
        let path = self.token_file();
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// Everything the control plane (all its runs) wrote to stderr.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("lock")).into_owned()
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the process with `SIGKILL` (a crash: nothing is flushed or closed politely)
    /// and waits for it to be gone.
    pub async fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("control plane is not running");
        };
        child.start_kill().expect("SIGKILL control plane");
        within(STEP_TIMEOUT, "killed control plane to exit", child.wait())
            .await
            .expect("wait for control plane");
        self.readers.clear();
    }

    /// Starts the control plane again on the same data dir and the same xDS port (the API
    /// port may change). While the port is not free yet, the start is retried for up to
    /// [`REBIND_TIMEOUT`].
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart needs a stopped control plane"
        );
        let deadline = tokio::time::Instant::now() + REBIND_TIMEOUT;
        loop {
            match Self::spawn(
                self.data.clone(),
                self.xds,
                self.stderr.clone(),
                self.extra.clone(),
            )
            .await
            {
                Ok(mut fresh) => {
                    self.child = fresh.child.take();
                    self.api = fresh.api;
                    self.identity = fresh.identity;
                    self.readers = std::mem::take(&mut fresh.readers);
                    return;
                }
                Err(_) if tokio::time::Instant::now() < deadline => {
                    // Most likely the port is still held; anything else fails at the deadline.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restart on xds={} failed: {e}", self.xds),
            }
        }
    }

    /// Runs `tandemctl --api URL --token-file F ARGS...` (bounded by [`STEP_TIMEOUT`]).
    pub async fn tandemctl(&self, args: &[&str]) -> CtlOutput {
        let bin = bins::path(TANDEMCTL).await;
        let mut cmd = Command::new(&bin);
        remove_tandem_env(&mut cmd);
        cmd.args(["--api", &format!("http://{}", self.api)])
            .arg("--token-file")
            .arg(self.token_file())
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = within(STEP_TIMEOUT, &format!("tandemctl {args:?}"), cmd.output())
            .await
            .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
        CtlOutput {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `tandemctl apply -f FILE` with `yaml` written to a file.
    pub async fn apply(&self, yaml: &str) -> CtlOutput {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let file = self.files.path().join(format!("apply-{n}.yaml"));
        std::fs::write(&file, yaml).expect("write resources file");
        let path = file.to_str().expect("utf-8 temp path").to_owned();
        self.tandemctl(&["apply", "-f", &path]).await
    }

    /// Like [`ControlPlane::apply`], panicking unless it succeeded.
    pub async fn apply_ok(&self, yaml: &str) {
        self.apply(yaml).await.expect_ok("apply");
    }

    /// One REST API call with the admin token: status and the body as JSON (`Null` when
    /// empty or not JSON).
    pub async fn api_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let what = format!("API {method} {path}");
        let resp = within(STEP_TIMEOUT, &what, async {
            let mut sender = client::h1_connect(self.api).await?;
            let body = match body {
                Some(v) => client::full(serde_json::to_vec(v).expect("serialize body")),
                None => client::empty(),
            };
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, self.api.to_string())
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", self.token()),
                )
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body)?;
            let resp = sender.send_request(req).await?;
            client::collect(resp).await
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        let json = serde_json::from_slice(resp.body()).unwrap_or(serde_json::Value::Null);
        (resp.status(), json)
    }

    /// `GET path`, panicking unless it answers 200.
    pub async fn api_get(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.api_call("GET", path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// `GET /v1/history` items.
    pub async fn history(&self) -> Vec<serde_json::Value> {
        let body = self.api_get("/v1/history").await;
        body["items"]
            .as_array()
            .unwrap_or_else(|| panic!("/v1/history has no items array: {body}"))
            .clone()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- tandem-control-plane stderr (api={} xds={}) ----\n{}",
                self.api,
                self.xds,
                self.stderr()
            );
        }
    }
}

fn remove_tandem_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("TANDEM_") {
            cmd.env_remove(name);
        }
    }
}

/// Gives the stderr reader a moment to drain the pipe of a process that just exited.
async fn drain_pipe(buf: &Arc<Mutex<Vec<u8>>>) {
    let mut last = usize::MAX;
    for _ in 0..20 {
        let len = buf.lock().expect("lock").len();
        if len == last {
            break;
        }
        last = len;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_control_plane_ready_line() {
        let r = parse_ready_line(
            "tandem-control-plane ready api=127.0.0.1:1 xds=127.0.0.1:2 data-dir=/tmp/x\n",
        )
        .unwrap();
        assert_eq!(r.api.port(), 1);
        assert_eq!(r.xds.port(), 2);
        assert_eq!(r.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(r.identity, None);
        let r = parse_ready_line(
            "tandem-control-plane ready api=127.0.0.1:1 xds=127.0.0.1:2 data-dir=/tmp/x identity=127.0.0.1:3\n",
        )
        .unwrap();
        assert_eq!(r.identity.map(|a| a.port()), Some(3));
        assert!(parse_ready_line("tandem-control-plane ready api=127.0.0.1:1").is_err());
    }
}
