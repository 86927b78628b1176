//! Resource samples: RSS of the processes under test (from /proc/PID/status), kernel slab (from
//! /proc/meminfo), the generator's own RSS, and optionally a MySQL server's Threads_connected.

use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    pub label: String,
    pub at: String,
    pub unix: f64,
    /// Sum of VmRSS over the sampled processes, bytes.
    pub rss_bytes: u64,
    pub pids: Vec<i32>,
    /// Pids that could not be read (gone, or not ours to read).
    pub pids_missing: Vec<i32>,
    /// CPU seconds (user + system) the sampled processes have used so far.
    pub cpu_seconds: f64,
    pub slab_bytes: u64,
    pub sunreclaim_bytes: u64,
    /// Sum of VmRSS over the generator's worker processes (includes pages shared after fork).
    pub generator_rss_bytes: u64,
    /// The --sample-backend server's Threads_connected, minus this sample's own connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_threads_connected: Option<u64>,
}

/// The value of a `Key:   123 kB` line, in bytes.
pub fn parse_kb(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let mut it = rest.split_whitespace();
        let n: u64 = it.next()?.parse().ok()?;
        match it.next() {
            Some("kB") | None => Some(n * 1024),
            Some(_) => None,
        }
    })
}

pub fn rss_of(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    // A zombie or kernel thread has no VmRSS line: count it as 0 but present.
    Some(parse_kb(&s, "VmRSS").unwrap_or(0))
}

/// utime + stime (clock ticks) from the text of /proc/PID/stat. The command name may contain
/// spaces and parentheses, so fields are counted after its last ')'.
pub fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU seconds (user + system, all threads) a process has used.
pub fn cpu_of(pid: i32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&s)?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// A process's scheduler state (`R`, `S`, `D`, …), kernel wait channel and CPU time, as one
/// line for a diagnostic ("state S, waiting in ep_poll, 1.25 s CPU"); what cannot be read is
/// left out.
pub fn proc_state(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state is the first field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?");
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let mut s = format!("state {state}");
    if !wchan.is_empty() && wchan != "0" {
        s.push_str(&format!(", waiting in {wchan}"));
    }
    if let Some(cpu) = cpu_of(pid) {
        s.push_str(&format!(", {cpu:.2} s CPU"));
    }
    s
}

/// Summed CPU seconds of several processes (missing ones count 0).
pub fn cpu_sum(pids: &[i32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_of(p)).sum()
}

/// Pids from a file, one per line (blank lines and `#` comments ignored).
pub fn parse_pids(text: &str) -> Vec<i32> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.parse().ok())
        .collect()
}

pub fn pids_to_sample(explicit: &[i32], file: Option<&Path>) -> Vec<i32> {
    let mut v = explicit.to_vec();
    if let Some(f) = file {
        if let Ok(s) = std::fs::read_to_string(f) {
            v.extend(parse_pids(&s));
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

pub fn take(label: &str, pids: &[i32], generator: &[i32]) -> Sample {
    let (unix, at) = crate::report::now_stamp();
    let mut s = Sample {
        label: label.to_string(),
        at,
        unix,
        ..Sample::default()
    };
    for &p in pids {
        match rss_of(p) {
            Some(b) => {
                s.rss_bytes += b;
                s.cpu_seconds += cpu_of(p).unwrap_or(0.0);
                s.pids.push(p);
            }
            None => s.pids_missing.push(p),
        }
    }
    s.generator_rss_bytes = generator.iter().filter_map(|&p| rss_of(p)).sum();
    if let Ok(m) = std::fs::read_to_string("/proc/meminfo") {
        s.slab_bytes = parse_kb(&m, "Slab").unwrap_or(0);
        s.sunreclaim_bytes = parse_kb(&m, "SUnreclaim").unwrap_or(0);
    }
    s
}

/// (with − before) / n, when there is something to divide by.
pub fn per_conn(before: u64, with: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| (with as f64 - before as f64) / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let status = "Name:\tsluice\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(parse_kb(status, "VmRSS"), Some(2048 * 1024));
        assert_eq!(parse_kb(status, "VmSwap"), None);
        let meminfo = "MemTotal:       24576000 kB\nSlab:             812340 kB\nSReclaimable:     200000 kB\nSUnreclaim:       612340 kB\n";
        assert_eq!(parse_kb(meminfo, "Slab"), Some(812_340 * 1024));
        assert_eq!(parse_kb(meminfo, "SUnreclaim"), Some(612_340 * 1024));
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert_eq!(parse_pids("12\n\n # x\n 34 \nabc\n"), vec![12, 34]);
        assert_eq!(per_conn(1000, 3000, 4), Some(500.0));
        assert_eq!(per_conn(3000, 1000, 4), Some(-500.0));
        assert_eq!(per_conn(1, 2, 0), None);
    }

    #[test]
    fn samples_this_process() {
        let me = std::process::id() as i32;
        let s = take("t", &[me, i32::MAX], &[me]);
        assert_eq!(s.pids, vec![me]);
        assert_eq!(s.pids_missing, vec![i32::MAX]);
        assert!(s.rss_bytes > 0 && s.generator_rss_bytes > 0);
        assert!(s.slab_bytes > 0);
    }

    #[test]
    fn describes_a_process_state() {
        let me = proc_state(std::process::id() as i32);
        // The test thread is running; the main thread (which /proc/PID/stat describes) may be
        // waiting for it.
        assert!(
            me.starts_with("state R") || me.starts_with("state S"),
            "{me}"
        );
        assert!(me.contains(" s CPU"), "{me}");
        assert_eq!(proc_state(i32::MAX), "state ?");
    }
}
