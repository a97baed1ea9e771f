//! The redirection rules, as `iptables-restore` input: pure functions of the settings
//! (and, to stay idempotent, of what `iptables-save` shows is already there).
//!
//! In the nat table, for TCP only (DNS over UDP and everything else is left alone):
//!
//! - `PREROUTING` → `TANDEM_INBOUND`: connections arriving at the pod go to the inbound
//!   port, except to the proxy's own ports and the skipped inbound ports. REDIRECT keeps
//!   the original destination for `SO_ORIGINAL_DST`.
//! - `OUTPUT` → `TANDEM_OUTPUT`: connections the pod makes go to the outbound port,
//!   except the proxy's own (by UID, so it never loops), loopback destinations, the pod's
//!   calls to itself, and the skipped outbound ports and CIDRs. The proxy's own calls to
//!   its pod's IP (a balanced request that picked this very pod) go in through the inbound
//!   port like any mesh call; the inbound side's connections to the app come from
//!   [`INBOUND_SOURCE`](super::INBOUND_SOURCE) and pass (IPv4; see `docs/kubernetes.md`
//!   for IPv6).
//!
//! Every rule lives in Tandem's own chains; the only rules outside them are the two jumps,
//! so removing Tandem's rules leaves everything else as it was.

use std::fmt::Write;
use std::net::IpAddr;

use super::INBOUND_SOURCE;

/// Chain that `PREROUTING` jumps to.
pub const INBOUND_CHAIN: &str = "TANDEM_INBOUND";
/// Chain that redirects to the inbound port.
pub const IN_REDIRECT_CHAIN: &str = "TANDEM_IN_REDIRECT";
/// Chain that `OUTPUT` jumps to.
pub const OUTPUT_CHAIN: &str = "TANDEM_OUTPUT";
/// Chain that redirects to the outbound port.
pub const OUT_REDIRECT_CHAIN: &str = "TANDEM_OUT_REDIRECT";
/// Every chain Tandem owns.
pub const CHAINS: [&str; 4] = [
    INBOUND_CHAIN,
    IN_REDIRECT_CHAIN,
    OUTPUT_CHAIN,
    OUT_REDIRECT_CHAIN,
];

/// The jump from `PREROUTING`, as `iptables-save` prints it.
pub const PREROUTING_JUMP: &str = "-A PREROUTING -p tcp -j TANDEM_INBOUND";
/// The jump from `OUTPUT`, as `iptables-save` prints it.
pub const OUTPUT_JUMP: &str = "-A OUTPUT -p tcp -j TANDEM_OUTPUT";

/// IPv4 or IPv6: one table each, `iptables` and `ip6tables`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

impl Family {
    /// The loopback address, as a CIDR.
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// Whether `ip` belongs to this family.
    fn holds(self, ip: IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// A port or an inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl PortRange {
    /// `80` or `8000-8100` (`8000:8100` also accepted, as iptables writes it).
    pub fn parse(s: &str) -> Result<Self, String> {
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{p:?} is not a port (1-65535)")),
            }
        };
        match s.split_once(['-', ':']) {
            None => Ok(PortRange(port(s)?, port(s)?)),
            Some((a, b)) => {
                let (a, b) = (port(a)?, port(b)?);
                if a > b {
                    return Err(format!("{s:?}: the range ends before it starts"));
                }
                Ok(PortRange(a, b))
            }
        }
    }

    fn iptables(self) -> String {
        if self.0 == self.1 {
            self.0.to_string()
        } else {
            format!("{}:{}", self.0, self.1)
        }
    }
}

/// An IP network, `10.0.0.0/8` or `fd00::/8` (a bare address is one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub ip: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ip/len` or `ip`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.trim().split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s.trim(), None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR (10.0.0.0/8, fd00::/8)"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(len) => match len.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0-{max}")),
            },
        };
        Ok(Cidr { ip, prefix })
    }
}

/// What the rules redirect and what they leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The proxy's user id: its connections are never redirected.
    pub proxy_uid: u32,
    /// Where inbound connections are redirected.
    pub inbound_port: u16,
    /// Where outbound connections are redirected.
    pub outbound_port: u16,
    /// The proxy's other ports (admin), never redirected inbound.
    pub proxy_ports: Vec<u16>,
    /// Inbound ports left alone.
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports left alone.
    pub skip_outbound_ports: Vec<PortRange>,
    /// Outbound destinations left alone.
    pub skip_outbound_cidrs: Vec<Cidr>,
}

