//! Upstream connections: pools per endpoint and protocol, the pools' limits
//! ([`limits`]), request sending, and the response body that hands a connection back when
//! it ends ([`response`]).
//!
//! HTTP/1 connections are pooled (most recently used first, so the pool shrinks to what
//! the load needs) and handed back only once their response body has been read to the
//! end. HTTP/2 keeps one multiplexed connection per endpoint. A request that a pooled
//! connection refused before writing anything is re-sent on another connection: this is
//! the keep-alive race that makes other proxies answer 503.

mod connect;
pub mod limits;
pub mod response;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Instant;

use crate::config::Protocol;
use crate::errors::ProxyError;
use crate::http::request_body::RequestBody;
use crate::tls::Alpn;
use limits::Permit;

pub use connect::{connect, open, Transport, UpstreamIo};

/// A pool: one endpoint reached one way (plaintext, or TLS expecting one identity under one
/// trust bundle), so a connection verified as one identity is never lent for another, nor
/// one verified under roots since removed.
/// Connections from another source address are another pool too.
type PoolKey = (SocketAddr, Option<IpAddr>, Option<(Arc<str>, u64)>);

/// The wire protocol used towards an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireProtocol {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

impl WireProtocol {
    /// The protocol to speak upstream: the cluster's, else the client's; upgrades need
    /// HTTP/1.
    pub fn upstream(cluster: Protocol, client: WireProtocol, upgrading: bool) -> WireProtocol {
        if upgrading {
            return WireProtocol::Http1;
        }
        match cluster {
            Protocol::Http1 => WireProtocol::Http1,
            Protocol::Http2 => WireProtocol::Http2,
            Protocol::Detect | Protocol::Opaque => client,
        }
    }
}

/// Per-request connection settings, taken from the request's snapshot.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// How long an idle pooled connection may be reused.
    pub idle_timeout: Duration,
}

/// Most idle HTTP/1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Pools of upstream connections, shared by all listeners.
#[derive(Debug, Clone, Default)]
pub struct Client {
    inner: Arc<Pools>,
}

#[derive(Debug, Default)]
struct Pools {
    h1: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    h2: Mutex<HashMap<PoolKey, http2::SendRequest<RequestBody>>>,
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// An HTTP/1 connection lent to one response; [`Reusable::release`] returns it.
#[derive(Debug)]
pub struct Reusable {
    pools: Weak<Pools>,
    key: PoolKey,
    tx: http1::SendRequest<RequestBody>,
    /// The destination's connection slot, held while the connection is in use.
    _slot: Option<Permit>,
}

/// A request that could not be carried through.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: ProxyError,
    /// The request, given back when no byte of it was written: it can be sent elsewhere
    /// whatever its method.
    pub unsent: Option<Box<Request<RequestBody>>>,
}

impl SendError {
    /// Nothing of `req` reached the endpoint: it goes back to the caller.
    fn unsent(error: ProxyError, req: Request<RequestBody>) -> Self {
        SendError {
            error,
            unsent: Some(Box::new(req)),
        }
    }

    /// A request the connection failed: given back if none of it was written.
    fn failed(addr: SocketAddr, mut e: TrySendError) -> Self {
        let unsent = e.take_message().map(Box::new);
        SendError {
            error: ProxyError::Upstream {
                addr,
                written: unsent.is_none(),
                source: e.into_error(),
            },
            unsent,
        }
    }
}

/// What hyper gives back when a connection could not carry a request.
type TrySendError = hyper::client::conn::TrySendError<Request<RequestBody>>;

impl Reusable {
    /// Gives the connection back to the pool for the next request.
    pub fn release(self) {
        if let Some(pools) = self.pools.upgrade() {
            if self.tx.is_closed() {
                return;
            }
            if let Ok(mut h1) = pools.h1.lock() {
                let idle = h1.entry(self.key).or_default();
                if idle.len() < MAX_IDLE_PER_ENDPOINT {
                    idle.push(Idle {
                        tx: self.tx,
                        since: Instant::now(),
                    });
                }
            }
        }
    }
}

impl Client {
    /// Sends `req` to `addr` over `proto`. The request must already be in the form that
    /// protocol needs (origin-form URI for HTTP/1, absolute for HTTP/2).
    ///
    /// Returns the response and, for HTTP/1, the connection to release when its body ends.
    ///
    /// `slot` is the destination's connection slot for HTTP/1 (see
    /// [`limits::LimitState::connection`]); it is held until the connection is released.
    pub async fn send(
        &self,
        addr: SocketAddr,
        transport: Transport<'_>,
        proto: WireProtocol,
        req: Request<RequestBody>,
        settings: ConnectSettings,
        slot: Option<Permit>,
    ) -> Result<(Response<Incoming>, Option<Reusable>), SendError> {
        let key = (addr, transport.source, transport.pool_tag());
        // Boxed: an exchange (checkout, connect, TLS, HTTP handshake) is the largest state a
        // request holds. Unboxed, every caller's future (the attempt and the stages above
        // it, the inbound side, mirrors) carries it and copies it on each move:
        // `benches/instructions.sh` counted up to 2.8 times the instructions per request.
        match proto {
            WireProtocol::Http1 => {
                let sent = Box::pin(self.send_h1(key, transport, req, settings, slot)).await;
                let (resp, reuse) = sent?;
                Ok((resp, Some(reuse)))
            }
            WireProtocol::Http2 => {
                let sent = Box::pin(self.send_h2(key, transport, req, settings)).await;
                Ok((sent?, None))
            }
        }
    }

