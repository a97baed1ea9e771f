//! What a proxy reports beyond its metrics, as the control plane can ask for it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogTarget {
    /// The proxy's standard output (the container log in Kubernetes).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl AccessLogTarget {
    /// `stdout` (or `-`) or a file path, as the proxy's `--access-log` takes it.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" => Err("expected `stdout` or a file path".to_string()),
            "stdout" | "-" => Ok(AccessLogTarget::Stdout),
            path => Ok(AccessLogTarget::File(PathBuf::from(path))),
        }
    }

    /// `stdout` or an absolute file path: what a proxy accepts from the control plane,
    /// which cannot know the proxy's working directory.
    pub fn parse_remote(s: &str) -> Result<Self, String> {
        match Self::parse(s)? {
            AccessLogTarget::File(p) if !p.is_absolute() => {
                Err(format!("{s:?}: expected `stdout` or an absolute file path"))
            }
            t => Ok(t),
        }
    }
}

impl std::fmt::Display for AccessLogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessLogTarget::Stdout => f.write_str("stdout"),
            AccessLogTarget::File(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_as_flags_and_as_the_control_plane_sends_them() {
        assert_eq!(
            AccessLogTarget::parse("stdout"),
            Ok(AccessLogTarget::Stdout)
        );
        assert_eq!(AccessLogTarget::parse("-"), Ok(AccessLogTarget::Stdout));
        assert_eq!(
            AccessLogTarget::parse("a.log"),
            Ok(AccessLogTarget::File("a.log".into()))
        );
        assert!(AccessLogTarget::parse(" ").is_err());
        assert!(AccessLogTarget::parse_remote("a.log").is_err());
        assert_eq!(
            AccessLogTarget::parse_remote("/var/log/a.log"),
            Ok(AccessLogTarget::File("/var/log/a.log".into()))
        );
        assert_eq!(AccessLogTarget::File("/x".into()).to_string(), "/x");
    }
}
