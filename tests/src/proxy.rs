//! Running the real `tandem-proxy` binary: build, start, signal, stop, and its admin port.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::control_plane::TempDir;
use crate::ready::parse_ready_line;
use crate::AbortOnDrop;

/// How long the proxy may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variable naming a prebuilt proxy binary; when set, nothing is built.
pub const BIN_ENV: &str = "TANDEM_PROXY_BIN";

/// Environment variable with a `--log` filter passed to every proxy the tests start.
pub const LOG_ENV: &str = "TANDEM_TEST_LOG";

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// The path of a freshly built `tandem-proxy` binary.
///
/// The first call in a process runs `cargo build -p tandem-proxy --bin tandem-proxy` (a
/// no-op when the binary is fresh) so a stale binary is never tested (see [`crate::bins`]).
/// Blocking: call it from `spawn_blocking` in async code.
pub fn binary() -> PathBuf {
    match try_binary() {
        Ok(path) => path,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`binary`], returning the build failure instead of panicking.
pub fn try_binary() -> Result<PathBuf, String> {
    crate::bins::locate(crate::bins::PROXY)
}

/// A running `tandem-proxy` with its config in a private temp dir.
///
/// Dropping it kills the process and removes the dir. If the test is panicking, the proxy's
/// stderr (its log) is printed so the failure shows what the proxy saw.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    pid: Pid,
    dir: TempDir,
    outbound: SocketAddr,
    inbound: SocketAddr,
    admin: SocketAddr,
    services: HashMap<String, SocketAddr>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stdout_extra: Arc<Mutex<Vec<u8>>>,
    _readers: Vec<AbortOnDrop>,
}

