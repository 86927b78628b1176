//! Who gives up pool slots of the host budget, and when: pure functions of what one worker sees
//! of one pool's budget (no clock, no I/O), so every rule is a row of the table tests below.
//!
//! The rules, for one pool of `limit` (= `pool.size`) connections shared by every worker process:
//! Other workers' needs are counted, not flagged: the checkouts they have queued for the pool,
//! less the slots already free (which those checkouts will take within 20 ms). So a worker gives
//! what is needed and no more, and stops as soon as the free slots cover the queue.
//!
//! - **Taking.** A worker takes a free slot when it needs one, unless the free slots are all
//!   needed by other workers' queues and this one already holds its fair share (`limit /
//!   workers`, remainders to the lowest workers): taking it would only ping-pong it.
//! - **Spare** (another worker needs a slot, this one holds its fair share or less): give what is spare
//!   by evidence, as shards lend to each other: unused headroom at once, an idle connection
//!   unused for [`SPARE_IDLE_MIN`]. Nothing its own clients are using.
//! - **Yield** (this worker holds more than its fair share, and another waits or the budget is
//!   overspent after a reload shrank it): give headroom and idle connections of any age, and the
//!   next connection a client releases closes instead of serving this worker's own queue. So a
//!   worker that took the whole pool while the others were idle gives it back as soon as they
//!   need it, within one released query.
//! - **Keep** otherwise: nobody waits, or the budget is overspent but this worker is within its
//!   fair share (the workers above theirs give).
//!
//! Turned down: lending by message between processes (the shards' way). A message needs a
//! handler in every worker and an answer to wait for; a worker that dies between "lend" and
//! "granted" would lose the slot. Counts in shared memory need neither, and the supervisor
//! returns a dead worker's count by zeroing it.

use std::time::Duration;

/// How long an idle connection must have been unused before a worker within its fair share
/// gives it up (the same evidence shards ask of each other: short imbalances resolve themselves).
pub const SPARE_IDLE_MIN: Duration = Duration::from_millis(250);

/// What one worker sees of one pool's host budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The budget: `pool.size`.
    pub limit: usize,
    /// Slots held by every worker together.
    pub total: usize,
    /// Slots held by this worker (its shards' shares of the pool, lent ones included).
    pub held: usize,
    /// This worker's fair share of `limit`.
    pub fair: usize,
    /// Checkouts of this pool queued in other workers.
    pub waiting_elsewhere: usize,
}

impl View {
    /// Slots nobody holds.
    pub fn free(&self) -> usize {
        self.limit.saturating_sub(self.total)
    }

    /// Do other workers wait for more slots than are free?
    pub fn others_need(&self) -> bool {
        self.waiting_elsewhere > self.free()
    }
}

/// How a worker treats the slots it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stance {
    Keep,
    Spare,
    Yield,
}

/// Worker `worker`'s fair share of `limit` slots among `workers` (remainders to the lowest).
pub fn fair_share(limit: usize, workers: usize, worker: usize) -> usize {
    let w = workers.max(1);
    limit / w + usize::from(worker < limit % w)
}

/// May this worker take a free slot now?
pub fn may_take(v: &View) -> bool {
    v.free() > 0 && (v.free() > v.waiting_elsewhere || v.held < v.fair)
}

pub fn stance(v: &View) -> Stance {
    let over = v.total > v.limit;
    if (over || v.others_need()) && v.held > v.fair {
        Stance::Yield
    } else if v.others_need() {
        Stance::Spare
    } else {
        Stance::Keep
    }
}

/// Under `s`, an idle connection unused this long is given up (with headroom first); `None`:
/// nothing is given.
pub fn give_idle_min(s: Stance) -> Option<Duration> {
    match s {
        Stance::Keep => None,
        Stance::Spare => Some(SPARE_IDLE_MIN),
        Stance::Yield => Some(Duration::ZERO),
    }
}

