//! Kubernetes mode's CA lives in the Secret `tandem-ca` of the control plane's namespace,
//! so every replica signs with the same root and a replica that restarts elsewhere keeps
//! it. The first replica to start generates the root and creates the Secret; a replica
//! that loses that race (409 AlreadyExists) takes the winner's. The key never leaves the
//! Secret and the replica's private data dir (written 0600 there for the CA loader).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};

use super::KubeError;
use crate::identity::ca::Ca;

/// The Secret's name.
pub const CA_SECRET: &str = "tandem-ca";

/// The CA's certificate and key files, from the Secret (created with a new root on the
/// first start), written under `data_dir/ca-secret/`.
pub async fn ensure(
    client: kube::Client,
    namespace: &str,
    data_dir: &Path,
    trust_domain: &str,
) -> Result<(PathBuf, PathBuf), KubeError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let secret = match api.get_opt(CA_SECRET).await? {
        Some(s) => s,
        None => {
            let (cert, key) =
                Ca::new_root_pem(trust_domain).map_err(|e| KubeError::Config(e.to_string()))?;
            let fresh = Secret {
                metadata: ObjectMeta {
                    name: Some(CA_SECRET.into()),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(
                    [
                        ("tls.crt".to_string(), ByteString(cert.into_bytes())),
                        ("tls.key".to_string(), ByteString(key.into_bytes())),
                    ]
                    .into_iter()
                    .collect(),
                ),
                ..Default::default()
            };
            match api.create(&PostParams::default(), &fresh).await {
                Ok(created) => {
                    tracing::info!(namespace, "created the CA Secret {CA_SECRET}");
                    created
                }
                // Another replica created it first: use its root.
                Err(kube::Error::Api(status)) if status.code == 409 => api.get(CA_SECRET).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    let data = secret.data.unwrap_or_default();
    let field = |name: &str| {
        data.get(name).map(|b| b.0.clone()).ok_or_else(|| {
            KubeError::Config(format!("Secret {namespace}/{CA_SECRET} has no {name}"))
        })
    };
    let dir = data_dir.join("ca-secret");
    std::fs::create_dir_all(&dir)
        .map_err(|e| KubeError::Config(format!("{}: {e}", dir.display())))?;
    let cert = dir.join("ca.crt");
    let key = dir.join("ca.key");
    write(&cert, &field("tls.crt")?, 0o644)?;
    write(&key, &field("tls.key")?, 0o600)?;
    Ok((cert, key))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KubeError> {
    let err = |e: std::io::Error| KubeError::Config(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)
}
