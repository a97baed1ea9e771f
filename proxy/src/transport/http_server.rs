//! Serving one client connection as HTTP/1.1 or HTTP/2, with graceful drain.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::client::WireProtocol;
use crate::config::{Limits, Timeouts};
use crate::forward::{ConnContext, Forwarder};
use crate::io::head_deadline;
use crate::io::idle::Tracked;

/// Serves HTTP on `io` until the client leaves or a drain completes.
///
/// On drain, HTTP/1 finishes the response in flight with `Connection: close` and HTTP/2
/// sends `GOAWAY` and lets open streams finish.
pub async fn serve<I>(
    io: I,
    fwd: Arc<Forwarder>,
    ctx: ConnContext,
    limits: Limits,
    timeouts: Timeouts,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut watch = ctx.watch.clone();
    let protocol = ctx.client_protocol;
    let expires = expiry(ctx.peer.not_after);
    let ctx = Arc::new(ctx);
    let result = match protocol {
        WireProtocol::Http1 => {
            let (io, clock) = head_deadline::watch(io);
            let io = TokioIo::new(io);
            let head = clock.clone();
            let service = service_fn(move |req| {
                let fwd = fwd.clone();
                let ctx = ctx.clone();
                let clock = clock.clone();
                clock.request_started();
                async move {
                    let resp = fwd.handle(&ctx, req).await;
                    Ok::<_, Infallible>(resp.map(|b| head_deadline::Tracked::new(b, clock)))
                }
            });
            let mut builder = http1::Builder::new();
            // The parser's own limits sit above the configured ones, so a request over a
            // limit reaches `forward`'s check and gets a 431 that says why; only a request
            // far over it (twice the limit) is cut off by the parser with a bare 431.
            builder
                .timer(TokioTimer::new())
                .keep_alive(true)
                .max_header_size(limits.max_header_bytes.saturating_mul(2))
                .max_headers(limits.max_headers.saturating_mul(2))
                // hyper's header timeout starts as soon as the connection waits for a
                // request, so it closes idle keep-alive connections; the head's own
                // deadline, from its first byte, is `head`'s.
                .header_read_timeout(timeouts.idle);
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = head.expired(timeouts.request_headers) => {
                    // Dropping the connection closes it: a client this slow gets no
                    // answer to wait for.
                    tracing::debug!("closing a client connection whose request head is late");
                    Ok(())
                }
                _ = watch.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = expires => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
        WireProtocol::Http2 => {
            let service = service_fn(move |req| {
                let fwd = fwd.clone();
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(fwd.handle(&ctx, req).await) }
            });
            let (io, activity) = Tracked::new(io);
            let io = TokioIo::new(io);
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder.timer(TokioTimer::new()).max_header_list_size(
                u32::try_from(limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
            );
            let conn = builder.serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => r,
                _ = watch.signaled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = activity.idle_for(timeouts.idle) => {
                    tracing::debug!("closing idle HTTP/2 client connection");
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
                _ = expires => {
                    tracing::debug!("the client's certificate expired: closing its connection");
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
}

/// Resolves when a client certificate that expires at `not_after` (Unix s) has expired;
/// never without one.
async fn expiry(not_after: Option<u64>) {
    match not_after {
        Some(t) => {
            let left = t.saturating_sub(crate::identity::unix_now());
            tokio::time::sleep(std::time::Duration::from_secs(left)).await;
        }
        None => std::future::pending().await,
    }
}
