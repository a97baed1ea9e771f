//! `tandem-proxy init`: the redirection rules for this network namespace, from flags (or
//! `TANDEM_*` variables, as the injector sets them), printed with `--dry-run`, removed
//! with `--uninstall`.
//!
//! It is a subcommand of the proxy rather than its own binary so the pod pulls one image,
//! and so the ports and the UID the rules leave alone have one source of defaults with
//! the proxy that listens on them.

use std::path::Path;

use clap::{Args, ValueEnum};

use crate::intercept::iptables::{self, IptablesError};
use crate::intercept::rules::{self, Cidr, Family, Installed, PortRange, Settings};
use crate::intercept::DEFAULT_PROXY_UID;

/// `tandem-proxy init` flags; lists are comma-separated.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// The proxy's user id: its own connections are never redirected.
    #[arg(long, env = "TANDEM_PROXY_UID", default_value_t = DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,

    /// The proxy's inbound port, where connections to the pod are redirected.
    #[arg(long, env = "TANDEM_INBOUND_PORT", default_value_t = 15006)]
    pub inbound_port: u16,

    /// The proxy's outbound port, where connections from the pod are redirected.
    #[arg(long, env = "TANDEM_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,

    /// The proxy's admin port (probes, metrics): never redirected.
    #[arg(long, env = "TANDEM_ADMIN_PORT", default_value_t = 15000)]
    pub admin_port: u16,

    /// Inbound ports (or ranges `8000-8100`) that reach the app without the proxy.
    #[arg(long, env = "TANDEM_SKIP_INBOUND_PORTS", value_delimiter = ',')]
    pub skip_inbound_ports: Vec<String>,

    /// Outbound destination ports (or ranges) the app reaches without the proxy.
    #[arg(long, env = "TANDEM_SKIP_OUTBOUND_PORTS", value_delimiter = ',')]
    pub skip_outbound_ports: Vec<String>,

    /// Outbound destination networks (`10.0.0.0/8`, `fd00::/8`) reached without the
    /// proxy.
    #[arg(long, env = "TANDEM_SKIP_OUTBOUND_CIDRS", value_delimiter = ',')]
    pub skip_outbound_cidrs: Vec<String>,

    /// IPv6 rules: `auto` writes them when the kernel has IPv6.
    #[arg(long, env = "TANDEM_IPV6", value_enum, default_value_t = Ipv6::Auto)]
    pub ipv6: Ipv6,

    /// Print the rules (iptables-restore input) instead of applying them.
    #[arg(long)]
    pub dry_run: bool,

    /// Remove Tandem's rules instead of writing them.
    #[arg(long, conflicts_with = "dry_run")]
    pub uninstall: bool,
}

/// Whether to write IPv6 rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ipv6 {
    /// When the kernel has IPv6.
    Auto,
    /// Always (fails without ip6tables).
    On,
    /// Never.
    Off,
}

/// Why `init` failed; nothing was changed (see [`IptablesError`]).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A flag's value is malformed.
    #[error("--{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// iptables could not do it.
    #[error(transparent)]
    Iptables(#[from] IptablesError),
}

impl InitError {
    /// The exit status: 2 for a usage error, 1 for a failure to apply.
    pub fn exit_code(&self) -> i32 {
        match self {
            InitError::Flag { .. } => 2,
            InitError::Iptables(_) => 1,
        }
    }
}

/// Runs `init`; what it did is printed on stdout.
pub fn run(args: &InitArgs) -> Result<(), InitError> {
    let settings = settings(args)?;
    let families = families(args.ipv6);
    if args.dry_run {
        for &family in &families {
            println!("# {} (iptables-restore --noflush)", family_name(family));
            print!(
                "{}",
                rules::install(&settings, family, &Installed::default())
            );
        }
        return Ok(());
    }
    if args.uninstall {
        iptables::uninstall(&families)?;
        println!(
            "tandem-proxy init: removed Tandem's rules ({})",
            names(&families)
        );
    } else {
        iptables::install(&settings, &families)?;
        println!(
            "tandem-proxy init: TCP redirected to inbound port {} and outbound port {}, UID {} excluded ({})",
            settings.inbound_port,
            settings.outbound_port,
            settings.proxy_uid,
            names(&families)
        );
    }
    Ok(())
}

