//! I/O adapters under the transport: a connection that is plaintext or TLS behind one type
//! ([`either_io`]), bytes read ahead and handed back ([`prefixed`]), activity tracking for
//! idle timeouts ([`idle`]), the request-head deadline of HTTP/1 clients
//! ([`head_deadline`]), and counted two-way copying ([`splice`]).

pub mod either_io;
pub mod head_deadline;
pub mod idle;
pub mod prefixed;
pub mod splice;
