//! The resource types the server knows: the table that routing, storage and discovery all
//! read, so a resource added here is listable, watchable and discoverable at once.

/// One resource type, as the API server's discovery documents describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    /// Version within the group.
    pub version: &'static str,
    /// Plural lower-case name, as it appears in URLs.
    pub plural: &'static str,
    /// Singular lower-case name (discovery).
    pub singular: &'static str,
    /// The object kind (`Service`); lists are `<Kind>List`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Whether `.status` is written only through the `status` subresource.
    pub status_subresource: bool,
    /// Whether the type is only created, never stored (`TokenReview`).
    pub create_only: bool,
    /// Short names for kubectl (`svc`).
    pub short_names: &'static [&'static str],
}

impl ResourceType {
    /// `group/version`, or `version` for the core group: the objects' `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The verbs discovery announces for the type.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.create_only {
            &["create"]
        } else {
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        }
    }
}

const fn ty(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        group,
        version,
        plural,
        singular,
        kind,
        namespaced,
        status_subresource: false,
        create_only: false,
        short_names: &[],
    }
}

const fn with_status(mut t: ResourceType) -> ResourceType {
    t.status_subresource = true;
    t
}

const fn short(mut t: ResourceType, names: &'static [&'static str]) -> ResourceType {
    t.short_names = names;
    t
}

/// Every type the server serves: what Tandem reads and writes in a cluster.
pub const TYPES: &[ResourceType] = &[
    // Namespaces, Services and Pods have a status subresource on a real server too: their
    // status is the system's to write, and an ordinary update keeps it.
    short(
        with_status(ty("", "v1", "namespaces", "namespace", "Namespace", false)),
        &["ns"],
    ),
    short(
        with_status(ty("", "v1", "services", "service", "Service", true)),
        &["svc"],
    ),
    short(
        ty("", "v1", "endpoints", "endpoints", "Endpoints", true),
        &["ep"],
    ),
    short(
        with_status(ty("", "v1", "pods", "pod", "Pod", true)),
        &["po"],
    ),
    ty("", "v1", "secrets", "secret", "Secret", true),
    short(
        ty(
            "",
            "v1",
            "serviceaccounts",
            "serviceaccount",
            "ServiceAccount",
            true,
        ),
        &["sa"],
    ),
    ty(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "endpointslice",
        "EndpointSlice",
        true,
    ),
    with_status(ty(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "httproute",
        "HTTPRoute",
        true,
    )),
    with_status(ty(
        "gateway.networking.k8s.io",
        "v1",
        "grpcroutes",
        "grpcroute",
        "GRPCRoute",
        true,
    )),
    with_status(ty(
        "tandem.dev",
        "v1alpha1",
        "destinationpolicies",
        "destinationpolicy",
        "DestinationPolicy",
        true,
    )),
    with_status(ty(
        "tandem.dev",
        "v1alpha1",
        "authorizationpolicies",
        "authorizationpolicy",
        "AuthorizationPolicy",
        true,
    )),
    with_status(ty(
        "tandem.dev",
        "v1alpha1",
        "faultinjections",
        "faultinjection",
        "FaultInjection",
        true,
    )),
    ty(
        "coordination.k8s.io",
        "v1",
        "leases",
        "lease",
        "Lease",
        true,
    ),
    ResourceType {
        create_only: true,
        ..ty(
            "authentication.k8s.io",
            "v1",
            "tokenreviews",
            "tokenreview",
            "TokenReview",
            false,
        )
    },
    ty(
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        "MutatingWebhookConfiguration",
        false,
    ),
    short(
        ty(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "customresourcedefinition",
            "CustomResourceDefinition",
            false,
        ),
        &["crd", "crds"],
    ),
];

/// The type served at `group`/`version` under `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    TYPES
        .iter()
        .find(|t| t.group == group && t.version == version && t.plural == plural)
}

/// The type of `apiVersion` (`v1`, `discovery.k8s.io/v1`) named by its plural.
pub fn by_api_version(api_version: &str, plural: &str) -> Option<&'static ResourceType> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    find(group, version, plural)
}

/// The groups in the order discovery lists them (core first), each with its versions.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for t in TYPES {
        if !out.contains(&(t.group, t.version)) {
            out.push((t.group, t.version));
        }
    }
    out
}
