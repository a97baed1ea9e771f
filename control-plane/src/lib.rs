//! Tandem's control plane as a library: the resource model and its validation, the
//! crash-safe store with numbered revisions, the REST API, the admin token, and the
//! discovery sources that feed endpoints into the store, and workload identity (the CA,
//! join tokens and the identity endpoint).
//!
//! The binaries `tandem-control-plane` and `tandemctl` are thin shells over this crate.
//! Request path through the modules: [`api`] (HTTP, auth via [`auth`]) → [`resources`]
//! (parse + validate documents) → [`store`] (one redb write transaction per revision) →
//! the head revision's `watch` channel → the xDS server.

pub mod api;
pub mod auth;
pub mod canary;
pub mod cli;
pub mod client;
pub mod ctl;
pub mod discovery;
pub mod identity;
pub mod proxies;
pub mod resources;
pub mod security;
pub mod store;
pub mod telemetry;
pub mod util;
pub mod xds_server;
