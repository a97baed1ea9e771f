//! The kinds mirrored from the cluster, with where the API server serves them.

use kube::core::{ApiResource, GroupVersionKind};

use crate::resources::Kind;

/// One mirrored kind.
#[derive(Debug, Clone, Copy)]
pub struct Mirrored {
    /// Tandem's kind.
    pub kind: Kind,
    /// API group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// The `kind` field.
    pub name: &'static str,
    /// The resource's plural.
    pub plural: &'static str,
    /// Whether Tandem writes its status (Gateway API routes).
    pub route: bool,
}

impl Mirrored {
    /// The API resource kube-rs addresses it by.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(self.group, self.version, self.name),
            self.plural,
        )
    }
}

/// Every kind the cluster holds for Tandem.
pub const MIRRORED: [Mirrored; 5] = [
    Mirrored {
        kind: Kind::HttpRoute,
        group: "gateway.networking.k8s.io",
        version: "v1",
        name: "HTTPRoute",
        plural: "httproutes",
        route: true,
    },
    Mirrored {
        kind: Kind::GrpcRoute,
        group: "gateway.networking.k8s.io",
        version: "v1",
        name: "GRPCRoute",
        plural: "grpcroutes",
        route: true,
    },
    Mirrored {
        kind: Kind::DestinationPolicy,
        group: "tandem.dev",
        version: "v1alpha1",
        name: "DestinationPolicy",
        plural: "destinationpolicies",
        route: false,
    },
    Mirrored {
        kind: Kind::AuthorizationPolicy,
        group: "tandem.dev",
        version: "v1alpha1",
        name: "AuthorizationPolicy",
        plural: "authorizationpolicies",
        route: false,
    },
    Mirrored {
        kind: Kind::FaultInjection,
        group: "tandem.dev",
        version: "v1alpha1",
        name: "FaultInjection",
        plural: "faultinjections",
        route: false,
    },
];

/// Tandem's kinds the cluster owns, for the store.
pub fn owned_kinds() -> Vec<Kind> {
    MIRRORED.iter().map(|m| m.kind).collect()
}
