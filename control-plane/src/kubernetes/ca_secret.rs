//! Kubernetes mode's CA lives in the Secret `tandem-ca` of the control plane's namespace,
//! so every replica signs with the same roots and a replica that restarts elsewhere keeps
//! them. The first replica to start generates a root and creates the Secret; a replica
//! that loses that race (409 AlreadyExists) takes the winner's.
//!
//! The Secret holds what a generated CA's directory holds (`roots.json` and each root's
//! certificate and key), plus the signing root as `tls.crt`/`tls.key`, the layout of a
//! `kubernetes.io/tls` Secret; a Secret with only those two (as the first start writes it)
//! is a CA of one root. Each replica keeps a private copy of the directory under its data
//! dir (keys 0600) and loads the CA from it.
//!
//! Rotation steps (`tandemctl ca rotate|activate|remove`) may reach any replica: the step
//! runs on a scratch copy of what the Secret held and is written back with the
//! `resourceVersion` it was read at, so the API server orders concurrent steps (the loser
//! of a race retries on the new content) and no step is applied twice. Every replica
//! watches the Secret and reloads its CA when it changes, so the trust bundle it serves
//! over xDS and the certificates it signs follow within a watch event.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use tokio_stream::StreamExt;

use super::KubeError;
use crate::identity::ca::{Ca, CaError, CaSource, RootStatus, CA_DIR};
use crate::identity::roots::{RootFiles, RootSet, MANIFEST_FILE};

/// The Secret's name.
pub const CA_SECRET: &str = "tandem-ca";
/// The Secret's key of the signing root's certificate (a `kubernetes.io/tls` Secret's).
const TLS_CERT: &str = "tls.crt";
/// The Secret's key of the signing root's key.
const TLS_KEY: &str = "tls.key";
/// How many times a rotation step is retried when another replica's step won the race.
const ATTEMPTS: usize = 5;

/// Why a rotation step through the Secret failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedCaError {
    /// The step itself was refused or failed (unknown root, last root, ...).
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The API server could not be read or written.
    #[error("the CA Secret {CA_SECRET}: {0}")]
    Api(#[from] kube::Error),
    /// The Secret holds something that is not a CA.
    #[error("the CA Secret {CA_SECRET}: {0}")]
    Invalid(String),
    /// Other replicas kept changing the Secret between this one's read and write.
    #[error(
        "the CA Secret {CA_SECRET} kept changing under this step ({ATTEMPTS} attempts); try again"
    )]
    Contended,
}

/// One rotation step.
#[derive(Debug, Clone)]
pub enum Step {
    /// Add a new root to the bundle, not signing yet.
    Rotate,
    /// Make the root with this SHA-256 prefix the signing one.
    Activate(String),
    /// Stop trusting the non-signing root with this SHA-256 prefix.
    Remove(String),
}

/// The CA as [`ensure`] found it in the Secret.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The data dir to load the CA from ([`CaSource::Generated`]).
    pub data_dir: PathBuf,
    /// The Secret's resourceVersion the directory was written from.
    pub version: Option<String>,
}

/// Reads the Secret (creating it with a new root on the first start) and writes its CA
/// directory under `data_dir`.
pub async fn ensure(
    client: kube::Client,
    namespace: &str,
    data_dir: &Path,
    trust_domain: &str,
) -> Result<Loaded, KubeError> {
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
                        (TLS_CERT.to_string(), ByteString(cert.into_bytes())),
                        (TLS_KEY.to_string(), ByteString(key.into_bytes())),
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
    let base = live_base(data_dir);
    let version = secret.metadata.resource_version.clone();
    materialize(&secret.data.unwrap_or_default(), &base.join(CA_DIR))
        .map_err(|e| KubeError::Config(format!("Secret {namespace}/{CA_SECRET}: {e}")))?;
    // Files of the layout before rotation existed in this mode.
    for old in ["ca.crt", "ca.key"] {
        let _ = std::fs::remove_file(base.join(old));
    }
    Ok(Loaded {
        data_dir: base,
        version,
    })
}

/// The data dir whose `ca/` is this replica's copy of the Secret.
fn live_base(data_dir: &Path) -> PathBuf {
    data_dir.join("ca-secret")
}

