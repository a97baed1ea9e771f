//! What a retry or a mirror needs to build the request again: its head as the upstream
//! sees it (after the route's edits), and a handle on the kept copy of its body
//! ([`crate::http::request_body`]).

use http::request::Parts;
use http::{HeaderMap, Method, Request, Uri};
use hyper::body::Incoming;

use crate::http::request_body::{BodyHandle, ReceivedBytes, RequestBody};

/// The request, ready to be built again.
#[derive(Debug)]
pub struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: BodyHandle,
}

impl Replay {
    /// The first attempt's request. With `keep` (`Some(cap)`: a retry policy or mirrors
    /// apply), also what builds it again, keeping up to `cap` body bytes; without it, the
    /// body streams with no copy and no lock.
    pub fn new(
        parts: Parts,
        body: Incoming,
        keep: Option<usize>,
    ) -> (Request<RequestBody>, Option<Replay>) {
        let received = parts.extensions.get::<ReceivedBytes>().cloned();
        let (body, handle) = RequestBody::new(body, keep.unwrap_or(0), received);
        let replay = keep.map(|_| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
            body: handle,
        });
        (Request::from_parts(parts, body), replay)
    }

    /// Whether the request has no body at all (a mirror can go out at once).
    pub fn body_is_empty(&self) -> bool {
        matches!(self.body, BodyHandle::Empty)
    }

    /// The body again for one more attempt, unless more than the cap has been read; the
    /// previous attempt's body stops yielding data.
    pub fn body_again(&self) -> Option<RequestBody> {
        self.body.replay()
    }

    /// An independent copy of a body read to its end (for a mirror).
    pub fn body_copy(&self) -> Option<RequestBody> {
        self.body.detached_copy()
    }

    /// The request with `body`.
    pub fn build(&self, body: RequestBody) -> Request<RequestBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}
