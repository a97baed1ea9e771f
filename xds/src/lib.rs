//! The xDS v3 protocol as Tandem uses it, shared by the proxy and the control plane.
//!
//! Layout (filled in by the control-plane issue):
//! - [`domain`]: Tandem's own config types (services, endpoints, routes), free of protobuf.
//! - [`ads`]: the sans-io ADS state machines — the server's per-node subscriptions,
//!   versions, nonces and ACK/NACK tracking, and the client's apply-or-NACK logic.
//!
//! Proto conversion joins as `convert` once the xDS protos are chosen; protobuf types
//! never leave that module.

pub mod ads;
pub mod domain;
