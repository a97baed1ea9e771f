//! `tandemctl endpoint add|remove`, and the heartbeat loop of `add --heartbeat`.

use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{output, CtlError, EndpointCommand, Format};
use crate::client::ApiClient;

/// TTL of `--heartbeat` registrations that name none.
const DEFAULT_HEARTBEAT_TTL: u64 = 30;

pub(super) async fn run(
    client: &ApiClient,
    out: Option<Format>,
    command: EndpointCommand,
) -> Result<(), CtlError> {
    match command {
        EndpointCommand::Add {
            service,
            address,
            labels,
            ttl,
            heartbeat,
            namespace,
        } => {
            let mut map = serde_json::Map::new();
            for l in &labels {
                let (k, v) = l
                    .split_once('=')
                    .ok_or_else(|| CtlError(format!("--label {l:?}: use key=value")))?;
                map.insert(k.to_string(), Value::String(v.to_string()));
            }
            let ttl = match (ttl, heartbeat) {
                (Some(0), _) => return Err(CtlError("--ttl: must be ≥ 1".into())),
                (Some(t), _) => Some(t),
                (None, true) => Some(DEFAULT_HEARTBEAT_TTL),
                (None, false) => None,
            };
            let request = json!({
                "service": service, "namespace": namespace, "address": address,
                "labels": map, "ttl_seconds": ttl,
            });
            let answer = client
                .call(Method::POST, "/v1/endpoints/register", Some(&request))
                .await?;
            output::print(out, &answer, |a| {
                format!(
                    "registered {address} for {namespace}/{service} (revision {}, id {})\n",
                    a["revision"],
                    a["id"].as_str().unwrap_or_default()
                )
            })?;
            if heartbeat {
                let every = Duration::from_secs(ttl.unwrap_or(DEFAULT_HEARTBEAT_TTL)) / 3;
                let id = answer["id"].as_str().unwrap_or_default().to_string();
                heartbeat_until_interrupted(
                    client,
                    &request,
                    id,
                    every.max(Duration::from_millis(500)),
                )
                .await;
                let answer = deregister(client, &namespace, &service, &address).await?;
                output::print(out, &answer, |a| {
                    format!("deregistered {address} (revision {})\n", a["revision"])
                })?;
            }
            Ok(())
        }
        EndpointCommand::Remove {
            service,
            address,
            namespace,
        } => {
            let answer = deregister(client, &namespace, &service, &address).await?;
            output::print(out, &answer, |a| {
                format!(
                    "deregistered {address} from {namespace}/{service} (revision {})\n",
                    a["revision"]
                )
            })
        }
    }
}

async fn deregister(
    client: &ApiClient,
    namespace: &str,
    service: &str,
    address: &str,
) -> Result<Value, CtlError> {
    let body = json!({"namespace": namespace, "service": service, "address": address});
    Ok(client
        .call(Method::POST, "/v1/endpoints/deregister", Some(&body))
        .await?)
}

/// Heartbeats every `every` until Ctrl-C or SIGTERM. An expired registration (404) is
/// registered again; an unreachable control plane is retried at the next beat.
async fn heartbeat_until_interrupted(
    client: &ApiClient,
    request: &Value,
    mut id: String,
    every: Duration,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = terminated => return,
            _ = tick.tick() => {}
        }
        let beat = client
            .call(
                Method::POST,
                "/v1/endpoints/heartbeat",
                Some(&json!({"id": id})),
            )
            .await;
        match beat {
            Ok(_) => {}
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => {
                eprintln!("tandemctl: registration expired; registering again");
                match client
                    .call(Method::POST, "/v1/endpoints/register", Some(request))
                    .await
                {
                    Ok(a) => id = a["id"].as_str().unwrap_or_default().to_string(),
                    Err(e) => eprintln!("tandemctl: {e}"),
                }
            }
            Err(e) => eprintln!("tandemctl: heartbeat failed: {e}"),
        }
    }
}
