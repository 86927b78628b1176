//! Messages between the coordinator and its worker processes, over one Unix socketpair per
//! worker: a little-endian `u32` length, then a JSON document. Commands go down, progress and
//! results come up. Histograms travel as (value, count) pairs of their non-empty buckets.

use crate::sys;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest message accepted (a histogram is a few tens of KiB).
const MAX_MSG: usize = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ToWorker {
    /// Open this worker's idle connections and hold them.
    OpenIdle,
    /// Open the active set and answer `ActiveReady`.
    PrepareActive,
    /// Start the select/trx run (after `PrepareActive`) or the storm.
    Go,
    /// Wind down early (SIGINT at the coordinator): stop opening connections, end the run now;
    /// results are reported as usual.
    EndRun,
    /// Check the idle connections are still alive, then close them (COM_QUIT, close).
    CloseIdle,
    /// Check the idle connections now (periodic `--idle-check`).
    CheckIdle,
    /// Abandon whatever runs, close everything and exit.
    Stop,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Idle connections held right now.
    pub idle_held: u64,
    /// Connections being opened right now.
    pub connecting: u64,
    /// Connections established so far (all kinds, cumulative).
    pub connects: u64,
    /// Operations completed in the current run (queries, transactions, storm cycles).
    pub ops: u64,
    /// p99 of the current run so far, in µs (0 before the first operation).
    pub p99_us: u64,
    /// Errors so far by kind (cumulative over the worker's life).
    pub errors: BTreeMap<String, u64>,
    /// The first message seen for each error kind.
    pub samples: BTreeMap<String, String>,
}

pub type HistData = Vec<(u64, u64)>;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IdleOpened {
    pub target: u64,
    pub established: u64,
    pub failed: u64,
    /// Seconds from the command to the last connection settled.
    pub seconds: f64,
    /// Source (address, port) pairs skipped because they were in use.
    pub addr_retries: u64,
    /// Connect + login latency, µs.
    pub connect_us: HistData,
    /// Logins by final authentication plugin.
    pub plugins: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Active connections established for the run (select/trx) or concurrent loops (storm).
    pub connections: u64,
    pub ok: u64,
    pub failed: u64,
    /// Seconds the run lasted (from Go to the last issued operation's end of window).
    pub seconds: f64,
    /// Operations due at the target rate that never started (the rate was not met).
    pub missed: u64,
    /// Latency from the intended start (rate mode) or send (closed loop), µs.
    pub latency_us: HistData,
    /// Latency from the actual send, µs.
    pub service_us: HistData,
    /// Connections opened during the run (storm cycles, reconnects).
    pub connects: u64,
    pub reconnects: u64,
    pub addr_retries: u64,
    pub plugins: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IdleClosed {
    /// Idle connections found alive at the check.
    pub alive: u64,
    /// Idle connections the server had closed (or sent something on) while idle.
    pub dead: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum ToParent {
    Progress(Progress),
    IdleOpened(IdleOpened),
    ActiveReady {
        established: u64,
        failed: u64,
    },
    RunDone(RunResult),
    IdleChecked(IdleClosed),
    IdleClosed(IdleClosed),
    /// The worker cannot go on (e.g. epoll failed); it exits after this.
    Fatal(String),
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let body = serde_json::to_vec(msg).expect("IPC messages always serialise");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

pub fn send<T: Serialize>(fd: i32, msg: &T) -> Result<(), sys::Errno> {
    sys::write_all(fd, &encode(msg))
}

/// Accumulates bytes from a stream socket and splits them into messages.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
}

pub enum Fill {
    Open,
    Eof,
}

impl Reader {
    /// Reads what is available without blocking.
    pub fn fill(&mut self, fd: i32) -> Fill {
        let mut tmp = [0u8; 16384];
        loop {
            match sys::recv(fd, &mut tmp) {
                Ok(0) => return Fill::Eof,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(libc::EINTR) => continue,
                Err(libc::EAGAIN) => return Fill::Open,
                Err(_) => return Fill::Eof,
            }
        }
    }

    #[cfg(test)]
    pub fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// The next complete message, if any.
    pub fn next<T: DeserializeOwned>(&mut self) -> Option<Result<T, String>> {
        if self.buf.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_MSG {
            self.buf.clear();
            return Some(Err(format!("IPC message of {len} bytes")));
        }
        if self.buf.len() < 4 + len {
            return None;
        }
        let r = serde_json::from_slice(&self.buf[4..4 + len]).map_err(|e| e.to_string());
        self.buf.drain(..4 + len);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_pieces() {
        let mut p = Progress {
            idle_held: 5,
            ops: 9,
            ..Progress::default()
        };
        p.errors.insert("connect_refused".into(), 2);
        let msgs = vec![
            ToParent::Progress(p),
            ToParent::RunDone(RunResult {
                latency_us: vec![(100, 3), (250, 1)],
                ..RunResult::default()
            }),
        ];
        let wire: Vec<u8> = msgs.iter().flat_map(encode).collect();
        let mut r = Reader::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            r.push(chunk);
            while let Some(m) = r.next::<ToParent>() {
                got.push(m.unwrap());
            }
        }
        assert_eq!(got, msgs);
        r.push(&[5, 0, 0, 0, b'{', b'x', b'}', b'}', b'}']);
        assert!(r.next::<ToParent>().unwrap().is_err());
    }
}