/// Under `s`, does the next released connection close and give its slot back?
pub fn yield_on_release(s: Stance) -> bool {
    s == Stance::Yield
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(limit: usize, total: usize, held: usize, fair: usize, waiting_elsewhere: usize) -> View {
        View {
            limit,
            total,
            held,
            fair,
            waiting_elsewhere,
        }
    }

    #[test]
    fn fair_shares_add_up() {
        assert_eq!(fair_share(4, 2, 0), 2);
        assert_eq!(fair_share(4, 2, 1), 2);
        assert_eq!(fair_share(5, 2, 0), 3);
        assert_eq!(fair_share(5, 2, 1), 2);
        assert_eq!(fair_share(2, 3, 2), 0);
        assert_eq!(fair_share(7, 0, 0), 7, "no workers counted: one");
        for limit in 0..40 {
            for workers in 1..9 {
                let sum: usize = (0..workers).map(|w| fair_share(limit, workers, w)).sum();
                assert_eq!(sum, limit, "{limit} over {workers}");
            }
        }
    }

    #[test]
    fn taking() {
        // (view, may take)
        let table = [
            // Free slots, nobody else waiting: take, even far above the fair share.
            (v(4, 0, 0, 2, 0), true),
            (v(4, 3, 3, 2, 0), true),
            // Spent.
            (v(4, 4, 4, 2, 0), false),
            (v(4, 4, 0, 2, 1), false),
            // Overspent after a shrink.
            (v(2, 4, 0, 1, 0), false),
            // Another waits: the free slot is theirs unless this worker is below its share.
            (v(4, 3, 2, 2, 1), false),
            (v(4, 3, 3, 2, 1), false),
            (v(4, 3, 1, 2, 1), true),
            (v(4, 0, 0, 2, 1), true),
            // More free slots than others wait for: the rest is anyone's.
            (v(4, 2, 2, 2, 1), true),
            (v(4, 2, 2, 2, 2), false),
            // A fair share of 0 (more workers than slots): only what nobody else waits for.
            (v(2, 1, 0, 0, 1), false),
            (v(2, 1, 0, 0, 0), true),
        ];
        for (view, want) in table {
            assert_eq!(may_take(&view), want, "{view:?}");
        }
    }

    #[test]
    fn giving() {
        use Stance::*;
        // (view, stance)
        let table = [
            // Nobody waits, within budget: keep, whatever is held.
            (v(4, 4, 4, 2, 0), Keep),
            (v(4, 2, 2, 2, 0), Keep),
            (v(4, 0, 0, 2, 0), Keep),
            // Another waits: above the fair share, yield; within it, give only what is spare.
            (v(4, 4, 4, 2, 1), Yield),
            (v(4, 4, 3, 2, 1), Yield),
            (v(4, 4, 2, 2, 1), Spare),
            (v(4, 4, 1, 2, 3), Spare),
            (v(4, 3, 0, 2, 2), Spare),
            // … but free slots already cover the queue elsewhere: nothing more to give.
            (v(4, 3, 3, 2, 1), Keep),
            (v(4, 2, 2, 2, 2), Keep),
            (v(4, 2, 2, 2, 3), Spare),
            // Overspent (a reload shrank the pool): those above their share give, others keep.
            (v(2, 4, 3, 1, 0), Yield),
            (v(2, 4, 1, 1, 0), Keep),
            (v(2, 4, 1, 1, 1), Spare),
            (v(2, 3, 0, 1, 0), Keep),
        ];
        for (view, want) in table {
            assert_eq!(stance(&view), want, "{view:?}");
        }
        assert_eq!(give_idle_min(Keep), None);
        assert_eq!(give_idle_min(Spare), Some(SPARE_IDLE_MIN));
        assert_eq!(give_idle_min(Yield), Some(Duration::ZERO));
        assert!(yield_on_release(Yield));
        assert!(!yield_on_release(Spare) && !yield_on_release(Keep));
    }
}
