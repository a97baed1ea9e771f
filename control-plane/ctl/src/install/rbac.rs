//! The control plane's permissions, and nothing more: a ClusterRole for what it reads
//! and writes across namespaces, a Role in its own namespace for the CA's Secret and the
//! leader Lease. Each rule carries the reason it exists, printed as a YAML comment above
//! it.

use serde_json::{json, Value};

use super::render::{meta, Manifest, INJECTOR, NAME};
use super::values::{Values, NAMESPACE};

/// The Secret holding the CA's key (created by the control plane on first start).
pub const CA_SECRET: &str = "tandem-ca";
/// The Lease the leader holds for once-only work.
pub const LEASE: &str = "tandem-control-plane";

/// A rule and why it is there.
struct Rule {
    why: &'static str,
    body: Value,
}

fn rule(why: &'static str, groups: &[&str], resources: &[&str], verbs: &[&str]) -> Rule {
    Rule {
        why,
        body: json!({"apiGroups": groups, "resources": resources, "verbs": verbs}),
    }
}

fn named(why: &'static str, group: &str, resource: &str, name: &str, verbs: &[&str]) -> Rule {
    Rule {
        why,
        body: json!({
            "apiGroups": [group], "resources": [resource], "resourceNames": [name], "verbs": verbs,
        }),
    }
}

const READ: &[&str] = &["get", "list", "watch"];

fn cluster_rules() -> Vec<Rule> {
    vec![
        rule(
            "Discovery: Services (ports, cluster IPs), Pods (a proxy's workload and service account) and Namespaces (the injector's labels).",
            &[""], &["services", "pods", "namespaces"], READ,
        ),
        rule(
            "Discovery: the endpoints of every Service.",
            &["discovery.k8s.io"], &["endpointslices"], READ,
        ),
        rule(
            "Configuration: Gateway API routes in their mesh form (parentRefs naming Services).",
            &["gateway.networking.k8s.io"], &["httproutes", "grpcroutes"], READ,
        ),
        rule(
            "Route status (Accepted, ResolvedRefs) is written back.",
            &["gateway.networking.k8s.io"], &["httproutes/status", "grpcroutes/status"], &["update", "patch"],
        ),
        rule(
            "Canaries and chaos experiments (tandemctl canary, chaos; the guarded-canary controller on the Lease holder) edit HTTPRoutes' weights, annotations and filters, create a route when a service has none and delete the one a chaos experiment created. GRPCRoutes are only read.",
            &["gateway.networking.k8s.io"], &["httproutes"], &["create", "update", "delete"],
        ),
        rule(
            "Configuration: Tandem's own kinds (they have no status subresource).",
            &["tandem.dev"], &["destinationpolicies", "authorizationpolicies", "faultinjections"], READ,
        ),
        rule(
            "Chaos experiments: the experiment's FaultInjection chaos-SERVICE is created, and deleted when it ends.",
            &["tandem.dev"], &["faultinjections"], &["create", "update", "delete"],
        ),
        rule(
            "Identity: a proxy's projected ServiceAccount token (audience tandem) is checked with a TokenReview before its CSR is signed.",
            &["authentication.k8s.io"], &["tokenreviews"], &["create"],
        ),
        named(
            "The injector: the Lease holder keeps caBundle of tandem-injector equal to the mesh's trust bundle, through every CA rotation step; no other webhook configuration.",
            "admissionregistration.k8s.io", "mutatingwebhookconfigurations", INJECTOR, &["get", "list", "watch", "patch"],
        ),
    ]
}

fn namespace_rules() -> Vec<Rule> {
    vec![
        rule(
            "Leader election: the first replica creates the Lease. Kubernetes cannot restrict create to a name (the object does not exist yet).",
            &["coordination.k8s.io"], &["leases"], &["create"],
        ),
        named(
            "Leader election: read and renew the Lease tandem-control-plane, and no other.",
            "coordination.k8s.io", "leases", LEASE, &["get", "update"],
        ),
        rule(
            "The CA: the first replica to start creates the Secret tandem-ca. Not restrictable to a name, as above; limited to this namespace by the Role.",
            &[""], &["secrets"], &["create"],
        ),
        named(
            "The CA: read the roots, follow their changes and write rotation steps in tandem-ca, and no other Secret.",
            "", "secrets", CA_SECRET, &["get", "list", "watch", "update"],
        ),
    ]
}

fn manifest(comment: &'static str, rules: Vec<Rule>, mut body: Value) -> Manifest {
    body["rules"] = Value::Array(rules.iter().map(|r| r.body.clone()).collect());
    Manifest {
        template: "rbac.yaml",
        comment,
        rule_comments: rules.iter().map(|r| r.why).collect(),
        body,
    }
}

/// ServiceAccount, ClusterRole and its binding, Role and its binding.
pub fn rbac(v: &Values) -> Vec<Manifest> {
    let ns = v.text(NAMESPACE);
    let subject = json!([{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]);
    vec![
        Manifest::new(
            "rbac.yaml",
            "# The control plane's identity towards the API server.",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(NAME, Some(&ns))}),
        ),
        manifest(
            "# What the control plane reads and writes in every namespace: read-only, except\n\
             # route status and TokenReviews.",
            cluster_rules(),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": meta(NAME, None)}),
        ),
        Manifest::new(
            "rbac.yaml",
            "",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": meta(NAME, None),
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
                   "subjects": subject}),
        ),
        manifest(
            "# The API server is the store: in its own namespace only, the control plane keeps\n\
             # its CA in a Secret and elects a leader with a Lease.",
            namespace_rules(),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": meta(NAME, Some(&ns))}),
        ),
        Manifest::new(
            "rbac.yaml",
            "",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": meta(NAME, Some(&ns)),
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
                   "subjects": subject}),
        ),
    ]
}
