//! `bench-load`: an open-loop, fixed-rate HTTP/1.1 load generator for latency percentiles.
//!
//! Requests are scheduled at `start + i / rate`, whatever happened to earlier requests. A
//! pacer thread wakes at each scheduled time (a plain `nanosleep`, tens of microseconds of
//! slack, where tokio's timer would round to whole milliseconds) and hands the slot to the
//! first idle keep-alive connection. Latency is measured from the slot's *scheduled* time
//! to the end of the response body, so a stalled target is charged for every request that
//! queued behind the stall: no coordinated omission (the wrk2 approach). Every sample is
//! kept and sorted, so percentiles are exact (nearest rank), not bucketed.
//!
//! ```text
//! bench-load --url http://127.0.0.1:8080/ [--host NAME] [--rate 2000] [--duration 15]
//!            [--warmup 2] [--connections 16] [--timeout 5]
//! ```
//!
//! Prints one line of `key=value` pairs on stdout, latencies in microseconds:
//! `scheduled= ok= errors= non2xx= late= rate= p50_us= p90_us= p99_us= p999_us= max_us= mean_us=`.
//! `late` counts slots dropped because the run's hard deadline had passed (target too slow);
//! `lag_*` is how long after its scheduled time a slot reached a connection (the generator's
//! own scheduling delay, part of every latency sample; it cancels out in "added latency").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

/// How long after the last scheduled slot queued work may still run before it is dropped.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

struct Args {
    addr: SocketAddr,
    path: String,
    host: String,
    rate: f64,
    duration: f64,
    warmup: f64,
    connections: usize,
    timeout: Duration,
}

/// One scheduled request.
struct Slot {
    due: Instant,
    measured: bool,
}

#[derive(Default)]
struct Tally {
    samples_ns: Vec<u64>,
    lag_ns: Vec<u64>,
    ok: u64,
    errors: u64,
    non2xx: u64,
    late: u64,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench-load --url http://IP:PORT/PATH [--host NAME] [--rate N] [--duration S] \
         [--warmup S] [--connections N] [--timeout S]"
    );
    std::process::exit(2);
}

fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("--url: only http://IP:PORT/... is supported")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let addr = authority
        .parse()
        .map_err(|e| format!("--url: {authority}: {e} (use an IP address)"))?;
    Ok((addr, path))
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut host = None;
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        path: "/".into(),
        host: String::new(),
        rate: 2000.0,
        duration: 15.0,
        warmup: 2.0,
        connections: 16,
        timeout: Duration::from_secs(5),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            usage();
        }
        let value = it.next().ok_or_else(|| format!("{flag}: missing value"))?;
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| format!("{flag}: not a non-negative number: {v}"))
        };
        match flag.as_str() {
            "--url" => url = Some(value),
            "--host" => host = Some(value),
            "--rate" => args.rate = num(&value)?,
            "--duration" => args.duration = num(&value)?,
            "--warmup" => args.warmup = num(&value)?,
            "--connections" => args.connections = num(&value)? as usize,
            "--timeout" => args.timeout = Duration::from_secs_f64(num(&value)?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    (args.addr, args.path) = parse_url(&url)?;
    args.host = host.unwrap_or_else(|| args.addr.to_string());
    if args.rate < 1.0 || args.duration <= 0.0 || args.connections == 0 {
        return Err("--rate ≥ 1, --duration > 0 and --connections ≥ 1 are required".into());
    }
    Ok(args)
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends one request on `sender` and reads the whole response. `Ok(status)` or an error.
async fn exchange(sender: &mut SendRequest<Empty<Bytes>>, args: &Args) -> Result<u16, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get(args.path.as_str())
        .header(HOST, args.host.as_str())
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

async fn worker(
    args: Arc<Args>,
    slots: Arc<Mutex<mpsc::UnboundedReceiver<Slot>>>,
    mut sender: Option<SendRequest<Empty<Bytes>>>,
    hard_deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let slot = {
            let mut rx = slots.lock().await;
            rx.recv().await
        };
        let Some(slot) = slot else { break };
        let picked = Instant::now();
        if picked > hard_deadline {
            tally.late += 1;
            continue;
        }
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(args.addr).await.ok();
        }
        let result = match sender.as_mut() {
            Some(s) => tokio::time::timeout(args.timeout, exchange(s, &args))
                .await
                .unwrap_or_else(|_| Err("timeout".into())),
            None => Err("not connected".into()),
        };
        let done = Instant::now();
        if result.is_err() {
            // The connection's state is unknown after a failure: start a fresh one.
            sender = None;
        }
        if !slot.measured {
            continue;
        }
        let lag = picked.saturating_duration_since(slot.due).as_nanos();
        tally.lag_ns.push(u64::try_from(lag).unwrap_or(u64::MAX));
        match result {
            Ok(status) => {
                tally.ok += 1;
                if !(200..300).contains(&status) {
                    tally.non2xx += 1;
                }
                let ns = done.saturating_duration_since(slot.due).as_nanos();
                tally.samples_ns.push(u64::try_from(ns).unwrap_or(u64::MAX));
            }
            Err(_) => tally.errors += 1,
        }
    }
    tally
}

