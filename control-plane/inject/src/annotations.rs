//! The annotation (and label) keys users write, in one place so that docs, decision and
//! settings cannot drift apart. `docs/kubernetes.md` lists each with its default.

/// `enabled` or `disabled`, on a namespace (label; or annotation for `tandemctl inject`)
/// or a pod (annotation). The pod wins.
pub const INJECT: &str = "tandem.dev/inject";
/// What the injector did, as JSON ([`crate::record::Record`]); its presence means
/// "already injected".
pub const INJECTED: &str = "tandem.dev/injected";
/// Namespace label: `true` makes a pod that cannot be injected fail admission instead of
/// being admitted without a proxy.
pub const INJECT_STRICT: &str = "tandem.dev/inject-strict";

/// The value that turns injection on.
pub const ENABLED: &str = "enabled";
/// The value that turns injection off.
pub const DISABLED: &str = "disabled";

/// Prefix of the per-pod settings.
pub const CONFIG_PREFIX: &str = "config.tandem.dev/";
/// The proxy's image.
pub const PROXY_IMAGE: &str = "config.tandem.dev/proxy-image";
/// The proxy image's pull policy (`Always`, `IfNotPresent`, `Never`).
pub const PROXY_IMAGE_PULL_POLICY: &str = "config.tandem.dev/proxy-image-pull-policy";
/// `native` (the proxy is an init container with `restartPolicy: Always`) or `legacy`.
pub const SIDECAR_MODE: &str = "config.tandem.dev/sidecar-mode";
/// The proxy's log filter.
pub const LOG_LEVEL: &str = "config.tandem.dev/log-level";
/// The proxy's UID (the redirection rules exempt its traffic).
pub const PROXY_UID: &str = "config.tandem.dev/proxy-uid";
/// The proxy's CPU request.
pub const PROXY_CPU_REQUEST: &str = "config.tandem.dev/proxy-cpu-request";
/// The proxy's CPU limit.
pub const PROXY_CPU_LIMIT: &str = "config.tandem.dev/proxy-cpu-limit";
/// The proxy's memory request.
pub const PROXY_MEMORY_REQUEST: &str = "config.tandem.dev/proxy-memory-request";
/// The proxy's memory limit.
pub const PROXY_MEMORY_LIMIT: &str = "config.tandem.dev/proxy-memory-limit";
/// Inbound ports that bypass the proxy (comma list).
pub const SKIP_INBOUND_PORTS: &str = "config.tandem.dev/skip-inbound-ports";
/// Outbound ports that bypass the proxy (comma list).
pub const SKIP_OUTBOUND_PORTS: &str = "config.tandem.dev/skip-outbound-ports";
/// Outbound destination CIDRs that bypass the proxy (comma list).
pub const SKIP_OUTBOUND_CIDRS: &str = "config.tandem.dev/skip-outbound-cidrs";
/// The proxy's admin port (`/ready`, `/live`, `/metrics`, rewritten probes).
pub const ADMIN_PORT: &str = "config.tandem.dev/admin-port";
/// The proxy's inbound port (redirected connections from the mesh).
pub const INBOUND_PORT: &str = "config.tandem.dev/inbound-port";
/// The proxy's outbound port (redirected connections from the app).
pub const OUTBOUND_PORT: &str = "config.tandem.dev/outbound-port";
/// The mesh service this pod belongs to.
pub const SERVICE: &str = "config.tandem.dev/service";
/// The control plane's xDS address for this pod's proxy.
pub const CONTROL_PLANE: &str = "config.tandem.dev/control-plane";
/// The proxy's access log: `stdout`, a file path, or `off`.
pub const ACCESS_LOG: &str = "config.tandem.dev/access-log";
/// The OpenTelemetry collector the proxy sends spans to (`http://host:4317`), or `off`.
pub const TRACE_COLLECTOR: &str = "config.tandem.dev/trace-collector";
/// The share of new traces the proxy samples, 0 to 1.
pub const TRACE_SAMPLING: &str = "config.tandem.dev/trace-sampling";

/// Every `config.tandem.dev/` key the injector knows; another key under that prefix is
/// a typo and is reported as a warning.
pub const CONFIG_KEYS: &[&str] = &[
    PROXY_IMAGE,
    PROXY_IMAGE_PULL_POLICY,
    SIDECAR_MODE,
    LOG_LEVEL,
    PROXY_UID,
    PROXY_CPU_REQUEST,
    PROXY_CPU_LIMIT,
    PROXY_MEMORY_REQUEST,
    PROXY_MEMORY_LIMIT,
    SKIP_INBOUND_PORTS,
    SKIP_OUTBOUND_PORTS,
    SKIP_OUTBOUND_CIDRS,
    ADMIN_PORT,
    INBOUND_PORT,
    OUTBOUND_PORT,
    SERVICE,
    CONTROL_PLANE,
    ACCESS_LOG,
    TRACE_COLLECTOR,
    TRACE_SAMPLING,
];

/// kubectl's default container for `logs`/`exec`: set in legacy mode, where the proxy is
/// the first container and would otherwise be the default.
pub const KUBECTL_DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
