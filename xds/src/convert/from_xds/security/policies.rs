//! RBAC policies back into Tandem's authorization rules: only the shapes `to_xds` writes
//! (one `and_rules` of `or_rules` per condition, principals by exact or namespace prefix).

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal as XdsPrincipal,
};
use envoy_types::pb::envoy::config::route::v3::header_matcher;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{path_matcher, string_matcher::MatchPattern};
use prost::Name;

use super::string_match;
use crate::convert::from_xds::reject_rest;
use crate::convert::{unpack, ConvertError};
use crate::domain::{AuthzRule, PathPattern, Principal};

/// An RBAC HTTP filter: its action and its policies `rule-0`, `rule-1`, ... as rules.
pub(super) fn rbac_filter(
    f: &HttpFilter,
    path: &str,
) -> Result<(rbac::Action, Vec<AuthzRule>), ConvertError> {
    let mut f = f.clone();
    let config = f.config_type.take();
    f.name.clear();
    reject_rest(&f, path)?;
    let tpath = format!("{path}.typed_config");
    let any = match config {
        Some(http_filter::ConfigType::TypedConfig(any)) if any.type_url == HttpRbac::type_url() => {
            any
        }
        Some(http_filter::ConfigType::TypedConfig(any)) => {
            return Err(ConvertError::new(
                path,
                format!("unsupported HTTP filter {:?}", any.type_url),
            ))
        }
        _ => return Err(ConvertError::new(tpath, "required")),
    };
    let mut http: HttpRbac = unpack(&any, &tpath)?;
    let rules = http.rules.take();
    http.rules_stat_prefix.clear();
    reject_rest(&http, &tpath)?;
    let rpath = format!("{tpath}.rules");
    let mut rules = rules.ok_or_else(|| ConvertError::new(&rpath, "required"))?;
    let action = match rbac::Action::try_from(rules.action) {
        Ok(a @ (rbac::Action::Allow | rbac::Action::Deny)) => a,
        _ => {
            return Err(ConvertError::new(
                format!("{rpath}.action"),
                "only ALLOW and DENY are supported",
            ))
        }
    };
    rules.action = 0;
    let mut policies: HashMap<String, Policy> = std::mem::take(&mut rules.policies);
    reject_rest(&rules, &rpath)?;
    let n = policies.len();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("rule-{i}");
        let Some(p) = policies.remove(&key) else {
            return Err(ConvertError::new(
                format!("{rpath}.policies"),
                format!(
                    "policies must be named rule-0 .. rule-{}",
                    n.saturating_sub(1)
                ),
            ));
        };
        out.push(policy(p, &format!("{rpath}.policies[{key}]"))?);
    }
    Ok((action, out))
}

/// One policy as a rule: see `to_xds` for the shape.
fn policy(mut p: Policy, path: &str) -> Result<AuthzRule, ConvertError> {
    let permissions = std::mem::take(&mut p.permissions);
    let principals = std::mem::take(&mut p.principals);
    reject_rest(&p, path)?;
    let mut rule = AuthzRule::default();

    let ppath = format!("{path}.permissions");
    let mut permissions = permissions.into_iter();
    let (Some(permission), None) = (permissions.next(), permissions.next()) else {
        return Err(ConvertError::new(
            ppath,
            "exactly one permission is supported",
        ));
    };
    let ppath = format!("{ppath}[0]");
    match permission.rule {
        Some(permission::Rule::Any(true)) => {}
        Some(permission::Rule::AndRules(set)) if !set.rules.is_empty() => {
            for (i, or) in set.rules.into_iter().enumerate() {
                conditions(or, &mut rule, &format!("{ppath}.and_rules.rules[{i}]"))?;
            }
        }
        _ => {
            return Err(ConvertError::new(
                ppath,
                "only any: true or and_rules of or_rules are supported",
            ))
        }
    }

    let ppath = format!("{path}.principals");
    let mut principals = principals.into_iter();
    let (Some(principal), None) = (principals.next(), principals.next()) else {
        return Err(ConvertError::new(
            ppath,
            "exactly one principal is supported",
        ));
    };
    let ppath = format!("{ppath}[0]");
    match principal.identifier {
        Some(principal::Identifier::Any(true)) => {}
        Some(principal::Identifier::OrIds(set)) if !set.ids.is_empty() => {
            for (i, id) in set.ids.into_iter().enumerate() {
                rule.from
                    .push(principal_of(id, &format!("{ppath}.or_ids.ids[{i}]"))?);
            }
        }
        _ => {
            return Err(ConvertError::new(
                ppath,
                "only any: true or or_ids of authenticated principals are supported",
            ))
        }
    }
    Ok(rule)
}

