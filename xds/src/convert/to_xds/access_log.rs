//! A listener's access log as Envoy spells it: the standard stdout or file logger in the
//! HTTP connection manager's `access_log`, so Envoy and Tandem's proxy follow one setting.

use envoy_types::pb::envoy::config::accesslog::v3::{access_log, AccessLog};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::StdoutAccessLog;

use crate::convert::pack;
use crate::domain::AccessLogTarget;

/// Name of Envoy's standard-output access logger.
pub const STDOUT_ACCESS_LOGGER: &str = "envoy.access_loggers.stdout";
/// Name of Envoy's file access logger.
pub const FILE_ACCESS_LOGGER: &str = "envoy.access_loggers.file";

/// The HTTP connection manager's `access_log` for `target` (empty: none).
pub(super) fn access_logs(target: Option<&AccessLogTarget>) -> Vec<AccessLog> {
    let Some(target) = target else {
        return Vec::new();
    };
    // No format: Envoy writes its default line; Tandem's proxy writes its JSON lines
    // whatever the format says, so one would only mislead.
    let (name, config) = match target {
        AccessLogTarget::Stdout => (STDOUT_ACCESS_LOGGER, pack(&StdoutAccessLog::default())),
        AccessLogTarget::File(path) => (
            FILE_ACCESS_LOGGER,
            pack(&FileAccessLog {
                path: path.display().to_string(),
                ..Default::default()
            }),
        ),
    };
    vec![AccessLog {
        name: name.to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(config)),
        ..Default::default()
    }]
}
