//! The request body as sent upstream: empty, streamed as is, or streamed from the client
//! while a bounded copy is kept, so that a failed attempt can be retried (or mirrored) with
//! the same bytes.
//!
//! Attempts are sequential. Each replay starts a new generation; a body of an older
//! attempt that a connection task still polls gets end-of-stream instead of stealing data
//! from the current attempt.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Request body bytes read from the client, for the access log: a request extension
/// put there by [`crate::observe`] when the request is observed (absent otherwise, so
/// unobserved bodies count nothing).
#[derive(Debug, Clone, Default)]
pub struct ReceivedBytes(Arc<AtomicU64>);

impl ReceivedBytes {
    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes read so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The state shared by the attempts of one request body.
#[derive(Debug)]
pub struct Shared {
    /// Data frames read so far, while they fit in the cap.
    chunks: Vec<Bytes>,
    buffered: usize,
    cap: usize,
    /// More than `cap` bytes were read: the body can no longer be replayed.
    overflowed: bool,
    /// The part of the client's body not read yet; `None` once it ended.
    source: Option<Incoming>,
    trailers: Option<HeaderMap>,
    /// The generation allowed to read.
    generation: u64,
    /// Where the bytes read from the client are counted, when observed.
    received: Option<ReceivedBytes>,
}

/// A request body sent upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// No body at all (most requests): nothing to buffer or share.
    Empty,
    /// Streamed as is, no copy kept (nothing on the route could replay it), with its
    /// bytes counted when the request is observed.
    Stream(Incoming, Option<ReceivedBytes>),
    /// The client's body, replayable while it fits the buffer.
    Replay(ReplayBody),
}

/// One attempt's view of the shared body.
#[derive(Debug)]
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    /// Next chunk to serve from the buffer.
    pos: usize,
    trailers_sent: bool,
    hint: SizeHint,
    ended: bool,
}

/// What a request keeps of its body to make more copies of it.
#[derive(Debug, Clone)]
pub enum BodyHandle {
    /// There is no body.
    Empty,
    /// The body is streamed without a copy: it cannot be sent again.
    Gone,
    /// The shared buffer, with the size hint of the original.
    Shared(Arc<Mutex<Shared>>, SizeHint),
}

impl RequestBody {
    /// Wraps a client's body, keeping up to `cap` bytes for replays (0: stream it with no
    /// copy and no lock), counting what is read from the client in `received`.
    pub fn new(body: Incoming, cap: usize, received: Option<ReceivedBytes>) -> (Self, BodyHandle) {
        if body.is_end_stream() {
            return (RequestBody::Empty, BodyHandle::Empty);
        }
        if cap == 0 {
            return (RequestBody::Stream(body, received), BodyHandle::Gone);
        }
        let hint = body.size_hint();
        let shared = Arc::new(Mutex::new(Shared {
            chunks: Vec::new(),
            buffered: 0,
            cap,
            overflowed: false,
            source: Some(body),
            trailers: None,
            generation: 0,
            received,
        }));
        let body = ReplayBody::from_start(shared.clone(), 0, hint);
        (body, BodyHandle::Shared(shared, hint))
    }
}

impl BodyHandle {
    /// The same body again for another attempt, unless more than the cap has been read.
    /// The previous attempt's body stops yielding data.
    pub fn replay(&self) -> Option<RequestBody> {
        match self {
            BodyHandle::Empty => Some(RequestBody::Empty),
            BodyHandle::Gone => None,
            BodyHandle::Shared(arc, hint) => {
                let mut shared = arc.lock().ok()?;
                if shared.overflowed {
                    return None;
                }
                shared.generation += 1;
                Some(ReplayBody::from_start(
                    arc.clone(),
                    shared.generation,
                    *hint,
                ))
            }
        }
    }

    /// An independent copy of a body that has been read to its end and fits the cap (for
    /// a mirror); `None` otherwise. The original is not disturbed.
    pub fn detached_copy(&self) -> Option<RequestBody> {
        match self {
            BodyHandle::Empty => Some(RequestBody::Empty),
            BodyHandle::Gone => None,
            BodyHandle::Shared(arc, _) => {
                let shared = arc.lock().ok()?;
                if shared.overflowed || shared.source.is_some() {
                    return None;
                }
                let copy = Shared {
                    chunks: shared.chunks.clone(),
                    source: None,
                    trailers: shared.trailers.clone(),
                    generation: 0,
                    received: None,
                    ..*shared
                };
                let hint = SizeHint::with_exact(shared.buffered as u64);
                Some(ReplayBody::from_start(Arc::new(Mutex::new(copy)), 0, hint))
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Stream(b, None) => Pin::new(b).poll_frame(cx),
            RequestBody::Stream(b, Some(received)) => {
                let polled = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(data) = frame.data_ref() {
                        received.add(data.len());
                    }
                }
                polled
            }
            RequestBody::Replay(r) => r.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Stream(b, _) => b.is_end_stream(),
            RequestBody::Replay(r) => r.ended,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Stream(b, _) => b.size_hint(),
            RequestBody::Replay(r) if r.pos == 0 => r.hint,
            RequestBody::Replay(_) => SizeHint::default(),
        }
    }
}

impl ReplayBody {
    /// A body of generation `generation` reading `shared` from its first chunk.
    fn from_start(shared: Arc<Mutex<Shared>>, generation: u64, hint: SizeHint) -> RequestBody {
        RequestBody::Replay(ReplayBody {
            shared,
            generation,
            pos: 0,
            trailers_sent: false,
            hint,
            ended: false,
        })
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Ok(mut shared) = self.shared.lock() else {
            self.ended = true;
            return Poll::Ready(None);
        };
        if shared.generation != self.generation {
            // A newer attempt owns the body now.
            self.ended = true;
            return Poll::Ready(None);
        }
        if let Some(chunk) = shared.chunks.get(self.pos) {
            self.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        let Some(source) = shared.source.as_mut() else {
            return match (shared.trailers.clone(), self.trailers_sent) {
                (Some(t), false) => {
                    self.trailers_sent = true;
                    self.ended = true;
                    Poll::Ready(Some(Ok(Frame::trailers(t))))
                }
                _ => {
                    self.ended = true;
                    Poll::Ready(None)
                }
            };
        };
        match Pin::new(source).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.source = None;
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                shared.source = None;
                shared.overflowed = true;
                self.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Some(r) = &shared.received {
                        r.add(data.len());
                    }
                    if !shared.overflowed && shared.buffered + data.len() <= shared.cap {
                        shared.buffered += data.len();
                        shared.chunks.push(data.clone());
                        self.pos += 1;
                    } else {
                        // Too big to replay: stop keeping a copy.
                        shared.overflowed = true;
                        shared.chunks = Vec::new();
                    }
                } else if let Some(t) = frame.trailers_ref() {
                    shared.trailers = Some(t.clone());
                    self.trailers_sent = true;
                }
                if shared.source.as_ref().is_some_and(|s| s.is_end_stream()) {
                    shared.source = None;
                    self.ended = shared.trailers.is_none() || self.trailers_sent;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }
}
