//! The transport, in the order a connection meets it: a [`listener`] accepts and hands
//! the connection to one of the [`workers`]; on its worker the [`connection`] takes the
//! inbound port's TLS step, [`detect`]s the protocol, and is served as HTTP
//! ([`http_server`], each request going to [`crate::forward`]) or as opaque [`tcp`].
//! Per-service listeners ([`service_listeners`]) follow the config.

pub mod connection;
pub mod detect;
pub mod http_server;
pub mod listener;
pub mod service_listeners;
pub mod tcp;
pub mod workers;
