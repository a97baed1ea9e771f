//! The HTTP path: serving client connections, and carrying each request to its endpoint.
//!
//! Read in request order: [`server`] accepts HTTP/1 or HTTP/2 on a detected connection,
//! [`forward`] routes a request to a destination and endpoint and relays the response,
//! [`headers`] applies hop-by-hop rules, [`upgrade`] tunnels protocol switches.

pub mod forward;
pub mod headers;
pub mod path;
pub mod routed;
pub mod server;
pub mod upgrade;
