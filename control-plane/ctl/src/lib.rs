//! `tandemctl`: the command line over the REST API.
//!
//! Every command prints a readable table or message by default, the API's JSON with
//! `-o json`, or YAML with `-o yaml`; it exits 0 on success and 1 with one line on
//! stderr on failure (clap's usage errors exit 2).
//!
//! A crate of its own, apart from `tandem-control-plane`, so that the CLI links no server
//! code: no store (redb), no CA (rcgen), no xDS server (tonic), no DNS resolver (hickory).
//! What it shares with the server is the resource model ([`tandem_resources`]: parsing and
//! validating documents before they are sent, kind names, the admin token's file name,
//! time formatting) and the domain types of `tandem-xds` without its protobuf side. The
//! binary (`src/main.rs`) is a thin shell over [`run`]; [`client`] is the REST client.

mod ca;
mod canary;
mod chaos;
pub mod client;
mod demo;
mod endpoint;
mod inject;
pub mod install;
mod output;
mod stat;
mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use http::Method;
use serde_json::{json, Value};
use tandem_resources::{parse_text, Kind};
use tandem_xds::domain::DEFAULT_NAMESPACE;

use crate::client::{ApiClient, ClientError};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// YAML.
    Yaml,
    /// JSON (the API's answer).
    Json,
}

