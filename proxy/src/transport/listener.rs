//! Accept loops: each listener hands its connections, round robin, to the workers.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::workers::Workers;
use crate::drain::Watch;
use crate::forward::ListenerKind;

/// Accepts connections until a drain starts (or `stop` fires), handing each to a worker.
pub async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    workers: Arc<Workers>,
    mut watch: Watch,
    stop: Option<oneshot::Receiver<()>>,
) {
    let stopped = async move {
        match stop {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            _ = watch.signaled() => break,
            _ = &mut stopped => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _peer)) => workers.dispatch(stream, kind.clone(), watch.clone()),
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
