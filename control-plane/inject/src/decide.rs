//! Whether a pod gets a proxy: the namespace's word, the pod's word (which wins), and the
//! pods that are never injected whatever they say.

use serde_json::Value;

use crate::annotations as a;
use crate::settings::Settings;

/// What the namespace says about injection. The webhook learns it from which of its
/// entries the API server called (each entry has a `namespaceSelector` on the namespace's
/// label); `tandemctl inject` from a `Namespace` document in its input, else `Enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespacePolicy {
    /// `tandem.dev/inject: enabled`: inject unless the pod says `disabled`.
    Enabled,
    /// `disabled`, or nothing: inject only when the pod says `enabled`.
    NotEnabled,
}

/// Why a pod is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// Neither the namespace nor the pod asked for a proxy (or the pod said `disabled`).
    NotEnabled,
    /// The pod already has Tandem's containers or record.
    AlreadyInjected,
    /// `hostNetwork: true`: redirection rules would capture the node's traffic.
    HostNetwork,
    /// The control plane's own namespace, or a system namespace.
    ExcludedNamespace(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NotEnabled => f.write_str("injection is not enabled for this pod"),
            Skip::AlreadyInjected => f.write_str("the pod already has a Tandem proxy"),
            Skip::HostNetwork => f.write_str(
                "hostNetwork pods are not injected (the rules would capture the node's traffic)",
            ),
            Skip::ExcludedNamespace(ns) => write!(f, "namespace {ns} is never injected"),
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add the proxy.
    Inject,
    /// Leave the pod as it is.
    Skip(Skip),
}

/// Decides for the pod with `metadata` and `spec`, in `namespace` (when known).
///
/// Order: a pod that already has a proxy is never injected again (idempotency, whatever
/// it says now); then the places where a proxy cannot work (host network, excluded
/// namespaces), which even `enabled` cannot override; then the pod's annotation, and
/// only without one, the namespace's.
pub fn decide(
    metadata: &Value,
    spec: &Value,
    namespace: Option<&str>,
    policy: NamespacePolicy,
    settings: &Settings,
) -> Decision {
    if is_injected(metadata, spec) {
        return Decision::Skip(Skip::AlreadyInjected);
    }
    if spec["hostNetwork"].as_bool() == Some(true) {
        return Decision::Skip(Skip::HostNetwork);
    }
    if let Some(ns) = namespace {
        if settings.excluded_namespaces.iter().any(|e| e == ns) {
            return Decision::Skip(Skip::ExcludedNamespace(ns.to_string()));
        }
    }
    let enabled = match metadata["annotations"][a::INJECT].as_str().map(str::trim) {
        Some(a::ENABLED) => true,
        Some(a::DISABLED) => false,
        // Absent or another word: the namespace decides.
        _ => policy == NamespacePolicy::Enabled,
    };
    if enabled {
        Decision::Inject
    } else {
        Decision::Skip(Skip::NotEnabled)
    }
}

/// Whether the pod carries Tandem's record or one of its containers (someone may have
/// removed the annotation by hand; a second proxy would fight the first over the ports).
pub fn is_injected(metadata: &Value, spec: &Value) -> bool {
    if metadata["annotations"].get(a::INJECTED).is_some() {
        return true;
    }
    ["initContainers", "containers"].iter().any(|field| {
        spec[*field].as_array().is_some_and(|list| {
            list.iter().any(|c| {
                matches!(
                    c["name"].as_str(),
                    Some(crate::sidecar::PROXY_NAME | crate::sidecar::INIT_NAME)
                )
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod_ann(v: Option<&str>) -> Value {
        match v {
            Some(v) => json!({"annotations": {"tandem.dev/inject": v}}),
            None => json!({}),
        }
    }

    #[test]
    fn the_pod_wins_over_the_namespace() {
        let s = Settings::default();
        let spec = json!({"containers": [{"name": "app", "image": "x"}]});
        let cases = [
            (None, NamespacePolicy::Enabled, true),
            (None, NamespacePolicy::NotEnabled, false),
            (Some("enabled"), NamespacePolicy::NotEnabled, true),
            (Some("disabled"), NamespacePolicy::Enabled, false),
            (Some("maybe"), NamespacePolicy::Enabled, true),
        ];
        for (pod, ns, want) in cases {
            let got = decide(&pod_ann(pod), &spec, Some("shop"), ns, &s) == Decision::Inject;
            assert_eq!(got, want, "pod {pod:?} namespace {ns:?}");
        }
    }

    #[test]
    fn host_network_excluded_namespaces_and_injected_pods_are_skipped() {
        let s = Settings::default();
        let on = pod_ann(Some("enabled"));
        let host = json!({"hostNetwork": true, "containers": []});
        assert_eq!(
            decide(&on, &host, None, NamespacePolicy::Enabled, &s),
            Decision::Skip(Skip::HostNetwork)
        );
        let spec = json!({"containers": [{"name": "app"}]});
        assert_eq!(
            decide(
                &on,
                &spec,
                Some("tandem-system"),
                NamespacePolicy::Enabled,
                &s
            ),
            Decision::Skip(Skip::ExcludedNamespace("tandem-system".into()))
        );
        let with_proxy = json!({"initContainers": [{"name": "tandem-proxy"}], "containers": []});
        assert_eq!(
            decide(&on, &with_proxy, None, NamespacePolicy::Enabled, &s),
            Decision::Skip(Skip::AlreadyInjected)
        );
        let recorded = json!({"annotations": {"tandem.dev/injected": "{}"}});
        assert_eq!(
            decide(&recorded, &spec, None, NamespacePolicy::Enabled, &s),
            Decision::Skip(Skip::AlreadyInjected)
        );
    }
}
