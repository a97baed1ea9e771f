//! What the injector puts into a pod: cluster-wide defaults ([`Settings`], from the
//! control plane's flags or `tandemctl inject`'s) overridden per pod by
//! `config.tandem.dev/*` annotations into one [`ProxyConfig`].
//!
//! Every value is checked here, before any patch is written: a bad annotation is a reason
//! not to inject (the pod is admitted without a proxy and a warning says why), never a
//! half-configured proxy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::annotations as a;

/// The proxy's UID unless configured: Linkerd's, so existing exclusion habits carry over.
pub const DEFAULT_PROXY_UID: u32 = 2102;
/// The proxy's admin port.
pub const DEFAULT_ADMIN_PORT: u16 = 15000;
/// The proxy's inbound port.
pub const DEFAULT_INBOUND_PORT: u16 = 15006;
/// The proxy's outbound port.
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;
/// Where injected proxies find the control plane, in the manifests' install.
pub const DEFAULT_CONTROL_PLANE: &str = "tandem-control-plane.tandem-system.svc:15010";
/// The control plane's own namespace (never injected).
pub const DEFAULT_CONTROL_PLANE_NAMESPACE: &str = "tandem-system";

/// How the proxy is added to a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Kubernetes 1.29+: an init container with `restartPolicy: Always` (a native sidecar):
    /// started and ready before the app, stopped after it, and not keeping Jobs alive.
    #[default]
    Native,
    /// Before 1.29: the first app container, with a `postStart` hook that holds the
    /// other containers until the proxy is ready.
    Legacy,
}

impl Mode {
    /// `native` or `legacy`.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "native" => Ok(Mode::Native),
            "legacy" => Ok(Mode::Legacy),
            other => Err(format!("{other:?}: use native or legacy")),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Native => "native",
            Mode::Legacy => "legacy",
        }
    }
}

/// Cluster-wide defaults: what a pod without `config.tandem.dev/*` annotations gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The proxy image (also runs the redirection init container).
    pub proxy_image: String,
    /// Its pull policy; `None` leaves Kubernetes' default.
    pub image_pull_policy: Option<String>,
    /// Native sidecar or legacy.
    pub mode: Mode,
    /// The control plane's xDS address, as the proxy dials it.
    pub control_plane: String,
    /// The proxy's UID.
    pub proxy_uid: u32,
    /// The proxy's log filter.
    pub log_level: String,
    /// Admin port.
    pub admin_port: u16,
    /// Inbound port.
    pub inbound_port: u16,
    /// Outbound port.
    pub outbound_port: u16,
    /// CPU request (a Kubernetes quantity), if any.
    pub cpu_request: Option<String>,
    /// CPU limit, if any.
    pub cpu_limit: Option<String>,
    /// Memory request, if any.
    pub memory_request: Option<String>,
    /// Memory limit, if any.
    pub memory_limit: Option<String>,
    /// Inbound ports that bypass the proxy.
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound ports that bypass the proxy.
    pub skip_outbound_ports: Vec<PortRange>,
    /// Outbound CIDRs that bypass the proxy.
    pub skip_outbound_cidrs: Vec<String>,
    /// Namespaces never injected: the control plane's own and the cluster's system ones.
    pub excluded_namespaces: Vec<String>,
    /// SHA-256 of the DER of each mesh root the identity endpoint must chain to, lowercase
    /// hex (see [`ca_pin`]), given to the proxy as `TANDEM_CA_PINS`. The webhook fills them
    /// from the CA at every admission; empty: the proxy gets none and cannot obtain its
    /// certificate.
    pub ca_pins: Vec<String>,
    /// The proxy's access log (`TANDEM_ACCESS_LOG`: `stdout` or a path); `None`: off.
    pub access_log: Option<String>,
    /// The OTLP/gRPC collector for spans (`TANDEM_TRACE_COLLECTOR`); `None`: no tracing.
    pub trace_collector: Option<String>,
    /// The sampling ratio of new traces (`TANDEM_TRACE_SAMPLING`), as written; `None`:
    /// the proxy's default.
    pub trace_sampling: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            proxy_image: default_proxy_image(),
            image_pull_policy: None,
            mode: Mode::Native,
            control_plane: DEFAULT_CONTROL_PLANE.to_string(),
            proxy_uid: DEFAULT_PROXY_UID,
            log_level: "info".to_string(),
            admin_port: DEFAULT_ADMIN_PORT,
            inbound_port: DEFAULT_INBOUND_PORT,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            // Requests so the scheduler counts the proxy; no limits by default, because a
            // memory limit that is too low kills the pod's networking with it.
            cpu_request: Some("100m".to_string()),
            cpu_limit: None,
            memory_request: Some("64Mi".to_string()),
            memory_limit: None,
            skip_inbound_ports: Vec::new(),
            // SMTP is server-speaks-first and rarely meshed: Linkerd's habit.
            skip_outbound_ports: vec![PortRange::single(25), PortRange::single(587)],
            skip_outbound_cidrs: Vec::new(),
            excluded_namespaces: vec![
                DEFAULT_CONTROL_PLANE_NAMESPACE.to_string(),
                "kube-system".to_string(),
                "kube-public".to_string(),
                "kube-node-lease".to_string(),
            ],
            ca_pins: Vec::new(),
            access_log: None,
            trace_collector: None,
            trace_sampling: None,
        }
    }
}

