//! A service's access log on its inbound listener: round trips for stdout and a file,
//! what Envoy sees, and what the proxy refuses.

use envoy_types::pb::envoy::config::accesslog::v3::{access_log, AccessLog, AccessLogFilter};
use envoy_types::pb::envoy::config::core::v3::{
    data_source, substitution_format_string, DataSource, SubstitutionFormatString,
};
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    stdout_access_log, StdoutAccessLog,
};

use super::security::{
    edit_inbound_hcm, invalid_at, secure_mesh, secure_resources, v1_view, INBOUND,
};
use super::*;
use crate::convert::to_xds::{FILE_ACCESS_LOGGER, STDOUT_ACCESS_LOGGER};

fn with_log(mode: TlsMode, target: Option<AccessLogTarget>) -> MeshConfig {
    let mut m = secure_mesh(mode, vec![]);
    if let Some(s) = m.services.get_mut(&svc("reviews-v1")) {
        s.access_log = target;
    }
    m
}

fn hcm_logs(m: &MeshConfig) -> Vec<Vec<AccessLog>> {
    let snap = to_snapshot(m, "v1").unwrap();
    let name = inbound_listener_name(&svc("reviews-v1"));
    let l: Listener = unpack(snap.get(LISTENER_TYPE, &name).unwrap(), "x").unwrap();
    l.filter_chains
        .iter()
        .map(|c| {
            let Some(filter::ConfigType::TypedConfig(any)) = &c.filters[0].config_type else {
                panic!("no HCM")
            };
            let hcm: HttpConnectionManager = unpack(any, "x").unwrap();
            hcm.access_log
        })
        .collect()
}

#[test]
fn a_services_access_log_reaches_its_inbound_listener_in_every_chain() {
    for target in [
        AccessLogTarget::Stdout,
        AccessLogTarget::File("/var/log/tandem/reviews.log".into()),
    ] {
        for mode in [TlsMode::Mutual, TlsMode::Permissive, TlsMode::Disabled] {
            let m = with_log(mode, Some(target.clone()));
            assert_eq!(
                v1_view(&m).inbound.unwrap().access_log,
                Some(target.clone())
            );
            for logs in hcm_logs(&m) {
                assert_eq!(logs.len(), 1);
                let Some(access_log::ConfigType::TypedConfig(any)) = &logs[0].config_type else {
                    panic!("no config")
                };
                match &target {
                    AccessLogTarget::Stdout => {
                        assert_eq!(logs[0].name, STDOUT_ACCESS_LOGGER);
                        let _: StdoutAccessLog = unpack(any, "x").unwrap();
                    }
                    AccessLogTarget::File(p) => {
                        assert_eq!(logs[0].name, FILE_ACCESS_LOGGER);
                        let f: FileAccessLog = unpack(any, "x").unwrap();
                        assert_eq!(f.path, p.display().to_string());
                    }
                }
            }
        }
    }
    let m = with_log(TlsMode::Mutual, None);
    assert_eq!(v1_view(&m).inbound.unwrap().access_log, None);
    assert!(hcm_logs(&m).iter().all(Vec::is_empty));
}

fn stdout_log() -> AccessLog {
    AccessLog {
        name: STDOUT_ACCESS_LOGGER.into(),
        config_type: Some(access_log::ConfigType::TypedConfig(pack(
            &StdoutAccessLog::default(),
        ))),
        ..Default::default()
    }
}

fn file_log(path: &str) -> AccessLog {
    AccessLog {
        name: FILE_ACCESS_LOGGER.into(),
        config_type: Some(access_log::ConfigType::TypedConfig(pack(&FileAccessLog {
            path: path.into(),
            ..Default::default()
        }))),
        ..Default::default()
    }
}

#[test]
fn access_logs_the_proxy_cannot_follow_are_refused_with_their_path() {
    // secure_resources is Permissive: two chains, which must agree.
    let res = secure_resources();
    let logs = format!("{INBOUND}.filter_chains[0].filters[0].typed_config.access_log");
    let both = |f: &dyn Fn(&mut HttpConnectionManager)| {
        let r = edit_inbound_hcm(&res, 0, f);
        edit_inbound_hcm(&r, 1, f)
    };

    let ok = both(&|h| h.access_log = vec![file_log("/tmp/a.log")]);
    assert_eq!(
        to_proxy_view(&ok).unwrap().inbound.unwrap().access_log,
        Some(AccessLogTarget::File("/tmp/a.log".into()))
    );

    invalid_at(
        &both(&|h| h.access_log = vec![stdout_log(), stdout_log()]),
        &logs,
    );
    invalid_at(
        &both(&|h| h.access_log = vec![file_log("relative.log")]),
        &format!("{logs}[0].typed_config.path"),
    );
    invalid_at(
        &both(&|h| {
            let mut l = stdout_log();
            l.filter = Some(AccessLogFilter::default());
            h.access_log = vec![l];
        }),
        &format!("{logs}[0].filter"),
    );
    invalid_at(
        &both(&|h| {
            let mut l = stdout_log();
            l.config_type = Some(access_log::ConfigType::TypedConfig(pack(
                &StdoutAccessLog {
                    access_log_format: Some(stdout_access_log::AccessLogFormat::LogFormat(
                        SubstitutionFormatString {
                            format: Some(substitution_format_string::Format::TextFormatSource(
                                DataSource {
                                    specifier: Some(data_source::Specifier::InlineString(
                                        "%START_TIME%".into(),
                                    )),
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        },
                    )),
                },
            )));
            h.access_log = vec![l];
        }),
        &format!("{logs}[0].typed_config.access_log_format"),
    );
    invalid_at(
        &both(&|h| {
            let mut l = stdout_log();
            l.name = FILE_ACCESS_LOGGER.into();
            h.access_log = vec![l];
        }),
        &format!("{logs}[0].name"),
    );
    invalid_at(
        &both(&|h| {
            let mut l = stdout_log();
            l.config_type = Some(access_log::ConfigType::TypedConfig(pack(
                &HttpConnectionManager::default(),
            )));
            h.access_log = vec![l];
        }),
        &format!("{logs}[0].typed_config.type_url"),
    );
    // Chains that disagree: the proxy has one inbound access log.
    let one = edit_inbound_hcm(&res, 0, |h| h.access_log = vec![stdout_log()]);
    invalid_at(&one, &format!("{INBOUND}.filter_chains[1].filters[0]"));
}
