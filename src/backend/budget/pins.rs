//! The pin budget across worker processes: `pool.pin_budget` bounds the sessions pinned to a
//! pool's connections summed over every worker, as `pool.size` bounds its connections. A worker
//! whose clients pin may use the whole pin budget while the others pin nothing.
//!
//! **Where the count lives.** A region of its own beside the slots' table (its descriptor in
//! [`PIN_FD_ENV`]): a header, then per pool entry of the slots' table (the same [`Entry`]
//! numbers) one word per lease, the sessions that lease's process has pinned. A pin counts under
//! its process's lease, so the supervisor's zeroing of a dead process's lease gives its pins
//! back with its slots (see [`super::HostBudget::release_pid`]).
//!
//! **Taking without a lock**, as slots are taken: a process adds one to its own count, then sums
//! every lease's; over the budget it takes the one back ([`admit`]). A pin the server reported
//! without asking (sluice could not refuse it) is counted anyway, and can leave the sum above
//! the budget; new pins wait or are refused until it is back under.
//!
//! **No pins without the region.** A pool beyond the slots' table, or a worker started by a
//! supervisor older than this region (an upgrade keeps the old supervisor: it passes no
//! [`PIN_FD_ENV`]), counts its pins in its own process against a static 1/N share of
//! `pool.pin_budget` ([`scope`]), as every worker did before.
//!
//! Turned down: more words in each entry of the slots' table. That region's size and magic are
//! what a worker checks when it maps it, and the supervisor is not replaced by an upgrade: a new
//! layout there would stop every upgraded (or restarted) worker from mapping an older
//! supervisor's region, and an older worker from mapping a newer one's. A second region is
//! simply absent for a worker that does not know it, or under a supervisor that does not make it.

use super::{Entry, ENTRIES};
use crate::shm::Region;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// The environment variable through which a worker learns its pin region's descriptor.
pub const PIN_FD_ENV: &str = "SLUICE_PIN_BUDGET_FD";

const MAGIC: u64 = u64::from_le_bytes(*b"sluiceP1");
const HEADER_WORDS: usize = 4;
/// Rounds of [`admit`]'s `Retry` before a take counts as refused: two processes racing for
/// the last unit each back off and look again; both backing off in step this many times in a
/// row would need their threads to run in lockstep (a `wait` pin looks again 10 ms later).
const ROUNDS: usize = 16;

/// Bytes of the region for `leases` leases.
pub fn size(leases: usize) -> usize {
    (HEADER_WORDS + ENTRIES * leases) * 8
}

/// What a process does with the unit it added to its count, having read every count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The sum with its unit is within the budget: the pin is counted.
    Keep,
    /// Over; without its unit there is room: another process's unit, added but perhaps about
    /// to be taken back, is in the way. Take it back and try again.
    Retry,
    /// Over, and full without it: take it back; the budget is used up.
    Full,
}

/// `with_mine`: every lease's count read after adding this process's unit; `without_mine`:
/// the sum read again after taking it back (only looked at when over).
pub fn admit(with_mine: usize, without_mine: usize, limit: usize) -> Admit {
    if with_mine <= limit {
        Admit::Keep
    } else if without_mine < limit {
        Admit::Retry
    } else {
        Admit::Full
    }
}

/// Where a pool's pins are counted, against what limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// By this process's shards: one process, or a worker without the host's count.
    Process { limit: usize },
    /// By every worker process of the host, in the pin region.
    Host { limit: usize },
}

/// The scope of a pool's pin budget of `pin_budget` in worker `worker` of `workers`, when the
/// host counts this pool's pins (`host`: the region exists and the pool has its entry) or not.
pub fn scope(pin_budget: usize, workers: usize, worker: usize, host: bool) -> Scope {
    if workers <= 1 {
        Scope::Process { limit: pin_budget }
    } else if host {
        Scope::Host { limit: pin_budget }
    } else {
        Scope::Process {
            limit: super::policy::fair_share(pin_budget, workers, worker),
        }
    }
}

/// The pin counts of every pool, per lease.
pub struct PinTable {
    region: Region,
    leases: usize,
}

impl PinTable {
    fn init(region: Region, workers: usize, leases: usize) -> PinTable {
        region.word(1).store(workers as u64, Ordering::Relaxed);
        region.word(0).store(MAGIC, Ordering::Release);
        PinTable { region, leases }
    }

    /// The region the supervisor makes (its memfd is inherited by the workers).
    pub fn create_shared(workers: usize, leases: usize) -> std::io::Result<(PinTable, OwnedFd)> {
        let (region, fd) = Region::create_shared(c"sluice-pin-budget", size(leases))?;
        Ok((PinTable::init(region, workers, leases), fd))
    }

