//! Applying and removing the [`rules`](super::rules) with `iptables-restore`, one atomic
//! commit per family, all or nothing: every tool is found and every table read before
//! anything changes, and if the IPv6 commit fails the IPv4 table is put back as it was.

use std::io::Write;
use std::process::{Command, Stdio};

use super::rules::{self, Family, Installed, Settings};

/// Why the rules could not be applied or removed. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// A tool is not installed.
    #[error("{tool} not found ({source}): install iptables (Debian: apt-get install -y iptables); nothing was changed")]
    Missing {
        /// The command.
        tool: String,
        /// Why it could not run.
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{tool} failed: {stderr}")]
    Failed {
        /// The command line.
        tool: String,
        /// What it said.
        stderr: String,
    },
    /// The rules failed and putting the table back failed too: the one case where the
    /// state is not what it was, said plainly.
    #[error("{first}; restoring the earlier {family} nat table also failed: {second}")]
    RollbackFailed {
        /// The first failure.
        first: Box<IptablesError>,
        /// The family left changed.
        family: &'static str,
        /// The rollback's failure.
        second: Box<IptablesError>,
    },
}

/// The commands of one family.
#[derive(Debug, Clone, Copy)]
struct Tools {
    save: &'static str,
    restore: &'static str,
    name: &'static str,
}

fn tools(family: Family) -> Tools {
    match family {
        Family::V4 => Tools {
            save: "iptables-save",
            restore: "iptables-restore",
            name: "IPv4",
        },
        Family::V6 => Tools {
            save: "ip6tables-save",
            restore: "ip6tables-restore",
            name: "IPv6",
        },
    }
}

/// One family's table as it was, and the input that changes it.
struct Plan {
    family: Family,
    before: String,
    change: Option<String>,
}

/// Installs the rules for `families`, replacing Tandem's earlier rules if any.
pub fn install(settings: &Settings, families: &[Family]) -> Result<(), IptablesError> {
    let plans = families
        .iter()
        .map(|&family| {
            let before = save(family)?;
            let change = rules::install(settings, family, &Installed::from_save(&before));
            Ok(Plan {
                family,
                before,
                change: Some(change),
            })
        })
        .collect::<Result<Vec<_>, IptablesError>>()?;
    commit_all(&plans)
}

/// Removes Tandem's rules from `families`; nothing to remove is not an error.
pub fn uninstall(families: &[Family]) -> Result<(), IptablesError> {
    let plans = families
        .iter()
        .map(|&family| {
            let before = save(family)?;
            let change = rules::uninstall(&Installed::from_save(&before));
            Ok(Plan {
                family,
                before,
                change,
            })
        })
        .collect::<Result<Vec<_>, IptablesError>>()?;
    commit_all(&plans)
}

/// What is installed now, per family (for tests and `--dry-run` on a live namespace).
pub fn installed(family: Family) -> Result<Installed, IptablesError> {
    Ok(Installed::from_save(&save(family)?))
}

/// Commits each plan in turn; on a failure, puts the tables already changed back.
fn commit_all(plans: &[Plan]) -> Result<(), IptablesError> {
    for (i, plan) in plans.iter().enumerate() {
        let Some(change) = &plan.change else {
            continue;
        };
        if let Err(first) = restore(plan.family, change, true) {
            for done in plans[..i].iter().rev().filter(|p| p.change.is_some()) {
                if let Err(second) = restore(done.family, &done.before, false) {
                    return Err(IptablesError::RollbackFailed {
                        first: Box::new(first),
                        family: tools(done.family).name,
                        second: Box::new(second),
                    });
                }
            }
            return Err(first);
        }
    }
    Ok(())
}

/// `iptables-save -t nat`.
fn save(family: Family) -> Result<String, IptablesError> {
    let t = tools(family);
    let out = Command::new(t.save)
        .args(["-t", "nat"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| IptablesError::Missing {
            tool: t.save.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(IptablesError::Failed {
            tool: format!("{} -t nat", t.save),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `iptables-restore [--noflush]` with `input` on stdin: one atomic commit. Without
/// `--noflush` the nat table becomes exactly `input` (a rollback to a saved table).
fn restore(family: Family, input: &str, noflush: bool) -> Result<(), IptablesError> {
    let t = tools(family);
    let mut cmd = Command::new(t.restore);
    if noflush {
        cmd.arg("--noflush");
    }
    let tool = format!("{} {}", t.restore, if noflush { "--noflush" } else { "" });
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| IptablesError::Missing {
            tool: t.restore.to_string(),
            source,
        })?;
    // A tool that fails early stops reading: its own words say more than the broken pipe.
    let written = match child.stdin.take() {
        Some(mut stdin) => stdin.write_all(input.as_bytes()),
        None => Ok(()),
    };
    let out = child
        .wait_with_output()
        .map_err(|e| IptablesError::Failed {
            tool: tool.clone(),
            stderr: e.to_string(),
        })?;
    match (out.status.success(), written) {
        (true, Ok(())) => Ok(()),
        (true, Err(e)) => Err(IptablesError::Failed {
            tool: tool.trim().to_string(),
            stderr: format!("cannot write the rules: {e}"),
        }),
        (false, _) => Err(IptablesError::Failed {
            tool: tool.trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}
