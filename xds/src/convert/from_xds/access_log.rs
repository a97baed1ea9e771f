//! An HTTP connection manager's `access_log`, as the control plane sends it: at most one
//! standard stdout or file logger, without a filter or a format (the proxy writes its own
//! JSON lines).

use envoy_types::pb::envoy::config::accesslog::v3::{access_log, AccessLog};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::StdoutAccessLog;
use prost::Name;

use crate::convert::from_xds::reject_rest;
use crate::convert::to_xds::{FILE_ACCESS_LOGGER, STDOUT_ACCESS_LOGGER};
use crate::convert::{unpack, ConvertError};
use crate::domain::AccessLogTarget;

/// The target of `logs` (`None`: no access log asked for).
pub(in crate::convert::from_xds) fn access_log(
    logs: Vec<AccessLog>,
    path: &str,
) -> Result<Option<AccessLogTarget>, ConvertError> {
    if logs.len() > 1 {
        return Err(ConvertError::new(
            path,
            "at most one access logger is supported",
        ));
    }
    let Some(mut log) = logs.into_iter().next() else {
        return Ok(None);
    };
    let path = format!("{path}[0]");
    let config = log.config_type.take();
    let name = std::mem::take(&mut log.name);
    if log.filter.is_some() {
        return Err(ConvertError::new(
            format!("{path}.filter"),
            "not supported: the proxy logs every request",
        ));
    }
    reject_rest(&log, &path)?;
    let tpath = format!("{path}.typed_config");
    let Some(access_log::ConfigType::TypedConfig(any)) = config else {
        return Err(ConvertError::new(tpath, "required"));
    };
    let no_format = || {
        ConvertError::new(
            format!("{tpath}.access_log_format"),
            "not supported: the proxy writes its own JSON lines",
        )
    };
    if any.type_url == StdoutAccessLog::type_url() {
        let stdout: StdoutAccessLog = unpack(&any, &tpath)?;
        if stdout.access_log_format.is_some() {
            return Err(no_format());
        }
        expect_name(&name, STDOUT_ACCESS_LOGGER, &path)?;
        return Ok(Some(AccessLogTarget::Stdout));
    }
    if any.type_url == FileAccessLog::type_url() {
        let mut file: FileAccessLog = unpack(&any, &tpath)?;
        if file.access_log_format.take().is_some() {
            return Err(no_format());
        }
        expect_name(&name, FILE_ACCESS_LOGGER, &path)?;
        let target = AccessLogTarget::parse_remote(&std::mem::take(&mut file.path))
            .map_err(|e| ConvertError::new(format!("{tpath}.path"), e))?;
        reject_rest(&file, &tpath)?;
        return Ok(Some(target));
    }
    Err(ConvertError::new(
        format!("{tpath}.type_url"),
        format!(
            "{:?}: only {} and {} are supported",
            any.type_url,
            StdoutAccessLog::type_url(),
            FileAccessLog::type_url()
        ),
    ))
}

/// A logger's name, when given, must be the one of its type (Envoy ignores names, but a
/// mismatch means the sender meant something else).
fn expect_name(name: &str, want: &str, path: &str) -> Result<(), ConvertError> {
    if name.is_empty() || name == want {
        Ok(())
    } else {
        Err(ConvertError::new(
            format!("{path}.name"),
            format!("{name:?}: expected {want:?} for this logger"),
        ))
    }
}
