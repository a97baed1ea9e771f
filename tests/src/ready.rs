//! The proxy's ready line: `tandem-proxy ready outbound=A inbound=A admin=A [service.NAME=A ...]`.

use std::collections::HashMap;
use std::net::SocketAddr;

/// The addresses announced by the ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyLine {
    /// `outbound=`
    pub outbound: SocketAddr,
    /// `inbound=`
    pub inbound: SocketAddr,
    /// `admin=`
    pub admin: SocketAddr,
    /// `service.NAME=` entries.
    pub services: HashMap<String, SocketAddr>,
}

/// Parses `tandem-proxy ready outbound=A inbound=A admin=A [service.NAME=A ...]`.
pub fn parse_ready_line(line: &str) -> Result<ReadyLine, String> {
    let rest = line
        .trim_end()
        .strip_prefix("tandem-proxy ready ")
        .ok_or("not a ready line")?;
    let (mut outbound, mut inbound, mut admin) = (None, None, None);
    let mut services = HashMap::new();
    for token in rest.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| format!("token {token:?} is not key=value"))?;
        let addr: SocketAddr = value
            .parse()
            .map_err(|e| format!("{key}: bad address {value:?}: {e}"))?;
        match key {
            "outbound" => outbound = Some(addr),
            "inbound" => inbound = Some(addr),
            "admin" => admin = Some(addr),
            _ => match key.strip_prefix("service.") {
                Some(name) => {
                    services.insert(name.to_owned(), addr);
                }
                None => return Err(format!("unknown key {key:?}")),
            },
        }
    }
    Ok(ReadyLine {
        outbound: outbound.ok_or("no outbound=")?,
        inbound: inbound.ok_or("no inbound=")?,
        admin: admin.ok_or("no admin=")?,
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_line_with_services() {
        let r = parse_ready_line(
            "tandem-proxy ready outbound=127.0.0.1:1 inbound=0.0.0.0:2 admin=127.0.0.1:3 service.db=127.0.0.1:4\n",
        )
        .unwrap();
        assert_eq!(r.outbound.port(), 1);
        assert_eq!(r.inbound.port(), 2);
        assert_eq!(r.admin.port(), 3);
        assert_eq!(r.services["db"].port(), 4);
        assert!(parse_ready_line("tandem-proxy ready outbound=127.0.0.1:1").is_err());
    }
}
