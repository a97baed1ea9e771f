//! `tandem-proxy`: Tandem's sidecar proxy. The modules, in the order a request meets them:
//!
//! - [`transport`] — accept, hand to a worker, where an intercepted connection was going
//!   ([`intercept`]), the inbound port's TLS step, detect the protocol, serve HTTP/1 or
//!   HTTP/2, or carry opaque TCP.
//! - [`forward`] — one request: limits, its destination in the current [`snapshot`], then
//!   inbound or outbound; errors become responses in one place.
//! - [`inbound`] — mesh → app: the inbound decision, authorization, the app.
//! - [`outbound`] — app → mesh, one stage per folder or file: route, fault, split,
//!   breaker, rewrite, retry, balance, attempt.
//! - [`client`] — upstream connections: pools and their limits, connect (TCP + mutual
//!   TLS), the response body that hands a connection back.
//! - [`http`] — message mechanics: hop-by-hop headers, the replayable request body, the
//!   tunnel of a protocol switch.
//! - [`io`] — I/O adapters: plaintext-or-TLS, read-ahead, idle tracking, counted copying.
//!
//! Around the request path: [`discovery`] (a config file or xDS) publishes [`snapshot`]s
//! built from [`config`]; [`identity`] obtains and renews the workload certificate that
//! [`tls`] turns into rustls configs; [`admin`] and [`metrics`] report, and [`observe`]
//! writes access logs and trace spans; [`drain`] shuts
//! down; [`startup`] runs it all in named steps, and the one-shot `init` (the redirection
//! rules of [`intercept`]) and `wait-ready`. [`errors`], [`random`] and [`backoff`]
//! are leaves everyone may use.

pub mod admin;
pub mod backoff;
pub mod client;
pub mod config;
pub mod discovery;
pub mod drain;
pub mod errors;
pub mod forward;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod intercept;
pub mod io;
pub mod metrics;
pub mod observe;
pub mod outbound;
pub mod random;
pub mod snapshot;
pub mod startup;
pub mod tls;
pub mod transport;
