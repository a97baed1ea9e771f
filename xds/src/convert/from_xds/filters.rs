//! HTTP filters: the listener's filter chain (fault, router), and what routes carry for
//! them (header modifiers, per-route fault config).

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValueOption,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{fault_abort, HttpFault};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use super::reject_rest;
use crate::convert::to_xds::FAULT_FILTER;
use crate::convert::{fraction, std_duration, unpack, ConvertError};
use crate::domain::{FaultAbort, FaultDelay, FaultInjection, Fraction, Header, HeaderModifier};

/// The filter chain must end with the router. Before it: the fault filter (named
/// [`FAULT_FILTER`], with an empty config: faults are per route), and optional or disabled
/// filters, which are skipped; any other filter is unsupported.
pub(super) fn http_filters(filters: Vec<HttpFilter>, path: &str) -> Result<(), ConvertError> {
    let last = filters.len().checked_sub(1).ok_or_else(|| {
        ConvertError::new(path, "expected at least one HTTP filter (the router, last)")
    })?;
    for (i, f) in filters.into_iter().enumerate() {
        let fpath = format!("{path}[{i}]");
        let typed = match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => Some(any),
            _ => None,
        };
        if let Some(any) = typed.filter(|a| a.type_url == HttpFault::type_url()) {
            fault_filter(&f, any, i == last, &fpath)?;
            continue;
        }
        let is_router = match typed {
            Some(any) => {
                let router: Option<Router> = unpack(any, &fpath).ok();
                if let Some(r) = &router {
                    if !r.upstream_http_filters.is_empty() {
                        return Err(ConvertError::new(
                            format!("{fpath}.typed_config.upstream_http_filters"),
                            "upstream HTTP filters are not supported",
                        ));
                    }
                }
                router.is_some()
            }
            None => false,
        };
        match (is_router, i == last) {
            (true, true) => {}
            (true, false) => {
                return Err(ConvertError::new(
                    fpath,
                    "the router filter must be the last filter",
                ))
            }
            (false, true) => {
                return Err(ConvertError::new(
                    fpath,
                    "the last filter must be the router",
                ))
            }
            (false, false) if f.is_optional || f.disabled => {}
            (false, false) => {
                let what = match typed {
                    Some(any) => any.type_url.clone(),
                    None => f.name.clone(),
                };
                return Err(ConvertError::new(
                    fpath,
                    format!("unsupported HTTP filter {what:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// The fault filter's listener-level entry: it only enables the per-route configs, which
/// are keyed by its name, so the name must be the one routes use.
fn fault_filter(f: &HttpFilter, any: &Any, last: bool, path: &str) -> Result<(), ConvertError> {
    if last {
        return Err(ConvertError::new(
            path,
            "the last filter must be the router",
        ));
    }
    if f.name != FAULT_FILTER {
        return Err(ConvertError::new(
            format!("{path}.name"),
            format!("the fault filter must be named {FAULT_FILTER:?}"),
        ));
    }
    if f.disabled {
        return Err(ConvertError::new(
            format!("{path}.disabled"),
            "a disabled fault filter is not supported",
        ));
    }
    let config: HttpFault = unpack(any, &format!("{path}.typed_config"))?;
    if config != HttpFault::default() {
        return Err(ConvertError::new(
            format!("{path}.typed_config"),
            "listener-wide faults are not supported: set them per route",
        ));
    }
    Ok(())
}

/// `*_headers_to_add` / `*_headers_to_remove` → a [`HeaderModifier`]. `field` is the
/// `*_headers_to_add` field name, for error paths.
pub(super) fn header_modifier(
    add: Vec<HeaderValueOption>,
    remove: Vec<String>,
    path: &str,
    field: &str,
) -> Result<HeaderModifier, ConvertError> {
    let mut out = HeaderModifier::default();
    for (i, mut o) in add.into_iter().enumerate() {
        let opath = format!("{path}.{field}[{i}]");
        // The deprecated `append` predates `append_action`; two ways to say one thing.
        #[allow(deprecated)]
        if o.append.take().is_some() {
            return Err(ConvertError::new(
                format!("{opath}.append"),
                "deprecated: use append_action",
            ));
        }
        let header = o.header.take();
        let action = std::mem::take(&mut o.append_action);
        let keep_empty = std::mem::take(&mut o.keep_empty_value);
        reject_rest(&o, &opath)?;
        let mut h =
            header.ok_or_else(|| ConvertError::new(format!("{opath}.header"), "required"))?;
        let hpath = format!("{opath}.header");
        let name = std::mem::take(&mut h.key).to_ascii_lowercase();
        if name.is_empty() || name.starts_with(':') {
            return Err(ConvertError::new(
                format!("{hpath}.key"),
                format!("cannot modify header {name:?}"),
            ));
        }
        let mut value = std::mem::take(&mut h.value);
        if value.is_empty() && !h.raw_value.is_empty() {
            value = String::from_utf8(std::mem::take(&mut h.raw_value))
                .map_err(|_| ConvertError::new(format!("{hpath}.raw_value"), "not valid UTF-8"))?;
        }
        reject_rest(&h, &hpath)?;
        if value.is_empty() && !keep_empty {
            // Envoy drops empty values unless `keep_empty_value`.
            continue;
        }
        check_header(&name, &value, &hpath)?;
        let header = Header { name, value };
        match HeaderAppendAction::try_from(action) {
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => out.set.push(header),
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => out.add.push(header),
            other => {
                let what = other.map_or_else(|_| action.to_string(), |a| a.as_str_name().into());
                return Err(ConvertError::new(
                    format!("{opath}.append_action"),
                    format!(
                        "{what} is not supported: only OVERWRITE_IF_EXISTS_OR_ADD and \
                         APPEND_IF_EXISTS_OR_ADD"
                    ),
                ));
            }
        }
    }
    let remove_field = field.replace("_to_add", "_to_remove");
    out.remove = remove
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let n = n.to_ascii_lowercase();
            http::HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                ConvertError::new(
                    format!("{path}.{remove_field}[{i}]"),
                    format!("{n:?} is not a valid header name"),
                )
            })?;
            Ok(n)
        })
        .collect::<Result<_, ConvertError>>()?;
    Ok(out)
}

/// Rejects what an HTTP message cannot carry (a name with spaces, a value with CR/LF).
fn check_header(name: &str, value: &str, path: &str) -> Result<(), ConvertError> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(ConvertError::new(
            format!("{path}.key"),
            format!("{name:?} is not a valid header name"),
        ));
    }
    if http::HeaderValue::from_str(value).is_err() {
        return Err(ConvertError::new(
            format!("{path}.value"),
            "not a valid header value",
        ));
    }
    Ok(())
}

