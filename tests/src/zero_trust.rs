//! Meshes whose sidecars hold workload identities: join tokens, sidecars in front of apps,
//! and probes of the inbound port with `openssl s_client`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::control_plane::ControlPlane;
use crate::mesh;
use crate::proxy::Proxy;
use crate::traffic::wait_dump;

/// A join token for `service` (default namespace).
pub async fn join_token(cp: &ControlPlane, service: &str) -> String {
    cp.tandemctl(&["token", "create", "--service", service])
        .await
        .expect_ok("token create")
        .trim()
        .to_string()
}

/// A sidecar for `service` with an identity from `cp`, its inbound side forwarding to the
/// local app on `app_port`. `extra` adds flags.
pub async fn sidecar(cp: &ControlPlane, service: &str, app_port: u16, extra: &[&str]) -> Proxy {
    let token = join_token(cp, service).await;
    let id = cp.identity().to_string();
    let port = app_port.to_string();
    let mut args = vec![
        "--token",
        token.as_str(),
        "--identity-addr",
        id.as_str(),
        "--app-port",
        port.as_str(),
        "--workers",
        "1",
    ];
    args.extend_from_slice(extra);
    Proxy::start_xds(cp.xds(), service, &args).await
}

/// Registers `addr` (a sidecar's inbound port) as an endpoint of `service`.
pub async fn register(cp: &ControlPlane, service: &str, addr: SocketAddr) {
    cp.tandemctl(&["endpoint", "add", service, &addr.to_string()])
        .await
        .expect_ok("endpoint add");
}

/// Waits until `proxy` calls `service` over mutual TLS (its cluster names the identity)
/// with at least one endpoint.
pub async fn wait_mtls_to(proxy: &Proxy, service: &str) {
    let cluster = mesh::fqdn(service);
    let want = spiffe(service);
    wait_dump(
        proxy,
        Duration::from_secs(15),
        &format!("mutual TLS to {service}"),
        |d| {
            let c = &d["routes"]["clusters"][&cluster];
            c["tls"]["identities"] == serde_json::json!([want])
                && c["endpoints"].as_array().is_some_and(|e| !e.is_empty())
        },
    )
    .await;
}

/// The SPIFFE ID of `service` in the default namespace of the test trust domain.
pub fn spiffe(service: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{service}")
}

/// A `Service` document whose inbound ports run in TLS `mode`.
pub fn service_with_mode(name: &str, mode: &str) -> String {
    format!(
        "apiVersion: tandem.dev/v1alpha1\nkind: Service\nmetadata: {{ name: {name}, namespace: default }}\n\
         spec:\n  mtls: {{ mode: {mode} }}\n  ports:\n    - {{ port: 80, name: main, protocol: http }}\n"
    )
}

/// What `openssl s_client` made of a connection to `addr` with `args`.
#[derive(Debug)]
pub struct Probe {
    /// Whether the handshake completed and the server answered the request sent.
    pub answered: bool,
    /// openssl's output, both streams.
    pub output: String,
}

/// Runs `openssl s_client -connect addr args...`, sends one HTTP/1.1 request and reports
/// whether an HTTP response came back. Bounded by a 10 s timeout.
pub async fn openssl_probe(addr: SocketAddr, args: &[&str]) -> Probe {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &addr.to_string(),
        "-quiet",
        "-no_ign_eof",
    ])
    .args(args)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .expect("openssl is installed (.ci/run installs it)");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin
            .write_all(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            .await;
        // Keep stdin open until the child exits: closing it early makes s_client quit
        // before the response arrives.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(stdin);
        });
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("openssl s_client finishes within 10 s")
        .expect("openssl output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Probe {
        answered: stdout.starts_with("HTTP/1.1 "),
        output: format!("{stdout}\n{stderr}"),
    }
}

/// A key and a certificate signed by a throwaway CA that is not the mesh's, written to
/// `dir` as `other.key` / `other.crt` (PEM); returns their paths.
pub fn foreign_client_cert(dir: &std::path::Path) -> (String, String) {
    let run = |args: &[&str]| openssl(dir, args);
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=not the mesh",
    ]);
    key_and_csr(dir, "other.key", "other.csr");
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/web\nextendedKeyUsage=clientAuth,serverAuth\n",
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "other.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "other.crt",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("other.key").display().to_string(),
        dir.join("other.crt").display().to_string(),
    )
}

/// Runs the openssl CLI in `dir`; panics with its output if it fails.
pub fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (.ci/run installs it)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A new P-256 key and a CSR for it (subject only), written to `dir` as `key` and `csr`.
pub fn key_and_csr(dir: &std::path::Path, key: &str, csr: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            key,
            "-out",
            csr,
            "-subj",
            "/CN=workload",
        ],
    );
}

/// The roots a proxy trusts, from its `/config_dump` (`tls.roots_sha256`), signing first.
pub fn roots_of(dump: &serde_json::Value) -> Vec<String> {
    dump["tls"]["roots_sha256"]
        .as_array()
        .map(|a| a.iter().map(|r| r.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The control plane's roots as `tandemctl ca status` lists them: (sha256, state).
pub async fn ca_roots(cp: &ControlPlane) -> Vec<(String, String)> {
    let out = cp.tandemctl(&["ca", "status", "-o", "json"]).await;
    let status: serde_json::Value = serde_json::from_str(out.expect_ok("ca status")).unwrap();
    status["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["sha256"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
