//! Pure planning: how connections are split over worker processes, and which source
//! (address, port) each connection binds.
//!
//! One process holds at most `per_process` sockets (RLIMIT_NOFILE is a hard 20,000 here), and one
//! source address can only reach one destination through so many ports, so connections are
//! numbered by *slots*: slot `s` is source address `base + s / per_ip`, port
//! `port_lo + s % per_ip`. Each worker owns a disjoint, contiguous range of slots made of whole
//! addresses, so workers never compete for a (address, port) pair.

use std::net::{Ipv4Addr, SocketAddrV4};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrPlan {
    base: u32,
    per_ip: u32,
    port_lo: u16,
}

/// The last usable loopback address (127.255.255.255 is the /8's broadcast address).
const LOOPBACK_LAST: u32 = 0x7fff_fffe;

impl AddrPlan {
    pub fn new(base: Ipv4Addr, per_ip: u32, port_lo: u16, port_hi: u16) -> Result<Self, String> {
        if base.octets()[0] != 127 {
            return Err(format!("--src-base {base} is not in 127.0.0.0/8"));
        }
        if port_lo == 0 || port_hi < port_lo {
            return Err(format!("bad source port range {port_lo}-{port_hi}"));
        }
        let ports = u32::from(port_hi) - u32::from(port_lo) + 1;
        if per_ip == 0 || per_ip > ports {
            return Err(format!(
                "--per-ip {per_ip} must be between 1 and the number of source ports ({ports})"
            ));
        }
        Ok(AddrPlan {
            base: u32::from(base),
            per_ip,
            port_lo,
        })
    }

    /// The source address of `slot`, or `None` past the end of 127.0.0.0/8.
    pub fn addr(&self, slot: u64) -> Option<SocketAddrV4> {
        let ip = u64::from(self.base) + slot / u64::from(self.per_ip);
        if ip > u64::from(LOOPBACK_LAST) {
            return None;
        }
        let port = u64::from(self.port_lo) + slot % u64::from(self.per_ip);
        Some(SocketAddrV4::new(Ipv4Addr::from(ip as u32), port as u16))
    }

    /// How many whole addresses' worth of slots are available from the base.
    pub fn capacity(&self) -> u64 {
        (u64::from(LOOPBACK_LAST) - u64::from(self.base) + 1) * u64::from(self.per_ip)
    }
}

/// A worker's slots, handed out round-robin. Wrapping around is safe: a slot still in use makes
/// connect fail with EADDRNOTAVAIL and the caller moves on to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SlotRange {
    pub start: u64,
    pub len: u64,
    next: u64,
}

impl SlotRange {
    pub fn new(start: u64, len: u64) -> Self {
        SlotRange {
            start,
            len: len.max(1),
            next: 0,
        }
    }
    pub fn take(&mut self) -> u64 {
        let s = self.start + self.next;
        self.next = (self.next + 1) % self.len;
        s
    }
}

