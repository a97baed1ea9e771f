//! `AuthorizationPolicy`: who may call a service, on which paths, methods and ports.
//!
//! The validator does not know the control plane's trust domain (validation runs before
//! anything is stored, on any node), so a `principal` only has to be a well-formed SPIFFE
//! ID, `spiffe://<trust-domain>/<path>`; one naming another trust domain never matches.

use super::{dns_label, policy};
use crate::spec::{AuthorizationPolicySpec, AuthzRuleSpec, AuthzSourceSpec};
use crate::ResourceError;

/// Most `rules` per policy.
pub const MAX_AUTHZ_RULES: usize = 64;
/// Most entries per list of a rule (`from`, `paths`, `methods`, `ports`).
pub const MAX_AUTHZ_LIST: usize = 64;
/// Longest path pattern or principal, in bytes.
pub const MAX_AUTHZ_VALUE: usize = 1024;

/// Validates an `AuthorizationPolicy.spec` of a policy in `namespace`; `at` is its path.
pub(super) fn authorization_policy(
    at: &str,
    namespace: &str,
    spec: &AuthorizationPolicySpec,
) -> Result<(), ResourceError> {
    if let Some(t) = &spec.target_ref {
        let tat = format!("{at}.targetRef");
        policy::target_ref(&tat, t)?;
        // A policy protects services of its own namespace (Istio's rule): a policy in `a`
        // must not change who may call a service of `b`.
        if let Some(ns) = t.namespace.as_deref().filter(|ns| *ns != namespace) {
            return Err(ResourceError::new(
                format!("{tat}.namespace"),
                format!("{ns:?}: a policy protects services of its own namespace ({namespace:?})"),
            ));
        }
    }
    if spec.rules.len() > MAX_AUTHZ_RULES {
        return Err(ResourceError::new(
            format!("{at}.rules"),
            format!("at most {MAX_AUTHZ_RULES} rules"),
        ));
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        authz_rule(&format!("{at}.rules[{i}]"), rule)?;
    }
    Ok(())
}

fn authz_rule(at: &str, rule: &AuthzRuleSpec) -> Result<(), ResourceError> {
    for (field, len) in [
        ("from", rule.from.len()),
        ("paths", rule.paths.len()),
        ("methods", rule.methods.len()),
        ("ports", rule.ports.len()),
    ] {
        if len > MAX_AUTHZ_LIST {
            return Err(ResourceError::new(
                format!("{at}.{field}"),
                format!("at most {MAX_AUTHZ_LIST} entries"),
            ));
        }
    }
    for (i, source) in rule.from.iter().enumerate() {
        authz_source(&format!("{at}.from[{i}]"), source)?;
    }
    for (i, path) in rule.paths.iter().enumerate() {
        path_pattern(&format!("{at}.paths[{i}]"), path)?;
    }
    for (i, method) in rule.methods.iter().enumerate() {
        http_method(&format!("{at}.methods[{i}]"), method)?;
    }
    for (i, port) in rule.ports.iter().enumerate() {
        if !(1..=65535).contains(port) {
            return Err(ResourceError::new(
                format!("{at}.ports[{i}]"),
                format!("{port}: must be 1..=65535"),
            ));
        }
    }
    Ok(())
}

fn authz_source(at: &str, s: &AuthzSourceSpec) -> Result<(), ResourceError> {
    let given = [
        s.principal.is_some(),
        s.namespace.is_some(),
        s.authenticated.is_some(),
    ]
    .into_iter()
    .filter(|g| *g)
    .count();
    if given != 1 {
        return Err(ResourceError::new(
            at,
            "give exactly one of principal, namespace or authenticated",
        ));
    }
    if let Some(p) = &s.principal {
        spiffe_uri(&format!("{at}.principal"), p)?;
    }
    if let Some(ns) = &s.namespace {
        dns_label(&format!("{at}.namespace"), ns)?;
    }
    if s.authenticated == Some(false) {
        return Err(ResourceError::new(
            format!("{at}.authenticated"),
            "only `true` is meaningful: omit `from` to match any client",
        ));
    }
    Ok(())
}