    /// A region for this process alone (tests).
    pub fn private(workers: usize, leases: usize) -> std::io::Result<PinTable> {
        Ok(PinTable::init(
            Region::private(size(leases))?,
            workers,
            leases,
        ))
    }

    /// Maps the supervisor's region from the descriptor this worker inherited.
    pub fn attach(fd: RawFd, workers: usize, leases: usize) -> Result<PinTable, String> {
        let region = Region::attach(fd, size(leases), "pin budget")?;
        if region.word(0).load(Ordering::Acquire) != MAGIC
            || region.word(1).load(Ordering::Relaxed) != workers as u64
        {
            return Err("pin budget fd: not a sluice pin budget for this many workers".into());
        }
        Ok(PinTable { region, leases })
    }

    fn count(&self, e: Entry, lease: usize) -> &AtomicU64 {
        self.region.word(HEADER_WORDS + e.0 * self.leases + lease)
    }

    /// Sessions pinned to `e`'s connections in every process.
    pub fn total(&self, e: Entry) -> usize {
        (0..self.leases)
            .map(|l| self.count(e, l).load(Ordering::SeqCst) as usize)
            .sum()
    }

    /// Sessions pinned to `e`'s connections in the process of `lease`.
    pub fn held(&self, e: Entry, lease: usize) -> usize {
        self.count(e, lease).load(Ordering::SeqCst) as usize
    }

    /// Counts a pin of `e` under `lease` if the host has fewer than `limit`.
    pub fn take(&self, e: Entry, lease: usize, limit: usize) -> bool {
        if lease >= self.leases {
            return false;
        }
        let mine = self.count(e, lease);
        for round in 0..ROUNDS {
            mine.fetch_add(1, Ordering::SeqCst);
            let with_mine = self.total(e);
            let without_mine = if with_mine <= limit {
                0
            } else {
                mine.fetch_sub(1, Ordering::SeqCst);
                self.total(e)
            };
            match admit(with_mine, without_mine, limit) {
                Admit::Keep => return true,
                Admit::Full => return false,
                // Out of step with the process racing for the same unit: a lease-dependent
                // pause, so two processes do not retry in step.
                Admit::Retry => (0..(lease + 1) * (round + 1)).for_each(|_| std::hint::spin_loop()),
            }
        }
        false
    }

    /// Counts a pin of `e` under `lease` whatever the sum.
    pub fn force(&self, e: Entry, lease: usize) {
        if lease < self.leases {
            self.count(e, lease).fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A pin of `e` under `lease` ends.
    pub fn give(&self, e: Entry, lease: usize) {
        if lease < self.leases {
            let _ = self
                .count(e, lease)
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    /// Zeroes `lease`'s count of `e`; returns it.
    pub fn zero(&self, e: Entry, lease: usize) -> usize {
        self.count(e, lease).swap(0, Ordering::SeqCst) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admitting() {
        use Admit::*;
        // (with mine, without mine, limit, what to do)
        let table = [
            // Room: keep it, up to the last unit.
            (1, 0, 2, Keep),
            (2, 1, 2, Keep),
            // Over, and full without it: the budget is used up.
            (3, 2, 2, Full),
            (5, 4, 2, Full),
            // Over only because another process's unit was in (it took it back since).
            (3, 1, 2, Retry),
            (2, 0, 1, Retry),
            // A zero budget (a pool of one with the default is at least 1, but a shrink or a
            // forced pin can leave the sum above any budget).
            (1, 0, 0, Full),
            (4, 3, 1, Full),
        ];
        for (with_mine, without_mine, limit, want) in table {
            assert_eq!(
                admit(with_mine, without_mine, limit),
                want,
                "{with_mine} {without_mine} {limit}"
            );
        }
    }

    #[test]
    fn scopes() {
        use Scope::*;
        // (pin budget, workers, worker, host counts, scope)
        let table = [
            // One process: the whole budget, counted by its shards, region or not.
            (4, 1, 0, false, Process { limit: 4 }),
            (4, 1, 0, true, Process { limit: 4 }),
            // Workers with the host's count: the whole budget, host-wide.
            (4, 2, 0, true, Host { limit: 4 }),
            (4, 2, 1, true, Host { limit: 4 }),
            (1, 3, 2, true, Host { limit: 1 }),
            // Workers without it (a pool beyond the table, an older supervisor): 1/N each,
            // remainders to the lowest workers.
            (4, 2, 1, false, Process { limit: 2 }),
            (5, 2, 0, false, Process { limit: 3 }),
            (5, 2, 1, false, Process { limit: 2 }),
            (1, 3, 2, false, Process { limit: 0 }),
        ];
        for (pin_budget, workers, worker, host, want) in table {
            assert_eq!(
                scope(pin_budget, workers, worker, host),
                want,
                "{pin_budget} {workers} {worker} {host}"
            );
        }
    }
}
