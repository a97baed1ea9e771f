//! Raw TCP and WebSocket upstreams, and an address where nothing listens.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::AbortOnDrop;

/// A TCP server: echoes every byte back; when the client half-closes, it finishes echoing
/// and half-closes too. Optionally speaks first (a banner, like SMTP or MySQL).
#[derive(Debug)]
pub struct TcpEchoServer {
    addr: SocketAddr,
    connections: watch::Receiver<u64>,
    _task: AbortOnDrop,
}

impl TcpEchoServer {
    /// An echo server that waits for the client to speak.
    pub async fn start() -> TcpEchoServer {
        Self::with_banner(Vec::new()).await
    }

    /// An echo server that sends `banner` as soon as a connection is accepted.
    pub async fn with_banner(banner: Vec<u8>) -> TcpEchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp echo");
        let addr = listener.local_addr().expect("local addr");
        let (conn_tx, connections) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conn_tx.send_modify(|n| *n += 1);
                        conns.spawn(echo(stream, banner.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        TcpEchoServer {
            addr,
            connections,
            _task: AbortOnDrop(task),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        *self.connections.borrow()
    }
}

async fn echo(mut stream: TcpStream, banner: Vec<u8>) {
    if !banner.is_empty() && stream.write_all(&banner).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// A WebSocket server that echoes text and binary messages and answers pings.
#[derive(Debug)]
pub struct WsEchoServer {
    addr: SocketAddr,
    _task: AbortOnDrop,
}

impl WsEchoServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> WsEchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ws echo");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(ws_echo(stream));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        WsEchoServer {
            addr,
            _task: AbortOnDrop(task),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

async fn ws_echo(stream: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if msg.is_close() {
            break;
        }
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
    let _ = ws.close(None).await;
}

/// An address on loopback where nothing listens (bound, then released), so connecting to
/// it is refused.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr
}
