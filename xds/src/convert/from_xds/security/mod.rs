//! Zero-trust resources → domain: the trust bundle `Secret`, a cluster's transport socket,
//! and a workload's inbound `Listener`.
//!
//! Only the shapes [`to_xds`](crate::convert::to_xds) produces are accepted (TLS 1.3, the
//! workload certificate and the roots by SDS over ADS, one exact URI SAN per cluster, RBAC
//! policies built from Tandem rules). Anything else would ask the proxy for a behaviour it
//! does not have (inline keys, older TLS, other SAN checks, CEL conditions, ...), so it is
//! refused with its field path.

mod inbound;
mod policies;

pub(super) use inbound::inbound_listener;

use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
    tls_parameters::TlsProtocol, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use envoy_types::pb::google::protobuf::Any;
use prost::Name;

use super::{check_ads, name_mismatch, reject_rest};
use crate::convert::to_xds::RAW_BUFFER_TRANSPORT_SOCKET;
use crate::convert::{unpack, ConvertError};
use crate::domain::{TrustBundle, UpstreamTls, TRUST_BUNDLE_SECRET, WORKLOAD_CERT_SECRET};

/// The trust bundle: the secret [`TRUST_BUNDLE_SECRET`] holding only an inline PEM
/// `trusted_ca` with at least one certificate. Any other secret is refused: the workload
/// key and certificate never travel over xDS.
pub(super) fn trust_bundle(
    mut s: Secret,
    name: &str,
    path: &str,
) -> Result<TrustBundle, ConvertError> {
    if s.name != name {
        return Err(name_mismatch(path, &s.name));
    }
    if name != TRUST_BUNDLE_SECRET {
        return Err(ConvertError::new(
            format!("{path}.name"),
            format!("only the secret {TRUST_BUNDLE_SECRET:?} (the trust bundle) is supported"),
        ));
    }
    let mut cvc = match s.r#type.take() {
        Some(secret::Type::ValidationContext(cvc)) => cvc,
        Some(secret::Type::TlsCertificate(_)) => {
            return Err(ConvertError::new(
                format!("{path}.tls_certificate"),
                "certificates are not accepted over xDS: the proxy holds its own",
            ))
        }
        Some(secret::Type::SessionTicketKeys(_)) => {
            return Err(ConvertError::new(
                format!("{path}.session_ticket_keys"),
                "not supported",
            ))
        }
        Some(secret::Type::GenericSecret(_)) => {
            return Err(ConvertError::new(
                format!("{path}.generic_secret"),
                "not supported",
            ))
        }
        None => {
            return Err(ConvertError::new(
                format!("{path}.validation_context"),
                "required",
            ))
        }
    };
    let path = format!("{path}.validation_context");
    let ca = cvc.trusted_ca.take();
    reject_rest(&cvc, &path)?;
    let path = format!("{path}.trusted_ca");
    let mut ca = ca.ok_or_else(|| ConvertError::new(&path, "required"))?;
    let pem = match ca.specifier.take() {
        Some(data_source::Specifier::InlineString(pem)) => pem,
        Some(_) => {
            return Err(ConvertError::new(
                &path,
                "only inline_string is supported: the proxy reads no files for xDS",
            ))
        }
        None => {
            return Err(ConvertError::new(
                format!("{path}.inline_string"),
                "required",
            ))
        }
    };
    reject_rest(&ca, &path)?;
    if !has_certificate(&pem) {
        return Err(ConvertError::new(
            format!("{path}.inline_string"),
            "holds no PEM CERTIFICATE block",
        ));
    }
    Ok(TrustBundle { roots_pem: pem })
}

/// Whether `pem` has a `BEGIN CERTIFICATE` line followed by its `END` line. The proxy parses
/// the certificates; this only keeps an obviously empty bundle from replacing a good one.
fn has_certificate(pem: &str) -> bool {
    pem.split_once("-----BEGIN CERTIFICATE-----")
        .is_some_and(|(_, rest)| rest.contains("-----END CERTIFICATE-----"))
}

