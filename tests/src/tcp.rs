//! Raw TCP and WebSocket upstreams, and an address where nothing listens.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::AbortOnDrop;

/// What [`TcpEchoServer`] sends after it has read EOF, just before closing: its arrival
/// proves that data the server sends after the client's half-close still reaches the client.
pub const FAREWELL: &[u8] = b"\n-- server saw EOF --\n";

/// A TCP server: echoes every byte back; when the client half-closes, it finishes echoing,
/// sends [`FAREWELL`] and closes. Optionally speaks first (a banner, like SMTP or MySQL).
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
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind tcp echo");
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
            Ok(0) => break,
            Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.write_all(FAREWELL).await;
    let _ = stream.shutdown().await;
}

/// A WebSocket server that echoes text and binary messages and answers pings.
#[derive(Debug)]
pub struct WsEchoServer {
    addr: SocketAddr,
    connections: watch::Receiver<u64>,
    _task: AbortOnDrop,
}

impl WsEchoServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> WsEchoServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ws echo");
        let addr = listener.local_addr().expect("local addr");
        let (conn_tx, connections) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conn_tx.send_modify(|n| *n += 1);
                        conns.spawn(ws_echo(stream));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        WsEchoServer {
            addr,
            connections,
            _task: AbortOnDrop(task),
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (each WebSocket is one).
    pub fn connections(&self) -> u64 {
        *self.connections.borrow()
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

/// A TCP server that reads whatever arrives first and then closes the connection without
/// answering: an upstream that breaks the exchange.
#[derive(Debug)]
pub struct HangupServer {
    addr: SocketAddr,
    connections: watch::Receiver<u64>,
    _task: AbortOnDrop,
}

impl HangupServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> HangupServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind hangup");
        let addr = listener.local_addr().expect("local addr");
        let (conn_tx, connections) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                conn_tx.send_modify(|n| *n += 1);
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                drop(stream);
            }
        });
        HangupServer {
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

/// A loopback address where TCP connects hang (the listener's accept queue is full and
/// never drained, so further SYNs are dropped). Keep the guard alive while using it.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    _listener: TcpListener,
    _fillers: Vec<TcpStream>,
}

impl Blackhole {
    /// Binds with a backlog of 0 and fills the accept queue.
    pub async fn start() -> Blackhole {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind blackhole");
        let listener = socket.listen(0).expect("listen");
        let addr = listener.local_addr().expect("local addr");
        let mut fillers = Vec::new();
        // Fill the queue: connects succeed until it is full, then hang.
        for _ in 0..8 {
            match tokio::time::timeout(
                std::time::Duration::from_millis(200),
                TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(s)) => fillers.push(s),
                _ => break,
            }
        }
        Blackhole {
            addr,
            _listener: listener,
            _fillers: fillers,
        }
    }

    /// The address whose connects hang.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Connects to `addr`, sends `payload`, and reads back as many bytes (an echo server on
/// the other side); panics on any failure or after 5 s.
pub async fn round_trip(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    match try_round_trip(addr, payload).await {
        Ok(got) => got,
        Err(e) => panic!("TCP round trip via {addr}: {e}"),
    }
}

/// Like [`round_trip`], returning the failure (connection closed, timeout) instead.
pub async fn try_round_trip(addr: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.write_all(payload).await.map_err(|e| e.to_string())?;
        let mut got = vec![0u8; payload.len()];
        stream
            .read_exact(&mut got)
            .await
            .map_err(|e| e.to_string())?;
        Ok(got)
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err("no echo within 5 s".to_string()))
}
