//! File config → domain config, with field paths in every error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::file::{FileConfig, FileLimits, FileService, FileTimeouts};
use super::{Config, Limits, Protocol, Service, Timeouts};

/// A config that cannot be used, and where the problem is.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `services[1].endpoints[0]`.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Parses and validates YAML config text.
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let file: FileConfig = if text.trim().is_empty() {
        FileConfig::default()
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let path = if path.is_empty() || path == "." {
                "(root)".into()
            } else {
                path
            };
            let message = e.into_inner().to_string();
            // serde_yaml sometimes prefixes its own (shorter) path; keep one.
            let message = match message.split_once(": ") {
                Some((head, rest)) if path.starts_with(head) => rest.to_string(),
                _ => message,
            };
            ConfigError::new(path, message)
        })?
    };
    validate(file)
}

fn validate(file: FileConfig) -> Result<Config, ConfigError> {
    let service = match file.service {
        Some(name) => {
            check_name("service", &name)?;
            name
        }
        None => "app".to_string(),
    };
    let inbound_protocol = match file.inbound.and_then(|i| i.protocol) {
        Some(p) => protocol("inbound.protocol", &p)?,
        None => Protocol::Detect,
    };
    let mut services = BTreeMap::new();
    let mut listens: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for (i, s) in file.services.into_iter().enumerate() {
        let svc = service_entry(i, s)?;
        if let Some(addr) = svc.listen {
            if addr.port() != 0 {
                if let Some(other) = listens.insert(addr, svc.name.clone()) {
                    return Err(ConfigError::new(
                        format!("services[{i}].listen"),
                        format!("{addr} is already the listener of service {other:?}"),
                    ));
                }
            }
        }
        if services.contains_key(&svc.name) {
            return Err(ConfigError::new(
                format!("services[{i}].name"),
                format!("duplicate service {:?}", svc.name),
            ));
        }
        services.insert(svc.name.clone(), svc);
    }
    Ok(Config {
        service,
        inbound_protocol,
        services,
        timeouts: timeouts(file.timeouts.unwrap_or_default())?,
        limits: limits(file.limits.unwrap_or_default())?,
    })
}

fn service_entry(i: usize, s: FileService) -> Result<Service, ConfigError> {
    let at = |field: &str| format!("services[{i}].{field}");
    check_name(&at("name"), &s.name)?;
    let protocol = match s.protocol {
        Some(p) => protocol(&at("protocol"), &p)?,
        None => Protocol::Detect,
    };
    let mut endpoints = Vec::with_capacity(s.endpoints.len());
    for (j, e) in s.endpoints.iter().enumerate() {
        let addr = socket_addr(&format!("services[{i}].endpoints[{j}]"), e)?;
        if addr.port() == 0 {
            return Err(ConfigError::new(
                format!("services[{i}].endpoints[{j}]"),
                "port 0 is not a valid endpoint port",
            ));
        }
        endpoints.push(addr);
    }
    let listen = match s.listen {
        Some(l) => Some(socket_addr(&at("listen"), &l)?),
        None => None,
    };
    Ok(Service {
        name: s.name,
        protocol,
        endpoints,
        listen,
    })
}

/// Service names become `Host` matches and metric labels: keep them DNS-like.
fn check_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("invalid name {name:?}: use lowercase letters, digits, '-' and '.'"),
        ))
    }
}

fn protocol(path: &str, text: &str) -> Result<Protocol, ConfigError> {
    match text {
        "detect" => Ok(Protocol::Detect),
        "http1" => Ok(Protocol::Http1),
        "http2" => Ok(Protocol::Http2),
        "opaque" => Ok(Protocol::Opaque),
        other => Err(ConfigError::new(
            path,
            format!("unknown protocol {other:?}: expected detect, http1, http2 or opaque"),
        )),
    }
}

fn socket_addr(path: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.trim().parse().map_err(|_| {
        ConfigError::new(
            path,
            format!("invalid socket address {text:?}: expected ip:port"),
        )
    })
}

fn duration(path: &str, text: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        ConfigError::new(
            path,
            format!("invalid duration {text:?}: {e} (e.g. 250ms, 1s, 2m)"),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::new(path, "must be greater than zero"));
    }
    Ok(d)
}

fn timeouts(t: FileTimeouts) -> Result<Timeouts, ConfigError> {
    let d = Timeouts::default();
    Ok(Timeouts {
        connect: duration("timeouts.connect", t.connect, d.connect)?,
        request: duration("timeouts.request", t.request, d.request)?,
        detect: duration("timeouts.detect", t.detect, d.detect)?,
        idle: duration("timeouts.idle", t.idle, d.idle)?,
        request_headers: duration(
            "timeouts.request_headers",
            t.request_headers,
            d.request_headers,
        )?,
        upstream_idle: duration("timeouts.upstream_idle", t.upstream_idle, d.upstream_idle)?,
        shutdown_grace: duration(
            "timeouts.shutdown_grace",
            t.shutdown_grace,
            d.shutdown_grace,
        )?,
    })
}

