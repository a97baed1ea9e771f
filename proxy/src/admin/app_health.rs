//! The app's health probes, answered on the admin port for the kubelet.
//!
//! Once inbound traffic is intercepted, a kubelet probe to the app's port would reach the
//! inbound listener as a plaintext caller with no identity, which mutual TLS refuses. So
//! the injector points the app's `httpGet` and `tcpSocket` probes at
//! `/app-health/<container>/<kind>` on the admin port (which the rules never redirect) and
//! hands the originals to the proxy (`--app-probes`); the proxy runs each one against the
//! app as the kubelet would have, and answers with the app's status. The probe's timing
//! (period, timeout, thresholds) stays in the pod spec, enforced by the kubelet as before.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::client::connect;
use crate::intercept::app_source;

/// The longest a probe is given, whatever the pod says (the kubelet gives up sooner).
const PROBE_DEADLINE: Duration = Duration::from_secs(30);

/// One probe, as Kubernetes writes it (named ports already resolved by the injector).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppProbe {
    /// An HTTP GET.
    #[serde(default)]
    pub http_get: Option<HttpGet>,
    /// A TCP connect.
    #[serde(default)]
    pub tcp_socket: Option<TcpSocket>,
}

/// `httpGet` of a Kubernetes probe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGet {
    /// Port number.
    pub port: u16,
    /// Path (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// Host to connect to (default: the pod's IP).
    #[serde(default)]
    pub host: Option<String>,
    /// `HTTP` (HTTPS probes are left to the kubelet: the injector skips their port).
    #[serde(default)]
    pub scheme: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub http_headers: Vec<Header>,
}

/// One `httpHeaders` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// `tcpSocket` of a Kubernetes probe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocket {
    /// Port number.
    pub port: u16,
    /// Host to connect to (default: the pod's IP).
    #[serde(default)]
    pub host: Option<String>,
}

/// The probes by admin path, and where the app is.
#[derive(Debug, Clone, Default)]
pub struct AppProbes {
    probes: BTreeMap<String, AppProbe>,
    pod_ip: Option<IpAddr>,
}