/// Nearest-rank percentile of sorted samples, in microseconds.
fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

fn pace(tx: mpsc::UnboundedSender<Slot>, start: Instant, rate: f64, warmup: u64, total: u64) {
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let slot = Slot {
            due,
            measured: i >= warmup,
        };
        if tx.send(slot).is_err() {
            return;
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let args = Arc::new(args);
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(connect(args.addr).await?);
    }
    let warmup = (args.warmup * args.rate).round() as u64;
    let measured = (args.duration * args.rate).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let hard_deadline = start + Duration::from_secs_f64(args.warmup + args.duration) + DRAIN_GRACE;

    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(rx));
    let workers: Vec<_> = senders
        .into_iter()
        .map(|s| tokio::spawn(worker(args.clone(), rx.clone(), Some(s), hard_deadline)))
        .collect();
    let rate = args.rate;
    let pacer = std::thread::spawn(move || pace(tx, start, rate, warmup, warmup + measured));

    let mut total = Tally::default();
    for w in workers {
        let t = w.await.map_err(|e| format!("worker: {e}"))?;
        total.samples_ns.extend(t.samples_ns);
        total.lag_ns.extend(t.lag_ns);
        total.ok += t.ok;
        total.errors += t.errors;
        total.non2xx += t.non2xx;
        total.late += t.late;
    }
    pacer.join().map_err(|_| "pacer thread panicked")?;

    let mut s = total.samples_ns;
    s.sort_unstable();
    let mut lag = total.lag_ns;
    lag.sort_unstable();
    let mean = if s.is_empty() {
        f64::NAN
    } else {
        s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64 / 1000.0
    };
    println!(
        "scheduled={measured} ok={} errors={} non2xx={} late={} rate={:.1} p50_us={:.1} \
         p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} mean_us={:.1} lag_p50_us={:.1} lag_p99_us={:.1}",
        total.ok,
        total.errors,
        total.non2xx,
        total.late,
        total.ok as f64 / args.duration,
        percentile_us(&s, 50.0),
        percentile_us(&s, 90.0),
        percentile_us(&s, 99.0),
        percentile_us(&s, 99.9),
        s.last().map_or(f64::NAN, |&v| v as f64 / 1000.0),
        mean,
        percentile_us(&lag, 50.0),
        percentile_us(&lag, 99.0),
    );
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-load: {e}");
            usage();
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => Err(format!("runtime: {e}")),
    };
    if let Err(e) = result {
        eprintln!("bench-load: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<u64> = (1..=1000).map(|v| v * 1000).collect();
        assert_eq!(percentile_us(&s, 50.0), 500.0);
        assert_eq!(percentile_us(&s, 99.0), 990.0);
        assert_eq!(percentile_us(&s, 99.9), 999.0);
        assert_eq!(percentile_us(&s, 100.0), 1000.0);
        assert!(percentile_us(&[], 50.0).is_nan());
    }

    #[test]
    fn url_parsing() {
        let (addr, path) =
            parse_url("http://127.0.0.1:8080/x?y=1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(path, "/x?y=1");
        let (_, path) = parse_url("http://127.0.0.1:1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(path, "/");
        assert!(parse_url("https://127.0.0.1:1/").is_err());
        assert!(parse_url("http://localhost:1/").is_err());
    }
}