/// `total` split in `parts` near-equal shares (the first ones get the remainder).
pub fn split(total: u64, parts: u64) -> Vec<u64> {
    if parts == 0 {
        return Vec::new();
    }
    let (q, r) = (total / parts, total % parts);
    (0..parts).map(|i| q + u64::from(i < r)).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Opens and holds idle connections.
    Idle,
    /// Runs the active set (select/trx) or the storm loops.
    Active,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerSpec {
    pub index: usize,
    pub role: Role,
    /// Idle connections this worker opens and holds.
    pub idle: u64,
    /// Active connections (select/trx) or concurrent loops (storm) this worker runs.
    pub active: u64,
    pub slots: SlotRange,
}

/// Spare addresses per worker beyond what its connections need (bind retries, reconnects).
const SPARE_IPS: u64 = 1;

/// Lays out the worker processes: `idle` connections over as few processes as `per_process`
/// allows, then `active_procs` processes sharing `active` connections (or storm loops). Active
/// loops in storm mode cycle through `storm_ips` addresses each.
pub fn layout(
    idle: u64,
    active: u64,
    active_procs: u64,
    per_process: u64,
    per_ip: u64,
    storm_ips: u64,
) -> Result<Vec<WorkerSpec>, String> {
    if per_process == 0 {
        return Err("--per-process must be at least 1".into());
    }
    let mut out = Vec::new();
    let mut next_slot = 0u64;
    let idle_procs = idle.div_ceil(per_process);
    for share in split(idle, idle_procs) {
        let ips = share.div_ceil(per_ip) + SPARE_IPS;
        out.push(WorkerSpec {
            index: out.len(),
            role: Role::Idle,
            idle: share,
            active: 0,
            slots: SlotRange::new(next_slot, ips * per_ip),
        });
        next_slot += ips * per_ip;
    }
    if active > 0 {
        let procs = active_procs.clamp(1, active);
        for share in split(active, procs) {
            if share > per_process {
                return Err(format!(
                    "{share} active connections in one process exceed --per-process {per_process}: \
                     raise --active-procs"
                ));
            }
            let ips = (share.div_ceil(per_ip) + SPARE_IPS).max(storm_ips);
            out.push(WorkerSpec {
                index: out.len(),
                role: Role::Active,
                idle: 0,
                active: share,
                slots: SlotRange::new(next_slot, ips * per_ip),
            });
            next_slot += ips * per_ip;
        }
    }
    Ok(out)
}

/// Slots needed by a layout (to check it fits in 127.0.0.0/8).
pub fn slots_used(specs: &[WorkerSpec]) -> u64 {
    specs
        .iter()
        .map(|s| s.slots.start + s.slots.len)
        .max()
        .unwrap_or(0)
}

/// Connections one process may hold: the fd limit minus a margin for the epoll fd, the pipe to the
/// parent, stdio and a few transient descriptors.
pub fn default_per_process(nofile: u64) -> u64 {
    const MARGIN: u64 = 100;
    nofile.saturating_sub(MARGIN).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_map_to_addresses_and_ports() {
        let p = AddrPlan::new(Ipv4Addr::new(127, 1, 0, 1), 5000, 10000, 60000).unwrap();
        assert_eq!(
            p.addr(0),
            Some(SocketAddrV4::new(Ipv4Addr::new(127, 1, 0, 1), 10000))
        );
        assert_eq!(
            p.addr(4999),
            Some(SocketAddrV4::new(Ipv4Addr::new(127, 1, 0, 1), 14999))
        );
        assert_eq!(
            p.addr(5000),
            Some(SocketAddrV4::new(Ipv4Addr::new(127, 1, 0, 2), 10000))
        );
        // Addresses carry over octets: slot 255 * 5000 is 127.1.1.0.
        assert_eq!(
            p.addr(255 * 5000).unwrap().ip(),
            &Ipv4Addr::new(127, 1, 1, 0)
        );
        // A million connections need 200 addresses.
        assert_eq!(
            p.addr(999_999),
            Some(SocketAddrV4::new(Ipv4Addr::new(127, 1, 0, 200), 14999))
        );
    }

    #[test]
    fn addresses_stay_inside_loopback() {
        let p = AddrPlan::new(Ipv4Addr::new(127, 255, 255, 254), 10, 1000, 2000).unwrap();
        assert!(p.addr(9).is_some());
        assert_eq!(p.addr(10), None);
        assert_eq!(p.capacity(), 10);
        assert!(AddrPlan::new(Ipv4Addr::new(10, 0, 0, 1), 10, 1000, 2000).is_err());
        assert!(AddrPlan::new(Ipv4Addr::new(127, 0, 0, 1), 1002, 1000, 2000).is_err());
        assert!(AddrPlan::new(Ipv4Addr::new(127, 0, 0, 1), 10, 2000, 1000).is_err());
    }

    #[test]
    fn slot_ranges_wrap() {
        let mut r = SlotRange::new(100, 3);
        let v: Vec<u64> = (0..7).map(|_| r.take()).collect();
        assert_eq!(v, [100, 101, 102, 100, 101, 102, 100]);
    }

    #[test]
    fn split_is_even_and_complete() {
        assert_eq!(split(10, 3), [4, 3, 3]);
        assert_eq!(split(2, 4), [1, 1, 0, 0]);
        assert_eq!(split(0, 0), Vec::<u64>::new());
        assert_eq!(split(1_000_000, 51).iter().sum::<u64>(), 1_000_000);
    }

    #[test]
    fn a_million_idle_fit_in_disjoint_ranges() {
        let per = default_per_process(20_000);
        assert_eq!(per, 19_900);
        let specs = layout(1_000_000, 200, 1, per, 5000, 1).unwrap();
        let idle: Vec<_> = specs.iter().filter(|s| s.role == Role::Idle).collect();
        assert_eq!(idle.len(), 51); // ceil(1e6 / 19,900)
        assert!(idle.iter().all(|s| s.idle <= per));
        assert_eq!(idle.iter().map(|s| s.idle).sum::<u64>(), 1_000_000);
        let active: Vec<_> = specs.iter().filter(|s| s.role == Role::Active).collect();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].active, 200);
        // Disjoint, contiguous, whole addresses, and enough slots for every connection.
        let mut end = 0;
        for s in &specs {
            assert_eq!(s.slots.start, end);
            assert_eq!(s.slots.start % 5000, 0);
            assert!(s.slots.len >= s.idle + s.active);
            end = s.slots.start + s.slots.len;
        }
        assert_eq!(slots_used(&specs), end);
        let plan = AddrPlan::new(Ipv4Addr::new(127, 1, 0, 1), 5000, 10000, 60000).unwrap();
        assert!(plan.capacity() > end);
    }

    #[test]
    fn active_sets_must_fit_their_processes() {
        assert!(layout(0, 30_000, 1, 19_900, 5000, 1).is_err());
        let specs = layout(0, 30_000, 2, 19_900, 5000, 1).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].active + specs[1].active, 30_000);
        // Storm loops get at least storm_ips addresses to cycle through.
        let specs = layout(0, 64, 1, 19_900, 5000, 16).unwrap();
        assert_eq!(specs[0].slots.len, 16 * 5000);
        assert!(layout(10, 0, 1, 0, 5000, 1).is_err());
    }
}