/// A cluster's transport socket: none or raw buffer → plaintext; the TLS socket → mutual
/// TLS expecting the one exact URI SAN it names.
pub(super) fn upstream_tls(
    socket: Option<TransportSocket>,
    path: &str,
) -> Result<Option<UpstreamTls>, ConvertError> {
    let Some(any) = transport_socket_config(socket, path)? else {
        return Ok(None);
    };
    let path = format!("{path}.transport_socket.typed_config");
    let mut ctx: UpstreamTlsContext = unpack(&any, &path)?;
    if !ctx.sni.is_empty() {
        return Err(ConvertError::new(
            format!("{path}.sni"),
            "not supported: the server is checked by its SPIFFE ID, not its name",
        ));
    }
    let common = ctx.common_tls_context.take();
    reject_rest(&ctx, &path)?;
    let path = format!("{path}.common_tls_context");
    let common = common.ok_or_else(|| ConvertError::new(&path, "required"))?;
    let validation = common_tls_context(common, &path)?;
    let cpath = format!("{path}.combined_validation_context");
    let mut combined = match validation {
        ValidationContextType::CombinedValidationContext(c) => c,
        _ => {
            return Err(ConvertError::new(
                cpath,
                "required: the server's identity must be checked",
            ))
        }
    };
    let roots = combined.validation_context_sds_secret_config.take();
    let default = combined.default_validation_context.take();
    reject_rest(&combined, &cpath)?;
    trust_bundle_sds(
        roots,
        &format!("{cpath}.validation_context_sds_secret_config"),
    )?;
    let dpath = format!("{cpath}.default_validation_context");
    let mut default = default.ok_or_else(|| ConvertError::new(&dpath, "required"))?;
    let sans = std::mem::take(&mut default.match_typed_subject_alt_names);
    reject_rest(&default, &dpath)?;
    let spath = format!("{dpath}.match_typed_subject_alt_names");
    if sans.is_empty() {
        return Err(ConvertError::new(
            spath,
            "at least one SAN matcher (a SPIFFE ID the server may present) is required",
        ));
    }
    let mut identities = Vec::with_capacity(sans.len());
    for (i, mut san) in sans.into_iter().enumerate() {
        let spath = format!("{spath}[{i}]");
        if san.san_type != SanType::Uri as i32 {
            return Err(ConvertError::new(
                format!("{spath}.san_type"),
                "only URI SANs (SPIFFE IDs) are supported",
            ));
        }
        san.san_type = 0;
        let matcher = san.matcher.take();
        reject_rest(&san, &spath)?;
        match string_match(matcher, &format!("{spath}.matcher"))? {
            MatchPattern::Exact(id) if !id.is_empty() && !id.contains(char::is_whitespace) => {
                identities.push(id)
            }
            _ => {
                return Err(ConvertError::new(
                    format!("{spath}.matcher"),
                    "only a non-empty exact match of a SPIFFE ID is supported",
                ))
            }
        }
    }
    identities.sort();
    identities.dedup();
    Ok(Some(UpstreamTls { identities }))
}

/// The typed config of a TLS transport socket, or `None` for plaintext (absent, or the raw
/// buffer socket).
fn transport_socket_config(
    socket: Option<TransportSocket>,
    path: &str,
) -> Result<Option<Any>, ConvertError> {
    let path = format!("{path}.transport_socket");
    let Some(socket) = socket else {
        return Ok(None);
    };
    match socket.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => {
            if any.type_url == RawBuffer::type_url() {
                Ok(None)
            } else if any.type_url == UpstreamTlsContext::type_url()
                || any.type_url == DownstreamTlsContext::type_url()
            {
                Ok(Some(any))
            } else {
                Err(ConvertError::new(
                    format!("{path}.typed_config"),
                    format!("unsupported transport socket {:?}", any.type_url),
                ))
            }
        }
        None if socket.name == RAW_BUFFER_TRANSPORT_SOCKET => Ok(None),
        None => Err(ConvertError::new(
            format!("{path}.typed_config"),
            format!("unsupported transport socket {:?}", socket.name),
        )),
    }
}

