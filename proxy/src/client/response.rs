//! The response the client gets: an upstream's body (which hands its pooled connection
//! and its request slot back when it ends), or one the proxy wrote; and [`relay`], which
//! turns an upstream response into the client's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use super::limits::Permit;
use super::Reusable;
use crate::drain::Watch;
use crate::http::headers::strip_hop_by_hop;
use crate::http::upgrade;
use crate::metrics::{Direction, Metrics};

/// A response body: streamed from an upstream, or a small one the proxy wrote itself.
///
/// Every variant is `Unpin` (hyper's `Incoming` is), so no pin projection is needed.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from the upstream; `reuse` hands the HTTP/1 connection back to the pool
    /// once the body has been read to its end.
    Upstream {
        /// The upstream's body.
        body: Incoming,
        /// The pooled connection to release at the end of the body.
        reuse: Option<Reusable>,
        /// The destination's request slot: a streaming response is still a request in
        /// flight for the `max_requests` limit.
        held: Option<Permit>,
    },
    /// Written by the proxy.
    Full {
        /// The whole body, taken when sent.
        data: Option<Bytes>,
    },
}

impl ProxyBody {
    /// A body the proxy wrote.
    pub fn full(data: Bytes) -> Self {
        ProxyBody::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// An upstream's body. A connection whose body is already complete goes back at once.
    pub fn upstream(body: Incoming, reuse: Option<Reusable>, held: Option<Permit>) -> Self {
        if body.is_end_stream() {
            if let Some(r) = reuse {
                r.release();
            }
            return ProxyBody::Upstream {
                body,
                reuse: None,
                held: None,
            };
        }
        ProxyBody::Upstream { body, reuse, held }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, reuse, held } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                let finished = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
                    _ => false,
                };
                if finished {
                    if let Some(r) = reuse.take() {
                        r.release();
                    }
                    held.take();
                }
                polled
            }
            ProxyBody::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// Where the tunnel of a protocol switch counts its bytes, and the drain it holds open.
#[derive(Debug, Clone, Copy)]
pub struct Tunnel<'a> {
    /// The direction the request took.
    pub dir: Direction,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// Keeps shutdown waiting for the tunnel.
    pub watch: &'a Watch,
}

/// Turns an upstream response into the client's: starts the tunnel of a protocol switch,
/// drops hop-by-hop headers, and ties the pooled connection and the request slot to the
/// end of the body.
pub fn relay(
    mut resp: Response<Incoming>,
    reuse: Option<Reusable>,
    client_upgrade: Option<OnUpgrade>,
    held: Option<Permit>,
    tunnel: Tunnel<'_>,
) -> Response<ProxyBody> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgrading = client_upgrade.is_some();
    if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        upgrade::tunnel(
            client_upgrade,
            upstream_upgrade,
            tunnel.dir,
            tunnel.metrics.clone(),
            tunnel.watch.clone(),
        );
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, switching && upgrading);
    // An upgraded connection is no longer HTTP: it must not return to the pool.
    let reuse = if switching { None } else { reuse };
    Response::from_parts(parts, ProxyBody::upstream(body, reuse, held))
}