impl AppProbes {
    /// Parses `--app-probes`; the error says which probe and why.
    pub fn parse(json: &str, pod_ip: Option<IpAddr>) -> Result<Self, String> {
        let probes: BTreeMap<String, AppProbe> =
            serde_json::from_str(json).map_err(|e| format!("--app-probes: {e}"))?;
        for (path, p) in &probes {
            if !path.starts_with("/app-health/") {
                return Err(format!("--app-probes: {path:?} is not under /app-health/"));
            }
            match (&p.http_get, &p.tcp_socket) {
                (Some(h), None) => {
                    if let Some(s) = h
                        .scheme
                        .as_deref()
                        .filter(|s| !s.eq_ignore_ascii_case("http"))
                    {
                        return Err(format!(
                            "--app-probes: {path}: scheme {s:?} is not supported (HTTP only)"
                        ));
                    }
                    if h.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
                        return Err(format!("--app-probes: {path}: the path must start with /"));
                    }
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "--app-probes: {path}: exactly one of httpGet and tcpSocket"
                    ))
                }
            }
        }
        Ok(AppProbes { probes, pod_ip })
    }

    /// Whether `path` is one of the probes.
    pub fn has(&self, path: &str) -> bool {
        self.probes.contains_key(path)
    }

    /// The admin paths configured.
    pub fn paths(&self) -> Vec<&str> {
        self.probes.keys().map(String::as_str).collect()
    }

    /// Runs the probe at `path`: the app's status (HTTP) or 200 (TCP connected); 503 with
    /// the reason when the app cannot be reached; 404 for an unknown path.
    pub async fn run(&self, path: &str) -> (StatusCode, String) {
        let Some(probe) = self.probes.get(path) else {
            return (StatusCode::NOT_FOUND, format!("no app probe {path}\n"));
        };
        let outcome = tokio::time::timeout(PROBE_DEADLINE, self.probe(probe)).await;
        match outcome {
            Ok(Ok(status)) => (status, format!("app answered {}\n", status.as_u16())),
            Ok(Err(reason)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
            Err(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the app did not answer within {PROBE_DEADLINE:?}\n"),
            ),
        }
    }

    async fn probe(&self, probe: &AppProbe) -> Result<StatusCode, String> {
        if let Some(t) = &probe.tcp_socket {
            let addr = self.target(t.host.as_deref(), t.port).await?;
            connect(addr, app_source(addr), PROBE_DEADLINE)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(StatusCode::OK);
        }
        let Some(h) = &probe.http_get else {
            return Err("empty probe".into());
        };
        let addr = self.target(h.host.as_deref(), h.port).await?;
        let stream = connect(addr, app_source(addr), PROBE_DEADLINE)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {addr}: {e}"))?;
        tokio::spawn(conn);
        let host = match &h.host {
            Some(host) => format!("{host}:{}", h.port),
            None => addr.to_string(),
        };
        let mut req = Request::get(h.path.as_deref().unwrap_or("/"))
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "kube-probe/tandem");
        for hd in &h.http_headers {
            req = req.header(hd.name.as_str(), hd.value.as_str());
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("probe request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("probe to {addr}: {e}"))?;
        Ok(resp.status())
    }

    /// Where a probe connects: its host (an IP, or a name resolved here), else the pod's
    /// IP, else loopback.
    async fn target(&self, host: Option<&str>, port: u16) -> Result<SocketAddr, String> {
        match host {
            None => Ok(SocketAddr::new(
                self.pod_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                port,
            )),
            Some(h) => {
                if let Ok(ip) = h.parse::<IpAddr>() {
                    return Ok(SocketAddr::new(ip, port));
                }
                tokio::net::lookup_host((h, port))
                    .await
                    .map_err(|e| format!("cannot resolve {h}: {e}"))?
                    .next()
                    .ok_or_else(|| format!("{h} has no address"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn probes_parse_as_kubernetes_writes_them_or_say_why_not() {
        let p = AppProbes::parse(
            r#"{"/app-health/web/livez": {"httpGet": {"port": 8080, "path": "/healthz", "scheme": "HTTP",
                 "httpHeaders": [{"name": "x-probe", "value": "1"}]}},
                "/app-health/web/readyz": {"tcpSocket": {"port": 8080}}}"#,
            None,
        )
        .unwrap();
        assert_eq!(
            p.paths(),
            ["/app-health/web/livez", "/app-health/web/readyz"]
        );
        for bad in [
            r#"{"/healthz": {"tcpSocket": {"port": 1}}}"#,
            r#"{"/app-health/a/livez": {"httpGet": {"port": "http"}}}"#,
            r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "scheme": "HTTPS"}}}"#,
            r#"{"/app-health/a/livez": {}}"#,
            r#"{"/app-health/a/livez": {"exec": {"command": ["true"]}}}"#,
            "not json",
        ] {
            assert!(AppProbes::parse(bad, None).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_http_probe_answers_with_the_apps_status_and_a_dead_app_is_503() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 1024];
                let n = s.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if head.starts_with("GET /healthz ") && head.contains("x-probe: 1") {
                    "204 No Content"
                } else {
                    "500 Internal Server Error"
                };
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let json = format!(
            r#"{{"/app-health/web/livez": {{"httpGet": {{"port": {port}, "path": "/healthz", "httpHeaders": [{{"name": "x-probe", "value": "1"}}]}}}},
                "/app-health/web/readyz": {{"tcpSocket": {{"port": {port}}}}},
                "/app-health/web/startupz": {{"tcpSocket": {{"port": {dead}}}}}}}"#
        );
        let probes = AppProbes::parse(&json, None).unwrap();
        assert_eq!(
            probes.run("/app-health/web/livez").await.0,
            StatusCode::NO_CONTENT
        );
        assert_eq!(probes.run("/app-health/web/readyz").await.0, StatusCode::OK);
        assert_eq!(
            probes.run("/app-health/web/startupz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            probes.run("/app-health/other/livez").await.0,
            StatusCode::NOT_FOUND
        );
    }
}
