//! Process statistics for the standard `process_*` metrics, read from `/proc/self`.
//!
//! Read directly rather than through a procfs crate: four numbers do not justify a
//! dependency tree in a sidecar whose size we compete on.

use std::time::{SystemTime, UNIX_EPOCH};

/// One reading of the process's resource use.
#[derive(Debug, Clone, Copy)]
pub struct ProcessStats {
    /// Resident set size.
    pub rss_bytes: u64,
    /// User + system CPU time.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
}

/// Linux reports CPU time in clock ticks; USER_HZ is 100 on every mainstream architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// Reads the current stats; `None` where `/proc` is unavailable.
pub fn read() -> Option<ProcessStats> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(ProcessStats {
        rss_bytes: rss_kib * 1024,
        cpu_seconds: (utime + stime) / TICKS_PER_SECOND,
        open_fds,
    })
}

/// When the process started, in seconds since the Unix epoch (taken at first call).
pub fn start_time_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        let s = super::read().expect("linux /proc");
        assert!(s.rss_bytes > 0);
        assert!(s.open_fds > 0);
    }
}
