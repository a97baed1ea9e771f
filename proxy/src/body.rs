//! The response body type the proxy serves: an upstream's body, or one the proxy wrote.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::client::Reusable;
use crate::routing::Permit;

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
