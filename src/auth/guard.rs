//! What every process of one sluice instance shares about logins: the failed-login counts per
//! source address (`auth_failure_limit`) and the secret that keys the answers given for unknown
//! user names (see [`crate::auth::Decoys`]).
//!
//! Both live in one small fixed-size shared-memory region. With `workers = N` the supervisor
//! creates it (a memfd) before it starts the workers; each worker maps the descriptor it
//! inherits, so a worker restarted later joins the same counts and the same secret. A single
//! process maps an anonymous region of the same layout. The failure table is lock-free: one
//! `AtomicU64` per entry packs a tag of the address's keyed hash, the start of its 60-second
//! window and its count, updated with compare-and-swap; entries sit in buckets of 8 (one cache
//! line) chosen by the same hash. Memory is bounded (2,048 buckets, 128 KiB): when a bucket is
//! full, an expired entry is reused first, else the one with the fewest failures is evicted, so
//! an address already over the limit is the last to be forgotten.
//!
//! Turned down: messages over the worker admin sockets. Every connection is checked against the
//! table at accept, before its greeting; a round trip to other processes there would cost more
//! than the login, and a count kept per process would let an attacker spread guesses over the
//! workers (or, as before, the shards). Measured (release build, on the 2-vCPU build machine
//! while other builds ran; `cargo test --release --lib measure_hot_path -- --ignored
//! --nocapture`): the accept-time check (`failures`: a clock read, one SipHash of the address,
//! eight loads from one cache line) takes ~40 ns, recording a failure ~50 ns — against tens of
//! microseconds for the TCP accept and the greeting themselves.

use std::hash::Hasher;
use std::net::IpAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// The failed-login window (as before: counts start at the first failure and reset a minute
/// later).
pub const WINDOW_SECS: u32 = 60;

const MAGIC: u64 = u64::from_le_bytes(*b"sluiceG1");
const HEADER: usize = 64;
const BUCKETS: usize = 2048;
const WAYS: usize = 8;
const ENTRIES: usize = BUCKETS * WAYS;
/// Bytes of the region: the header, then the entries.
pub const SIZE: usize = HEADER + ENTRIES * 8;

/// Entry layout: tag (32 bits, never 0 in a used entry) | window start (20 bits of seconds) |
/// count (12 bits, saturating).
const TIME_BITS: u32 = 20;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const COUNT_BITS: u32 = 12;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;

fn pack(tag: u32, start: u32, count: u64) -> u64 {
    u64::from(tag) << 32 | (u64::from(start) & TIME_MASK) << COUNT_BITS | count.min(COUNT_MAX)
}

fn tag_of(e: u64) -> u32 {
    (e >> 32) as u32
}

fn start_of(e: u64) -> u32 {
    ((e >> COUNT_BITS) & TIME_MASK) as u32
}

fn count_of(e: u64) -> u64 {
    e & COUNT_MAX
}

/// Seconds since `start`, on the 20-bit clock (wraps every ~12 days; the janitor's sweep
/// clears expired entries long before a wrap could make one look fresh again).
fn age(now: u32, start: u32) -> u32 {
    (now.wrapping_sub(start)) & TIME_MASK as u32
}

fn fresh(e: u64, now: u32) -> bool {
    e != 0 && age(now, start_of(e)) < WINDOW_SECS
}

/// An address's failures in its bucket. Two processes recording its first failure at once may
/// each have taken an entry: the count is their sum.
fn count_in(bucket: &[AtomicU64], tag: u32, now: u32) -> u32 {
    bucket
        .iter()
        .map(|e| e.load(Ordering::Relaxed))
        .filter(|&e| tag_of(e) == tag && fresh(e, now))
        .map(count_of)
        .sum::<u64>()
        .min(u64::from(u32::MAX)) as u32
}

/// Seconds on the system-wide monotonic clock (the same in every process of the host).
pub fn now_secs() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u32
}

/// The shared region (see the module docs). Cheap to use from any thread: atomics only.
pub struct LoginGuard {
    region: crate::shm::Region,
}

impl LoginGuard {
    /// A region for this process alone (no worker processes).
    pub fn private() -> std::io::Result<LoginGuard> {
        let g = LoginGuard {
            region: crate::shm::Region::private(SIZE)?,
        };
        g.init()?;
        Ok(g)
    }

