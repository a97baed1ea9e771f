//! Test harness: the real `tandem-control-plane` on port 0 with a temp data dir, driven
//! by the real `tandemctl`. The control plane is another package's binary: it is built (when
//! stale) and located by `tandem_tests::bins`, or named by `TANDEM_CONTROL_PLANE_BIN`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `tandem-control-plane` binary, built first when stale.
pub fn control_plane_bin() -> PathBuf {
    tandem_tests::bins::locate(tandem_tests::bins::CONTROL_PLANE).unwrap_or_else(|e| panic!("{e}"))
}

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tandem-cp-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running control plane.
pub struct ControlPlane {
    pub child: Child,
    pub api: String,
    pub api_addr: String,
    pub identity_addr: String,
    /// `injector=` of the ready line: empty unless started with `--injector-addr`.
    pub injector_addr: String,
    pub data_dir: PathBuf,
}

impl ControlPlane {
    pub fn start(data_dir: &Path, extra: &[&str]) -> ControlPlane {
        let mut child = Command::new(control_plane_bin())
            .args([
                "--api-addr",
                "127.0.0.1:0",
                "--identity-addr",
                "127.0.0.1:0",
                "--xds-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("TANDEM_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tandem-control-plane");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ready line within 30 s");
        assert!(
            line.starts_with("tandem-control-plane ready api="),
            "{line}"
        );
        let api_addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("api="))
            .unwrap()
            .to_string();
        let identity_addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("identity="))
            .unwrap_or_default()
            .to_string();
        let injector_addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("injector="))
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains(&format!("data-dir={}", data_dir.display())),
            "{line}"
        );
        ControlPlane {
            child,
            api: format!("http://{api_addr}"),
            api_addr,
            identity_addr,
            injector_addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn token_file(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_file())
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs tandemctl against this control plane.
    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_cmd(&self.api, &self.token_file(), args)
            .output()
            .unwrap()
    }

    /// Runs tandemctl and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "tandemctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs tandemctl with `-o json` and parses stdout.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&all)).unwrap()
    }

    /// Sends a raw HTTP/1.1 request; returns the status code and the whole answer.
    pub fn raw(&self, request: &str) -> (u16, String) {
        let mut s = TcpStream::connect(&self.api_addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, out)
    }

    /// SIGKILL, no goodbye.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ctl_cmd(api: &str, token_file: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandemctl"));
    c.arg("--api")
        .arg(api)
        .arg("--token-file")
        .arg(token_file)
        .args(args);
    c.env_remove("TANDEM_API_TOKEN");
    c
}

/// Polls `f` every 100 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub const EXAMPLE: &str = r#"
apiVersion: tandem.dev/v1alpha1
kind: Service
metadata: { name: reviews, namespace: default }
spec:
  ports:
    - { port: 9080, name: http, protocol: http }
---
apiVersion: tandem.dev/v1alpha1
kind: Endpoint
metadata: { namespace: default }
spec:
  service: reviews-v1
  address: 127.0.0.1:9081
  labels: { version: v1 }
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: { name: reviews-split, namespace: default }
spec:
  parentRefs:
    - { kind: Service, name: reviews, port: 9080 }
  rules:
    - matches:
        - path: { type: PathPrefix, value: / }
      backendRefs:
        - { name: reviews-v1, port: 9080, weight: 90 }
        - { name: reviews-v2, port: 9080, weight: 10 }
"#;

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The identity endpoint's answer to one `POST /v1/certificates`.
pub struct CertAnswer {
    /// HTTP status.
    pub code: u16,
    /// The JSON body.
    pub body: serde_json::Value,
    /// The endpoint's own certificate chain (DER), as presented in the handshake.
    pub server_chain: Vec<Vec<u8>>,
    /// Whether the connection was TLS 1.3.
    pub tls13: bool,
}

/// POSTs `body` to the identity endpoint over TLS (a client limited to 1.3), trusting only
/// the roots in `bundle_pem`.
pub fn post_certificates(
    cp: &ControlPlane,
    bundle_pem: &str,
    body: &serde_json::Value,
) -> CertAnswer {
    let mut roots = rustls::RootCertStore::empty();
    for der in tandem_control_plane::identity::ca::pem_blocks(bundle_pem, "CERTIFICATE") {
        roots.add(der.into()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(&cp.identity_addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let body = serde_json::to_vec(body).unwrap();
    let head = format!(
        "POST /v1/certificates HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).unwrap();
    tls.write_all(&body).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    let server_chain = tls
        .conn
        .peer_certificates()
        .unwrap_or_default()
        .iter()
        .map(|c| c.as_ref().to_vec())
        .collect();
    let tls13 = tls.conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
    let text = String::from_utf8(out).unwrap();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    let json = text.split_once("\r\n\r\n").unwrap().1;
    CertAnswer {
        code,
        body: serde_json::from_str(json).unwrap(),
        server_chain,
        tls13,
    }
}
