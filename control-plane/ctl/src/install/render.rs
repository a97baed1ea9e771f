//! Values → the manifests a cluster needs, as JSON documents, and their YAML text.
//!
//! Order: namespace, CRDs, RBAC, the control plane (Deployment, PodDisruptionBudget,
//! Services, NetworkPolicy), the webhook. Every document here is also a chart template
//! (in the file named by [`Manifest::template`]) except the Namespace, which Helm creates
//! itself (`--create-namespace`).

use serde_json::{json, Value};

use super::values::*;
use super::{crds, rbac, InstallError};

/// The name shared by the control plane's ServiceAccount, roles, Deployment, Service,
/// PodDisruptionBudget, NetworkPolicy and Lease.
pub const NAME: &str = "tandem-control-plane";
/// The webhook's Service and configuration.
pub const INJECTOR: &str = "tandem-injector";
/// Ports (design.md's defaults).
const XDS_PORT: u16 = 15010;
const IDENTITY_PORT: u16 = 15012;
const WEBHOOK_PORT: u16 = 15017;

/// One document with where it goes in the chart and the comments printed above it.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The chart template file (under `templates/`) holding it; empty: not in the chart.
    pub template: &'static str,
    /// Comment lines (each starting with `#`) printed above the document.
    pub comment: &'static str,
    /// For RBAC roles: one comment per entry of `rules`, printed above it.
    pub rule_comments: Vec<&'static str>,
    /// The document.
    pub body: Value,
}

impl Manifest {
    /// A document without rule comments.
    pub fn new(template: &'static str, comment: &'static str, body: Value) -> Manifest {
        Manifest {
            template,
            comment,
            rule_comments: Vec::new(),
            body,
        }
    }

    /// The document as YAML, its comments included.
    pub fn yaml(&self) -> Result<String, InstallError> {
        let text = serde_yaml::to_string(&self.body).map_err(InstallError::Yaml)?;
        let mut out = String::new();
        for line in self.comment.lines() {
            out.push_str(line);
            out.push('\n');
        }
        // serde_json sorts keys, so every rule starts with `- apiGroups:`.
        let mut comments = self.rule_comments.iter();
        for line in text.lines() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("- apiGroups:") {
                if let Some(why) = comments.next() {
                    let indent = &line[..line.len() - trimmed.len()];
                    out.push_str(&format!("{indent}# {why}\n"));
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }
}

/// `metadata` with Tandem's labels.
pub fn meta(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({
        "name": name,
        "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "tandem"},
    });
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

fn selector() -> Value {
    json!({"app.kubernetes.io/name": NAME})
}

/// Every manifest, in apply order.
pub fn render(v: &Values) -> Vec<Manifest> {
    let ns = v.text(NAMESPACE);
    let mut out = vec![Manifest::new(
        "",
        "# The control plane's namespace; the injector never injects it.",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(&ns, None)}),
    )];
    out.extend(crds::crds());
    out.extend(rbac::rbac(v));
    out.push(deployment(v));
    out.push(Manifest::new(
        "control-plane.yaml",
        "# Voluntary disruptions (node drains) leave at least one replica serving.",
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
               "metadata": meta(NAME, Some(&ns)),
               "spec": {"minAvailable": 1, "selector": {"matchLabels": selector()}}}),
    ));
    out.extend(services(&ns));
    out.push(network_policy(&ns));
    out.push(webhook(v));
    out
}