    /// A region to share with worker processes: its memfd is inheritable (no close-on-exec), so
    /// children started afterwards can [`attach`](Self::attach) to it by number.
    pub fn create_shared() -> std::io::Result<(LoginGuard, OwnedFd)> {
        let (region, fd) = crate::shm::Region::create_shared(c"sluice-logins", SIZE)?;
        let g = LoginGuard { region };
        g.init()?;
        Ok((g, fd))
    }

    /// Maps a region created by the supervisor, from the descriptor this process inherited (and
    /// closes that descriptor: the mapping keeps the memory).
    pub fn attach(fd: RawFd) -> Result<LoginGuard, String> {
        let g = LoginGuard {
            region: crate::shm::Region::attach(fd, SIZE, "login guard")?,
        };
        if g.header_word(0).load(Ordering::Acquire) != MAGIC {
            return Err("login guard fd: not a sluice login region".into());
        }
        Ok(g)
    }

    fn init(&self) -> std::io::Result<()> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| std::io::Error::other(e.to_string()))?;
        // Words 1..=4 of the header, before the magic says the region is ready.
        for (i, chunk) in secret.chunks_exact(8).enumerate() {
            let w = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            self.header_word(1 + i).store(w, Ordering::Relaxed);
        }
        self.header_word(0).store(MAGIC, Ordering::Release);
        Ok(())
    }

    fn header_word(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < HEADER / 8);
        self.region.word(i)
    }

    fn key(&self, half: usize) -> (u64, u64) {
        let w = |i| self.header_word(1 + half * 2 + i).load(Ordering::Relaxed);
        (w(0), w(1))
    }

    fn entries(&self) -> &[AtomicU64] {
        self.region.words(HEADER / 8, ENTRIES)
    }

    /// A keyed hash of a user name: stable for the life of the instance (every shard and worker
    /// process computes the same), unpredictable without the secret.
    pub fn name_hash(&self, name: &[u8]) -> u64 {
        let (k0, k1) = self.key(0);
        #[allow(deprecated)] // SipHash-2-4 with our own keys, which is what is wanted here.
        let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
        h.write(name);
        h.finish()
    }

    fn ip_hash(&self, ip: IpAddr) -> u64 {
        let (k0, k1) = self.key(1);
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
        // IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
        match ip {
            IpAddr::V4(a) => h.write(&a.octets()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => h.write(&v4.octets()),
                None => h.write(&a.octets()),
            },
        }
        h.finish()
    }

    fn bucket(&self, ip: IpAddr) -> (&[AtomicU64], u32) {
        let h = self.ip_hash(ip);
        let b = (h as usize) % BUCKETS;
        let tag = ((h >> 32) as u32) | 1;
        (&self.entries()[b * WAYS..(b + 1) * WAYS], tag)
    }

    /// Failed logins from `ip` in its current window.
    pub fn failures(&self, ip: IpAddr) -> u32 {
        self.failures_at(ip, now_secs())
    }

    fn failures_at(&self, ip: IpAddr, now: u32) -> u32 {
        let (bucket, tag) = self.bucket(ip);
        count_in(bucket, tag, now)
    }

    /// Counts a failed login from `ip`; returns its failures in the current window.
    pub fn note_failure(&self, ip: IpAddr) -> u32 {
        self.note_failure_at(ip, now_secs())
    }

    fn note_failure_at(&self, ip: IpAddr, now: u32) -> u32 {
        let (bucket, tag) = self.bucket(ip);
        for _ in 0..16 {
            // The address's entry, if it has one.
            if let Some(slot) = bucket
                .iter()
                .find(|e| tag_of(e.load(Ordering::Relaxed)) == tag)
            {
                let cur = slot.load(Ordering::Relaxed);
                if tag_of(cur) != tag {
                    continue;
                }
                let next = if fresh(cur, now) {
                    pack(tag, start_of(cur), count_of(cur) + 1)
                } else {
                    pack(tag, now, 1)
                };
                if slot
                    .compare_exchange(cur, next, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    return count_in(bucket, tag, now);
                }
                continue;
            }
            // A new entry: a free or expired one, else evict the fewest failures.
            let victim = bucket
                .iter()
                .map(|e| (e, e.load(Ordering::Relaxed)))
                .min_by_key(|&(_, v)| if fresh(v, now) { count_of(v) + 1 } else { 0 });
            let Some((slot, cur)) = victim else {
                return 0;
            };
            if slot
                .compare_exchange(cur, pack(tag, now, 1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return count_in(bucket, tag, now);
            }
        }
        // Sixteen lost races in a row: the bucket is being rewritten by a flood; this failure
        // goes uncounted rather than spinning on the login path.
        count_in(bucket, tag, now)
    }

    /// Clears expired entries (run now and then by the janitor; lookups ignore them anyway).
    pub fn sweep(&self) {
        self.sweep_at(now_secs());
    }

    fn sweep_at(&self, now: u32) {
        for e in self.entries() {
            let v = e.load(Ordering::Relaxed);
            if v != 0 && !fresh(v, now) {
                let _ = e.compare_exchange(v, 0, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(n))
    }

    #[test]
    fn counts_per_address_within_the_window() {
        let g = LoginGuard::private().unwrap();
        let a = v4(0x7f00_0001);
        let now = 1000;
        assert_eq!(g.failures_at(a, now), 0);
        for i in 1..=5 {
            assert_eq!(g.note_failure_at(a, now + i), i);
        }
        assert_eq!(g.failures_at(v4(0x7f00_0002), now), 0);
        assert_eq!(g.failures_at(a, now + 59), 5);
        // The window started at the first failure: a minute later it is over.
        assert_eq!(g.failures_at(a, now + 1 + 60), 0);
        assert_eq!(g.note_failure_at(a, now + 1 + 60), 1);
        // IPv4-mapped IPv6 is the same address.
        let mapped = IpAddr::V6(Ipv4Addr::from(0x7f00_0001).to_ipv6_mapped());
        assert_eq!(g.failures_at(mapped, now + 61), 1);
        assert_eq!(g.failures_at(IpAddr::V6(Ipv6Addr::LOCALHOST), now + 61), 0);
    }

    #[test]
    fn memory_is_bounded_and_addresses_over_the_limit_are_kept() {
        let g = LoginGuard::private().unwrap();
        let now = 5000;
        let attacker = v4(1);
        for _ in 0..10 {
            g.note_failure_at(attacker, now);
        }
        // A flood of other addresses, many more than the table holds.
        for n in 2..200_000u32 {
            g.note_failure_at(v4(n), now);
        }
        assert_eq!(g.failures_at(attacker, now), 10);
        g.sweep_at(now);
        assert_eq!(g.failures_at(attacker, now), 10);
        g.sweep_at(now + WINDOW_SECS);
        assert!(g.entries().iter().all(|e| e.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn workers_share_the_region_through_the_memfd() {
        let (a, fd) = LoginGuard::create_shared().unwrap();
        // SAFETY: dup of our own descriptor, owned by `attach`.
        let b =
            LoginGuard::attach(unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&fd)) }).unwrap();
        let ip = v4(0x0a00_0001);
        a.note_failure(ip);
        b.note_failure(ip);
        assert_eq!(a.failures(ip), 2);
        assert_eq!(b.failures(ip), 2);
        assert_eq!(a.name_hash(b"bob"), b.name_hash(b"bob"), "one secret");
        let other = LoginGuard::private().unwrap();
        assert_ne!(a.name_hash(b"bob"), other.name_hash(b"bob"));
        // Something that is not a region is refused, and so is a number that is not open.
        assert!(LoginGuard::attach(-1).is_err());
        // SAFETY: a fresh memfd we own.
        let bad = unsafe { libc::memfd_create(c"x".as_ptr(), 0) };
        assert!(LoginGuard::attach(bad).is_err());
    }

    #[test]
    fn concurrent_failures_are_all_counted() {
        let g = std::sync::Arc::new(LoginGuard::private().unwrap());
        let ip = v4(0xc0a8_0001);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        g.note_failure(ip);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(g.failures(ip), 2000);
    }

    /// `cargo test --release --lib measure_hot_path -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure_hot_path() {
        let g = LoginGuard::private().unwrap();
        for n in 0..10_000u32 {
            g.note_failure(v4(n));
        }
        let n = 2_000_000u32;
        let t = std::time::Instant::now();
        let mut sum = 0u64;
        for i in 0..n {
            sum += u64::from(g.failures(v4(i % 20_000)));
        }
        let check = t.elapsed().as_nanos() as f64 / f64::from(n);
        let t = std::time::Instant::now();
        for i in 0..n {
            g.note_failure(v4(i % 20_000));
        }
        let note = t.elapsed().as_nanos() as f64 / f64::from(n);
        println!("failures(): {check:.1} ns, note_failure(): {note:.1} ns ({sum})");
    }
}
