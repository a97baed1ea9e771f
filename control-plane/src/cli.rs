//! `tandem-control-plane` command-line flags; each is also readable from a `TANDEM_*`
//! environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Tandem's control plane: the mesh's source of truth, xDS server and REST API.
#[derive(Debug, Clone, Parser)]
#[command(name = "tandem-control-plane", version, about)]
pub struct Args {
    /// Directory of the embedded store and the admin token.
    #[arg(long, env = "TANDEM_DATA_DIR", default_value = "./tandem-data")]
    pub data_dir: PathBuf,

    /// xDS v3 ADS (gRPC) listener.
    #[arg(long, env = "TANDEM_XDS_ADDR", default_value = "127.0.0.1:15010")]
    pub xds_addr: SocketAddr,

    /// REST API listener (loopback unless told otherwise).
    #[arg(long, env = "TANDEM_API_ADDR", default_value = "127.0.0.1:15080")]
    pub api_addr: SocketAddr,

    /// Longest time, in seconds, between two DNS refreshes of a name (the record TTL
    /// decides when shorter; never more often than every second).
    #[arg(long, env = "TANDEM_DNS_REFRESH", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub dns_refresh: u64,

    /// A YAML file of `Endpoint` documents, re-read on change.
    #[arg(long, env = "TANDEM_STATIC_ENDPOINTS")]
    pub static_endpoints: Option<PathBuf>,

    /// Seconds between two scrapes of every connected proxy's `/metrics` (canary status).
    #[arg(long, env = "TANDEM_SCRAPE_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub scrape_interval: u64,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `tandem_control_plane=debug`.
    #[arg(long, env = "TANDEM_LOG", default_value = "info")]
    pub log: String,
}