/// `spiffe://<trust-domain>/<path>`: a non-empty trust domain of lowercase letters,
/// digits, `.`, `-` and `_` (the SPIFFE spec), a non-empty path without empty segments.
fn spiffe_uri(at: &str, s: &str) -> Result<(), ResourceError> {
    let bad = |why: &str| {
        Err(ResourceError::new(
            at,
            format!("{s:?} is not a SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/sa/<sa>): {why}"),
        ))
    };
    if s.len() > MAX_AUTHZ_VALUE {
        return bad("too long");
    }
    let Some(rest) = s.strip_prefix("spiffe://") else {
        return bad("must start with spiffe://");
    };
    let Some((td, path)) = rest.split_once('/') else {
        return bad("no path after the trust domain");
    };
    let td_ok = !td.is_empty()
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if !td_ok {
        return bad("the trust domain must be non-empty lowercase letters, digits, '.', '-', '_'");
    }
    let path_ok = path.split('/').all(|seg| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    });
    if !path_ok {
        return bad("path segments must be non-empty letters, digits, '.', '-', '_'");
    }
    Ok(())
}

/// Istio's path syntax: `*` alone, or a path starting with `/` or `*`, where `*` may
/// appear only once, as the first or the last character.
fn path_pattern(at: &str, s: &str) -> Result<(), ResourceError> {
    let err = |why: &str| Err(ResourceError::new(at, format!("{s:?}: {why}")));
    if s.len() > MAX_AUTHZ_VALUE {
        return err("too long");
    }
    if s == "*" {
        return Ok(());
    }
    if !s.starts_with('/') && !s.starts_with('*') {
        return err("must start with '/' or '*'");
    }
    let stars = s.matches('*').count();
    let at_edge = s.starts_with('*') || s.ends_with('*');
    if stars > 1 || (stars == 1 && !at_edge) {
        return err(
            "'*' may appear once, only at the start (suffix match) or the end (prefix match)",
        );
    }
    if s.bytes()
        .any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#')
    {
        return err("no spaces, control characters, '?' or '#' (paths match without the query)");
    }
    Ok(())
}