/// One `or_rules` of a rule's `and_rules`: all paths, all methods, or all ports; each kind
/// at most once per rule.
fn conditions(or: Permission, rule: &mut AuthzRule, path: &str) -> Result<(), ConvertError> {
    let set = match or.rule {
        Some(permission::Rule::OrRules(set)) if !set.rules.is_empty() => set,
        _ => return Err(ConvertError::new(path, "non-empty or_rules required")),
    };
    let mut kinds = BTreeSet::new();
    let (mut paths, mut methods, mut ports) = (Vec::new(), Vec::new(), Vec::new());
    for (i, p) in set.rules.into_iter().enumerate() {
        let rpath = format!("{path}.or_rules.rules[{i}]");
        match p.rule {
            Some(permission::Rule::UrlPath(mut pm)) => {
                kinds.insert("url_path");
                let mpath = format!("{rpath}.url_path.path");
                let m = match pm.rule.take() {
                    Some(path_matcher::Rule::Path(m)) => m,
                    None => return Err(ConvertError::new(mpath, "required")),
                };
                paths.push(match string_match(Some(m), &mpath)? {
                    MatchPattern::Prefix(p) if p == "/" => PathPattern::Any,
                    MatchPattern::Exact(p) => PathPattern::Exact(p),
                    MatchPattern::Prefix(p) => PathPattern::Prefix(p),
                    MatchPattern::Suffix(p) => PathPattern::Suffix(p),
                    _ => {
                        return Err(ConvertError::new(
                            mpath,
                            "only exact, prefix and suffix are supported",
                        ))
                    }
                });
            }
            Some(permission::Rule::Header(mut h)) => {
                kinds.insert("header");
                let hpath = format!("{rpath}.header");
                if h.name != ":method" {
                    return Err(ConvertError::new(
                        format!("{hpath}.name"),
                        "only :method is supported",
                    ));
                }
                let spec = h.header_match_specifier.take();
                h.name.clear();
                reject_rest(&h, &hpath)?;
                let mpath = format!("{hpath}.string_match");
                let m = match spec {
                    Some(header_matcher::HeaderMatchSpecifier::StringMatch(m)) => m,
                    _ => return Err(ConvertError::new(mpath, "required")),
                };
                match string_match(Some(m), &mpath)? {
                    MatchPattern::Exact(m) if !m.is_empty() => methods.push(m),
                    _ => {
                        return Err(ConvertError::new(
                            mpath,
                            "only a non-empty exact method is supported",
                        ))
                    }
                }
            }
            Some(permission::Rule::DestinationPort(p)) => {
                kinds.insert("destination_port");
                let port = u16::try_from(p).ok().filter(|p| *p != 0).ok_or_else(|| {
                    ConvertError::new(format!("{rpath}.destination_port"), "not in 1..=65535")
                })?;
                ports.push(port);
            }
            _ => {
                return Err(ConvertError::new(
                    rpath,
                    "only url_path, header :method and destination_port are supported",
                ))
            }
        }
    }
    if kinds.len() != 1 {
        return Err(ConvertError::new(
            format!("{path}.or_rules"),
            "one kind of condition per or_rules",
        ));
    }
    if rule_has_twice(rule, &paths, &methods, &ports) {
        return Err(ConvertError::new(
            format!("{path}.or_rules"),
            "each kind of condition at most once per rule",
        ));
    }
    rule.paths.extend(paths);
    rule.methods.extend(methods);
    rule.ports.extend(ports);
    Ok(())
}

/// Whether a kind of condition in the new `or_rules` is already in `rule`.
fn rule_has_twice(
    rule: &AuthzRule,
    paths: &[PathPattern],
    methods: &[String],
    ports: &[u16],
) -> bool {
    (!paths.is_empty() && !rule.paths.is_empty())
        || (!methods.is_empty() && !rule.methods.is_empty())
        || (!ports.is_empty() && !rule.ports.is_empty())
}

/// An authenticated principal: no name (any mesh identity), an exact SPIFFE ID, or the
/// prefix `spiffe://<trust domain>/ns/<ns>/sa/` (a namespace).
fn principal_of(p: XdsPrincipal, path: &str) -> Result<Principal, ConvertError> {
    let apath = format!("{path}.authenticated");
    let mut auth = match p.identifier {
        Some(principal::Identifier::Authenticated(a)) => a,
        _ => {
            return Err(ConvertError::new(
                path,
                "only authenticated principals are supported",
            ))
        }
    };
    let Some(name) = auth.principal_name.take() else {
        return Ok(Principal::Authenticated);
    };
    let npath = format!("{apath}.principal_name");
    match string_match(Some(name), &npath)? {
        MatchPattern::Exact(id) if !id.is_empty() => Ok(Principal::Identity(id)),
        MatchPattern::Prefix(p) => {
            namespace_prefix(&p)
                .map(Principal::Namespace)
                .ok_or_else(|| {
                    ConvertError::new(
                        npath,
                        format!(
                            "{p:?}: a prefix must be spiffe://<trust domain>/ns/<namespace>/sa/"
                        ),
                    )
                })
        }
        _ => Err(ConvertError::new(
            npath,
            "only a non-empty exact SPIFFE ID or a namespace prefix is supported",
        )),
    }
}

/// The namespace of `spiffe://<td>/ns/<ns>/sa/`.
fn namespace_prefix(p: &str) -> Option<String> {
    let (_, rest) = p.strip_prefix("spiffe://")?.split_once('/')?;
    let ns = rest.strip_prefix("ns/")?.strip_suffix("/sa/")?;
    (!ns.is_empty() && !ns.contains('/')).then(|| ns.to_string())
}
