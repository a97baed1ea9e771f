//! Command-line flags; each is also readable from a `TANDEM_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use super::init::InitArgs;
pub use super::wait_ready::WaitReadyArgs;

/// Tandem's sidecar proxy.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "tandem-proxy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// A one-shot job instead of running the proxy.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Static YAML config file; watched for changes and reloaded on SIGHUP.
    #[arg(long, env = "TANDEM_CONFIG")]
    pub config: Option<PathBuf>,

    /// Control plane xDS address (`host:port` or `http://host:port`); instead of --config.
    #[arg(long, env = "TANDEM_CONTROL_PLANE")]
    pub control_plane: Option<String>,

    /// This workload's service name (required with --control-plane).
    #[arg(long, env = "TANDEM_SERVICE")]
    pub service: Option<String>,

    /// This workload's namespace.
    #[arg(long, env = "TANDEM_NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// xDS node id (default: SERVICE~NAMESPACE~PID).
    #[arg(long, env = "TANDEM_NODE_ID")]
    pub node_id: Option<String>,

    /// Outbound listener (app → mesh).
    #[arg(long, env = "TANDEM_OUTBOUND_ADDR", default_value = "127.0.0.1:15001")]
    pub outbound_addr: SocketAddr,

    /// Inbound listener (mesh → app).
    #[arg(long, env = "TANDEM_INBOUND_ADDR", default_value = "0.0.0.0:15006")]
    pub inbound_addr: SocketAddr,

    /// Admin listener: /live, /ready, /metrics, /config_dump, /drain.
    #[arg(long, env = "TANDEM_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,

    /// Port of the local app, which receives inbound traffic on 127.0.0.1.
    #[arg(long, env = "TANDEM_APP_PORT", default_value_t = 8080)]
    pub app_port: u16,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `tandem_proxy=debug`.
    #[arg(long, env = "TANDEM_LOG", default_value = "info")]
    pub log: String,

    /// Request body bytes kept so that a retry can resend them (control-plane mode; a
    /// config file sets `limits.retry_buffer_bytes`). Default 65536.
    #[arg(long, env = "TANDEM_RETRY_BUFFER_BYTES")]
    pub retry_buffer_bytes: Option<usize>,

    /// Join token (`tandemctl token create`): obtain a workload certificate from the
    /// control plane's CA before becoming ready (control-plane mode only).
    #[arg(long, env = "TANDEM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// A Kubernetes ServiceAccount token file (projected, audience `tandem`), re-read at
    /// every certificate request: the control plane checks it with TokenReview and issues
    /// the ServiceAccount's identity. Needs `--ca-pins`; instead of `--token`.
    #[arg(
        long,
        env = "TANDEM_SERVICE_ACCOUNT_TOKEN_FILE",
        conflicts_with = "token"
    )]
    pub service_account_token_file: Option<std::path::PathBuf>,

    /// The ServiceAccount this workload runs as: the certificate must name it (default:
    /// `--service`, the standalone convention).
    #[arg(long, env = "TANDEM_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,

    /// SHA-256 fingerprints (hex, comma-separated) of the mesh's root certificates, which
    /// the identity endpoint must chain to (`tandemctl ca status` lists them); with
    /// `--service-account-token-file` (a join token carries its own pin).
    #[arg(long, env = "TANDEM_CA_PINS")]
    pub ca_pins: Option<String>,

    /// Identity endpoint `host:port` (default: the control plane's host, port 15012).
    #[arg(long, env = "TANDEM_IDENTITY_ADDR")]
    pub identity_addr: Option<String>,

    /// A dedicated outbound listener for one service, `NAME=ADDR` (repeatable): every
    /// connection to ADDR goes to NAME, so opaque TCP has a destination in control-plane
    /// mode (a config file names these as `services[].listen`).
    #[arg(long = "listen", value_name = "NAME=ADDR", value_parser = parse_listen)]
    pub listen: Vec<(String, SocketAddr)>,

    /// Runtime worker threads (default: one per CPU).
    #[arg(long, env = "TANDEM_WORKERS")]
    pub workers: Option<usize>,

    /// Transparent sidecar (after `tandem-proxy init`): an intercepted outbound connection
    /// goes where the app addressed it (a service's virtual address, an endpoint, or
    /// unchanged outside the mesh), and an intercepted inbound connection to the app port
    /// it was addressed to, which is also the port authorization sees.
    #[arg(long, env = "TANDEM_TRANSPARENT")]
    pub transparent: bool,

    /// The app's health probes the admin port answers for the kubelet, as JSON:
    /// `{"/app-health/web/livez": {"httpGet": {"port": 8080, "path": "/healthz"}}}`
    /// (`httpGet` or `tcpSocket`, as Kubernetes writes them; the injector sets this).
    #[arg(long, env = "TANDEM_APP_PROBES", hide_env_values = true)]
    pub app_probes: Option<String>,

    /// The pod's IP: where app probes connect when they name no host (default 127.0.0.1).
    #[arg(long, env = "TANDEM_POD_IP")]
    pub pod_ip: Option<std::net::IpAddr>,

    /// Access log, one JSON line per HTTP request: `stdout` or a file path (appended to).
    /// Written off the request path; lines the writer cannot keep up with are dropped and
    /// counted.
    #[arg(long, env = "TANDEM_ACCESS_LOG")]
    pub access_log: Option<String>,

    /// OpenTelemetry collector for trace spans, OTLP over gRPC: `http://host:4317`.
    /// Without it the proxy makes no spans (trace headers pass through untouched).
    #[arg(long, env = "TANDEM_TRACE_COLLECTOR")]
    pub trace_collector: Option<String>,

    /// The share of new traces sampled, 0 to 1; a caller's decision (the sampled flag of
    /// `traceparent` or B3) is always followed.
    #[arg(long, env = "TANDEM_TRACE_SAMPLING", default_value_t = 0.01)]
    pub trace_sampling: f64,
}

/// `tandem-proxy <command>`.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Write the iptables rules that send the pod's TCP traffic through the proxy (run as
    /// root with NET_ADMIN and NET_RAW, before the proxy starts; idempotent).
    Init(InitArgs),
    /// Wait until the proxy on this pod answers /ready (a legacy-mode postStart hook).
    WaitReady(WaitReadyArgs),
}

/// `NAME=ADDR` of `--listen`.
fn parse_listen(s: &str) -> Result<(String, SocketAddr), String> {
    let (name, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=ADDR, got {s:?}"))?;
    if name.is_empty() {
        return Err(format!("expected NAME=ADDR, got {s:?}"));
    }
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an address: {e}"))?;
    Ok((name.to_string(), addr))
}
