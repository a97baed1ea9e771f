//! Authorization on the inbound side: who may call this workload.
//!
//! Order (Istio's): a matching deny rule denies; then, if the workload has allow rules
//! (an `ALLOW` policy applies, or the mesh default is deny), only a matching allow rule
//! lets the request through; without allow rules everything not denied passes.
//!
//! A TCP connection has no path or method. A deny rule that names them still denies the
//! connection (its other conditions decide: erring towards deny), and an allow rule that
//! names them never allows one.

use tandem_xds::domain::{spiffe_namespace, AuthzRule, InboundPolicy, Principal, TlsMode};

/// What the inbound side enforces under one snapshot, decided in one place for the TLS
/// step, HTTP requests and TCP connections.
#[derive(Debug, Clone, Copy)]
pub enum Decision<'a> {
    /// No identity: plaintext and no authorization (nothing to authenticate callers with).
    Open,
    /// An identity but no inbound policy (the workload's Service is not in the mesh, or no
    /// config yet): mutual TLS, and nothing allowed. No policy known is not "allow all".
    Closed,
    /// The workload's policy.
    Policy(&'a InboundPolicy),
}

impl<'a> Decision<'a> {
    /// The inbound side for `policy` (from xDS) on a proxy with or without an identity.
    pub fn of(policy: Option<&'a InboundPolicy>, has_identity: bool) -> Self {
        match (policy, has_identity) {
            (Some(p), _) => Decision::Policy(p),
            (None, true) => Decision::Closed,
            (None, false) => Decision::Open,
        }
    }

    /// What the inbound port accepts.
    pub fn mode(&self) -> TlsMode {
        match self {
            Decision::Open => TlsMode::Disabled,
            Decision::Closed => TlsMode::Mutual,
            Decision::Policy(p) => p.mode,
        }
    }

    /// Whether an opaque TCP connection from `caller` may reach the app.
    pub fn allows_connection(&self, caller: Caller<'_>) -> bool {
        match self {
            Decision::Open => true,
            Decision::Closed => false,
            Decision::Policy(p) => allows_connection(p, caller),
        }
    }
}

/// Who is calling and how.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The mTLS peer's SPIFFE ID (`None`: plaintext).
    pub identity: Option<&'a str>,
    /// The port the connection reached the proxy on.
    pub port: u16,
}

/// The HTTP side of a request.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest<'a> {
    /// Path without the query.
    pub path: &'a str,
    /// Method.
    pub method: &'a str,
}

/// Whether `policy` lets this HTTP request through.
pub fn allows_request(policy: &InboundPolicy, caller: Caller<'_>, req: HttpRequest<'_>) -> bool {
    decide(policy, |rule, _| matches(rule, caller, Some(req)))
}

/// Whether `policy` lets this TCP connection through.
pub fn allows_connection(policy: &InboundPolicy, caller: Caller<'_>) -> bool {
    decide(policy, |rule, deny| {
        if rule.is_http_only() && !deny {
            return false;
        }
        matches(rule, caller, None)
    })
}

fn decide(policy: &InboundPolicy, matches: impl Fn(&AuthzRule, bool) -> bool) -> bool {
    if policy.deny.iter().any(|r| matches(r, true)) {
        return false;
    }
    match &policy.allow {
        None => true,
        Some(rules) => rules.iter().any(|r| matches(r, false)),
    }
}

/// Every non-empty condition must hold; HTTP conditions are skipped without a request.
fn matches(rule: &AuthzRule, caller: Caller<'_>, req: Option<HttpRequest<'_>>) -> bool {
    let from = rule.from.is_empty() || rule.from.iter().any(|p| principal(p, caller.identity));
    let port = rule.ports.is_empty() || rule.ports.contains(&caller.port);
    let http = match req {
        None => true,
        Some(req) => {
            (rule.paths.is_empty() || rule.paths.iter().any(|p| p.matches(req.path)))
                && (rule.methods.is_empty()
                    || rule
                        .methods
                        .iter()
                        .any(|m| m.eq_ignore_ascii_case(req.method)))
        }
    };
    from && port && http
}