/// An uppercase HTTP method token (`GET`, `PURGE`).
fn http_method(at: &str, s: &str) -> Result<(), ResourceError> {
    let token = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(ResourceError::new(
            at,
            format!("{s:?} is not an HTTP method token"),
        ));
    }
    if s.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(ResourceError::new(
            at,
            format!(
                "{s:?}: methods are case-sensitive and written uppercase ({})",
                s.to_ascii_uppercase()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate_documents;

    fn doc(spec: Value) -> Value {
        json!({"apiVersion": "tandem.dev/v1alpha1", "kind": "AuthorizationPolicy",
               "metadata": {"name": "cart-readers", "namespace": "shop"}, "spec": spec})
    }

    fn err(spec: Value) -> String {
        match validate_documents(vec![doc(spec)]) {
            Ok(r) => panic!("expected an error, got {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_documented_example_is_valid_and_stored_as_written() {
        let spec = json!({
            "targetRef": {"kind": "Service", "name": "cart"},
            "action": "ALLOW",
            "rules": [{
                "from": [{"principal": "spiffe://cluster.local/ns/shop/sa/web"},
                         {"namespace": "ops"}, {"authenticated": true}],
                "paths": ["/api/*", "*.js", "/exact", "*"],
                "methods": ["GET", "HEAD"],
                "ports": [8080]
            }]
        });
        let r = validate_documents(vec![doc(spec.clone())]).unwrap();
        assert_eq!(
            r[0].key.to_string(),
            "AuthorizationPolicy shop/cart-readers"
        );
        assert_eq!(r[0].doc["spec"], spec);
        // No targetRef, no action, no rules: an ALLOW policy for the namespace.
        validate_documents(vec![doc(json!({}))]).unwrap();
        validate_documents(vec![doc(json!({"action": "DENY", "rules": [{}]}))]).unwrap();
    }

    #[test]
    fn every_violation_names_its_field() {
        let rule = |r: Value| err(json!({"rules": [r]}));
        let cases = [
            (
                rule(json!({"from": [{"principal": "cluster.local/ns/a/sa/b"}]})),
                "documents[0].spec.rules[0].from[0].principal: \"cluster.local/ns/a/sa/b\" is not a SPIFFE ID",
            ),
            (
                rule(json!({"from": [{"principal": "spiffe:///ns/a"}]})),
                "documents[0].spec.rules[0].from[0].principal:",
            ),
            (
                rule(json!({"from": [{"principal": "spiffe://td"}]})),
                "documents[0].spec.rules[0].from[0].principal:",
            ),
            (
                rule(json!({"from": [{}, {"namespace": "a", "authenticated": true}]})),
                "documents[0].spec.rules[0].from[0]: give exactly one of principal, namespace or authenticated",
            ),
            (
                rule(json!({"from": [{"namespace": "ops"}, {"namespace": "a", "authenticated": true}]})),
                "documents[0].spec.rules[0].from[1]: give exactly one",
            ),
            (
                rule(json!({"from": [{"namespace": "Ops"}]})),
                "documents[0].spec.rules[0].from[0].namespace:",
            ),
            (
                rule(json!({"from": [{"authenticated": false}]})),
                "documents[0].spec.rules[0].from[0].authenticated: only `true`",
            ),
            (
                rule(json!({"paths": ["/ok", "api/*"]})),
                "documents[0].spec.rules[0].paths[1]: \"api/*\": must start with '/' or '*'",
            ),
            (
                rule(json!({"paths": ["/a/*/b"]})),
                "documents[0].spec.rules[0].paths[0]: \"/a/*/b\": '*' may appear once",
            ),
            (
                rule(json!({"paths": ["*/a/*"]})),
                "documents[0].spec.rules[0].paths[0]:",
            ),
            (
                rule(json!({"methods": ["GET", ""]})),
                "documents[0].spec.rules[0].methods[1]: \"\" is not an HTTP method token",
            ),
            (
                rule(json!({"methods": ["get"]})),
                "documents[0].spec.rules[0].methods[0]: \"get\": methods are case-sensitive and written uppercase (GET)",
            ),
            (
                rule(json!({"ports": [8080, 0]})),
                "documents[0].spec.rules[0].ports[1]: 0: must be 1..=65535",
            ),
            (
                rule(json!({"ports": [70000]})),
                "documents[0].spec.rules[0].ports[0]: 70000: must be 1..=65535",
            ),
            (
                rule(json!({"hosts": ["x"]})),
                "documents[0].spec.rules[0].hosts: unknown field `hosts`",
            ),
            (
                rule(json!({"from": [{"principals": ["x"]}]})),
                "documents[0].spec.rules[0].from[0].principals: unknown field `principals`",
            ),
            (
                err(json!({"selector": {}})),
                "documents[0].spec.selector: unknown field `selector`",
            ),
            (
                err(json!({"action": "AUDIT"})),
                "documents[0].spec.action: unknown variant `AUDIT`",
            ),
            (
                err(json!({"targetRef": {"kind": "Gateway", "name": "cart"}})),
                "documents[0].spec.targetRef.kind: \"Gateway\" is not supported: use Service",
            ),
            (
                err(json!({"targetRef": {"name": "cart", "namespace": "other"}})),
                "documents[0].spec.targetRef.namespace: \"other\": a policy protects services of its own namespace (\"shop\")",
            ),
        ];
        for (got, want) in cases {
            assert!(got.starts_with(want), "got {got:?}\nwant {want:?}");
        }
        // A target in its own namespace, spelled out, is fine; so is one that does not
        // exist yet (as for DestinationPolicy: applying in any order works).
        validate_documents(vec![doc(
            json!({"targetRef": {"name": "nowhere", "namespace": "shop"}}),
        )])
        .unwrap();
    }
}