/// The default image: the name the docs' `docker build` gives the proxy image, with this
/// crate's version as tag.
pub fn default_proxy_image() -> String {
    format!("tandem-proxy:{}", env!("CARGO_PKG_VERSION"))
}

/// One pod's proxy: the settings after its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// The defaults, overridden field by field.
    pub settings: Settings,
    /// The mesh service name (see [`crate::sidecar::service_name`]).
    pub service: String,
}

/// A `config.tandem.dev/*` annotation the injector cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}={value:?}: {reason}")]
pub struct SettingsError {
    /// The annotation.
    pub key: String,
    /// Its value.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

impl Settings {
    /// These settings with the pod's annotations applied. A value given by an annotation
    /// replaces the default (lists included: `skip-outbound-ports: ""` empties the list).
    pub fn with_annotations(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let mut s = self.clone();
        for (key, value) in annotations {
            let err = |reason: String| SettingsError {
                key: key.clone(),
                value: value.clone(),
                reason,
            };
            let v = value.trim();
            match key.as_str() {
                a::PROXY_IMAGE => s.proxy_image = image(v).map_err(err)?,
                a::PROXY_IMAGE_PULL_POLICY => {
                    s.image_pull_policy = Some(pull_policy(v).map_err(err)?)
                }
                a::SIDECAR_MODE => s.mode = Mode::parse(v).map_err(err)?,
                a::LOG_LEVEL => s.log_level = log_level(v).map_err(err)?,
                a::PROXY_UID => s.proxy_uid = uid(v).map_err(err)?,
                a::PROXY_CPU_REQUEST => s.cpu_request = Some(quantity(v).map_err(err)?),
                a::PROXY_CPU_LIMIT => s.cpu_limit = Some(quantity(v).map_err(err)?),
                a::PROXY_MEMORY_REQUEST => s.memory_request = Some(quantity(v).map_err(err)?),
                a::PROXY_MEMORY_LIMIT => s.memory_limit = Some(quantity(v).map_err(err)?),
                a::SKIP_INBOUND_PORTS => s.skip_inbound_ports = ports(v).map_err(err)?,
                a::SKIP_OUTBOUND_PORTS => s.skip_outbound_ports = ports(v).map_err(err)?,
                a::SKIP_OUTBOUND_CIDRS => s.skip_outbound_cidrs = cidrs(v).map_err(err)?,
                a::ADMIN_PORT => s.admin_port = port(v).map_err(err)?,
                a::INBOUND_PORT => s.inbound_port = port(v).map_err(err)?,
                a::OUTBOUND_PORT => s.outbound_port = port(v).map_err(err)?,
                a::CONTROL_PLANE => s.control_plane = host_port(v).map_err(err)?,
                a::ACCESS_LOG => s.access_log = access_log(v).map_err(err)?,
                a::TRACE_COLLECTOR => s.trace_collector = collector(v).map_err(err)?,
                a::TRACE_SAMPLING => s.trace_sampling = Some(ratio(v).map_err(err)?),
                _ => {}
            }
        }
        let distinct = [s.admin_port, s.inbound_port, s.outbound_port];
        if distinct[0] == distinct[1] || distinct[0] == distinct[2] || distinct[1] == distinct[2] {
            return Err(SettingsError {
                key: "config.tandem.dev/*-port".into(),
                value: format!("{distinct:?}"),
                reason: "the admin, inbound and outbound ports must differ".into(),
            });
        }
        Ok(s)
    }

