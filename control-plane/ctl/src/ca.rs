//! `tandemctl ca status|rotate|activate|remove|bundle`: the CA's trusted roots, their
//! rotation and the bundle; `tandemctl check`: expiry warnings for roots and proxy certificates.

use std::time::Duration;

use clap::Subcommand;
use http::Method;
use serde_json::Value;
use tandem_resources::clock::{rfc3339, unix_now};

use super::{output, CtlError, Format};
use crate::client::ApiClient;

/// `tandemctl ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Every trusted root: sha256, not-after (RFC 3339), signing or trusted.
    Status,
    /// Rotation step 1: generate a new root and add it to the trust bundle (not signing
    /// yet; proxies learn to trust it first).
    Rotate,
    /// Rotation step 2: make a trusted root the signing root; new certificates and new
    /// join tokens chain to it, the previous root stays trusted.
    Activate {
        /// The root's sha256, or a unique prefix of it.
        sha256: String,
    },
    /// Rotation step 3: stop trusting a root that no longer signs.
    Remove {
        /// The root's sha256, or a unique prefix of it.
        sha256: String,
    },
    /// The trust bundle (every trusted root), PEM: what verifies the control plane's
    /// certificates, and the `caBundle` of the injector's MutatingWebhookConfiguration.
    Bundle {
        /// Print it base64-encoded on one line, as `caBundle` takes it.
        #[arg(long)]
        base64: bool,
    },
}

/// Runs one `ca` command.
pub async fn run(
    client: &ApiClient,
    out: Option<Format>,
    command: CaCommand,
) -> Result<(), CtlError> {
    let (answer, said) = match command {
        CaCommand::Bundle { base64 } => {
            let answer = client.call(Method::GET, "/v1/ca/bundle", None).await?;
            return output::print(out, &answer, |a| {
                let pem = a["trust_bundle_pem"].as_str().unwrap_or_default();
                if base64 {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.encode(pem) + "\n"
                } else {
                    pem.to_string()
                }
            });
        }
        CaCommand::Status => (client.call(Method::GET, "/v1/ca/roots", None).await?, None),
        CaCommand::Rotate => (
            client.call(Method::POST, "/v1/ca/roots", None).await?,
            Some("added"),
        ),
        CaCommand::Activate { sha256 } => (
            client
                .call(
                    Method::POST,
                    &format!("/v1/ca/roots/{}/activate", segment(&sha256)?),
                    None,
                )
                .await?,
            Some("activated"),
        ),
        CaCommand::Remove { sha256 } => (
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/ca/roots/{}", segment(&sha256)?),
                    None,
                )
                .await?,
            Some("removed"),
        ),
    };
    output::print(out, &answer, |a| {
        let mut text = String::new();
        if let Some(what) = said {
            text.push_str(&format!(
                "{what} root {}\n",
                a[what]["sha256"].as_str().unwrap_or_default()
            ));
        }
        text.push_str(&roots_table(a));
        text
    })
}

/// A fingerprint prefix as a URL path segment: hex only, so nothing needs escaping.
fn segment(sha256: &str) -> Result<String, CtlError> {
    let s = sha256.trim().to_ascii_lowercase();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CtlError(format!(
            "{sha256:?} is not a sha256 prefix (hex digits, see `tandemctl ca status`)"
        )));
    }
    Ok(s)
}