/// The rules' settings from the flags, every list item checked.
pub fn settings(args: &InitArgs) -> Result<Settings, InitError> {
    let ports = |flag: &'static str, items: &[String]| {
        items
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| PortRange::parse(s).map_err(|reason| InitError::Flag { flag, reason }))
            .collect::<Result<Vec<_>, _>>()
    };
    let cidrs = args
        .skip_outbound_cidrs
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            Cidr::parse(s).map_err(|reason| InitError::Flag {
                flag: "skip-outbound-cidrs",
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (flag, port) in [
        ("inbound-port", args.inbound_port),
        ("outbound-port", args.outbound_port),
        ("admin-port", args.admin_port),
    ] {
        if port == 0 {
            return Err(InitError::Flag {
                flag,
                reason: "must be 1-65535".into(),
            });
        }
    }
    if args.inbound_port == args.outbound_port {
        return Err(InitError::Flag {
            flag: "outbound-port",
            reason: "must differ from --inbound-port".into(),
        });
    }
    if args.proxy_uid == 0 {
        // Root's traffic would bypass the proxy entirely, and so would the app's if it
        // runs as root: almost certainly a mistake.
        return Err(InitError::Flag {
            flag: "proxy-uid",
            reason: "0 (root) would exclude every root process from the mesh".into(),
        });
    }
    Ok(Settings {
        proxy_uid: args.proxy_uid,
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        proxy_ports: vec![args.admin_port],
        skip_inbound_ports: ports("skip-inbound-ports", &args.skip_inbound_ports)?,
        skip_outbound_ports: ports("skip-outbound-ports", &args.skip_outbound_ports)?,
        skip_outbound_cidrs: cidrs,
    })
}

fn families(ipv6: Ipv6) -> Vec<Family> {
    let v6 = match ipv6 {
        Ipv6::On => true,
        Ipv6::Off => false,
        Ipv6::Auto => Path::new("/proc/net/if_inet6").exists(),
    };
    if v6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn names(families: &[Family]) -> String {
    families
        .iter()
        .map(|&f| family_name(f))
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    fn parse(args: &[&str]) -> Result<Settings, InitError> {
        let cli = Cli::try_parse_from(std::iter::once("init").chain(args.iter().copied()))
            .map_err(|e| InitError::Flag {
                flag: "parse",
                reason: e.to_string(),
            })?;
        settings(&cli.init)
    }

    #[test]
    fn lists_are_comma_separated_and_checked_with_the_flag_named() {
        let s = parse(&[
            "--skip-inbound-ports",
            "22,8000-8100",
            "--skip-outbound-cidrs",
            "10.0.0.0/8,fd00::/8",
            "--skip-outbound-ports",
            "",
        ])
        .unwrap();
        assert_eq!(
            s.skip_inbound_ports,
            vec![PortRange(22, 22), PortRange(8000, 8100)]
        );
        assert_eq!(s.skip_outbound_cidrs.len(), 2);
        assert!(s.skip_outbound_ports.is_empty());
        assert_eq!(s.proxy_uid, DEFAULT_PROXY_UID);

        let e = parse(&["--skip-inbound-ports", "22,http"]).unwrap_err();
        assert!(e.to_string().starts_with("--skip-inbound-ports:"), "{e}");
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["--skip-outbound-cidrs", "10.0.0.0/40"]).unwrap_err();
        assert!(e.to_string().starts_with("--skip-outbound-cidrs:"), "{e}");
        let e = parse(&["--proxy-uid", "0"]).unwrap_err();
        assert!(e.to_string().starts_with("--proxy-uid:"), "{e}");
        let e = parse(&["--outbound-port", "15006"]).unwrap_err();
        assert!(e.to_string().starts_with("--outbound-port:"), "{e}");
    }
}
