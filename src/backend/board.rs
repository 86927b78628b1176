//! One view of backend health per instance, shared by its worker processes: worker 0 probes
//! (see `shard::probe`) and publishes each backend's health, `read_only` and replication lag
//! here; the other workers copy it into their own registry instead of probing, and add what
//! their live traffic saw (failed connects, lost connections) for worker 0's prober to weigh. So
//! 53 workers cost a backend one probe connection, not 53. Each backend's GTID position goes
//! with them (up to [`POS_DOMAINS`] replication domains), so every worker's causal reads skip
//! the wait on a replica known to have the session's write.
//!
//! A region of [`crate::shm`]: a header (magic, the prober's heartbeat), then one slot per backend
//! id: the address's hash (a worker follows a slot only when its own backend of that id has the
//! same address: workers that disagree on their lists probe for themselves), the published
//! state, and a count of passive failures. A worker that finds the heartbeat stale (worker 0 gone
//! or restarting) probes for itself until it is fresh again.

use super::health::Health;
use super::registry::MAX_BACKENDS;
use crate::shm::Region;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::Ordering;

const MAGIC: u64 = u64::from_le_bytes(*b"sluiceH1");
const HEADER_WORDS: usize = 8;
/// A slot: the address hash, the state, the passive failures, then the position: a sequence
/// word (odd while the prober writes; the number of domains in its low byte) and
/// [`POS_DOMAINS`] (domain, sequence number) pairs.
const SLOT_WORDS: usize = 4 + 2 * POS_DOMAINS;
/// GTID domains a published position holds; a server with more publishes none (followers then
/// wait on the replica for every causal read, as without a board).
pub const POS_DOMAINS: usize = 4;
/// The count byte of a position not published (none yet, or too many domains).
const NO_POS: u64 = 0xff;
/// Bytes of the region.
pub const SIZE: usize = (HEADER_WORDS + MAX_BACKENDS * SLOT_WORDS) * 8;

/// What the prober published for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub health: Health,
    pub writable: Option<bool>,
    /// The backend may answer routed reads (see `Backend::read_ok`).
    pub read_ok: bool,
    /// Replication lag at the last probe, milliseconds (`u32::MAX`: not known; see
    /// `Backend::lag_ms`): followers rank replicas by it as the prober does.
    pub lag_ms: u32,
}

pub struct Board {
    region: Region,
}

/// A stable hash of a backend's address (never 0: 0 marks an empty slot).
fn address_hash(address: &str) -> u64 {
    // FNV-1a: the same in every process (std's hasher is keyed per process).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in address.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1
}

impl Board {
    /// The board the supervisor makes for its workers (its memfd is inherited by them).
    pub fn create_shared() -> std::io::Result<(Board, OwnedFd)> {
        let (region, fd) = Region::create_shared(c"sluice-health", SIZE)?;
        region.word(0).store(MAGIC, Ordering::Release);
        Ok((Board { region }, fd))
    }

    /// Maps the supervisor's board from the descriptor this worker inherited.
    pub fn attach(fd: RawFd) -> Result<Board, String> {
        let b = Board {
            region: Region::attach(fd, SIZE, "health board")?,
        };
        if b.region.word(0).load(Ordering::Acquire) != MAGIC {
            return Err("health board fd: not a sluice health board".into());
        }
        Ok(b)
    }

    fn slot(&self, id: u16) -> Option<&[std::sync::atomic::AtomicU64]> {
        let id = usize::from(id);
        (id < MAX_BACKENDS).then(|| {
            self.region
                .words(HEADER_WORDS + id * SLOT_WORDS, SLOT_WORDS)
        })
    }

    /// The prober publishes backend `id`'s state (and beats its heart).
    pub fn publish(&self, id: u16, address: &str, p: Published) {
        let Some(s) = self.slot(id) else { return };
        let writable = match p.writable {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        };
        s[0].store(address_hash(address), Ordering::Relaxed);
        s[1].store(
            u64::from(p.lag_ms) << 32
                | u64::from(p.read_ok) << 17
                | 1 << 16
                | writable << 8
                | p.health as u64,
            Ordering::Release,
        );
        self.region
            .word(1)
            .store(super::registry::monotonic_ms(), Ordering::Release);
    }