fn roots_table(a: &Value) -> String {
    let mut rows = vec![vec![
        "SHA256".to_string(),
        "NOT AFTER".to_string(),
        "STATE".to_string(),
    ]];
    for r in a["roots"].as_array().into_iter().flatten() {
        rows.push(vec![
            r["sha256"].as_str().unwrap_or_default().to_string(),
            r["not_after_rfc3339"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            r["state"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    output::render(&rows)
}

/// One finding of `tandemctl check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `true`: a problem (exit code 1).
    pub problem: bool,
    /// The line.
    pub line: String,
}

/// Checks the roots of `roots` (`GET /v1/ca/roots`) and the proxies of `proxies`
/// (`GET /v1/ca/proxies`) at Unix time `now`: anything expiring within `window`, or
/// expired, is a problem. Pure, so it is tested without a control plane.
pub fn findings(roots: &Value, proxies: &Value, now: u64, window: Duration) -> Vec<Finding> {
    let horizon = now.saturating_add(window.as_secs());
    let judge = |what: String, not_after: u64| {
        let when = rfc3339(not_after);
        if not_after <= now {
            Finding {
                problem: true,
                line: format!("warn {what} expired at {when}"),
            }
        } else if not_after <= horizon {
            Finding {
                problem: true,
                line: format!(
                    "warn {what} expires at {when} (in {})",
                    human(not_after - now)
                ),
            }
        } else {
            Finding {
                problem: false,
                line: format!("ok   {what} expires at {when}"),
            }
        }
    };
    let mut out = Vec::new();
    for r in roots["roots"].as_array().into_iter().flatten() {
        let sha = r["sha256"].as_str().unwrap_or_default();
        let what = format!(
            "root {} ({})",
            sha.get(..16).unwrap_or(sha),
            r["state"].as_str().unwrap_or_default()
        );
        out.push(judge(what, r["not_after"].as_u64().unwrap_or(0)));
    }
    for p in proxies["items"].as_array().into_iter().flatten() {
        let who = match p["service"].as_str() {
            Some(svc) => format!("proxy {} ({svc})", p["node"].as_str().unwrap_or_default()),
            None => format!("proxy {}", p["node"].as_str().unwrap_or_default()),
        };
        match p["cert_expiry"].as_u64() {
            Some(t) => out.push(judge(format!("{who} certificate"), t)),
            // Not a problem by itself: a proxy without identity, or one not scraped yet.
            None if p["scraped"].as_bool() == Some(true) => out.push(Finding {
                problem: false,
                line: format!("ok   {who}: no workload certificate reported"),
            }),
            None => out.push(Finding {
                problem: false,
                line: format!("ok   {who}: not scraped yet, certificate expiry unknown"),
            }),
        }
        if let Some(t) = p["bundle_expiry"].as_u64() {
            out.push(judge(format!("{who} trust bundle"), t));
        }
    }
    out
}

/// `--warn-within`: whole days (`30d`), or a Gateway API duration (`12h`, `90m`).
pub fn parse_window(text: &str) -> Result<Duration, String> {
    match text.strip_suffix('d') {
        Some(days) if !days.is_empty() && days.bytes().all(|b| b.is_ascii_digit()) => days
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(86_400))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{text:?}: too many days")),
        _ => tandem_resources::duration::parse(text),
    }
}

/// `3d4h`, `5h12m`, `42m`, `30s`: the two largest units.
fn human(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// `tandemctl check`: one line per root and proxy certificate; exit 1 when any is a
/// problem.
pub async fn check(
    client: &ApiClient,
    out: Option<Format>,
    window: Duration,
) -> Result<(), CtlError> {
    let roots = client.call(Method::GET, "/v1/ca/roots", None).await?;
    let proxies = client.call(Method::GET, "/v1/ca/proxies", None).await?;
    let found = findings(&roots, &proxies, unix_now(), window);
    let problems = found.iter().filter(|f| f.problem).count();
    let answer = serde_json::json!({
        "problems": problems,
        "findings": found.iter().map(|f| serde_json::json!({"problem": f.problem, "line": f.line})).collect::<Vec<_>>(),
    });
    output::print(out, &answer, |_| {
        found.iter().map(|f| format!("{}\n", f.line)).collect()
    })?;
    if problems > 0 {
        return Err(CtlError(format!(
            "{problems} problem(s) within {}",
            human(window.as_secs())
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const DAY: u64 = 86_400;

    #[test]
    fn roots_and_proxies_within_the_window_or_expired_are_problems() {
        let now = 1_800_000_000;
        let roots = json!({"roots": [
            {"sha256": "aa".repeat(32), "state": "signing", "not_after": now + 400 * DAY},
            {"sha256": "bb".repeat(32), "state": "trusted", "not_after": now + 10 * DAY},
        ]});
        let proxies = json!({"items": [
            {"node": "web-1", "service": "web", "scraped": true, "cert_expiry": now + 3600, "bundle_expiry": now + 400 * DAY},
            {"node": "db-1", "scraped": true, "cert_expiry": now - 5},
            {"node": "new-1", "scraped": false},
        ]});
        let f = findings(&roots, &proxies, now, Duration::from_secs(30 * DAY));
        let lines: Vec<&str> = f.iter().map(|f| f.line.as_str()).collect();
        assert!(
            lines[0].starts_with("ok   root aaaaaaaaaaaaaaaa (signing) expires at 20"),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with("warn root bbbbbbbbbbbbbbbb (trusted) expires at")
                && lines[1].ends_with("(in 10d)"),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("warn proxy web-1 (web) certificate expires at")
                && lines[2].ends_with("(in 1h)"),
            "{lines:?}"
        );
        assert!(
            lines[3].starts_with("ok   proxy web-1 (web) trust bundle"),
            "{lines:?}"
        );
        assert!(
            lines[4].starts_with("warn proxy db-1 certificate expired at"),
            "{lines:?}"
        );
        assert_eq!(
            lines[5],
            "ok   proxy new-1: not scraped yet, certificate expiry unknown"
        );
        assert_eq!(f.iter().filter(|f| f.problem).count(), 3);
        // A one-day window: the 10-day root is no longer a problem.
        let f = findings(&roots, &json!({"items": []}), now, Duration::from_secs(DAY));
        assert!(f.iter().all(|f| !f.problem), "{f:?}");
    }

    #[test]
    fn the_window_takes_days_or_durations() {
        assert_eq!(parse_window("30d"), Ok(Duration::from_secs(30 * DAY)));
        assert_eq!(parse_window("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_window("d").is_err());
        assert!(parse_window("3w").is_err());
    }
}