fn principal(p: &Principal, identity: Option<&str>) -> bool {
    match (p, identity) {
        (_, None) => false,
        (Principal::Identity(want), Some(id)) => want == id,
        (Principal::Namespace(ns), Some(id)) => spiffe_namespace(id) == Some(ns.as_str()),
        (Principal::Authenticated, Some(_)) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_xds::domain::{PathPattern, ServiceRef, TlsMode};

    const WEB: &str = "spiffe://td/ns/shop/sa/web";
    const OPS: &str = "spiffe://td/ns/ops/sa/debug";

    fn policy(deny: Vec<AuthzRule>, allow: Option<Vec<AuthzRule>>) -> InboundPolicy {
        InboundPolicy {
            service: ServiceRef::new("shop", "cart"),
            mode: TlsMode::Mutual,
            deny,
            allow,
            access_log: None,
        }
    }

    fn caller(identity: Option<&str>) -> Caller<'_> {
        Caller {
            identity,
            port: 15006,
        }
    }

    const GET_API: HttpRequest<'static> = HttpRequest {
        path: "/api/items",
        method: "GET",
    };

    #[test]
    fn without_allow_rules_everything_not_denied_passes() {
        let deny_ops = AuthzRule {
            from: vec![Principal::Namespace("ops".into())],
            ..Default::default()
        };
        let p = policy(vec![deny_ops], None);
        assert!(allows_request(&p, caller(Some(WEB)), GET_API));
        assert!(allows_request(&p, caller(None), GET_API));
        assert!(!allows_request(&p, caller(Some(OPS)), GET_API));
        assert!(!allows_connection(&p, caller(Some(OPS))));
    }

    #[test]
    fn allow_rules_admit_only_what_they_match() {
        let web_reads = AuthzRule {
            from: vec![Principal::Identity(WEB.into())],
            paths: vec![PathPattern::parse("/api/*")],
            methods: vec!["GET".into()],
            ..Default::default()
        };
        let p = policy(vec![], Some(vec![web_reads]));
        assert!(allows_request(&p, caller(Some(WEB)), GET_API));
        let post = HttpRequest {
            method: "POST",
            ..GET_API
        };
        assert!(!allows_request(&p, caller(Some(WEB)), post));
        assert!(!allows_request(&p, caller(Some(OPS)), GET_API));
        assert!(!allows_request(&p, caller(None), GET_API));
        // An allow rule with HTTP conditions never admits a TCP connection.
        assert!(!allows_connection(&p, caller(Some(WEB))));
        // Mesh default deny: no rules at all.
        assert!(!allows_request(
            &policy(vec![], Some(vec![])),
            caller(Some(WEB)),
            GET_API
        ));
    }

    #[test]
    fn deny_rules_with_http_conditions_deny_tcp_connections() {
        let deny_admin = AuthzRule {
            from: vec![Principal::Identity(WEB.into())],
            paths: vec![PathPattern::parse("/admin/*")],
            ..Default::default()
        };
        let p = policy(vec![deny_admin], None);
        assert!(allows_request(&p, caller(Some(WEB)), GET_API));
        assert!(!allows_connection(&p, caller(Some(WEB))));
        assert!(allows_connection(&p, caller(Some(OPS))));
    }

    #[test]
    fn ports_and_authenticated_principals() {
        let rule = AuthzRule {
            from: vec![Principal::Authenticated],
            ports: vec![15006],
            ..Default::default()
        };
        let p = policy(vec![], Some(vec![rule]));
        assert!(allows_connection(&p, caller(Some(OPS))));
        assert!(!allows_connection(&p, caller(None)));
        let other_port = Caller {
            identity: Some(OPS),
            port: 9,
        };
        assert!(!allows_connection(&p, other_port));
    }
}
