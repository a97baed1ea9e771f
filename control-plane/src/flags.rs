//! The server's command-line flags (`tandem-control-plane --data-dir ...`); each is also
//! readable from a `TANDEM_*` environment variable. The CLI, `tandemctl`, is another crate
//! (`control-plane/ctl/`) with flags of its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Tandem's control plane: the mesh's source of truth, xDS server and REST API.
#[derive(Debug, Clone, Parser)]
#[command(name = "tandem-control-plane", version, about)]
pub struct Flags {
    /// Directory of the embedded store and the admin token.
    #[arg(long, env = "TANDEM_DATA_DIR", default_value = "./tandem-data")]
    pub data_dir: PathBuf,

    /// xDS v3 ADS (gRPC) listener.
    #[arg(long, env = "TANDEM_XDS_ADDR", default_value = "127.0.0.1:15010")]
    pub xds_addr: SocketAddr,

    /// REST API listener (loopback unless told otherwise).
    #[arg(long, env = "TANDEM_API_ADDR", default_value = "127.0.0.1:15080")]
    pub api_addr: SocketAddr,

    /// Longest time, in seconds, between two DNS refreshes of a name (the record TTL
    /// decides when shorter; never more often than every second).
    #[arg(long, env = "TANDEM_DNS_REFRESH", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub dns_refresh: u64,

    /// A YAML file of `Endpoint` documents, re-read on change.
    #[arg(long, env = "TANDEM_STATIC_ENDPOINTS")]
    pub static_endpoints: Option<PathBuf>,

    /// Seconds between two scrapes of every connected proxy's `/metrics` (canary status).
    #[arg(long, env = "TANDEM_SCRAPE_INTERVAL", default_value_t = crate::telemetry::DEFAULT_INTERVAL.as_secs(), value_parser = clap::value_parser!(u64).range(1..=60))]
    pub scrape_interval: u64,

    /// Identity endpoint (HTTPS, TLS 1.3): signs workload CSRs for join tokens.
    #[arg(long, env = "TANDEM_IDENTITY_ADDR", default_value = "127.0.0.1:15012")]
    pub identity_addr: SocketAddr,

    /// The SPIFFE trust domain: identities are `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    #[arg(long, env = "TANDEM_TRUST_DOMAIN", default_value = crate::identity::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,

    /// A CA certificate (PEM; an intermediate may be followed by its chain up to the root)
    /// to sign with instead of the root generated in DATA_DIR/ca/. Needs --ca-key.
    #[arg(long, env = "TANDEM_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,

    /// The private key (PEM, PKCS#8) of --ca-cert.
    #[arg(long, env = "TANDEM_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,

    /// Lifetime of workload certificates (e.g. `24h`, `1h30m`).
    #[arg(long, env = "TANDEM_CERT_TTL", default_value = "24h", value_parser = crate::resources::duration::parse)]
    pub cert_ttl: std::time::Duration,