/// The CA shared through the Secret: rotation steps written to it, and every change of it
/// followed into the local CA.
pub struct SharedCa {
    api: Api<Secret>,
    ca: Arc<Ca>,
    trust_domain: String,
    /// Where a step is tried before it is written (`data_dir/ca-secret-scratch`).
    scratch: PathBuf,
    /// The resourceVersion the local CA was last loaded from; held while the local copy
    /// is rewritten.
    applied: tokio::sync::Mutex<Option<String>>,
    /// One step at a time from this replica (they share the scratch directory).
    steps: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SharedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCa")
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

impl SharedCa {
    /// The shared CA of `ca`, loaded from what [`ensure`] wrote (`loaded`); `data_dir` is
    /// the control plane's.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        ca: Arc<Ca>,
        data_dir: &Path,
        loaded: Loaded,
        trust_domain: &str,
    ) -> SharedCa {
        SharedCa {
            api: Api::namespaced(client, namespace),
            ca,
            trust_domain: trust_domain.to_string(),
            scratch: data_dir.join("ca-secret-scratch"),
            // The watch's first event is that version again: nothing to rewrite.
            applied: tokio::sync::Mutex::new(loaded.version),
            steps: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs `step` against the Secret's current content and writes the result back;
    /// the local CA follows before this returns. The status is the root the step added,
    /// activated or removed.
    pub async fn change(&self, step: Step) -> Result<RootStatus, SharedCaError> {
        let _one = self.steps.lock().await;
        for _ in 0..ATTEMPTS {
            let secret = self.api.get(CA_SECRET).await?;
            let data = secret.data.clone().unwrap_or_default();
            let scratch = self.scratch.clone();
            let trust_domain = self.trust_domain.clone();
            let tried = step.clone();
            let (status, next) = tokio::task::spawn_blocking(move || {
                try_step(&scratch, &data, &trust_domain, &tried)
            })
            .await
            .map_err(|e| SharedCaError::Invalid(format!("the step's task failed: {e}")))??;
            if secret.data.as_ref() == Some(&next) {
                // Nothing to write (activating the root that already signs).
                return Ok(status);
            }
            let mut written = secret.clone();
            written.data = Some(next);
            match self
                .api
                .replace(CA_SECRET, &PostParams::default(), &written)
                .await
            {
                Ok(stored) => {
                    self.follow_secret(&stored).await?;
                    return Ok(status);
                }
                // Another replica's step came first: redo this one on top of it.
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(SharedCaError::Contended)
    }

    /// Follows the Secret until the process exits: every version of it is written to the
    /// local CA directory and reloaded.
    pub async fn follow(self: Arc<Self>) {
        let config = watcher::Config::default().fields(&format!("metadata.name={CA_SECRET}"));
        let mut events = std::pin::pin!(watcher(self.api.clone(), config)
            .default_backoff()
            .applied_objects());
        while let Some(event) = events.next().await {
            match event {
                Ok(secret) => {
                    if let Err(e) = self.follow_secret(&secret).await {
                        tracing::warn!(error = %e, "cannot follow the CA Secret; the CA loaded before keeps signing");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching the CA Secret"),
            }
        }
    }

    /// Loads the local CA from `secret` unless it was loaded from that version already.
    async fn follow_secret(&self, secret: &Secret) -> Result<(), SharedCaError> {
        let mut applied = self.applied.lock().await;
        let version = secret.metadata.resource_version.clone();
        if version.is_some() && *applied == version {
            return Ok(());
        }
        let dir = self
            .ca
            .dir()
            .ok_or(SharedCaError::Ca(CaError::NotRotatable))?
            .to_path_buf();
        let data = secret.data.clone().unwrap_or_default();
        let ca = self.ca.clone();
        let changed = tokio::task::spawn_blocking(move || {
            materialize(&data, &dir)?;
            ca.reload_from_dir().map_err(SharedCaError::from)
        })
        .await
        .map_err(|e| SharedCaError::Invalid(format!("reloading failed: {e}")))??;
        if changed {
            tracing::info!(roots = ?self.ca.status().iter().map(|r| (&r.sha256[..16], &r.state)).collect::<Vec<_>>(), "CA: the roots changed in the Secret; now serving them");
        }
        *applied = version;
        Ok(())
    }
}

/// Runs `step` on a copy of `data` in `scratch`: the root it concerns and the Secret data
/// after it.
fn try_step(
    scratch: &Path,
    data: &BTreeMap<String, ByteString>,
    trust_domain: &str,
    step: &Step,
) -> Result<(RootStatus, BTreeMap<String, ByteString>), SharedCaError> {
    let _ = std::fs::remove_dir_all(scratch);
    let dir = scratch.join(CA_DIR);
    materialize(data, &dir)?;
    let ca = Ca::load(
        &CaSource::Generated {
            data_dir: scratch.to_path_buf(),
        },
        trust_domain,
    )?;
    let status = match step {
        Step::Rotate => ca.rotate(),
        Step::Activate(prefix) => ca.activate(prefix),
        Step::Remove(prefix) => ca.remove(prefix),
    }?;
    let next = secret_data(&dir)?;
    let _ = std::fs::remove_dir_all(scratch);
    Ok((status, next))
}

/// The Secret's data for the CA directory `dir`: the manifest, each root's files, and the
/// signing root as `tls.crt`/`tls.key`.
pub fn secret_data(dir: &Path) -> Result<BTreeMap<String, ByteString>, SharedCaError> {
    let set = RootSet::load(dir)?;
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map(ByteString)
            .map_err(|e| SharedCaError::Invalid(format!("{}: {e}", dir.join(name).display())))
    };
    let mut data = BTreeMap::new();
    let manifest = serde_json::to_vec_pretty(&set)
        .map_err(|e| SharedCaError::Invalid(format!("{MANIFEST_FILE}: {e}")))?;
    data.insert(MANIFEST_FILE.to_string(), ByteString(manifest));
    for root in &set.roots {
        data.insert(root.cert.clone(), read(&root.cert)?);
        data.insert(root.key.clone(), read(&root.key)?);
        if root.sha256 == set.signing {
            data.insert(TLS_CERT.to_string(), read(&root.cert)?);
            data.insert(TLS_KEY.to_string(), read(&root.key)?);
        }
    }
    Ok(data)
}

/// Writes the CA directory `dir` as the Secret's `data` describes it, the manifest last
/// (atomically), and deletes the files of roots it no longer names.
pub fn materialize(data: &BTreeMap<String, ByteString>, dir: &Path) -> Result<(), SharedCaError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| {
            std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        })
        .map_err(|e| SharedCaError::Invalid(format!("{}: {e}", dir.display())))?;
    let field = |name: &str| {
        data.get(name)
            .map(|b| b.0.as_slice())
            .ok_or_else(|| SharedCaError::Invalid(format!("no {name}")))
    };
    let keep: Vec<String> = match data.get(MANIFEST_FILE) {
        Some(manifest) => {
            let set: RootSet = serde_json::from_slice(&manifest.0)
                .map_err(|e| SharedCaError::Invalid(format!("{MANIFEST_FILE}: {e}")))?;
            if !set.roots.iter().any(|r| r.sha256 == set.signing) {
                return Err(SharedCaError::Invalid(format!(
                    "{MANIFEST_FILE}: the signing root {} is not in the set",
                    set.signing
                )));
            }
            for RootFiles { cert, key, .. } in &set.roots {
                for name in [cert, key] {
                    if !plain_file_name(name) {
                        return Err(SharedCaError::Invalid(format!(
                            "{MANIFEST_FILE}: {name:?} is not a plain file name"
                        )));
                    }
                }
                write(&dir.join(cert), field(cert)?, 0o644)?;
                write(&dir.join(key), field(key)?, 0o600)?;
            }
            set.save(dir)?;
            set.roots
                .iter()
                .flat_map(|r| [r.cert.clone(), r.key.clone()])
                .collect()
        }
        None => {
            // One root, the layout of the first start.
            let (cert, key) = (
                crate::identity::ca::ROOT_CERT_FILE,
                crate::identity::ca::ROOT_KEY_FILE,
            );
            write(&dir.join(cert), field(TLS_CERT)?, 0o644)?;
            write(&dir.join(key), field(TLS_KEY)?, 0o600)?;
            let _ = std::fs::remove_file(dir.join(MANIFEST_FILE));
            vec![cert.to_string(), key.to_string()]
        }
    };
    // Files of removed roots: the keys are the point.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("root-") && !keep.contains(&name) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// A file name with no directory part and nothing a shell or path would read specially:
/// the Secret's manifest is data from the cluster, not a path to follow.
fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SharedCaError> {
    let err = |e: std::io::Error| SharedCaError::Invalid(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test, removed when dropped.
    struct Temp(PathBuf);

    impl Temp {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Temp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp(tag: &str) -> Temp {
        let dir =
            std::env::temp_dir().join(format!("tandem-ca-secret-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Temp(dir)
    }

    fn data_of(pairs: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect()
    }

    #[test]
    fn a_first_start_secret_is_a_ca_of_one_root_and_steps_round_trip_through_secret_data() {
        let tmp = temp("round-trip");
        let (cert, key) = Ca::new_root_pem("cluster.local").unwrap();
        let first = data_of(&[(TLS_CERT, cert.as_bytes()), (TLS_KEY, key.as_bytes())]);

        // Rotate on a scratch copy: the data now names two roots, the first still signing.
        let (added, two) = try_step(
            &tmp.path().join("s"),
            &first,
            "cluster.local",
            &Step::Rotate,
        )
        .unwrap();
        assert_eq!(added.state, "trusted");
        assert_eq!(two[TLS_CERT].0, cert.as_bytes(), "the old root still signs");
        let set: RootSet = serde_json::from_slice(&two[MANIFEST_FILE].0).unwrap();
        assert_eq!(set.roots.len(), 2);

        // A replica's copy follows it, and its CA reloads with both roots.
        let live = tmp.path().join("live");
        materialize(&first, &live.join(CA_DIR)).unwrap();
        let ca = Ca::load(
            &CaSource::Generated {
                data_dir: live.clone(),
            },
            "cluster.local",
        )
        .unwrap();
        assert_eq!(ca.status().len(), 1);
        materialize(&two, &live.join(CA_DIR)).unwrap();
        assert!(ca.reload_from_dir().unwrap());
        assert_eq!(ca.status().len(), 2);
        assert!(!ca.reload_from_dir().unwrap(), "no change, no announcement");

        // Activate, then remove the old root: its files leave the Secret and the copy.
        let (_, active) = try_step(
            &tmp.path().join("s"),
            &two,
            "cluster.local",
            &Step::Activate(added.sha256.clone()),
        )
        .unwrap();
        assert_ne!(active[TLS_CERT].0, cert.as_bytes());
        let old = ca.status()[0].sha256.clone();
        let (gone, one) = try_step(
            &tmp.path().join("s"),
            &active,
            "cluster.local",
            &Step::Remove(old[..12].to_string()),
        )
        .unwrap();
        assert_eq!(gone.sha256, old);
        materialize(&one, &live.join(CA_DIR)).unwrap();
        ca.reload_from_dir().unwrap();
        let roots = ca.status();
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].sha256, added.sha256);
        let files: Vec<String> = std::fs::read_dir(live.join(CA_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("root-"))
            .collect();
        assert_eq!(files.len(), 2, "only the remaining root's files: {files:?}");
    }

    #[test]
    fn a_manifest_naming_a_path_is_refused_and_writes_nothing_outside() {
        let tmp = temp("path");
        let (cert, key) = Ca::new_root_pem("cluster.local").unwrap();
        let manifest = serde_json::json!({
            "signing": "ab",
            "roots": [{"sha256": "ab", "cert": "../evil-cert.pem", "key": "k.pem"}],
        });
        let data = data_of(&[
            (MANIFEST_FILE, manifest.to_string().as_bytes()),
            ("../evil-cert.pem", cert.as_bytes()),
            ("k.pem", key.as_bytes()),
        ]);
        let err = materialize(&data, &tmp.path().join("ca")).unwrap_err();
        assert!(err.to_string().contains("not a plain file name"), "{err}");
        assert!(!tmp.path().join("evil-cert.pem").exists());
    }

    #[test]
    fn a_step_the_ca_refuses_is_the_cas_error() {
        let tmp = temp("refused");
        let (cert, key) = Ca::new_root_pem("cluster.local").unwrap();
        let first = data_of(&[(TLS_CERT, cert.as_bytes()), (TLS_KEY, key.as_bytes())]);
        let err = try_step(
            &tmp.path().join("s"),
            &first,
            "cluster.local",
            &Step::Remove("00".into()),
        )
        .unwrap_err();
        assert!(
            matches!(err, SharedCaError::Ca(CaError::UnknownRoot(_))),
            "{err}"
        );
    }
}
