//! `tandem-proxy wait-ready`: blocks until the proxy's admin port answers `/ready` with
//! 200. In legacy (non-native-sidecar) pods it is the proxy container's `postStart` hook:
//! the kubelet starts the app containers only once the hook returns, so the app never
//! starts before the proxy can carry its traffic.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use clap::Args;

/// `tandem-proxy wait-ready` flags.
#[derive(Debug, Clone, Args)]
pub struct WaitReadyArgs {
    /// The proxy's admin address.
    #[arg(long, env = "TANDEM_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,

    /// How long to wait before giving up (e.g. `120s`, `2m`).
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Polls `/ready` every 100 ms until it answers 200 or the timeout passes.
pub fn run(args: &WaitReadyArgs) -> Result<(), String> {
    let deadline = Instant::now() + args.timeout;
    loop {
        let last = match ready(args.admin_addr) {
            Ok(true) => return Ok(()),
            Ok(false) => "not ready".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "the proxy at {} was not ready within {:?} ({last})",
                args.admin_addr, args.timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `GET /ready`: whether it answered 200.
fn ready(addr: SocketAddr) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match stream.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    Ok(line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_after_the_timeout_with_the_reason() {
        // A port nothing listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = run(&WaitReadyArgs {
            admin_addr: addr,
            timeout: Duration::from_millis(250),
        })
        .unwrap_err();
        assert!(err.contains("was not ready"), "{err}");
    }

    #[test]
    fn returns_once_ready_answers_200() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let mut s = stream.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf);
                let status = if i == 0 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            }
        });
        run(&WaitReadyArgs {
            admin_addr: addr,
            timeout: Duration::from_secs(10),
        })
        .unwrap();
    }
}