/// tandemctl: manage a Tandem mesh through its control plane.
#[derive(Debug, Parser)]
#[command(name = "tandemctl", version, about)]
pub struct CtlArgs {
    /// The control plane's REST API.
    #[arg(
        long,
        env = "TANDEM_API",
        default_value = "http://127.0.0.1:15080",
        global = true
    )]
    pub api: String,

    /// File holding the admin token (else `TANDEM_API_TOKEN`, else ./tandem-data/admin-token).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,

    /// Output format (default: a readable table).
    #[arg(short = 'o', long = "output", global = true, value_enum)]
    pub output: Option<Format>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// tandemctl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply every document of a YAML or JSON file (`-` for stdin).
    Apply {
        /// The file.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Refuse (apply nothing) when a route names a Service, mirror or FaultInjection
        /// that would not exist; without it such a route is applied with a warning.
        #[arg(long)]
        strict: bool,
    },
    /// List services, endpoints, routes, grpcroutes, policies, faults or
    /// authorizationpolicies (`authz`), or show one.
    Get {
        /// services | endpoints | routes | grpcroutes | policies | faults | authz.
        kind: String,
        /// Show only this one (for endpoints: its name or its address).
        name: Option<String>,
        /// Namespace (lists: all namespaces when absent; one resource: `default`).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// Delete a service, endpoint, route, grpcroute, policy or fault (an endpoint by its
    /// address or name).
    Delete {
        /// service | endpoint | route | grpcroute | policy | fault | authz.
        kind: String,
        /// Its name (for endpoints: its address or name).
        name: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Register or deregister endpoints.
    Endpoint {
        /// add | remove.
        #[command(subcommand)]
        command: EndpointCommand,
    },
    /// Canary releases: move a service's traffic from a stable to a canary backend in steps.
    Canary {
        /// start | set | step | promote | abort | status.
        #[command(subcommand)]
        command: canary::CanaryCommand,
    },
    /// Chaos experiments: a fault for a bounded time, ended by itself the moment the
    /// steady state (the callers' SLOs) breaks.
    Chaos {
        /// run | status | stop.
        #[command(subcommand)]
        command: chaos::ChaosCommand,
    },
    /// Golden signals from the proxies' own metrics: request rate, success rate,
    /// p50/p95/p99 and open connections, per service, route or backend.
    Stat(stat::StatArgs),
    /// Join tokens: short-lived credentials a proxy trades for its first certificate.
    Token {
        /// create.
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// The CA's trusted roots and their rotation without an outage:
    /// `rotate`, then `activate <sha256>`, then `remove <old sha256>`.
    Ca {
        /// status | rotate | activate | remove.
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Warn (exit 1, one line per problem) when a trusted root or a proxy's certificate
    /// expires within the window or has expired; `ok` lines otherwise.
    Check {
        /// The warning window: days (`30d`) or a duration (`12h`, `90m`).
        #[arg(long, default_value = "30d", value_parser = ca::parse_window)]
        warn_within: std::time::Duration,
    },
    /// List revisions, oldest first.
    History,
    /// Restore config (everything but endpoints) as of a revision, as a new revision.
    Rollback {
        /// The revision.
        revision: u64,
    },
    /// Write the whole store to a file (`-` for stdout).
    Backup {
        /// The file.
        file: String,
    },
    /// Replace the whole store with a backup file, as a new revision.
    Restore {
        /// The file.
        file: String,
    },
    /// Add the Tandem proxy to the pods of Deployments, StatefulSets, DaemonSets, Jobs,
    /// CronJobs, Pods and Lists of them (YAML or JSON, `-` for stdin), offline: prints
    /// YAML for `kubectl apply -f -`, the same patch the injector webhook applies.
    Inject {
        /// The file.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Defaults for what pods' annotations leave unsaid.
        #[command(flatten)]
        flags: inject::InjectFlags,
    },
    /// Remove the Tandem proxy that `inject` or the webhook added, restoring the pods'
    /// probes (YAML or JSON, `-` for stdin); prints YAML.
    Uninject {
        /// The file.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// Print every manifest a cluster needs (CRDs, RBAC, the control plane, the injector's
    /// webhook) for `kubectl apply -f -`; `--chart DIR` writes the same as a Helm chart.
    Install {
        /// Values and `--chart`.
        #[command(flatten)]
        args: install::InstallArgs,
    },
    /// Run a local mesh demo on loopback: control plane, two versions of a service behind
    /// sidecars, a client sidecar and a 90/10 split. Ctrl-C stops it.
    Demo,
}

/// `tandemctl endpoint ...`.
#[derive(Debug, Subcommand)]
pub enum EndpointCommand {
    /// Register an endpoint; with --heartbeat keep it alive until Ctrl-C, then deregister.
    Add {
        /// The service.
        service: String,
        /// ip:port.
        address: String,
        /// A label, `k=v` (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Expire after this many seconds without a heartbeat (default with --heartbeat: 30).
        #[arg(long)]
        ttl: Option<u64>,
        /// Keep running, heartbeating every TTL/3; deregister on Ctrl-C.
        #[arg(long)]
        heartbeat: bool,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Deregister an endpoint.
    Remove {
        /// The service.
        service: String,
        /// ip:port.
        address: String,
        /// Namespace.
        #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

/// A failed command: one line for stderr.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CtlError(pub String);

impl From<ClientError> for CtlError {
    fn from(e: ClientError) -> Self {
        CtlError(e.to_string())
    }
}

/// Finds the token: `--token-file`, else `TANDEM_API_TOKEN`, else `./tandem-data/admin-token`.
pub fn find_token(token_file: Option<&PathBuf>) -> Result<String, CtlError> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p)
            .map(|t| t.trim().to_string())
            .map_err(|e| CtlError(format!("token file {}: {e}", p.display())))
    };
    if let Some(p) = token_file {
        return read(p);
    }
    if let Ok(t) = std::env::var("TANDEM_API_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let default = PathBuf::from("./tandem-data").join(tandem_resources::TOKEN_FILE);
    read(&default).map_err(|_| {
        CtlError(
            "no API token: pass --token-file, set TANDEM_API_TOKEN, or run where ./tandem-data/admin-token is"
                .into(),
        )
    })
}

/// Runs one command.
pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
    if matches!(args.command, Command::Demo) {
        // The demo starts its own control plane and needs no token or API address.
        return demo::run().await;
    }
    // inject, uninject and install work offline: no token, no API.
    match &args.command {
        Command::Inject { file, flags } => {
            return inject::run(file, inject::Direction::Inject(flags), args.output)
        }
        Command::Uninject { file } => {
            return inject::run(file, inject::Direction::Uninject, args.output)
        }
        Command::Install { args: install } => return install::run(install, args.output),
        _ => {}
    }
    let token = find_token(args.token_file.as_ref())?;
    let client = ApiClient::new(&args.api, &token)?;
    let out = args.output;
    match args.command {
        Command::Apply { file, strict } => {
            let text = read_input(&file)?;
            let docs = parse_text(&text).map_err(|e| CtlError(format!("{file}: {e}")))?;
            if docs.is_empty() {
                return Err(CtlError(format!("{file}: no documents")));
            }
            let body = json!({"documents": docs, "strict": strict});
            let answer = client.call(Method::POST, "/v1/apply", Some(&body)).await?;
            // On stderr, as kubectl prints admission warnings: stdout stays the result.
            for w in answer["warnings"].as_array().into_iter().flatten() {
                eprintln!("Warning: {}", w.as_str().unwrap_or_default());
            }
            output::print(out, &answer, output::applied)
        }
        Command::Get {
            kind,
            name,
            namespace,
        } => {
            let kind = kind_word(&kind)?;
            match name {
                None => {
                    let path = match &namespace {
                        Some(ns) => format!("/v1/{}?namespace={ns}", kind.plural()),
                        None => format!("/v1/{}", kind.plural()),
                    };
                    let answer = client.call(Method::GET, &path, None).await?;
                    output::print(out, &answer, |a| output::table(kind, a))
                }
                Some(name) => {
                    let ns = namespace.unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
                    let name = resolve_name(&client, kind, &ns, &name).await?;
                    let path = format!("/v1/{}/{ns}/{name}", kind.plural());
                    let answer = client.call(Method::GET, &path, None).await?;
                    output::print(Some(out.unwrap_or(Format::Yaml)), &answer, |_| {
                        String::new()
                    })
                }
            }
        }
        Command::Delete {
            kind,
            name,
            namespace,
        } => {
            let kind = kind_word(&kind)?;
            let name = resolve_name(&client, kind, &namespace, &name).await?;
            let path = format!("/v1/{}/{namespace}/{name}", kind.plural());
            let answer = client.call(Method::DELETE, &path, None).await?;
            output::print(out, &answer, |a| {
                format!(
                    "deleted {kind} {namespace}/{name} (revision {})\n",
                    a["revision"]
                )
            })
        }
        Command::Endpoint { command } => endpoint::run(&client, out, command).await,
        Command::Canary { command } => canary::run(&client, out, command).await,
        Command::Stat(args) => stat::run(&client, out, args).await,
        Command::Chaos { command } => chaos::run(&client, out, command).await,
        Command::Token { command } => token::run(&client, out, command).await,
        Command::Ca { command } => ca::run(&client, out, command).await,
        Command::Check { warn_within } => ca::check(&client, out, warn_within).await,
        Command::History => {
            let answer = client.call(Method::GET, "/v1/history", None).await?;
            output::print(out, &answer, output::history)
        }
        Command::Rollback { revision } => {
            let answer = client
                .call(
                    Method::POST,
                    "/v1/rollback",
                    Some(&json!({"revision": revision})),
                )
                .await?;
            output::print(out, &answer, |a| {
                format!(
                    "rolled back to revision {revision} as revision {}\n",
                    a["revision"]
                )
            })
        }
        Command::Backup { file } => {
            let answer = client.call(Method::GET, "/v1/backup", None).await?;
            let text = serde_json::to_string_pretty(&answer).unwrap_or_default() + "\n";
            if file == "-" {
                print!("{text}");
                return Ok(());
            }
            std::fs::write(&file, text).map_err(|e| CtlError(format!("{file}: {e}")))?;
            output::print(
                out,
                &json!({"revision": answer["revision"], "file": file}),
                |a| format!("backup of revision {} written to {file}\n", a["revision"]),
            )
        }
        Command::Restore { file } => {
            let text = read_input(&file)?;
            let backup: Value = serde_json::from_str(&text)
                .map_err(|e| CtlError(format!("{file}: not a backup (JSON): {e}")))?;
            let answer = client
                .call(Method::POST, "/v1/restore", Some(&backup))
                .await?;
            output::print(out, &answer, |a| {
                format!("restored {file} as revision {}\n", a["revision"])
            })
        }
        Command::Demo => demo::run().await,
        // Answered above.
        Command::Inject { .. } | Command::Uninject { .. } | Command::Install { .. } => Ok(()),
    }
}

fn read_input(file: &str) -> Result<String, CtlError> {
    if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| CtlError(format!("stdin: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).map_err(|e| CtlError(format!("{file}: {e}")))
    }
}

fn kind_word(word: &str) -> Result<Kind, CtlError> {
    Kind::from_word(word).ok_or_else(|| {
        CtlError(format!(
            "unknown kind {word:?}: use {}",
            Kind::plurals_hint()
        ))
    })
}

/// For endpoints, `name` may be the address: find the endpoint's stored name.
async fn resolve_name(
    client: &ApiClient,
    kind: Kind,
    namespace: &str,
    name: &str,
) -> Result<String, CtlError> {
    if kind != Kind::Endpoint {
        return Ok(name.to_string());
    }
    let Ok(addr) = name.parse::<std::net::SocketAddr>() else {
        return Ok(name.to_string());
    };
    let list = client
        .call(
            Method::GET,
            &format!("/v1/endpoints?namespace={namespace}"),
            None,
        )
        .await?;
    let matches: Vec<(String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["spec"]["address"]
                .as_str()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                == Some(addr)
        })
        .map(|e| {
            (
                e["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["spec"]["service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    match matches.as_slice() {
        [] => Err(CtlError(format!(
            "no endpoint at {addr} in namespace {namespace}"
        ))),
        [(n, _)] => Ok(n.clone()),
        many => Err(CtlError(format!(
            "{addr} is an endpoint of several services ({}): use `tandemctl endpoint remove SERVICE {addr}`",
            many.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}
