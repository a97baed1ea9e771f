//! One watch stream: `{"type":..., "object":...}` lines over a chunked response, as a real
//! API server sends them. The backlog (the initial state, or the log after the requested
//! version) goes first, then live writes in order; `BOOKMARK`s follow at an interval when
//! asked for; and the stream ends when its `timeoutSeconds` are up, when the client goes, or
//! with an `ERROR` event carrying a `410 Expired` Status when the version it stands at has
//! been compacted away (also right away, for a start from a compacted version: a real server
//! answers such a watch with 200 and the error event, and kube-rs's watcher relists only on
//! that event — an HTTP 410 would make it retry the same version).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{interval_at, sleep_until, Instant, MissedTickBehavior};

use super::error::ApiError;
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::store::{Event, EventType, Since, Store};

/// A body frame of the stream.
pub type Chunk = Result<Frame<Bytes>, Infallible>;

/// What a watch request asked for.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// The watched type.
    pub ty: &'static ResourceType,
    /// Only this namespace, or all.
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// Where the stream starts.
    pub since: Since,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `sendInitialEvents=true`: the initial state ends with a bookmark annotated
    /// `k8s.io/initial-events-end`.
    pub initial_events_end: bool,
    /// `timeoutSeconds`.
    pub timeout: Duration,
}

impl WatchRequest {
    fn selects(&self, object: &Value) -> bool {
        let ns_ok = self
            .namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns));
        ns_ok && self.labels.matches(object) && self.fields.matches(object)
    }

    /// The event this watch sends for `event`, if any: a change that moves an object into
    /// or out of the selection is an `ADDED` or a `DELETED` here.
    fn view(&self, event: &Event) -> Option<(EventType, Value)> {
        if event.ty != self.ty {
            return None;
        }
        let now = self.selects(&event.object);
        let before = event.previous.as_ref().map(|p| self.selects(p));
        match (event.kind, before, now) {
            (EventType::Modified, Some(true), true) => {
                Some((EventType::Modified, event.object.clone()))
            }
            (EventType::Modified, Some(false), true) => {
                Some((EventType::Added, event.object.clone()))
            }
            (EventType::Modified, Some(true), false) => {
                Some((EventType::Deleted, event.object.clone()))
            }
            (EventType::Modified, _, _) => None,
            (kind, _, true) => Some((kind, event.object.clone())),
            (_, _, false) => None,
        }
    }
}

fn line(kind: &str, object: Value) -> Chunk {
    let mut bytes =
        serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    bytes.push(b'\n');
    Ok(Frame::data(Bytes::from(bytes)))
}

fn bookmark(ty: &ResourceType, rv: u64, initial_events_end: bool) -> Chunk {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    line(
        "BOOKMARK",
        json!({ "kind": ty.kind, "apiVersion": ty.api_version(), "metadata": metadata }),
    )
}

/// Starts the stream in a task; the receiver is the response body.
pub fn start(
    store: Arc<Store>,
    request: WatchRequest,
    bookmark_every: Duration,
) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(store, request, bookmark_every, tx));
    rx
}

/// Sends the events the watch selects and moves its position up to `event`.
async fn deliver(w: &WatchRequest, tx: &mpsc::Sender<Chunk>, at: &mut u64, event: &Event) -> bool {
    if event.rv <= *at {
        return true;
    }
    *at = event.rv;
    match w.view(event) {
        Some((kind, object)) => tx.send(line(kind.as_str(), object)).await.is_ok(),
        None => true,
    }
}

async fn run(
    store: Arc<Store>,
    w: WatchRequest,
    bookmark_every: Duration,
    tx: mpsc::Sender<Chunk>,
) {
    let deadline = Instant::now() + w.timeout;
    let expired = |at: u64, oldest: u64| line("ERROR", ApiError::expired(at, oldest).status());
    // Taken before the subscription: a compaction after it is seen as a change.
    let mut compaction = store.compaction();
    compaction.borrow_and_update();
    let mut paused = store.paused();
    let sub = match store.subscribe(w.ty, w.since) {
        Ok(sub) => sub,
        Err(e) => {
            let _ = tx.send(line("ERROR", e.status())).await;
            return;
        }
    };
    let mut at = match w.since {
        Since::Version(v) => v,
        Since::InitialState => 0,
    };
    for event in &sub.backlog {
        if let Some((kind, object)) = w.view(event) {
            if tx.send(line(kind.as_str(), object)).await.is_err() {
                return;
            }
        }
    }
    at = at.max(sub.rv);
    if w.initial_events_end && w.bookmarks && tx.send(bookmark(w.ty, at, true)).await.is_err() {
        return;
    }
    let mut live = sub.live;
    let mut ticks = interval_at(Instant::now() + bookmark_every, bookmark_every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let is_paused = *paused.borrow_and_update();
        tokio::select! {
            biased;
            _ = tx.closed() => return,
            _ = sleep_until(deadline) => return,
            changed = compaction.changed() => {
                if changed.is_err() {
                    return;
                }
                let oldest = *compaction.borrow_and_update();
                // What was written before the compaction and is already queued is not lost:
                // a running (not paused) watch delivers it first.
                if !is_paused {
                    while let Ok(event) = live.try_recv() {
                        if !deliver(&w, &tx, &mut at, &event).await {
                            return;
                        }
                    }
                }
                if at < oldest {
                    let _ = tx.send(expired(at, oldest)).await;
                    return;
                }
            }
            changed = paused.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            event = live.recv(), if !is_paused => match event {
                Ok(event) => {
                    if !deliver(&w, &tx, &mut at, &event).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Too slow to keep up: what it missed is gone for it, as after a compaction.
                    let _ = tx.send(expired(at, store.current_rv())).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = ticks.tick(), if w.bookmarks => {
                if tx.send(bookmark(w.ty, at, false)).await.is_err() {
                    return;
                }
            }
        }
    }
}