    /// What the prober last published for backend `id` at `address`, if its heartbeat is
    /// younger than `fresh_ms` (else the caller probes for itself).
    pub fn read(&self, id: u16, address: &str, fresh_ms: u64) -> Option<Published> {
        let s = self.slot(id)?;
        let beat = self.region.word(1).load(Ordering::Acquire);
        if beat == 0 || super::registry::monotonic_ms().saturating_sub(beat) > fresh_ms {
            return None;
        }
        if s[0].load(Ordering::Relaxed) != address_hash(address) {
            return None;
        }
        let v = s[1].load(Ordering::Acquire);
        if v >> 16 & 1 == 0 {
            return None;
        }
        Some(Published {
            health: Health::from_u8(v as u8),
            writable: match v >> 8 & 0xff {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
            read_ok: v >> 17 & 1 == 1,
            lag_ms: (v >> 32) as u32,
        })
    }

    /// The prober publishes backend `id`'s GTID position (`None`: not known). Only the prober
    /// writes: a sequence word tells readers when a write is under way.
    pub fn publish_pos(&self, id: u16, pos: Option<&super::gtid::Pos>) {
        let Some(s) = self.slot(id) else { return };
        let domains = pos.map(|p| p.domains()).filter(|d| d.len() <= POS_DOMAINS);
        let count = domains.map_or(NO_POS, |d| d.len() as u64);
        let seq = s[3].load(Ordering::Relaxed) >> 8;
        s[3].store((seq + 1) << 8 | NO_POS, Ordering::Relaxed);
        std::sync::atomic::fence(Ordering::Release);
        for (i, (d, n)) in domains.unwrap_or_default().iter().enumerate() {
            s[4 + 2 * i].store(u64::from(*d), Ordering::Relaxed);
            s[5 + 2 * i].store(*n, Ordering::Relaxed);
        }
        s[3].store((seq + 2) << 8 | count, Ordering::Release);
    }

    /// The position the prober last published for backend `id` (`None`: none, or a write under
    /// way that did not settle within a few tries).
    pub fn read_pos(&self, id: u16) -> Option<super::gtid::Pos> {
        let s = self.slot(id)?;
        for _ in 0..4 {
            let before = s[3].load(Ordering::Acquire);
            if before >> 8 == 0 {
                return None; // never published
            }
            if (before >> 8) & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let count = (before & 0xff) as usize;
            if count > POS_DOMAINS {
                return None;
            }
            let domains: Vec<(u32, u64)> = (0..count)
                .map(|i| {
                    (
                        s[4 + 2 * i].load(Ordering::Relaxed) as u32,
                        s[5 + 2 * i].load(Ordering::Relaxed),
                    )
                })
                .collect();
            std::sync::atomic::fence(Ordering::Acquire);
            if s[3].load(Ordering::Relaxed) == before {
                return Some(super::gtid::Pos::from_domains(domains));
            }
        }
        None
    }

    /// A worker's live traffic failed to reach backend `id`.
    pub fn note_passive(&self, id: u16) {
        if let Some(s) = self.slot(id) {
            s[2].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The prober takes the passive failures every worker reported.
    pub fn take_passive(&self, id: u16) -> u64 {
        self.slot(id).map_or(0, |s| s[2].swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_states_reach_a_follower_with_the_same_address_only() {
        let (prober, fd) = Board::create_shared().unwrap();
        // A follower maps the same memory (its own descriptor, as a worker would inherit one).
        // SAFETY: dup of a descriptor we own.
        let dup = unsafe { libc::dup(std::os::fd::AsRawFd::as_raw_fd(&fd)) };
        let follower = Board::attach(dup).unwrap();
        assert_eq!(follower.read(0, "a:1", 1000), None, "nothing published yet");
        let p = Published {
            health: Health::Down,
            writable: Some(false),
            read_ok: true,
            lag_ms: 1234,
        };
        prober.publish(0, "a:1", p);
        assert_eq!(follower.read(0, "a:1", 1000), Some(p));
        assert_eq!(follower.read(0, "b:2", 1000), None, "another address");
        assert_eq!(follower.read(1, "a:1", 1000), None, "another id");
        assert_eq!(follower.read(MAX_BACKENDS as u16, "a:1", 1000), None);
        follower.note_passive(0);
        follower.note_passive(0);
        assert_eq!(prober.take_passive(0), 2);
        assert_eq!(prober.take_passive(0), 0);
        // Positions: published whole, read whole; too many domains publish none.
        assert_eq!(follower.read_pos(0), None, "none published yet");
        let pos = crate::backend::gtid::Pos::parse("0-1-42,7-2-9").unwrap();
        prober.publish_pos(0, Some(&pos));
        assert_eq!(follower.read_pos(0), Some(pos));
        let wide = crate::backend::gtid::Pos::parse("0-1-1,1-1-1,2-1-1,3-1-1,4-1-1").unwrap();
        prober.publish_pos(0, Some(&wide));
        assert_eq!(follower.read_pos(0), None);
        prober.publish_pos(0, None);
        assert_eq!(follower.read_pos(0), None);
        let empty = crate::backend::gtid::Pos::parse("").unwrap();
        prober.publish_pos(0, Some(&empty));
        assert_eq!(follower.read_pos(0), Some(empty));
        // A stale heartbeat: the follower is on its own.
        prober.region.word(1).store(1, Ordering::Release);
        assert_eq!(follower.read(0, "a:1", 1000), None);
    }
}
