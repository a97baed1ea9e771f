//! Sans-io ADS (state of the world) state machines for one stream, tested with plain
//! synchronous tests; the tonic shells feed them requests/responses and snapshots.
//!
//! - [`AdsStream`]: the control plane's side.
//! - [`AdsClient`]: the proxy's side.

pub mod client;
pub mod server;

pub use client::{AdsClient, ClientNack, ClientStep};
pub use server::{AdsStream, NackRecord, StreamStatus};

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of a NACK's `error_detail`.
pub const INVALID_ARGUMENT: i32 = 3;

/// The node metadata field in which a Tandem proxy announces its admin address
/// (`ip:port` of `/metrics`), so the control plane can read the proxies' own metrics
/// (canary status) without a separate discovery mechanism.
pub const ADMIN_ADDR_METADATA: &str = "tandem.admin_addr";
