//! Opening a transport to an endpoint. TLS with the peer's expected identity joins here.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::errors::ProxyError;

/// Connects to `addr` within `timeout`, with Nagle off (the proxy writes whole frames).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(ProxyError::ConnectTimeout(addr, timeout)),
        Ok(Err(source)) => Err(ProxyError::Connect { addr, source }),
        Ok(Ok(stream)) => {
            // A failure here only costs latency; the connection is still usable.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}
