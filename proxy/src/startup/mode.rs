//! Which way the proxy learns its destinations, from the flags: a static config file, or
//! a control plane over xDS (with the identity endpoint when a join token is given).

use std::path::{Path, PathBuf};

use super::flags::Args;
use super::StartupError;
use crate::config::{self, Config};
use crate::discovery::xds::XdsTarget;
use crate::identity::{self, Credential, Expected, IdentityConfig, JoinToken};

/// Where the destinations come from.
#[derive(Debug)]
pub enum Mode {
    /// A static file, watched for changes.
    Static {
        /// The file.
        path: PathBuf,
        /// Its content at startup.
        text: String,
    },
    /// A control plane over ADS, and the identity endpoint when a join token was given.
    Xds(XdsTarget, Option<IdentityConfig>),
}

impl Mode {
    /// The mode the flags ask for; a usage error if they do not make sense together.
    pub fn from_args(args: &Args) -> Result<Self, StartupError> {
        match (&args.config, &args.control_plane) {
            (Some(_), Some(_)) => Err(StartupError::Usage(
                "use either --config FILE or --control-plane ADDR, not both",
            )),
            (None, None) => Err(StartupError::Usage(
                "need --config FILE (static) or --control-plane ADDR --service NAME",
            )),
            (Some(path), None) => Self::static_file(args, path),
            (None, Some(cp)) => Self::control_plane(args, cp),
        }
    }

