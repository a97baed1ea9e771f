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
//! Several targets can share one run: the schedule is cut into chunks (`--chunk`, 0.25 s)
//! that go to the targets in turn, so each target sees the same rate, one target at a time,
//! and whatever else disturbs the machine during the run is spread over all of them alike.
//! That pairing is what makes "added latency" (proxy minus direct) meaningful on a machine
//! shared with other work.
//!
//! ```text
//! bench-load --target NAME=http://127.0.0.1:8080/ [--target NAME=URL]... [--host NAME]
//!            [--rate 2000] [--duration 15] [--warmup 2] [--connections 16] [--chunk 0.25]
//!            [--timeout 5]
//! ```
//!
//! `--url URL` is short for `--target default=URL`. `--duration` and `--warmup` are per
//! target. Prints one line per target, latencies in microseconds:
//! `target= scheduled= ok= errors= non2xx= late= rate= p50_us= p90_us= p99_us= p999_us=
//! max_us= mean_us= lag_p50_us= lag_p99_us=`. `late` counts slots dropped because the run's
//! hard deadline had passed (target too slow); `lag_*` is how long after its scheduled time
//! a slot reached a connection (the generator's own delay, part of every latency sample;
//! it cancels out in "added latency").

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

struct Target {
    name: String,
    addr: SocketAddr,
    path: String,
}