    /// Extra DNS names or IPs for the identity endpoint's server certificate (repeatable;
    /// `localhost`, `127.0.0.1` and `::1` are always in it).
    #[arg(
        long = "identity-san",
        env = "TANDEM_IDENTITY_SANS",
        value_delimiter = ','
    )]
    pub identity_sans: Vec<String>,

    /// What a request no AuthorizationPolicy speaks about gets, for a service without
    /// ALLOW policies: `allow` (the default) or `deny` (only what an ALLOW rule matches).
    #[arg(long, env = "TANDEM_DEFAULT_AUTHZ", default_value = "allow", value_parser = parse_default_authz)]
    pub default_authz: tandem_xds::domain::AuthzDefault,

    /// Also serve xDS without authentication on --xds-addr, for clients without a workload
    /// certificate (proxies started without --token, proxyless gRPC, Envoy). Such streams
    /// get outbound config only, never a workload's inbound policy. Off by default:
    /// proxies with an identity use the identity port.
    #[arg(long, env = "TANDEM_PLAINTEXT_XDS")]
    pub plaintext_xds: bool,

    /// The sidecar injector's admission webhook (HTTPS), e.g. `0.0.0.0:15017`; off unless
    /// given.
    #[arg(long, env = "TANDEM_INJECTOR_ADDR")]
    pub injector_addr: Option<SocketAddr>,

    /// DNS names or IPs for the webhook's serving certificate (repeatable; `localhost`,
    /// `127.0.0.1` and `::1` are always in it): the names the API server calls it by.
    #[arg(
        long = "injector-san",
        env = "TANDEM_INJECTOR_SANS",
        value_delimiter = ',',
        default_values = [
            "tandem-injector.tandem-system.svc",
            "tandem-injector.tandem-system.svc.cluster.local",
        ]
    )]
    pub injector_sans: Vec<String>,

    /// Lifetime of the webhook's serving certificate; it is renewed at two thirds of it
    /// (and after every CA change) without a restart.
    #[arg(long, env = "TANDEM_INJECTOR_CERT_TTL", default_value = "30d", value_parser = parse_long_duration)]
    pub injector_cert_ttl: std::time::Duration,

    /// The control plane's xDS address given to injected proxies.
    #[arg(long, env = "TANDEM_INJECTOR_CONTROL_PLANE", default_value = tandem_inject::settings::DEFAULT_CONTROL_PLANE)]
    pub injector_control_plane: String,

    /// The proxy image of injected pods (annotation `config.tandem.dev/proxy-image` wins).
    #[arg(long, env = "TANDEM_INJECTOR_PROXY_IMAGE", default_value_t = tandem_inject::settings::default_proxy_image())]
    pub injector_proxy_image: String,

    /// `native` (Kubernetes 1.29+: the proxy is a native sidecar) or `legacy` (before
    /// 1.29); annotation `config.tandem.dev/sidecar-mode` wins.
    #[arg(long, env = "TANDEM_INJECTOR_SIDECAR_MODE", default_value = "native", value_parser = tandem_inject::Mode::parse)]
    pub injector_sidecar_mode: tandem_inject::Mode,

    /// Injected proxies' UID (annotation `config.tandem.dev/proxy-uid` wins).
    #[arg(long, env = "TANDEM_INJECTOR_PROXY_UID", default_value_t = tandem_inject::settings::DEFAULT_PROXY_UID)]
    pub injector_proxy_uid: u32,

    /// Injected proxies' log filter (annotation `config.tandem.dev/log-level` wins).
    #[arg(long, env = "TANDEM_INJECTOR_LOG_LEVEL", default_value = "info")]
    pub injector_log_level: String,

    /// Injected proxies' access log, `stdout` or an absolute path (annotation
    /// `config.tandem.dev/access-log` wins, `off` included). Default: none.
    #[arg(long, env = "TANDEM_INJECTOR_ACCESS_LOG")]
    pub injector_access_log: Option<String>,

    /// The OpenTelemetry collector injected proxies send spans to, `http://host:4317`
    /// (annotation `config.tandem.dev/trace-collector` wins). Default: no tracing.
    #[arg(long, env = "TANDEM_INJECTOR_TRACE_COLLECTOR")]
    pub injector_trace_collector: Option<String>,

    /// The share of new traces injected proxies sample, 0 to 1 (annotation
    /// `config.tandem.dev/trace-sampling` wins). Default: the proxy's, 0.01.
    #[arg(long, env = "TANDEM_INJECTOR_TRACE_SAMPLING")]
    pub injector_trace_sampling: Option<String>,

    /// Outbound ports and ranges injected pods reach without the proxy, comma list
    /// (annotation `config.tandem.dev/skip-outbound-ports` replaces it).
    #[arg(
        long,
        env = "TANDEM_INJECTOR_SKIP_OUTBOUND_PORTS",
        default_value = "25,587"
    )]
    pub injector_skip_outbound_ports: String,

    /// Outbound CIDRs injected pods reach without the proxy, comma list, e.g. the cloud's
    /// metadata address (annotation `config.tandem.dev/skip-outbound-cidrs` replaces it).
    #[arg(long, env = "TANDEM_INJECTOR_SKIP_OUTBOUND_CIDRS", default_value = "")]
    pub injector_skip_outbound_cidrs: String,

    /// Namespaces never injected, whatever their labels or pods say (repeatable).
    #[arg(
        long = "injector-exclude-namespace",
        env = "TANDEM_INJECTOR_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        default_values = ["tandem-system", "kube-system", "kube-public", "kube-node-lease"]
    )]
    pub injector_exclude_namespaces: Vec<String>,

    /// Kubernetes mode: HTTPRoutes, GRPCRoutes and Tandem's own kinds come from the
    /// cluster (mirrored into the store; the REST API refuses writes of them) and route
    /// status is written back. The cluster is reached with --kubeconfig, else
    /// `KUBECONFIG`, `~/.kube/config` or the in-cluster service account.
    #[arg(long, env = "TANDEM_KUBERNETES")]
    pub kubernetes: bool,

    /// The kubeconfig for --kubernetes.
    #[arg(long, requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,

    /// With --kubernetes: the control plane's namespace, where the Lease lives.
    #[arg(long, env = "POD_NAMESPACE", default_value = "tandem-system")]
    pub kubernetes_namespace: String,

    /// With --kubernetes: this replica's name in the Lease (default: the pod name, else
    /// the host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub kubernetes_identity: Option<String>,

    /// With --kubernetes: how long the Lease holds without renewal (the longest once-only
    /// work pauses when its replica dies).
    #[arg(long, default_value = "15s", value_parser = crate::resources::duration::parse)]
    pub lease_duration: std::time::Duration,

    /// With --kubernetes: the injector's MutatingWebhookConfiguration, whose `caBundle`
    /// the Lease holder keeps equal to the mesh's trust bundle (empty: leave it alone).
    #[arg(
        long,
        env = "TANDEM_INJECTOR_WEBHOOK",
        default_value = crate::kubernetes::webhook_ca::DEFAULT_WEBHOOK
    )]
    pub injector_webhook: String,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `tandem_control_plane=debug`.
    #[arg(long, env = "TANDEM_LOG", default_value = "info")]
    pub log: String,
}

/// A duration as `--cert-ttl` takes it, or days (`30d`).
fn parse_long_duration(s: &str) -> Result<std::time::Duration, String> {
    if let Some(days) = s.strip_suffix('d') {
        let days: u64 = days
            .parse()
            .map_err(|_| format!("{s:?}: days such as 30d"))?;
        return Ok(std::time::Duration::from_secs(days * 24 * 3600));
    }
    crate::resources::duration::parse(s)
}

/// `allow` or `deny`.
fn parse_default_authz(s: &str) -> Result<tandem_xds::domain::AuthzDefault, String> {
    match s {
        "allow" => Ok(tandem_xds::domain::AuthzDefault::Allow),
        "deny" => Ok(tandem_xds::domain::AuthzDefault::Deny),
        other => Err(format!("{other:?}: use allow or deny")),
    }
}