/// What `iptables-save -t nat` shows of Tandem's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Tandem's chains that exist.
    pub chains: Vec<String>,
    /// How many times each jump is there (`PREROUTING`, `OUTPUT`).
    pub jumps: (usize, usize),
}

impl Installed {
    /// Reads the output of `iptables-save -t nat`.
    pub fn from_save(save: &str) -> Self {
        let mut out = Installed::default();
        for line in save.lines().map(str::trim) {
            if let Some(chain) = line.strip_prefix(':') {
                let name = chain.split_whitespace().next().unwrap_or_default();
                if CHAINS.contains(&name) {
                    out.chains.push(name.to_string());
                }
            } else if line == PREROUTING_JUMP {
                out.jumps.0 += 1;
            } else if line == OUTPUT_JUMP {
                out.jumps.1 += 1;
            }
        }
        out
    }

    /// Whether nothing of Tandem's is there.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps == (0, 0)
    }
}

/// The `iptables-restore --noflush` input that installs the rules for `family`, replacing
/// Tandem's chains wholesale (declaring a chain flushes it) and adding each jump only if
/// it is not there yet: running it twice gives the same rules.
pub fn install(settings: &Settings, family: Family, installed: &Installed) -> String {
    let mut out = String::from("*nat\n");
    for chain in CHAINS {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    let uid = settings.proxy_uid;
    let _ = writeln!(
        out,
        "-A {IN_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        settings.inbound_port
    );
    let _ = writeln!(
        out,
        "-A {OUT_REDIRECT_CHAIN} -p tcp -j REDIRECT --to-ports {}",
        settings.outbound_port
    );

    // Inbound: the proxy's own ports first, then the skip list, then the redirect.
    let mut own = vec![settings.inbound_port, settings.outbound_port];
    own.extend(&settings.proxy_ports);
    own.sort_unstable();
    own.dedup();
    for port in own {
        let _ = writeln!(out, "-A {INBOUND_CHAIN} -p tcp --dport {port} -j RETURN");
    }
    for r in &settings.skip_inbound_ports {
        let _ = writeln!(
            out,
            "-A {INBOUND_CHAIN} -p tcp --dport {} -j RETURN",
            r.iptables()
        );
    }
    let _ = writeln!(out, "-A {INBOUND_CHAIN} -p tcp -j {IN_REDIRECT_CHAIN}");

    // Outbound.
    let loopback = family.loopback();
    if family == Family::V4 {
        let _ = writeln!(
            out,
            "-A {OUTPUT_CHAIN} -s {INBOUND_SOURCE}/32 -o lo -j RETURN"
        );
        let _ = writeln!(
            out,
            "-A {OUTPUT_CHAIN} ! -d {loopback} -o lo -m owner --uid-owner {uid} -j {IN_REDIRECT_CHAIN}"
        );
    }
    let _ = writeln!(
        out,
        "-A {OUTPUT_CHAIN} -o lo -m owner ! --uid-owner {uid} -j RETURN"
    );
    let _ = writeln!(
        out,
        "-A {OUTPUT_CHAIN} -m owner --uid-owner {uid} -j RETURN"
    );
    let _ = writeln!(out, "-A {OUTPUT_CHAIN} -d {loopback} -j RETURN");
    for r in &settings.skip_outbound_ports {
        let _ = writeln!(
            out,
            "-A {OUTPUT_CHAIN} -p tcp --dport {} -j RETURN",
            r.iptables()
        );
    }
    for c in settings
        .skip_outbound_cidrs
        .iter()
        .filter(|c| family.holds(c.ip))
    {
        let _ = writeln!(out, "-A {OUTPUT_CHAIN} -d {}/{} -j RETURN", c.ip, c.prefix);
    }
    let _ = writeln!(out, "-A {OUTPUT_CHAIN} -j {OUT_REDIRECT_CHAIN}");

    if installed.jumps.0 == 0 {
        let _ = writeln!(out, "{PREROUTING_JUMP}");
    }
    if installed.jumps.1 == 0 {
        let _ = writeln!(out, "{OUTPUT_JUMP}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` input that removes everything [`install`] added and
/// that `installed` shows is there; `None` when there is nothing to remove.
pub fn uninstall(installed: &Installed) -> Option<String> {
    if installed.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for _ in 0..installed.jumps.0 {
        let _ = writeln!(out, "-D{}", &PREROUTING_JUMP[2..]);
    }
    for _ in 0..installed.jumps.1 {
        let _ = writeln!(out, "-D{}", &OUTPUT_JUMP[2..]);
    }
    // Emptied first, all of them, so no chain is deleted while another still jumps to it.
    for chain in &installed.chains {
        let _ = writeln!(out, "-F {chain}");
    }
    for chain in &installed.chains {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            proxy_uid: 2102,
            inbound_port: 15006,
            outbound_port: 15001,
            proxy_ports: vec![15000],
            skip_inbound_ports: vec![PortRange(22, 22)],
            skip_outbound_ports: vec![PortRange(25, 25), PortRange(3306, 3310)],
            skip_outbound_cidrs: vec![
                Cidr::parse("169.254.169.254").unwrap(),
                Cidr::parse("fd00::/8").unwrap(),
            ],
        }
    }

    #[test]
    fn ipv4_rules_redirect_both_ways_and_leave_the_proxy_alone() {
        let rules = install(&settings(), Family::V4, &Installed::default());
        let lines: Vec<&str> = rules.lines().collect();
        // The proxy's own traffic returns before anything redirects it.
        let uid = lines
            .iter()
            .position(|l| *l == "-A TANDEM_OUTPUT -m owner --uid-owner 2102 -j RETURN")
            .unwrap();
        let redirect = lines
            .iter()
            .position(|l| *l == "-A TANDEM_OUTPUT -j TANDEM_OUT_REDIRECT")
            .unwrap();
        assert!(uid < redirect);
        for want in [
            "-A TANDEM_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A TANDEM_OUT_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A TANDEM_INBOUND -p tcp --dport 15000 -j RETURN",
            "-A TANDEM_INBOUND -p tcp --dport 22 -j RETURN",
            "-A TANDEM_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
            "-A TANDEM_OUTPUT -p tcp --dport 3306:3310 -j RETURN",
            "-A TANDEM_OUTPUT -d 169.254.169.254/32 -j RETURN",
            "-A TANDEM_OUTPUT -d 127.0.0.1/32 -j RETURN",
            PREROUTING_JUMP,
            OUTPUT_JUMP,
        ] {
            assert!(lines.contains(&want), "missing {want:?} in\n{rules}");
        }
        assert!(!rules.contains("fd00::"), "an IPv6 CIDR in IPv4 rules");
        assert!(rules.starts_with("*nat\n") && rules.ends_with("COMMIT\n"));
    }

    #[test]
    fn ipv6_rules_use_ipv6_loopback_and_cidrs_only() {
        let rules = install(&settings(), Family::V6, &Installed::default());
        assert!(rules.contains("-A TANDEM_OUTPUT -d ::1/128 -j RETURN"));
        assert!(rules.contains("-A TANDEM_OUTPUT -d fd00::/8 -j RETURN"));
        assert!(!rules.contains("169.254"));
        assert!(!rules.contains("127.0.0.6"));
    }

    #[test]
    fn installing_again_adds_no_second_jump_and_uninstall_removes_what_is_there() {
        let first = install(&settings(), Family::V4, &Installed::default());
        // What iptables-save prints once the first install is in.
        let saved = format!(
            "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{}",
            first.lines().skip(1).collect::<Vec<_>>().join("\n")
        );
        let installed = Installed::from_save(&saved);
        assert_eq!(installed.jumps, (1, 1));
        assert_eq!(installed.chains.len(), 4);
        let again = install(&settings(), Family::V4, &installed);
        assert!(!again.contains(PREROUTING_JUMP) && !again.contains(OUTPUT_JUMP));
        let undo = uninstall(&installed).unwrap();
        assert!(undo.contains("-D PREROUTING -p tcp -j TANDEM_INBOUND\n"));
        assert!(undo.contains("-X TANDEM_OUT_REDIRECT\n"));
        let flush = undo.find("-F TANDEM_OUTPUT").unwrap();
        let delete = undo.find("-X TANDEM_INBOUND").unwrap();
        assert!(flush < delete, "every chain emptied before any is deleted");
        assert_eq!(uninstall(&Installed::default()), None);
    }

    #[test]
    fn ports_and_cidrs_parse_or_say_why_not() {
        assert_eq!(PortRange::parse("80").unwrap(), PortRange(80, 80));
        assert_eq!(
            PortRange::parse("8000-8100").unwrap(),
            PortRange(8000, 8100)
        );
        assert_eq!(
            PortRange::parse("8000:8100").unwrap(),
            PortRange(8000, 8100)
        );
        for bad in ["0", "70000", "http", "90-80", ""] {
            assert!(PortRange::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().prefix, 8);
        assert_eq!(Cidr::parse("fd00::1").unwrap().prefix, 128);
        for bad in ["10.0.0.0/33", "fd00::/129", "example.com", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
    }
}
