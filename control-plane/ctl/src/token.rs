//! `tandemctl token create`: a join token for one service's first certificate.

use clap::Subcommand;
use http::Method;
use serde_json::{json, Value};
use tandem_xds::domain::DEFAULT_NAMESPACE;

use super::{output, CtlError, Format};
use crate::client::ApiClient;

/// `tandemctl token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a join token bound to one service's identity
    /// (`spiffe://<trust-domain>/ns/<ns>/sa/<service>`); prints the token.
    Create {
        /// The service (its identity's service account).
        #[arg(long)]
        service: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        /// Lifetime (at most 24h), e.g. `1h`, `10m`.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

/// Runs one token command.
pub async fn run(
    client: &ApiClient,
    out: Option<Format>,
    command: TokenCommand,
) -> Result<(), CtlError> {
    match command {
        TokenCommand::Create {
            service,
            namespace,
            ttl,
        } => {
            let answer = client
                .call(
                    Method::POST,
                    "/v1/tokens",
                    Some(&json!({"service": service, "namespace": namespace, "ttl": ttl})),
                )
                .await?;
            // The default output is the bare token, so `$(tandemctl token create ...)` works.
            output::print(out, &answer, |a: &Value| {
                format!("{}\n", a["token"].as_str().unwrap_or_default())
            })?;
            if out.is_none() {
                // What the token is for goes to stderr: stdout stays the bare token.
                eprintln!(
                    "join token for {} (expires at Unix time {})",
                    answer["identity"].as_str().unwrap_or_default(),
                    answer["expires_at"]
                );
            }
            Ok(())
        }
    }
}
