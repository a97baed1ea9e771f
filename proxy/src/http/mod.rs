//! HTTP message mechanics shared by both directions: hop-by-hop headers and request
//! targets ([`headers`]), the request body that can be sent again ([`request_body`]), and
//! the byte tunnel of a protocol switch ([`upgrade`]). No routing or policy here.

pub mod headers;
pub mod request_body;
pub mod upgrade;
