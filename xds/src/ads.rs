//! Sans-io ADS state machines (server and client), tested with plain synchronous tests.
//!
//! Empty until the control-plane issue.