    fn checkout_h1(
        &self,
        key: &PoolKey,
        idle_timeout: Duration,
    ) -> Option<http1::SendRequest<RequestBody>> {
        let mut h1 = self.inner.h1.lock().ok()?;
        let idle = h1.get_mut(key)?;
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() < idle_timeout && !conn.tx.is_closed() {
                return Some(conn.tx);
            }
        }
        None
    }

    async fn send_h1(
        &self,
        key: PoolKey,
        transport: Transport<'_>,
        mut req: Request<RequestBody>,
        settings: ConnectSettings,
        slot: Option<Permit>,
    ) -> Result<(Response<Incoming>, Reusable), SendError> {
        let addr = key.0;
        while let Some(mut tx) = self.checkout_h1(&key, settings.idle_timeout) {
            if tx.ready().await.is_err() {
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.reusable(key, tx, slot))),
                Err(mut e) => match e.take_message() {
                    // Never written: safe to send on another connection.
                    Some(back) => req = back,
                    None => return Err(SendError::failed(addr, e)),
                },
            }
        }
        // Boxed (here and for HTTP/2): only new connections need the connect state, so
        // the exchange boxed in `send` stays small for requests on pooled connections.
        let mut tx = match Box::pin(connect_h1(addr, transport, settings)).await {
            Ok(tx) => tx,
            Err(error) => return Err(SendError::unsent(error, req)),
        };
        match tx.try_send_request(req).await {
            Ok(resp) => Ok((resp, self.reusable(key, tx, slot))),
            Err(e) => Err(SendError::failed(addr, e)),
        }
    }

    fn reusable(
        &self,
        key: PoolKey,
        tx: http1::SendRequest<RequestBody>,
        slot: Option<Permit>,
    ) -> Reusable {
        Reusable {
            pools: Arc::downgrade(&self.inner),
            key,
            tx,
            _slot: slot,
        }
    }

    async fn send_h2(
        &self,
        key: PoolKey,
        transport: Transport<'_>,
        mut req: Request<RequestBody>,
        settings: ConnectSettings,
    ) -> Result<Response<Incoming>, SendError> {
        let addr = key.0;
        // One retry: a shared connection may have received GOAWAY since it was stored.
        for _ in 0..2 {
            let mut tx = match self.h2_conn(&key) {
                Some(tx) => tx,
                None => match Box::pin(self.connect_h2(&key, transport, settings)).await {
                    Ok(tx) => tx,
                    Err(error) => return Err(SendError::unsent(error, req)),
                },
            };
            if tx.ready().await.is_err() {
                self.forget_h2(&key, &tx);
                continue;
            }
            match tx.try_send_request(req).await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(back) => {
                        self.forget_h2(&key, &tx);
                        req = back;
                    }
                    None => return Err(SendError::failed(addr, e)),
                },
            }
        }
        let mut tx = match Box::pin(self.connect_h2(&key, transport, settings)).await {
            Ok(tx) => tx,
            Err(error) => return Err(SendError::unsent(error, req)),
        };
        match tx.try_send_request(req).await {
            Ok(resp) => Ok(resp),
            Err(e) => Err(SendError::failed(addr, e)),
        }
    }

    fn h2_conn(&self, key: &PoolKey) -> Option<http2::SendRequest<RequestBody>> {
        let h2 = self.inner.h2.lock().ok()?;
        h2.get(key).filter(|tx| !tx.is_closed()).cloned()
    }

    fn forget_h2(&self, key: &PoolKey, _tx: &http2::SendRequest<RequestBody>) {
        if let Ok(mut h2) = self.inner.h2.lock() {
            if h2.get(key).is_some_and(|t| t.is_closed() || !t.is_ready()) {
                h2.remove(key);
            }
        }
    }

    async fn connect_h2(
        &self,
        key: &PoolKey,
        transport: Transport<'_>,
        settings: ConnectSettings,
    ) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        let addr = key.0;
        let io = open(addr, settings.connect_timeout, transport, Alpn::Http2).await?;
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            // Pings keep idle multiplexed connections honest and detect dead peers.
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| ProxyError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        if let Ok(mut h2) = self.inner.h2.lock() {
            h2.insert(key.clone(), tx.clone());
        }
        Ok(tx)
    }

    /// Closes pooled HTTP/1 connections idle longer than `idle_timeout` and forgets closed
    /// HTTP/2 connections; run periodically so idle sockets do not linger without traffic.
    /// With `tls_generation`, TLS connections verified under an older trust bundle are
    /// dropped too (HTTP/2 ones then close once their streams end).
    pub fn reap(&self, idle_timeout: Duration, tls_generation: Option<u64>) {
        let current = |key: &PoolKey| match (&key.2, tls_generation) {
            (Some((_, generation)), Some(now)) => *generation == now,
            _ => true,
        };
        if let Ok(mut h1) = self.inner.h1.lock() {
            h1.retain(|key, idle| {
                idle.retain(|c| c.since.elapsed() < idle_timeout && !c.tx.is_closed());
                !idle.is_empty() && current(key)
            });
        }
        if let Ok(mut h2) = self.inner.h2.lock() {
            h2.retain(|key, tx| !tx.is_closed() && current(key));
        }
    }
}

/// A new HTTP/1 connection to `addr`, its connection task spawned.
async fn connect_h1(
    addr: SocketAddr,
    transport: Transport<'_>,
    settings: ConnectSettings,
) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
    let io = open(addr, settings.connect_timeout, transport, Alpn::Http1).await?;
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| ProxyError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "upstream HTTP/1 connection ended");
        }
    });
    Ok(tx)
}