    /// Checks the defaults themselves (the callers' flags), with the same rules as the
    /// annotations.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let as_annotations: BTreeMap<String, String> = [
            (a::PROXY_IMAGE, self.proxy_image.clone()),
            (a::LOG_LEVEL, self.log_level.clone()),
            (a::CONTROL_PLANE, self.control_plane.clone()),
            (a::PROXY_UID, self.proxy_uid.to_string()),
        ]
        .into_iter()
        .chain(
            [
                (a::ACCESS_LOG, &self.access_log),
                (a::TRACE_COLLECTOR, &self.trace_collector),
                (a::TRACE_SAMPLING, &self.trace_sampling),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
        )
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        self.with_annotations(&as_annotations).map(|_| ())
    }
}

/// An image reference: non-empty, no whitespace.
fn image(v: &str) -> Result<String, String> {
    if v.is_empty() || v.chars().any(char::is_whitespace) {
        return Err("an image reference, e.g. registry.example/tandem-proxy:0.1.0".into());
    }
    Ok(v.to_string())
}

fn pull_policy(v: &str) -> Result<String, String> {
    match v {
        "Always" | "IfNotPresent" | "Never" => Ok(v.to_string()),
        _ => Err("use Always, IfNotPresent or Never".into()),
    }
}

/// A tracing filter such as `info` or `tandem_proxy=debug,info`: it travels as one
/// argument, so only the characters such filters use are allowed.
/// `stdout`, an absolute path, or `off`.
fn access_log(v: &str) -> Result<Option<String>, String> {
    match v {
        "off" => Ok(None),
        "stdout" => Ok(Some(v.to_string())),
        p if p.starts_with('/') && !p.chars().any(char::is_control) => Ok(Some(v.to_string())),
        _ => Err("stdout, an absolute file path, or off".into()),
    }
}

/// `http://host:port`, or `off`.
fn collector(v: &str) -> Result<Option<String>, String> {
    if v == "off" {
        return Ok(None);
    }
    match v.strip_prefix("http://") {
        Some(rest) if host_port(rest).is_ok() => Ok(Some(v.to_string())),
        _ => Err("an OTLP/gRPC collector as http://host:port, or off".into()),
    }
}

/// A sampling ratio from 0 to 1.
fn ratio(v: &str) -> Result<String, String> {
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(v.to_string()),
        _ => Err("a ratio from 0 to 1, such as 0.01".into()),
    }
}

fn log_level(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_=,:.-[]{}".contains(c));
    if ok {
        Ok(v.to_string())
    } else {
        Err("a log filter such as info, debug or tandem_proxy=debug,info".into())
    }
}

/// A non-root UID: the rules exempt this UID's traffic, so root would exempt every root
/// process in the pod.
fn uid(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(0) => Err("the proxy must not run as root (0)".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("a numeric UID".into()),
    }
}

fn port(v: &str) -> Result<u16, String> {
    match v.parse::<u16>() {
        Ok(0) | Err(_) => Err("a port 1..=65535".into()),
        Ok(p) => Ok(p),
    }
}

/// A port, or an inclusive range of ports (`8000-8100`), as the redirection rules take
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    /// The first port.
    pub first: u16,
    /// The last port (equal to `first` for one port).
    pub last: u16,
}

impl PortRange {
    /// One port.
    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A comma list of ports and ranges (`25,8000-8100`); empty means none. Sorted, each once.
pub fn ports(v: &str) -> Result<Vec<PortRange>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let range = match item.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (port(a.trim()), port(b.trim()));
                match (first, last) {
                    (Ok(first), Ok(last)) if first <= last => PortRange { first, last },
                    _ => return Err(format!("{item:?}: a port range such as 8000-8100")),
                }
            }
            None => PortRange::single(port(item).map_err(|e| format!("{item:?}: {e}"))?),
        };
        if !out.contains(&range) {
            out.push(range);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A comma list of CIDRs (`10.0.0.0/8`, `fd00::/8`); a bare address is a /32 or /128.
pub fn cidrs(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (addr, len) = item.split_once('/').unwrap_or((item, ""));
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("{item:?}: not an IP address or CIDR"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = if len.is_empty() {
            max
        } else {
            len.parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{item:?}: prefix length 0..={max}"))?
        };
        let cidr = format!("{ip}/{len}");
        if !out.contains(&cidr) {
            out.push(cidr);
        }
    }
    Ok(out)
}

/// A root's pin: the SHA-256 of its DER as 64 hex digits (as `tandemctl ca status` prints
/// it), returned lowercase.
pub fn ca_pin(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v.to_ascii_lowercase())
    } else {
        Err(format!(
            "{v:?}: a root's SHA-256, 64 hex digits (the SHA256 column of `tandemctl ca status`)"
        ))
    }
}

