//! Graceful shutdown: one signal to every listener and connection, and a wait for them all.
//!
//! Each task that must finish before exit holds a [`Watch`]; holding one keeps a channel
//! sender alive, so [`Drain::drain`] learns that everything finished when the channel closes.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// The owner side: starts a drain and waits for it.
#[derive(Debug)]
pub struct Drain {
    signal: watch::Sender<bool>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// The task side: learns that a drain started, and keeps it waiting while held.
#[derive(Debug, Clone)]
pub struct Watch {
    signal: watch::Receiver<bool>,
    _held: mpsc::Sender<()>,
}

impl Drain {
    /// A drain not yet started.
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Drain {
            signal,
            done_tx,
            done_rx,
        }
    }

    /// A handle for one task.
    pub fn watch(&self) -> Watch {
        Watch {
            signal: self.signal.subscribe(),
            _held: self.done_tx.clone(),
        }
    }

    /// Signals every holder and waits until all have finished or `grace` passes.
    /// Returns whether everything finished in time.
    pub async fn drain(self, grace: Duration) -> bool {
        let Drain {
            signal,
            done_tx,
            mut done_rx,
        } = self;
        signal.send_replace(true);
        drop(done_tx);
        tokio::time::timeout(grace, done_rx.recv()).await.is_ok()
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Watch {
    /// Completes once a drain has started.
    pub async fn signaled(&mut self) {
        // An error means the Drain was dropped without draining: treat it as a drain too.
        let _ = self.signal.wait_for(|draining| *draining).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_holders_then_returns() {
        let drain = Drain::new();
        let mut w = drain.watch();
        let task = tokio::spawn(async move {
            w.signaled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(w);
        });
        assert!(drain.drain(Duration::from_secs(1)).await);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_grace() {
        let drain = Drain::new();
        let _stuck = drain.watch();
        assert!(!drain.drain(Duration::from_millis(100)).await);
    }
}
