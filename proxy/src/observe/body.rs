//! The response body of an observed request: counts the bytes the client gets and
//! finishes the request's [`Record`] when the body ends, or when the client leaves first.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::Record;

/// The response flag of a body the client left before its end.
pub const CLIENT_RESET: &str = "client_reset";
/// The response flag of a body the upstream broke off.
pub const UPSTREAM_RESET: &str = "upstream_reset";
use crate::client::response::ProxyBody;

/// A [`ProxyBody`] with, when the request is observed, its record riding along.
#[derive(Debug)]
pub struct ObservedBody {
    inner: ProxyBody,
    /// `None` for unobserved requests (the common case: one branch per frame).
    record: Option<Box<Record>>,
    bytes: u64,
}

impl ObservedBody {
    /// `inner`, finishing `record` at its end.
    pub fn new(inner: ProxyBody, record: Option<Box<Record>>) -> Self {
        let mut body = ObservedBody {
            inner,
            record,
            bytes: 0,
        };
        if body.inner.is_end_stream() {
            body.finish(None);
        }
        body
    }

    fn finish(&mut self, cut: Option<&'static str>) {
        if let Some(record) = self.record.take() {
            record.finish(self.bytes, cut);
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if this.record.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        this.bytes += data.len() as u64;
                    }
                    if this.inner.is_end_stream() {
                        this.finish(None);
                    }
                }
                Poll::Ready(None) => this.finish(None),
                // The upstream broke off: the client gets a truncated body.
                Poll::Ready(Some(Err(_))) => this.finish(Some(UPSTREAM_RESET)),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or reset the stream).
        self.finish(Some(CLIENT_RESET));
    }
}