/// What mesh TLS contexts share: TLS 1.3, the workload certificate by SDS over ADS (never
/// inline), any ALPN (the proxy offers what the cluster's protocol needs). Returns the
/// validation context for the caller's own check.
fn common_tls_context(
    mut c: CommonTlsContext,
    path: &str,
) -> Result<ValidationContextType, ConvertError> {
    if !c.tls_certificates.is_empty() {
        return Err(ConvertError::new(
            format!("{path}.tls_certificates"),
            "inline certificates are not supported: the proxy holds its own",
        ));
    }
    let params = c.tls_params.take();
    let certs = std::mem::take(&mut c.tls_certificate_sds_secret_configs);
    let validation = c.validation_context_type.take();
    c.alpn_protocols.clear();
    reject_rest(&c, path)?;

    let ppath = format!("{path}.tls_params");
    let mut params = params.ok_or_else(|| ConvertError::new(&ppath, "required (TLS 1.3)"))?;
    if params.tls_minimum_protocol_version != TlsProtocol::TlSv13 as i32 {
        return Err(ConvertError::new(
            format!("{ppath}.tls_minimum_protocol_version"),
            "must be TLSv1_3: the mesh speaks TLS 1.3 only",
        ));
    }
    // TLS_AUTO as a maximum is 1.3 in Envoy.
    let max = params.tls_maximum_protocol_version;
    if max != TlsProtocol::TlSv13 as i32 && max != TlsProtocol::TlsAuto as i32 {
        return Err(ConvertError::new(
            format!("{ppath}.tls_maximum_protocol_version"),
            "must be TLSv1_3",
        ));
    }
    params.tls_minimum_protocol_version = 0;
    params.tls_maximum_protocol_version = 0;
    reject_rest(&params, &ppath)?;

    let cpath = format!("{path}.tls_certificate_sds_secret_configs");
    let mut certs = certs.into_iter();
    let (Some(cert), None) = (certs.next(), certs.next()) else {
        return Err(ConvertError::new(
            cpath,
            format!("exactly one is supported: the workload certificate {WORKLOAD_CERT_SECRET:?}"),
        ));
    };
    sds(cert, WORKLOAD_CERT_SECRET, &format!("{cpath}[0]"))?;
    validation.ok_or_else(|| {
        ConvertError::new(
            format!("{path}.validation_context_type"),
            "required: the peer's certificate must be checked against the trust bundle",
        )
    })
}

/// An SDS reference to the trust bundle.
fn trust_bundle_sds(config: Option<SdsSecretConfig>, path: &str) -> Result<(), ConvertError> {
    let config = config.ok_or_else(|| ConvertError::new(path, "required"))?;
    sds(config, TRUST_BUNDLE_SECRET, path)
}

/// An SDS reference over ADS to the secret `want`.
fn sds(mut config: SdsSecretConfig, want: &str, path: &str) -> Result<(), ConvertError> {
    if config.name != want {
        return Err(ConvertError::new(
            format!("{path}.name"),
            format!("{:?}: only {want:?} is supported here", config.name),
        ));
    }
    check_ads(config.sds_config.take(), &format!("{path}.sds_config"))?;
    config.name.clear();
    reject_rest(&config, path)
}

/// A string matcher's pattern; case-insensitive matching is refused (SPIFFE IDs, paths
/// and methods are compared exactly).
fn string_match(m: Option<StringMatcher>, path: &str) -> Result<MatchPattern, ConvertError> {
    let m = m.ok_or_else(|| ConvertError::new(path, "required"))?;
    if m.ignore_case {
        return Err(ConvertError::new(
            format!("{path}.ignore_case"),
            "not supported",
        ));
    }
    m.match_pattern
        .ok_or_else(|| ConvertError::new(path, "a match pattern is required"))
}
