//! `tandem-pod-app`: an application that knows nothing of the mesh, for the pod tests
//! (`tests/tests/pods.rs`), run inside a network namespace as a "pod".
//!
//! - `tandem-pod-app serve NAME HTTP_PORT [HTTP_PORT...] [--tcp PORT]`: answers every
//!   HTTP/1.1 request (keep-alive) with a body of lines `app=NAME`, `port=P` (the port it
//!   was received on), `peer=IP` and `xfcc=...` (the `x-forwarded-client-cert` header
//!   the sidecar adds), and echoes TCP on `--tcp` after a first line `peer=IP`. Prints
//!   `ready` once every port listens.
//! - `tandem-pod-app tcp ADDR MESSAGE`: connects, sends MESSAGE, half-closes, prints what
//!   comes back.
//!
//! Plain std and threads: it stands for any app, so it uses nothing of the test harness.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("tcp") if args.len() == 3 => tcp_client(&args[1], &args[2]),
        _ => {
            eprintln!("usage: tandem-pod-app serve NAME PORT... [--tcp PORT] | tcp ADDR MESSAGE");
            std::process::exit(2);
        }
    }
}

fn serve(args: &[String]) {
    let Some((name, rest)) = args.split_first() else {
        eprintln!("serve: NAME required");
        std::process::exit(2);
    };
    let mut http = Vec::new();
    let mut tcp = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--tcp" {
            tcp = it.next().and_then(|p| p.parse::<u16>().ok());
        } else if let Ok(p) = a.parse::<u16>() {
            http.push(p);
        }
    }
    for port in http {
        let listener = bind(port);
        let name = name.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let name = name.clone();
                std::thread::spawn(move || http_connection(stream, &name, port));
            }
        });
    }
    if let Some(port) = tcp {
        let listener = bind(port);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || echo(stream));
            }
        });
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}

fn bind(port: u16) -> TcpListener {
    match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on {port}: {e}");
            std::process::exit(1);
        }
    }
}

/// Serves requests on one connection until the client closes it.
fn http_connection(stream: TcpStream, name: &str, port: u16) {
    let peer = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.trim().is_empty() {
            continue;
        }
        let mut xfcc = String::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "x-forwarded-client-cert" => xfcc = v.trim().to_string(),
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let text = format!("app={name}\nport={port}\npeer={peer}\nxfcc={xfcc}\n");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-pod-app: {name}\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn echo(mut stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    if writeln!(stream, "peer={peer}").is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
}

fn tcp_client(addr: &str, message: &str) {
    let run = || -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        s.write_all(message.as_bytes())?;
        s.shutdown(Shutdown::Write)?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    match run() {
        Ok(out) => print!("{out}"),
        Err(e) => {
            eprintln!("tcp {addr}: {e}");
            std::process::exit(1);
        }
    }
}
