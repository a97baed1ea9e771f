//! The persisted set of trusted roots of a generated CA, in `DATA_DIR/ca/`.
//!
//! `roots.json` (0600) names every trusted root's certificate and key files and which
//! root signs. A data dir from before rotation has no manifest: its single
//! `root-cert.pem`/`root-key.pem` is read as a set of one, and the manifest is written
//! only when the set first changes, so the old layout keeps working untouched. Rotated
//! roots live in `root-<sha256 prefix>-cert.pem` (0644) and `...-key.pem` (0600).
//! The manifest is replaced atomically (temporary file, fsync, rename, fsync of the
//! directory): after a crash the CA is either before or after the change, never between.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ca::{
    hex, new_root, pem_blocks, sha256, write_new, CaError, ROOT_CERT_FILE, ROOT_KEY_FILE,
};

/// The manifest's file name inside the CA directory.
pub const MANIFEST_FILE: &str = "roots.json";

/// One trusted root's files, relative to the CA directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFiles {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub sha256: String,
    /// The certificate's file.
    pub cert: String,
    /// The key's file.
    pub key: String,
}

/// The trusted roots, in the order they were added, and the signing one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootSet {
    /// The signing root's SHA-256.
    pub signing: String,
    /// Every trusted root.
    pub roots: Vec<RootFiles>,
}

/// Where the manifest of `dir` lives.
pub fn manifest_path(dir: &Path) -> PathBuf {
    dir.join(MANIFEST_FILE)
}

impl RootSet {
    /// Reads the manifest of `dir`, or the pre-rotation single root.
    pub fn load(dir: &Path) -> Result<RootSet, CaError> {
        let path = manifest_path(dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let set: RootSet =
                    serde_json::from_slice(&bytes).map_err(|e| CaError::Invalid {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                if !set.roots.iter().any(|r| r.sha256 == set.signing) {
                    return Err(CaError::Invalid {
                        path,
                        reason: format!("the signing root {} is not in the set", set.signing),
                    });
                }
                Ok(set)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let legacy = RootFiles {
                    sha256: String::new(),
                    cert: ROOT_CERT_FILE.to_string(),
                    key: ROOT_KEY_FILE.to_string(),
                };
                let sha = hex(&sha256(&read_cert(dir, &legacy)?));
                Ok(RootSet {
                    signing: sha.clone(),
                    roots: vec![RootFiles {
                        sha256: sha,
                        ..legacy
                    }],
                })
            }
            Err(source) => Err(CaError::Io { path, source }),
        }
    }

    /// Replaces the manifest of `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        let path = manifest_path(dir);
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| CaError::Io { path: p, source }
        };
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| CaError::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        // A leftover from a crash mid-write is stale by definition.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(&bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))
    }

    /// The one root whose SHA-256 starts with `prefix` (hex, any case).
    pub fn find(&self, prefix: &str) -> Result<&RootFiles, CaError> {
        let prefix = prefix.trim().to_ascii_lowercase();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CaError::BadPrefix(format!(
                "{prefix:?} is not a sha256 prefix (hex digits, see `tandemctl ca status`)"
            )));
        }
        let mut hits = self.roots.iter().filter(|r| r.sha256.starts_with(&prefix));
        match (hits.next(), hits.next()) {
            (Some(r), None) => Ok(r),
            (None, _) => Err(CaError::UnknownRoot(prefix)),
            (Some(_), Some(_)) => Err(CaError::BadPrefix(format!(
                "{prefix:?} matches several roots: give more digits"
            ))),
        }
    }
}

/// The DER of a root's certificate.
pub fn read_cert(dir: &Path, root: &RootFiles) -> Result<Vec<u8>, CaError> {
    let path = dir.join(&root.cert);
    let text = std::fs::read_to_string(&path).map_err(|source| CaError::Io {
        path: path.clone(),
        source,
    })?;
    pem_blocks(&text, "CERTIFICATE")
        .into_iter()
        .next()
        .ok_or(CaError::Invalid {
            path,
            reason: "no PEM certificate in the file".into(),
        })
}

/// Generates a new root into `dir` (key 0600, certificate 0644) and names its files.
pub fn generate_into(dir: &Path, trust_domain: &str) -> Result<RootFiles, CaError> {
    let root = new_root(trust_domain)?;
    let stem = format!("root-{}", &root.sha256[..16]);
    let files = RootFiles {
        sha256: root.sha256.clone(),
        cert: format!("{stem}-cert.pem"),
        key: format!("{stem}-key.pem"),
    };
    write_new(&dir.join(&files.key), root.key_pem.as_bytes(), 0o600)?;
    write_new(&dir.join(&files.cert), root.cert_pem.as_bytes(), 0o644)?;
    Ok(files)
}

/// Deletes a removed root's files, the key first; failures are logged, not fatal (the
/// manifest no longer names them).
pub fn delete_files(dir: &Path, root: &RootFiles) {
    for file in [&root.key, &root.cert] {
        let path = dir.join(file);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not delete a removed root's file");
        }
    }
}
