//! The admin token: generated on first start into `DATA_DIR/admin-token` (mode 0600),
//! required as `Authorization: Bearer <token>` on every API request, compared in
//! constant time.

use std::path::{Path, PathBuf};

/// The token file's name inside the data dir (defined with the resource model, which
/// `tandemctl` shares).
pub use crate::resources::TOKEN_FILE;

/// Why the token could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[error("admin token {path}: {source}")]
pub struct TokenError {
    /// The token file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// The admin token.
#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// Reads `dir/admin-token`, or creates it with 32 random bytes (hex) and mode 0600.
    pub fn load_or_create(dir: &Path) -> Result<AdminToken, TokenError> {
        let path = dir.join(TOKEN_FILE);
        let err = |source| TokenError {
            path: path.clone(),
            source,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => return Ok(AdminToken(text.trim().to_string())),
            Ok(_) => {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "empty token file",
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        std::fs::create_dir_all(dir).map_err(err)?;
        let token = crate::util::random_hex(32).map_err(err)?;
        crate::util::write_new(&path, format!("{token}\n").as_bytes(), 0o600).map_err(err)?;
        Ok(AdminToken(token))
    }

    /// A token from its text (for tests and clients).
    pub fn from_text(text: &str) -> AdminToken {
        AdminToken(text.trim().to_string())
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value carries this token as a bearer token.
    pub fn verify(&self, authorization: Option<&http::HeaderValue>) -> bool {
        let Some(value) = authorization.and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let Some((scheme, token)) = value.split_once(' ') else {
            return false;
        };
        scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(token.trim(), &self.0)
    }
}

/// Compares without an early exit on the first differing byte.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn token_is_created_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("tandem-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let t1 = AdminToken::load_or_create(&dir).unwrap();
        assert_eq!(t1.as_str().len(), 64);
        let mode = std::fs::metadata(dir.join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let t2 = AdminToken::load_or_create(&dir).unwrap();
        assert_eq!(t1.as_str(), t2.as_str());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn verify_wants_the_exact_bearer_token() {
        let t = AdminToken::from_text("abc");
        let h = |s: &str| http::HeaderValue::from_str(s).unwrap();
        assert!(t.verify(Some(&h("Bearer abc"))));
        assert!(t.verify(Some(&h("bearer abc"))));
        assert!(!t.verify(Some(&h("Bearer abcd"))));
        assert!(!t.verify(Some(&h("Bearer ab"))));
        assert!(!t.verify(Some(&h("Basic abc"))));
        assert!(!t.verify(None));
    }
}