impl Proxy {
    /// Writes `config_yaml` to a temp file and starts the proxy with every listener on
    /// `127.0.0.1:0`, then waits (bounded by [`READY_TIMEOUT`]) for its ready line.
    ///
    /// `extra_args` are appended to the command line; unless they contain `--app-port`,
    /// `--app-port 1` (where nothing listens) is used.
    pub async fn start(config_yaml: &str, extra_args: &[&str]) -> Proxy {
        match Self::try_start(config_yaml, extra_args).await {
            Ok(proxy) => proxy,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// Like [`Proxy::start`], but a proxy that exits (or stays silent) instead of printing
    /// its ready line is returned as a [`StartFailure`] rather than a panic.
    pub async fn try_start(config_yaml: &str, extra_args: &[&str]) -> Result<Proxy, StartFailure> {
        Self::try_start_with_env(config_yaml, extra_args, &[]).await
    }

    /// Like [`Proxy::try_start`], with extra environment variables. A default flag
    /// (`--outbound-addr 127.0.0.1:0`, …, `--app-port 1`) is left out when `extra_args`
    /// has the flag or `env` has its variable (`TANDEM_OUTBOUND_ADDR`, …), so tests can
    /// check the environment fallbacks. Inherited `TANDEM_*` variables are removed.
    pub async fn try_start_with_env(
        config_yaml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proxy, StartFailure> {
        Self::spawn(Some(config_yaml), extra_args, env).await
    }

    /// Starts the proxy in xDS mode: `--control-plane ADDR --service SERVICE`, no config
    /// file, every listener on `127.0.0.1:0` (as [`Proxy::start`]). It prints its ready
    /// line only once the first complete config arrived from the control plane, so this
    /// waits for that too (bounded by [`READY_TIMEOUT`]).
    pub async fn start_xds(control_plane: SocketAddr, service: &str, extra_args: &[&str]) -> Proxy {
        match Self::try_start_xds(control_plane, service, extra_args).await {
            Ok(proxy) => proxy,
            Err(failure) => panic!("{failure}"),
        }
    }

    /// Like [`Proxy::start_xds`], returning a proxy that never became ready as a
    /// [`StartFailure`].
    pub async fn try_start_xds(
        control_plane: SocketAddr,
        service: &str,
        extra_args: &[&str],
    ) -> Result<Proxy, StartFailure> {
        let cp = control_plane.to_string();
        let mut args = vec!["--control-plane", cp.as_str(), "--service", service];
        args.extend_from_slice(extra_args);
        Self::spawn(None, &args, &[]).await
    }

    async fn spawn(
        config_yaml: Option<&str>,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Proxy, StartFailure> {
        let bin = match tokio::task::spawn_blocking(try_binary).await {
            Ok(Ok(bin)) => bin,
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("building tandem-proxy: {e}"),
        };
        let dir = TempDir::new("proxy");
        let config = dir.path().join("config.yaml");
        if let Some(yaml) = config_yaml {
            std::fs::write(&config, yaml).expect("write config");
        }

        let mut cmd = Command::new(&bin);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TANDEM_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().copied());
        if config_yaml.is_some() {
            cmd.arg("--config").arg(&config);
        }
        for (flag, var, value) in [
            ("--outbound-addr", "TANDEM_OUTBOUND_ADDR", "127.0.0.1:0"),
            ("--inbound-addr", "TANDEM_INBOUND_ADDR", "127.0.0.1:0"),
            ("--admin-addr", "TANDEM_ADMIN_ADDR", "127.0.0.1:0"),
            ("--app-port", "TANDEM_APP_PORT", "1"),
        ] {
            if !extra_args.contains(&flag) && !env.iter().any(|(k, _)| *k == var) {
                cmd.args([flag, value]);
            }
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
        let err_reader = crate::capture(child.stderr.take().expect("stderr piped"), stderr.clone());

        let mut stdout = BufReader::new(child.stdout.take().expect("stdout piped"));
        let stdout_extra = Arc::new(Mutex::new(Vec::new()));
        let line =
            tokio::time::timeout(READY_TIMEOUT, read_ready_line(&mut stdout, &stdout_extra)).await;
        let line = match line {
            Ok(Ok(line)) => line,
            Ok(Err(why)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let stderr = wait_for_stderr(&stderr).await;
                return Err(StartFailure {
                    reason: why,
                    status: status.ok().and_then(Result::ok),
                    stderr,
                });
            }
            Err(_) => {
                let stderr = String::from_utf8_lossy(&stderr.lock().expect("lock")).into_owned();
                return Err(StartFailure {
                    reason: format!("no ready line within {READY_TIMEOUT:?}"),
                    status: None,
                    stderr,
                });
            }
        };
        let sink = stdout_extra.clone();
        let out_reader = AbortOnDrop(tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("stdout lock")
                    .extend_from_slice(&buf[..n]);
            }
        }));
        let ready = parse_ready_line(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        Ok(Proxy {
            child,
            pid,
            dir,
            outbound: ready.outbound,
            inbound: ready.inbound,
            admin: ready.admin,
            services: ready.services,
            stderr,
            stdout_extra,
            _readers: vec![err_reader, out_reader],
        })
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
        self.dir.path().join("config.yaml")
    }

    /// Replaces the config file atomically (write a sibling, then rename over it).
    pub fn rewrite_config(&self, yaml: &str) {
        self.rewrite_config_with(yaml, None);
    }

    /// Like [`Proxy::rewrite_config`], optionally giving the new file a chosen mtime (to
    /// make a change invisible to mtime polling, so only `SIGHUP` can reveal it).
    pub fn rewrite_config_with(&self, yaml: &str, mtime: Option<SystemTime>) {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.path().join(format!("config.yaml.tmp{n}"));
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

    /// Whether the proxy's stdout reached EOF (all of it has been read).
    pub fn stdout_closed(&self) -> bool {
        self._readers.get(1).is_some_and(|r| r.0.is_finished())
    }

    /// Everything the proxy wrote to stdout so far except the ready line.
    pub fn stdout_extra(&self) -> String {
        String::from_utf8_lossy(&self.stdout_extra.lock().expect("stdout lock")).into_owned()
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
    }
}

/// Why a proxy did not become ready.
#[derive(Debug)]
pub struct StartFailure {
    /// What went wrong (stdout closed, timeout).
    pub reason: String,
    /// The exit status, if the process exited.
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl std::fmt::Display for StartFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tandem-proxy did not become ready: {}; exit: {:?}\nstderr:\n{}",
            self.reason, self.status, self.stderr
        )
    }
}

async fn read_ready_line(
    stdout: &mut BufReader<ChildStdout>,
    extra: &Mutex<Vec<u8>>,
) -> Result<String, String> {
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        let n = stdout
            .read_line(&mut line)
            .await
            .map_err(|e| format!("reading stdout: {e}"))?;
        if n == 0 {
            return Err(format!(
                "stdout closed before the ready line; stdout was {seen:?}"
            ));
        }
        if line.starts_with("tandem-proxy ready ") {
            return Ok(line);
        }
        extra
            .lock()
            .expect("stdout lock")
            .extend_from_slice(line.as_bytes());
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
