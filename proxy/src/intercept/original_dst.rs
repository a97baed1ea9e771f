//! The destination a redirected connection was addressed to (`SO_ORIGINAL_DST`, IPv4 and
//! IPv6), read from the kernel's connection tracking through `socket2`.

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// Where the client meant to connect, when that is not where it landed: `None` for a
/// connection that was not redirected (made to the listener itself) or when the kernel
/// tracks none.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let sock = SockRef::from(stream);
    let orig = match local {
        SocketAddr::V4(_) => sock.original_dst_v4(),
        SocketAddr::V6(_) => sock.original_dst_v6(),
    }
    .ok()?
    .as_socket()?;
    // A connection made to the listener's own address has itself as its original
    // destination (conntrack tracks it unchanged).
    (orig != local).then_some(orig)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a redirect (or without conntrack), a connection has no other destination.
    #[tokio::test]
    async fn a_direct_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(original_dst(&server), None);
    }
}