struct Args {
    targets: Vec<Target>,
    host: Option<String>,
    rate: f64,
    duration: f64,
    warmup: f64,
    connections: usize,
    chunk: f64,
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
        "usage: bench-load --target NAME=http://IP:PORT/PATH... | --url URL [--host NAME] \
         [--rate N] [--duration S] [--warmup S] [--connections N] [--chunk S] [--timeout S]"
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

fn parse_target(name: &str, url: &str) -> Result<Target, String> {
    let (addr, path) = parse_url(url)?;
    Ok(Target {
        name: name.to_string(),
        addr,
        path,
    })
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        targets: Vec::new(),
        host: None,
        rate: 2000.0,
        duration: 15.0,
        warmup: 2.0,
        connections: 16,
        chunk: 0.25,
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
            "--url" => args.targets.push(parse_target("default", &value)?),
            "--target" => {
                let (name, url) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--target: expected NAME=URL, got {value}"))?;
                args.targets.push(parse_target(name, url)?);
            }
            "--host" => args.host = Some(value),
            "--chunk" => args.chunk = num(&value)?,
            "--rate" => args.rate = num(&value)?,
            "--duration" => args.duration = num(&value)?,
            "--warmup" => args.warmup = num(&value)?,
            "--connections" => args.connections = num(&value)? as usize,
            "--timeout" => args.timeout = Duration::from_secs_f64(num(&value)?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if args.targets.is_empty() {
        return Err("--target or --url is required".into());
    }
    if args.rate < 1.0 || args.duration <= 0.0 || args.connections == 0 || args.chunk <= 0.0 {
        return Err(
            "--rate ≥ 1, --duration > 0, --connections ≥ 1 and --chunk > 0 are required".into(),
        );
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
async fn exchange(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    host: &str,
) -> Result<u16, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get(path)
        .header(HOST, host)
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

/// What the workers of one target share.
struct Lane {
    addr: SocketAddr,
    path: String,
    host: String,
    timeout: Duration,
    slots: Mutex<mpsc::UnboundedReceiver<Slot>>,
}

async fn worker(
    lane: Arc<Lane>,
    mut sender: Option<SendRequest<Empty<Bytes>>>,
    hard_deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let slot = {
            let mut rx = lane.slots.lock().await;
            rx.recv().await
        };
        let Some(slot) = slot else { break };
        let picked = Instant::now();
        if picked > hard_deadline {
            tally.late += u64::from(slot.measured);
            continue;
        }
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(lane.addr).await.ok();
        }
        let result = match sender.as_mut() {
            Some(s) => tokio::time::timeout(lane.timeout, exchange(s, &lane.path, &lane.host))
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
    // The small epsilon keeps float error (0.999 * 1000 = 999.0000000000001) from moving
    // an exact rank up by one.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted[idx] as f64 / 1000.0
}

/// The pacer: sends slot `i` at `start + i / rate` to the target whose turn it is.
fn pace(lanes: Vec<mpsc::UnboundedSender<Slot>>, start: Instant, plan: Plan) {
    for i in 0..plan.total {
        let due = start + Duration::from_secs_f64(i as f64 / plan.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let slot = Slot {
            due,
            measured: i >= plan.warmup,
        };
        let lane = (i / plan.chunk) as usize % lanes.len();
        if lanes[lane].send(slot).is_err() {
            return;
        }
    }
}

/// The schedule: `total` slots at `rate`, the first `warmup` unmeasured, `chunk` slots per turn.
#[derive(Clone, Copy)]
struct Plan {
    rate: f64,
    total: u64,
    warmup: u64,
    chunk: u64,
}

fn report(name: &str, tally: Tally, duration: f64) {
    let mut s = tally.samples_ns;
    s.sort_unstable();
    let mut lag = tally.lag_ns;
    lag.sort_unstable();
    let mean = if s.is_empty() {
        f64::NAN
    } else {
        s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64 / 1000.0
    };
    let scheduled = tally.ok + tally.errors + tally.late;
    println!(
        "target={name} scheduled={scheduled} ok={} errors={} non2xx={} late={} rate={:.1} \
         p50_us={:.1} p90_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} mean_us={:.1} \
         lag_p50_us={:.1} lag_p99_us={:.1}",
        tally.ok,
        tally.errors,
        tally.non2xx,
        tally.late,
        tally.ok as f64 / duration,
        percentile_us(&s, 50.0),
        percentile_us(&s, 90.0),
        percentile_us(&s, 99.0),
        percentile_us(&s, 99.9),
        s.last().map_or(f64::NAN, |&v| v as f64 / 1000.0),
        mean,
        percentile_us(&lag, 50.0),
        percentile_us(&lag, 99.0),
    );
}

async fn run(args: Args) -> Result<(), String> {
    let n = args.targets.len();
    let per_target_warmup = (args.warmup * args.rate).round() as u64;
    let per_target_measured = (args.duration * args.rate).round() as u64;
    let plan = Plan {
        rate: args.rate,
        total: (per_target_warmup + per_target_measured) * n as u64,
        warmup: per_target_warmup * n as u64,
        chunk: ((args.chunk * args.rate).round() as u64).max(1),
    };
    let span = (args.warmup + args.duration) * n as f64;

    let mut txs = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    let mut lanes = Vec::with_capacity(n);
    for t in &args.targets {
        let (tx, rx) = mpsc::unbounded_channel();
        txs.push(tx);
        let lane = Arc::new(Lane {
            addr: t.addr,
            path: t.path.clone(),
            host: args.host.clone().unwrap_or_else(|| t.addr.to_string()),
            timeout: args.timeout,
            slots: Mutex::new(rx),
        });
        let mut senders = Vec::with_capacity(args.connections);
        for _ in 0..args.connections {
            senders.push(
                connect(t.addr)
                    .await
                    .map_err(|e| format!("{}: {e}", t.name))?,
            );
        }
        lanes.push(lane);
        handles.push(senders);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let hard_deadline = start + Duration::from_secs_f64(span) + DRAIN_GRACE;
    let mut workers = Vec::with_capacity(n);
    for (lane, senders) in lanes.iter().zip(handles) {
        let tasks: Vec<_> = senders
            .into_iter()
            .map(|s| tokio::spawn(worker(lane.clone(), Some(s), hard_deadline)))
            .collect();
        workers.push(tasks);
    }
    let pacer = std::thread::spawn(move || pace(txs, start, plan));

    let mut tallies = Vec::with_capacity(n);
    for tasks in workers {
        let mut total = Tally::default();
        for w in tasks {
            let t = w.await.map_err(|e| format!("worker: {e}"))?;
            total.samples_ns.extend(t.samples_ns);
            total.lag_ns.extend(t.lag_ns);
            total.ok += t.ok;
            total.errors += t.errors;
            total.non2xx += t.non2xx;
            total.late += t.late;
        }
        tallies.push(total);
    }
    pacer.join().map_err(|_| "pacer thread panicked")?;
    for (t, tally) in args.targets.iter().zip(tallies) {
        report(&t.name, tally, args.duration);
    }
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