/// `typed_per_filter_config`: only the fault filter's, as an `HTTPFault`.
pub(super) fn per_filter_config(
    configs: HashMap<String, Any>,
    path: &str,
) -> Result<Option<FaultInjection>, ConvertError> {
    let mut configs: Vec<_> = configs.into_iter().collect();
    // Sorted, so that the error for several bad entries is always the same one.
    configs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut fault = None;
    for (name, any) in configs {
        let fpath = format!("{path}.typed_per_filter_config[{name}]");
        if name != FAULT_FILTER {
            return Err(ConvertError::new(
                fpath,
                "unsupported per-route filter config: only the fault filter's",
            ));
        }
        fault = Some(http_fault(unpack(&any, &fpath)?, &fpath)?);
    }
    Ok(fault)
}

/// A fixed delay and an HTTP-status abort, each for a share of requests (absent
/// percentage: none, as in Envoy). Header-controlled faults, rate limits, runtime keys,
/// gRPC statuses and the rest are refused.
fn http_fault(mut f: HttpFault, path: &str) -> Result<FaultInjection, ConvertError> {
    let delay = f.delay.take();
    let abort = f.abort.take();
    reject_rest(&f, path)?;
    let share = |p: Option<_>, ppath: String| match p {
        Some(p) => fraction(&p, &ppath),
        None => Ok(Fraction(0)),
    };
    let delay = match delay {
        None => None,
        Some(mut d) => {
            let dpath = format!("{path}.delay");
            let fraction = share(d.percentage.take(), format!("{dpath}.percentage"))?;
            let duration = match d.fault_delay_secifier.take() {
                Some(fault_delay::FaultDelaySecifier::FixedDelay(fixed)) => {
                    std_duration(fixed, &format!("{dpath}.fixed_delay"))?
                }
                Some(fault_delay::FaultDelaySecifier::HeaderDelay(_)) => {
                    return Err(ConvertError::new(
                        format!("{dpath}.header_delay"),
                        "header-controlled delays are not supported",
                    ))
                }
                None => {
                    return Err(ConvertError::new(
                        format!("{dpath}.fixed_delay"),
                        "required",
                    ))
                }
            };
            reject_rest(&d, &dpath)?;
            Some(FaultDelay { duration, fraction })
        }
    };
    let abort = match abort {
        None => None,
        Some(mut a) => {
            let apath = format!("{path}.abort");
            let fraction = share(a.percentage.take(), format!("{apath}.percentage"))?;
            let status = match a.error_type.take() {
                Some(fault_abort::ErrorType::HttpStatus(s)) if (200..600).contains(&s) => {
                    // In 200..600, so it fits.
                    u16::try_from(s).unwrap_or(500)
                }
                Some(fault_abort::ErrorType::HttpStatus(s)) => {
                    return Err(ConvertError::new(
                        format!("{apath}.http_status"),
                        format!("{s} is not in 200..600"),
                    ))
                }
                Some(fault_abort::ErrorType::GrpcStatus(_)) => {
                    return Err(ConvertError::new(
                        format!("{apath}.grpc_status"),
                        "gRPC status aborts are not supported",
                    ))
                }
                Some(fault_abort::ErrorType::HeaderAbort(_)) => {
                    return Err(ConvertError::new(
                        format!("{apath}.header_abort"),
                        "header-controlled aborts are not supported",
                    ))
                }
                None => {
                    return Err(ConvertError::new(
                        format!("{apath}.http_status"),
                        "required",
                    ))
                }
            };
            reject_rest(&a, &apath)?;
            Some(FaultAbort { status, fraction })
        }
    };
    Ok(FaultInjection { delay, abort })
}
