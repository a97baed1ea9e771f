//! Thread-per-core serving: each worker thread runs its own single-threaded runtime and
//! its own upstream connection pools.
//!
//! A client connection lives on one worker from accept to close, together with the
//! upstream connections its requests use, so the hand-off between the client side and the
//! upstream side of a request never crosses threads, and no task is ever stolen or
//! synchronized across cores. This is Envoy's worker model; it trades work stealing
//! (one very busy connection cannot use two cores) for less CPU per request.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::connection::serve_connection;
use crate::client::Client;
use crate::drain::Watch;
use crate::forward::{Forwarder, ListenerKind};

/// One accepted connection on its way to a worker.
#[derive(Debug)]
struct Job {
    stream: std::net::TcpStream,
    kind: ListenerKind,
    watch: Watch,
}

/// The worker threads, fed accepted connections round robin.
#[derive(Debug)]
pub struct Workers {
    senders: Vec<mpsc::UnboundedSender<Job>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `count` workers; each gets its own [`Forwarder`] made by `make` around a
    /// fresh connection pool.
    pub fn start(count: usize, make: impl Fn(Client) -> Forwarder) -> io::Result<Self> {
        let mut senders = Vec::with_capacity(count);
        for i in 0..count.max(1) {
            let (tx, rx) = mpsc::unbounded_channel();
            let fwd = Arc::new(make(Client::default()));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("tandem-worker-{i}"))
                .spawn(move || runtime.block_on(worker(rx, fwd)))?;
            senders.push(tx);
        }
        Ok(Workers {
            senders,
            next: AtomicUsize::new(0),
        })
    }

    /// Hands an accepted connection to the next worker.
    pub fn dispatch(&self, stream: TcpStream, kind: ListenerKind, watch: Watch) {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        if self.senders[i]
            .send(Job {
                stream,
                kind,
                watch,
            })
            .is_err()
        {
            tracing::error!(worker = i, "worker thread is gone; connection dropped");
        }
    }
}

/// A worker: serves the connections it is handed, and keeps its pool tidy. Runs until the
/// process exits, so connections still draining keep being served.
async fn worker(mut rx: mpsc::UnboundedReceiver<Job>, fwd: Arc<Forwarder>) {
    tokio::spawn(reap_idle(fwd.clone()));
    while let Some(job) = rx.recv().await {
        match TcpStream::from_std(job.stream) {
            Ok(stream) => {
                tokio::spawn(serve_connection(stream, job.kind, fwd.clone(), job.watch));
            }
            Err(e) => tracing::warn!(error = %e, "worker cannot adopt a connection"),
        }
    }
    std::future::pending::<()>().await;
}

/// Periodically closes upstream connections idle past the configured timeout.
async fn reap_idle(fwd: Arc<Forwarder>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let generation = fwd.tls.as_ref().map(|t| t.generation());
        fwd.client
            .reap(fwd.store.load().config.timeouts.upstream_idle, generation);
    }
}