    fn static_file(args: &Args, path: &Path) -> Result<Self, StartupError> {
        if args.token.is_some()
            || args.identity_addr.is_some()
            || args.service_account_token_file.is_some()
            || args.ca_pins.is_some()
        {
            return Err(StartupError::Usage(
                "--token, --service-account-token-file, --ca-pins and --identity-addr are for --control-plane mode, not --config",
            ));
        }
        // A reload re-reads the file, so a flag beside it would silently stop applying.
        if args.retry_buffer_bytes.is_some() {
            return Err(StartupError::Usage(
                "--retry-buffer-bytes is for --control-plane mode; with --config set limits.retry_buffer_bytes",
            ));
        }
        if !args.listen.is_empty() {
            return Err(StartupError::Usage(
                "--listen is for --control-plane mode; a config file sets services[].listen",
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|source| StartupError::ReadConfig {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Mode::Static {
            path: path.to_path_buf(),
            text,
        })
    }

    fn control_plane(args: &Args, cp: &str) -> Result<Self, StartupError> {
        let service = args.service.clone().ok_or(StartupError::Usage(
            "--control-plane needs --service NAME (this workload's service)",
        ))?;
        let endpoint = if cp.contains("://") {
            cp.to_string()
        } else {
            format!("http://{cp}")
        };
        let node_id = args
            .node_id
            .clone()
            .unwrap_or_else(|| format!("{service}~{}~{}", args.namespace, std::process::id()));
        let credential = match (&args.token, &args.service_account_token_file) {
            (Some(token), _) => {
                if args.ca_pins.is_some() {
                    return Err(StartupError::Usage(
                        "--ca-pins is for --service-account-token-file (a join token carries its pin)",
                    ));
                }
                Some(Credential::Join(JoinToken::parse(token)?))
            }
            (None, Some(path)) => {
                let pins = args.ca_pins.as_deref().ok_or(StartupError::Usage(
                    "--service-account-token-file needs --ca-pins (the mesh's root fingerprints)",
                ))?;
                let pins = identity::parse_pins(pins)
                    .map_err(|e| StartupError::Flag(format!("--ca-pins: {e}")))?;
                Some(Credential::ServiceAccount {
                    path: path.clone(),
                    pins,
                })
            }
            (None, None) if args.identity_addr.is_some() || args.ca_pins.is_some() => {
                return Err(StartupError::Usage(
                    "--identity-addr and --ca-pins need a credential: --token or --service-account-token-file",
                ))
            }
            (None, None) => None,
        };
        let identity = credential.map(|credential| IdentityConfig {
            credential,
            addr: args
                .identity_addr
                .clone()
                .unwrap_or_else(|| default_identity_addr(&endpoint)),
            expected: Expected {
                namespace: args.namespace.clone(),
                account: args
                    .service_account
                    .clone()
                    .unwrap_or_else(|| service.clone()),
            },
        });
        let target = XdsTarget {
            endpoint,
            node_id,
            service,
            // With an identity, xDS goes over mutual TLS to the identity port (Istio's
            // 15012 arrangement), so the control plane knows whom it serves.
            secure: identity.as_ref().map(|i| i.addr.clone()),
        };
        Ok(Mode::Xds(target, identity))
    }

    /// The settings (and, in static mode, the services) to start with.
    pub fn config(&self, args: &Args) -> Result<Config, StartupError> {
        match self {
            Mode::Static { path, text } => {
                config::parse(text).map_err(|source| StartupError::Config {
                    path: path.display().to_string(),
                    source,
                })
            }
            Mode::Xds(target, _) => {
                let mut c = config::parse("").map_err(|source| StartupError::Config {
                    path: "(defaults)".into(),
                    source,
                })?;
                c.service = target.service.clone();
                if let Some(bytes) = args.retry_buffer_bytes {
                    c.limits.retry_buffer_bytes = bytes;
                }
                Ok(c)
            }
        }
    }

    /// Where config comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Mode::Static { path, .. } => path.display().to_string(),
            Mode::Xds(t, _) => t.endpoint.clone(),
        }
    }

    /// The identity endpoint to obtain a certificate from, if any.
    pub fn identity(&self) -> Option<&IdentityConfig> {
        match self {
            Mode::Xds(_, identity) => identity.as_ref(),
            Mode::Static { .. } => None,
        }
    }
}

/// The identity endpoint beside the control plane: its host, port 15012.
fn default_identity_addr(endpoint: &str) -> String {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let (host, _) = identity::request::split_host(authority);
    if host.contains(':') {
        format!("[{host}]:{}", identity::DEFAULT_IDENTITY_PORT)
    } else {
        format!("{host}:{}", identity::DEFAULT_IDENTITY_PORT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_endpoint_defaults_to_the_control_planes_host() {
        assert_eq!(
            default_identity_addr("http://10.0.0.5:15010"),
            "10.0.0.5:15012"
        );
        assert_eq!(
            default_identity_addr("http://cp.mesh:15010/"),
            "cp.mesh:15012"
        );
        assert_eq!(default_identity_addr("http://[::1]:15010"), "[::1]:15012");
    }

    fn mode(args: &[&str]) -> Result<Mode, String> {
        use clap::Parser as _;
        let mut all = vec!["tandem-proxy", "--control-plane", "127.0.0.1:15010"];
        all.extend_from_slice(args);
        let args = Args::try_parse_from(all).map_err(|e| e.to_string())?;
        Mode::from_args(&args).map_err(|e| e.to_string())
    }

    #[test]
    fn a_service_account_token_needs_pins_and_names_its_account() {
        let pin = "ab".repeat(32);
        let m = mode(&[
            "--service",
            "web",
            "--service-account-token-file",
            "/t",
            "--service-account",
            "web-sa",
            "--ca-pins",
            &pin,
        ])
        .unwrap();
        let id = m.identity().unwrap();
        assert_eq!(id.expected.account, "web-sa");
        assert_eq!(id.credential.pins(), vec![[0xab; 32]]);
        assert!(matches!(id.credential, Credential::ServiceAccount { .. }));
        // Without --service-account, the standalone convention: the service's name.
        let m = mode(&[
            "--service",
            "web",
            "--service-account-token-file",
            "/t",
            "--ca-pins",
            &pin,
        ])
        .unwrap();
        assert_eq!(m.identity().unwrap().expected.account, "web");
        for (args, says) in [
            (
                vec!["--service", "web", "--service-account-token-file", "/t"],
                "needs --ca-pins",
            ),
            (
                vec![
                    "--service",
                    "web",
                    "--service-account-token-file",
                    "/t",
                    "--ca-pins",
                    "xyz",
                ],
                "--ca-pins",
            ),
            (
                vec!["--service", "web", "--ca-pins", pin.as_str()],
                "need a credential",
            ),
            (
                vec![
                    "--service",
                    "web",
                    "--token",
                    "t",
                    "--service-account-token-file",
                    "/t",
                ],
                "cannot be used with",
            ),
        ] {
            let e = mode(&args)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }
}