fn bounded(
    path: &str,
    v: Option<u64>,
    default: usize,
    min: u64,
    max: u64,
) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v as usize),
        Some(v) => Err(ConfigError::new(
            path,
            format!("{v} is out of range {min}..={max}"),
        )),
    }
}

fn limits(l: FileLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    Ok(Limits {
        // hyper's HTTP/1 parser needs at least 8 KiB of buffer.
        max_header_bytes: bounded(
            "limits.max_header_bytes",
            l.max_header_bytes,
            d.max_header_bytes,
            1024,
            1 << 20,
        )?,
        max_headers: bounded("limits.max_headers", l.max_headers, d.max_headers, 1, 1000)?,
        max_uri_bytes: bounded(
            "limits.max_uri_bytes",
            l.max_uri_bytes,
            d.max_uri_bytes,
            16,
            64 * 1024,
        )?,
        retry_buffer_bytes: bounded(
            "limits.retry_buffer_bytes",
            l.retry_buffer_bytes,
            d.retry_buffer_bytes,
            0,
            16 << 20,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let cfg = parse(
            r#"
service: web
inbound: { protocol: opaque }
services:
  - name: echo
    protocol: http2
    endpoints: ["127.0.0.1:8081", "[::1]:8082"]
    listen: 127.0.0.1:15100
timeouts: { connect: 250ms, request: 2s }
limits: { max_headers: 50 }
"#,
        )
        .unwrap();
        assert_eq!(cfg.service, "web");
        assert_eq!(cfg.inbound_protocol, Protocol::Opaque);
        let echo = &cfg.services["echo"];
        assert_eq!(echo.protocol, Protocol::Http2);
        assert_eq!(echo.endpoints.len(), 2);
        assert_eq!(cfg.timeouts.connect, Duration::from_millis(250));
        assert_eq!(cfg.timeouts.idle, Timeouts::default().idle);
        assert_eq!(cfg.limits.max_headers, 50);
    }

    #[test]
    fn empty_file_is_a_valid_config() {
        let cfg = parse("").unwrap();
        assert!(cfg.services.is_empty());
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_carry_field_paths() {
        assert_eq!(
            err("services:\n  - name: a\n    endpoints: [\"127.0.0.1:1\"]\n  - name: b\n    endpoints: [\"10.0.0.1\"]\n"),
            "services[1].endpoints[0]: invalid socket address \"10.0.0.1\": expected ip:port"
        );
        assert!(
            err("timeouts: { request: soon }").starts_with("timeouts.request: invalid duration")
        );
        assert!(err("timeouts: { request: 0s }").starts_with("timeouts.request: must be greater"));
        assert!(
            err("services:\n  - name: Bad_Name\n").starts_with("services[0].name: invalid name")
        );
        assert!(err("inbound: { protocol: tls }").starts_with("inbound.protocol: unknown protocol"));
        assert!(
            err("limits: { max_headers: 0 }").starts_with("limits.max_headers: 0 is out of range")
        );
    }

    #[test]
    fn unknown_and_mistyped_fields_are_rejected_with_their_path() {
        assert!(err("services:\n  - name: a\n    endpoint: x\n")
            .starts_with("services[0].endpoint: unknown field `endpoint`"));
        assert!(
            err("limits: { max_headers: many }").starts_with("limits.max_headers: invalid type")
        );
    }

    /// Any mangling of a valid file yields a config or a path-carrying error, never a panic.
    #[test]
    fn mangled_files_never_panic() {
        let base = "service: web\ninbound: { protocol: detect }\nservices:\n  - name: echo\n    protocol: http2\n    endpoints: [\"127.0.0.1:8081\"]\n    listen: 127.0.0.1:0\ntimeouts: { connect: 1s, request: 2s }\nlimits: { max_headers: 50 }\n";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let junk = [
            ":", "-", "[", "{", "}", "\n", " ", "0", "x", "\"", "!!", "&a", "*a", "~", "-1",
        ];
        for _ in 0..3_000 {
            let mut text = base.to_string();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % text.len();
                let at = (0..=at)
                    .rev()
                    .find(|i| text.is_char_boundary(*i))
                    .unwrap_or(0);
                if next() % 2 == 0 {
                    text.insert_str(at, junk[(next() as usize) % junk.len()]);
                } else {
                    let end = (at + (next() as usize % 8)).min(text.len());
                    let end = (end..=text.len())
                        .find(|i| text.is_char_boundary(*i))
                        .unwrap_or(text.len());
                    text.replace_range(at..end, "");
                }
            }
            if let Err(e) = parse(&text) {
                assert!(!e.path.is_empty(), "error without a path for {text:?}: {e}");
            }
        }
    }

    #[test]
    fn duplicates_are_rejected() {
        assert!(
            err("services:\n  - name: a\n  - name: a\n").starts_with("services[1].name: duplicate")
        );
        assert!(err("services:\n  - name: a\n    listen: 127.0.0.1:9000\n  - name: b\n    listen: 127.0.0.1:9000\n")
            .starts_with("services[1].listen"));
    }
}