fn deployment(v: &Values) -> Manifest {
    let ns = v.text(NAMESPACE);
    let arg = |flag: &str, key: &str| json!(format!("--{flag}={}", v.text(key)));
    let args = json!([
        "--kubernetes",
        format!("--xds-addr=0.0.0.0:{XDS_PORT}"),
        format!("--identity-addr=0.0.0.0:{IDENTITY_PORT}"),
        // The REST API stays on loopback: reach it with `kubectl exec` or port-forward.
        "--api-addr=127.0.0.1:15080",
        // No --plaintext-xds: injected proxies prove who they are with their pod's
        // ServiceAccount token (TokenReview) and take xDS over mutual TLS on the identity
        // port; the xDS port refuses every stream.
        format!("--injector-addr=0.0.0.0:{WEBHOOK_PORT}"),
        arg("trust-domain", TRUST_DOMAIN),
        arg("log", CP_LOG),
        format!("--identity-san={NAME}.{ns}.svc,{NAME}.{ns}.svc.cluster.local"),
        format!("--injector-san={INJECTOR}.{ns}.svc,{INJECTOR}.{ns}.svc.cluster.local"),
        format!("--injector-control-plane={NAME}.{ns}.svc:{XDS_PORT}"),
        format!("--injector-exclude-namespace={ns},kube-system,kube-public,kube-node-lease"),
        arg("injector-proxy-image", PROXY_IMAGE),
        arg("injector-proxy-uid", PROXY_UID),
        arg("injector-log-level", PROXY_LOG),
        arg("injector-sidecar-mode", PROXY_MODE),
        arg("injector-skip-outbound-ports", PROXY_SKIP_PORTS),
        arg("injector-skip-outbound-cidrs", PROXY_SKIP_CIDRS),
    ]);
    let field_env = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let container = json!({
        "name": "control-plane",
        "image": v.json(CP_IMAGE),
        "imagePullPolicy": v.json(CP_PULL_POLICY),
        "args": args,
        // The Lease holder's identity.
        "env": [field_env("POD_NAME", "metadata.name"), field_env("POD_NAMESPACE", "metadata.namespace")],
        "ports": [
            {"name": "grpc-xds", "containerPort": XDS_PORT, "protocol": "TCP"},
            {"name": "https-identity", "containerPort": IDENTITY_PORT, "protocol": "TCP"},
            {"name": "https-webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": WEBHOOK_PORT, "scheme": "HTTPS"},
                           "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": XDS_PORT}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": v.json(CP_CPU_REQUEST), "memory": v.json(CP_MEMORY_REQUEST)},
            "limits": {"memory": v.json(CP_MEMORY_LIMIT)},
        },
        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]}},
        // Scratch space only (the admin token of this replica's REST API): the store is
        // the API server, so no PersistentVolume.
        "workingDir": "/var/run/tandem",
        "volumeMounts": [{"name": "scratch", "mountPath": "/var/run/tandem"}],
    });
    Manifest::new(
        "control-plane.yaml",
        "# The control plane. Kubernetes mode: the API server is the store (CRDs, the CA in the\n\
         # Secret tandem-ca, the Lease tandem-control-plane), so replicas need no volume and\n\
         # all serve xDS, identity and the webhook; the Lease holder does once-only work.",
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(NAME, Some(&ns)),
            "spec": {
                "replicas": v.json(CP_REPLICAS),
                "selector": {"matchLabels": selector()},
                // A new replica is ready before an old one goes.
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": NAME,
                                            "app.kubernetes.io/part-of": "tandem"}},
                    "spec": {
                        "serviceAccountName": NAME,
                        "affinity": {"podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [{
                                "weight": 100,
                                "podAffinityTerm": {"labelSelector": {"matchLabels": selector()},
                                                    "topologyKey": "kubernetes.io/hostname"},
                            }],
                        }},
                        "securityContext": {"runAsNonRoot": true, "runAsUser": 65532,
                                            "runAsGroup": 65532,
                                            "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [container],
                        "volumes": [{"name": "scratch", "emptyDir": {}}],
                    },
                },
            },
        }),
    )
}

fn services(ns: &str) -> Vec<Manifest> {
    vec![
        Manifest::new(
            "control-plane.yaml",
            "# The proxies' doors. Injected proxies are given the xDS address and take the\n\
             # identity port beside it: certificates for their ServiceAccount token, then xDS\n\
             # over mutual TLS. The xDS port itself refuses every stream (no --plaintext-xds).",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(NAME, Some(ns)),
            "spec": {"selector": selector(), "ports": [
                {"name": "grpc-xds", "port": XDS_PORT, "targetPort": XDS_PORT,
                 "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
                {"name": "https-identity", "port": IDENTITY_PORT,
                 "targetPort": IDENTITY_PORT, "protocol": "TCP"},
            ]}}),
        ),
        Manifest::new(
            "webhook.yaml",
            "# The injector webhook, served by every control plane replica.",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta(INJECTOR, Some(ns)),
            "spec": {"selector": selector(), "ports": [
                {"name": "https-webhook", "port": 443, "targetPort": WEBHOOK_PORT,
                 "protocol": "TCP"},
            ]}}),
        ),
    ]
}

