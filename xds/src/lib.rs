//! The xDS v3 protocol as Tandem uses it, shared by the proxy and the control plane.
//!
//! - [`domain`]: Tandem's own config types (services, endpoints, routes, the proxy's view),
//!   free of protobuf.
//! - [`convert`]: domain ↔ Envoy xDS resources. [`convert::to_snapshot`] turns a
//!   [`MeshConfig`](domain::MeshConfig) into an [`XdsSnapshot`](convert::XdsSnapshot) (control
//!   plane); [`convert::to_proxy_view`] turns accepted resources into a
//!   [`ProxyView`](domain::ProxyView) (proxy), rejecting what Tandem does not support with
//!   a field path.
//! - [`ads`]: the sans-io ADS state machines of one stream — [`ads::AdsStream`] (server:
//!   subscriptions, versions, nonces, ACK/NACK) and [`ads::AdsClient`] (proxy: validate,
//!   ACK or NACK, subscribe to what is referenced, publish only complete views). The tonic
//!   shells around them live in the binaries.
//!
//! The protobuf types are those of [`envoy_types`], re-exported so that every crate uses
//! the same version.
//!
//! Feature `proto` (on by default) builds [`convert`], [`ads`] and the protobuf
//! re-exports. Without it only [`domain`] is built, free of protobuf and tonic: what a
//! crate that only speaks the domain types needs (tandemctl, tandem-resources).

#[cfg(feature = "proto")]
pub mod ads;
#[cfg(feature = "proto")]
pub mod convert;
pub mod domain;

#[cfg(feature = "proto")]
pub use envoy_types;

/// Short paths to the protobuf types the gRPC shells need.
#[cfg(feature = "proto")]
pub mod envoy {
    /// `envoy.config.core.v3`: `Node` and friends.
    pub use envoy_types::pb::envoy::config::core::v3 as core;
    /// `envoy.service.discovery.v3`: `DiscoveryRequest`/`DiscoveryResponse` and the ADS
    /// service's tonic client and server.
    pub use envoy_types::pb::envoy::service::discovery::v3 as discovery;
    /// `google.protobuf.Any`.
    pub use envoy_types::pb::google::protobuf::Any;
}
