//! Tandem's control plane as a library: the resource model and its validation, the
//! crash-safe store with numbered revisions, the REST API, the admin token, and the
//! discovery sources that feed endpoints into the store, and workload identity (the CA,
//! join tokens and the identity endpoint), and the sidecar injector's admission webhook
//! ([`injector`], over the pure `tandem-inject` crate); [`canary`] and [`chaos`] act on
//! the proxies' metrics ([`telemetry`]), and the API serves a read-only web page.
//!
//! The binary `tandem-control-plane` is a thin shell over this crate (its flags: [`flags`]).
//! Request path through the modules: [`api`] (HTTP, auth via [`auth`]) → [`resources`]
//! (parse + validate documents) → [`store`] (one redb write transaction per revision) →
//! the head revision's `watch` channel → the xDS server.
//!
//! The resource model is the `tandem-resources` crate (re-exported as [`resources`]), shared
//! with the CLI, `tandemctl`, which is a crate of its own (`control-plane/ctl/`) so that it
//! links none of the server.

pub use tandem_resources as resources;

pub mod api;
pub mod auth;
pub mod canary;
pub mod chaos;
pub mod discovery;
pub mod edits;
pub mod flags;
pub mod identity;
pub mod injector;
pub mod kubernetes;
pub mod proxies;
pub mod security;
pub mod store;
pub mod telemetry;
pub mod util;
pub mod xds_server;