fn network_policy(ns: &str) -> Manifest {
    let port = |p: u16| json!({"protocol": "TCP", "port": p});
    Manifest::new(
        "network-policy.yaml",
        "# Ingress to the control plane: xDS, identity and the webhook, from anywhere (proxies\n\
         # live in every namespace; the API server's source address differs per cluster).\n\
         # Nothing else, so the REST API could not be reached even if it left loopback.\n\
         # Egress is not restricted: the API server's address and port (seen after the\n\
         # Service's NAT) differ per cluster.",
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
               "metadata": meta(NAME, Some(ns)),
               "spec": {"podSelector": {"matchLabels": selector()},
                        "policyTypes": ["Ingress"],
                        "ingress": [{"ports": [port(XDS_PORT), port(IDENTITY_PORT), port(WEBHOOK_PORT)]}]}}),
    )
}

fn webhook(v: &Values) -> Manifest {
    let ns = v.text(NAMESPACE);
    let system = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                        "values": [ns, "kube-system", "kube-public", "kube-node-lease"]});
    let entry = |name: &str, path: &str, inject: Value, policy: Value| {
        json!({
            "name": name,
            "clientConfig": {"service": {"name": INJECTOR, "namespace": ns, "path": path, "port": 443}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchExpressions": inject.as_array().into_iter().flatten()
                .cloned().chain([system.clone()]).collect::<Vec<_>>()},
            "failurePolicy": policy,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": v.json(WEBHOOK_TIMEOUT),
            "reinvocationPolicy": "Never",
            "matchPolicy": "Equivalent",
        })
    };
    let enabled = json!({"key": "tandem.dev/inject", "operator": "In", "values": ["enabled"]});
    let strict =
        |op: &str| json!({"key": "tandem.dev/inject-strict", "operator": op, "values": ["true"]});
    let policy = v.json(WEBHOOK_FAILURE_POLICY);
    Manifest::new(
        "webhook.yaml",
        "# Pod creations go to the injector: namespaces labelled tandem.dev/inject=enabled;\n\
         # strict ones (tandem.dev/inject-strict=true) refuse pods while it is down; elsewhere\n\
         # only pods annotated tandem.dev/inject=enabled are injected. caBundle is the mesh\n\
         # CA's bundle: the control plane sets it after its first start and after every CA\n\
         # rotation step (docs/kubernetes.md).",
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": meta(INJECTOR, None),
            "webhooks": [
                entry("namespace.inject.tandem.dev", "/inject/namespace-enabled",
                      json!([enabled, strict("NotIn")]), policy.clone()),
                entry("strict.inject.tandem.dev", "/inject/namespace-enabled/strict",
                      json!([enabled, strict("In")]), json!("Fail")),
                entry("pod.inject.tandem.dev", "/inject",
                      json!([{"key": "tandem.dev/inject", "operator": "NotIn", "values": ["enabled"]}]),
                      policy),
            ],
        }),
    )
}

/// The header of `install`'s YAML output.
pub const HEADER: &str = "\
# Tandem: every manifest a cluster needs, rendered by `tandemctl install`.
#   tandemctl install | kubectl apply -f -
# Prerequisite: the Gateway API CRDs (HTTPRoute, GRPCRoute), standard channel, v1.1 or
# later, installed from the Gateway API release as for Linkerd and Istio; Tandem does not
# ship them:
#   kubectl apply -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml
";

/// `install`'s YAML: the header, then every document after `---`.
pub fn to_yaml(manifests: &[Manifest]) -> Result<String, InstallError> {
    let mut out = String::from(HEADER);
    for m in manifests {
        out.push_str("---\n");
        out.push_str(&m.yaml()?);
    }
    Ok(out)
}

/// `install -o json`: a `List`.
pub fn to_json(manifests: &[Manifest]) -> Result<String, InstallError> {
    let items: Vec<&Value> = manifests.iter().map(|m| &m.body).collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    serde_json::to_string_pretty(&list)
        .map(|s| s + "\n")
        .map_err(InstallError::Json)
}
