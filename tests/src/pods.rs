//! "Pods" made of Linux network namespaces, for the transparent-sidecar tests: no container
//! runtime and no cluster, but the same network a pod has: its own interfaces, loopback,
//! iptables, and `/etc/hosts`.
//!
//! One [`PodNetwork`] is a "node" namespace holding a bridge, one veth from the test's own
//! (root) namespace onto that bridge (so the control plane and the test reach every pod,
//! and nothing is bridged or forwarded in the root namespace, whatever its firewall
//! says), and one namespace per pod with `eth0` on the bridge and a default route.
//! Everything it creates (namespaces, the root veth, `/etc/netns/` files, processes) is
//! removed when it is dropped, also when the test fails.
//!
//! Needs root (CI runs as root) with `ip` (iproute2), `iptables` and `setpriv`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::AbortOnDrop;

/// How long a process in a pod may take to say it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs a command to completion, panicking with its output on failure.
pub fn sh(args: &[&str]) -> String {
    let out = std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Like [`sh`], returning the exit status and output instead of panicking.
pub fn try_sh(args: &[&str]) -> (bool, String) {
    match std::process::Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// A bridged network of pods, removed on drop.
#[derive(Debug)]
pub struct PodNetwork {
    tag: String,
    node: String,
    /// The subnet's third octet: pods are `10.251.<n>.<10+i>`.
    octet: u8,
    pods: Vec<String>,
    hosts: Vec<PathBuf>,
    processes: Vec<PodProcess>,
}

impl PodNetwork {
    /// A node namespace with a bridge, and this (root) namespace on it as
    /// `10.251.<n>.1`. `salt` keeps two networks of one test process apart.
    pub fn new(salt: u8) -> PodNetwork {
        let (ok, why) = try_sh(&["ip", "netns", "list"]);
        assert!(
            ok,
            "the pod tests need root and iproute2 (`ip netns`); run them as .ci/run does: {why}"
        );
        let pid = std::process::id();
        let tag = format!("{}{salt}", pid % 100_000);
        let octet = u8::try_from((pid + u32::from(salt) * 7) % 200 + 20).unwrap_or(20);
        let node = format!("tandem-node-{tag}");
        let net = PodNetwork {
            node: node.clone(),
            tag: tag.clone(),
            octet,
            pods: Vec::new(),
            hosts: Vec::new(),
            processes: Vec::new(),
        };
        sh(&["ip", "netns", "add", &node]);
        sh(&["ip", "-n", &node, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &node, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &node, "link", "set", "br0", "up"]);
        let root = format!("tr{tag}");
        sh(&[
            "ip", "link", "add", &root, "type", "veth", "peer", "name", "up0", "netns", &node,
        ]);
        sh(&[
            "ip", "-n", &node, "link", "set", "up0", "master", "br0", "up",
        ]);
        let v4 = format!("{}/24", net.host_ip());
        sh(&["ip", "addr", "add", &v4, "dev", &root]);
        let v6 = format!("{}/64", net.host_ip6());
        sh(&["ip", "addr", "add", &v6, "dev", &root, "nodad"]);
        sh(&["ip", "link", "set", &root, "up"]);
        net
    }

    /// This namespace's IPv6 address on the pod network.
    pub fn host_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd51, 0, 0, u16::from(self.octet), 0, 0, 0, 1)
    }

    /// An IPv6 virtual address, routed nowhere.
    pub fn virtual_ip6(&self, n: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd52, 0, 0, u16::from(self.octet), 0, 0, 0, u16::from(n))
    }

    /// This (root) namespace's address on the pod network.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.octet, 1)
    }

    /// A virtual address (a "cluster IP") outside the pod subnet, routed nowhere: only
    /// interception makes it reachable.
    pub fn virtual_ip(&self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 252, self.octet, n)
    }

    /// Adds pod number `index` (its IPs are `10.251.<n>.<10+index>` and
    /// `fd51:0:0:<n>::<10+index>`) with `hosts` lines in its `/etc/hosts`; returns the pod.
    pub fn add_pod(&mut self, index: u8, hosts: &str) -> Pod {
        let ns = format!("tandem-pod-{}-{index}", self.tag);
        let ip = Ipv4Addr::new(10, 251, self.octet, 10 + index);
        self.pods.push(ns.clone());
        let dir = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/<pod>");
        std::fs::write(
            dir.join("hosts"),
            format!("127.0.0.1 localhost\n{ip} pod-{index}\n{hosts}"),
        )
        .expect("write the pod's hosts file");
        self.hosts.push(dir);
        sh(&["ip", "netns", "add", &ns]);
        let port = format!("p{index}");
        sh(&[
            "ip", "-n", &self.node, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ]);
        sh(&[
            "ip", "-n", &self.node, "link", "set", &port, "master", "br0", "up",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        let gw = self.host_ip().to_string();
        sh(&["ip", "-n", &ns, "route", "add", "default", "via", &gw]);
        let ip6 = Ipv6Addr::new(
            0xfd51,
            0,
            0,
            u16::from(self.octet),
            0,
            0,
            0,
            u16::from(10 + index),
        );
        // No duplicate address detection: the address is usable at once.
        let v6 = format!("{ip6}/64");
        sh(&["ip", "-n", &ns, "addr", "add", &v6, "dev", "eth0", "nodad"]);
        let gw6 = self.host_ip6().to_string();
        sh(&[
            "ip", "-n", &ns, "-6", "route", "add", "default", "via", &gw6,
        ]);
        Pod { ns, ip, ip6 }
    }

    /// Starts `program args` inside `pod` (as `uid` if given, through `setpriv`), and waits
    /// until a line of its stdout starts with `ready_prefix`; the process is killed when
    /// the network is dropped. Returns its index for [`PodNetwork::process`].
    pub async fn spawn(
        &mut self,
        pod: &Pod,
        uid: Option<u32>,
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready_prefix: &str,
    ) -> usize {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &pod.ns]);
        if let Some(uid) = uid {
            let (u, g) = (format!("--reuid={uid}"), format!("--regid={uid}"));
            cmd.args(["setpriv", &u, &g, "--clear-groups", "--"]);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TANDEM_") {
                cmd.env_remove(name);
            }
        }
        cmd.envs(env.iter().copied())
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} in {}: {e}", pod.ns));
        let log = Arc::new(Mutex::new(Vec::new()));
        let err_reader = crate::capture(child.stderr.take().expect("stderr piped"), log.clone());
        let mut out = BufReader::new(child.stdout.take().expect("stdout piped"));
        let prefix = ready_prefix.to_string();
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            loop {
                let mut line = String::new();
                match out.read_line(&mut line).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) if line.starts_with(&prefix) => return Some(line),
                    Ok(_) => {}
                }
            }
        })
        .await;
        let name = format!("{program} in {}", pod.ns);
        match ready {
            Ok(Some(_)) => {}
            other => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "{name} never printed {ready_prefix:?} ({}):\n{}",
                    if other.is_err() {
                        "timed out"
                    } else {
                        "exited"
                    },
                    String::from_utf8_lossy(&log.lock().expect("lock"))
                );
            }
        }
        let out_reader = AbortOnDrop(tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink).await;
        }));
        self.processes.push(PodProcess {
            name,
            child,
            log,
            _readers: vec![err_reader, out_reader],
        });
        self.processes.len() - 1
    }

    /// A process started with [`PodNetwork::spawn`].
    pub fn process(&mut self, index: usize) -> &mut PodProcess {
        &mut self.processes[index]
    }

    /// Every process's stderr, for a failure message.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|p| format!("--- {}:\n{}", p.name, p.stderr()))
            .collect()
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.child.start_kill();
        }
        // A process outlives its namespace's deletion; wait until the kills land.
        for p in &mut self.processes {
            for _ in 0..50 {
                if matches!(p.child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Deleting a namespace deletes its interfaces, and with them their veth peers
        // (the root one included); its iptables rules go with it.
        for ns in self.pods.iter().chain(std::iter::once(&self.node)) {
            let _ = try_sh(&["ip", "netns", "del", ns]);
        }
        let _ = try_sh(&["ip", "link", "del", &format!("tr{}", self.tag)]);
        for dir in &self.hosts {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One pod: a network namespace and its IP.
#[derive(Debug, Clone)]
pub struct Pod {
    /// The namespace's name.
    pub ns: String,
    /// `eth0`'s IPv4 address.
    pub ip: Ipv4Addr,
    /// `eth0`'s IPv6 address.
    pub ip6: Ipv6Addr,
}

impl Pod {
    /// `ip:port` of this pod.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), port)
    }

    /// Runs a command inside the pod (as root, an app process), returning success and
    /// output.
    pub fn exec(&self, args: &[&str]) -> (bool, String) {
        let mut all = vec!["ip", "netns", "exec", self.ns.as_str()];
        all.extend_from_slice(args);
        try_sh(&all)
    }

    /// The nat table counters of one of this pod's chains: (packets, rule) per rule.
    pub fn nat_counters(&self, chain: &str) -> Vec<(u64, String)> {
        let (ok, out) = self.exec(&["iptables", "-t", "nat", "-L", chain, "-v", "-x", "-n"]);
        assert!(ok, "iptables -L {chain} in {}: {out}", self.ns);
        out.lines()
            .skip(2)
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let packets = it.next()?.parse().ok()?;
                Some((packets, l.to_string()))
            })
            .collect()
    }
}

/// A process running in a pod.
#[derive(Debug)]
pub struct PodProcess {
    name: String,
    child: Child,
    log: Arc<Mutex<Vec<u8>>>,
    _readers: Vec<AbortOnDrop>,
}

impl PodProcess {
    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().expect("lock")).into_owned()
    }
}