/// `host:port`.
fn host_port(v: &str) -> Result<String, String> {
    let valid = v
        .rsplit_once(':')
        .is_some_and(|(host, p)| !host.is_empty() && port(p).is_ok())
        && !v.chars().any(char::is_whitespace);
    if valid {
        Ok(v.to_string())
    } else {
        Err("host:port".into())
    }
}

/// A Kubernetes resource quantity (`100m`, `64Mi`, `1.5`, `2e3`): the API server's grammar,
/// checked here so that a typo is reported as a warning instead of a rejected pod.
pub fn quantity(v: &str) -> Result<String, String> {
    let bad = || "a Kubernetes quantity such as 100m, 0.5, 64Mi or 1Gi".to_string();
    let digits_end = v
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || (*i == 0 && *c == '+')))
        .map_or(v.len(), |(i, _)| i);
    let (number, suffix) = v.split_at(digits_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let valid_number = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let valid_suffix = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix.strip_prefix(['e', 'E']).is_some_and(|exp| {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit())
    });
    if valid_number && valid_suffix {
        Ok(v.to_string())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::default().with_annotations(&map)
    }

    #[test]
    fn annotations_override_each_default() {
        let s = with(&[
            (a::PROXY_IMAGE, "reg.example/p:1"),
            (a::SIDECAR_MODE, "legacy"),
            (a::PROXY_UID, "1337"),
            (a::PROXY_MEMORY_LIMIT, "128Mi"),
            (a::SKIP_OUTBOUND_PORTS, "3306, 25,3306,8000-8100"),
            (a::SKIP_OUTBOUND_CIDRS, "10.0.0.0/8,fd00::1"),
            (a::ADMIN_PORT, "9901"),
        ])
        .unwrap();
        assert_eq!(s.proxy_image, "reg.example/p:1");
        assert_eq!(s.mode, Mode::Legacy);
        assert_eq!(s.proxy_uid, 1337);
        assert_eq!(s.memory_limit.as_deref(), Some("128Mi"));
        let listed: Vec<String> = s
            .skip_outbound_ports
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(listed, ["25", "3306", "8000-8100"]);
        assert_eq!(s.skip_outbound_cidrs, ["10.0.0.0/8", "fd00::1/128"]);
        assert_eq!(s.admin_port, 9901);
        let empty = with(&[(a::SKIP_OUTBOUND_PORTS, "")]).unwrap();
        assert!(empty.skip_outbound_ports.is_empty());
    }

    #[test]
    fn bad_values_name_the_annotation() {
        for (key, value) in [
            (a::PROXY_UID, "0"),
            (a::PROXY_UID, "nobody"),
            (a::SIDECAR_MODE, "ambient"),
            (a::PROXY_CPU_REQUEST, "lots"),
            (a::PROXY_MEMORY_LIMIT, "64MB"),
            (a::SKIP_INBOUND_PORTS, "80,http"),
            (a::SKIP_INBOUND_PORTS, "9000-8000"),
            (a::SKIP_OUTBOUND_CIDRS, "10.0.0.0/33"),
            (a::ADMIN_PORT, "15006"),
            (a::LOG_LEVEL, "info; rm -rf"),
            (a::PROXY_IMAGE, "a b"),
            (a::CONTROL_PLANE, "no-port"),
        ] {
            let e = with(&[(key, value)]).unwrap_err();
            assert!(e.to_string().contains("config.tandem.dev/"), "{e}");
        }
    }

    #[test]
    fn quantities_follow_the_api_grammar() {
        for ok in [
            "100m",
            "0.5",
            "64Mi",
            "1Gi",
            "2e3",
            "1E-2",
            "+1",
            "128974848",
        ] {
            assert!(quantity(ok).is_ok(), "{ok}");
        }
        for bad in ["", "m", "1..2", "64MB", "1 Gi", "-1x", "."] {
            assert!(quantity(bad).is_err(), "{bad}");
        }
        Settings::default().validate().unwrap();
    }

    #[test]
    fn a_pin_is_a_sha256_in_hex() {
        let upper = "AB".repeat(32);
        assert_eq!(ca_pin(&format!(" {upper} ")).unwrap(), "ab".repeat(32));
        for bad in [
            "",
            "ab",
            &"ab".repeat(33),
            &format!("{}zz", "ab".repeat(31)),
        ] {
            assert!(ca_pin(bad).is_err(), "{bad}");
        }
    }
}
