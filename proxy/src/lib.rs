//! `tandem-proxy`: Tandem's sidecar proxy.
//!
//! The request path, in the order a request takes it: [`listener`] accepts and detects
//! the protocol ([`detect`]); [`http::server`] serves HTTP/1 or HTTP/2; [`http::forward`]
//! picks the destination from the current [`snapshot`] and an endpoint, and sends through
//! the [`client`] pools; opaque connections go through [`tcp`]. Around it: [`config`] and
//! [`reload`] produce snapshots, [`identity`] obtains and renews the workload certificate,
//! [`admin`] and [`metrics`] report, [`drain`] shuts down.

pub mod admin;
pub mod authz;
pub mod backoff;
pub mod body;
pub mod cli;
pub mod client;
pub mod config;
pub mod detect;
pub mod drain;
pub mod either_io;
pub mod errors;
pub mod http;
pub mod identity;
pub mod idle;
pub mod listener;
pub mod metrics;
pub mod process_stats;
pub mod reload;
pub mod replay;
pub mod routing;
pub mod run;
pub mod snapshot;
pub mod tcp;
pub mod tls;
pub mod workers;
pub mod xds_client;
