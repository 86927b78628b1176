//! Slot lending between shards: each shard's pool of an (account, backend) has a share of the
//! pool's size; a shard whose checkouts queue asks the others, one after another around the
//! ring, to lend it a slot, and gives it back when it no longer needs it. Only messages cross
//! cores ([`ShardMsg::Lend`], [`ShardMsg::Granted`], [`ShardMsg::Return`]), and a slot is given
//! up only with its connection closed first (or none open), so the sum of open connections
//! never passes the bound.
//!
//! Owns no shard field of its own: the lent and borrowed counts live in each
//! [`Pool`](crate::backend::pool::Pool) (`lend`, `receive_slot`, `maybe_return`). A pool asks
//! through the starved hook its shard gives it ([`request_slot`]); the janitor returns what is
//! no longer needed ([`Shard::return_lent`]).

use super::{Shard, ShardMsg};
use crate::backend::conn::BackendConn;
use crate::backend::pool::{Lent, Pool};
use crate::shared::Shared;
use std::rc::Rc;
use std::time::Duration;
use tracing::debug;

/// An idle connection is lent to a starved shard only after this long unused: short imbalances
/// between busy shards resolve themselves; lending is for sustained skew.
const LEND_IDLE_MIN: Duration = Duration::from_millis(250);

/// The shard after `from` in ring order, skipping `asker`.
pub(super) fn next_shard(from: usize, asker: usize, n: usize) -> usize {
    let mut s = (from + 1) % n;
    if s == asker {
        s = (s + 1) % n;
    }
    s
}

/// A checkout on `shard` queued for pool `pool`: ask the other shards, one after another, to
/// lend a slot (cross-core traffic is messages only; the global bound never moves).
pub(super) fn request_slot(shared: &Shared, shard: usize, pool: usize) {
    let Some(mailboxes) = shared.mailboxes.get() else {
        return;
    };
    let n = mailboxes.len();
    if n < 2 {
        return;
    }
    debug!(
        shard,
        pool, "queue backed up: asking another shard to lend a slot"
    );
    mailboxes[next_shard(shard, shard, n)].post(ShardMsg::Lend {
        pool,
        to: shard,
        hops: n - 1,
        retry: false,
    });
}

impl Shard {
    /// [`ShardMsg::Lend`]: lend pool `pool` a slot to shard `to` if an idle connection has
    /// been unused for [`LEND_IDLE_MIN`], else pass the request on (`hops` shards left), or look
    /// again once (`retry`) when the idle ones were used too recently.
    pub(super) fn on_lend(&self, pool: usize, to: usize, hops: usize, retry: bool) {
        let Some(mailboxes) = self.shared.mailboxes.get() else {
            return;
        };
        let Some(p) = self.pool_at(pool) else {
            return;
        };
        if retry {
            p.lend_retry_pending.set(false);
        }
        let granted = ShardMsg::Granted {
            pool,
            from: self.id,
        };
        match p.lend(LEND_IDLE_MIN) {
            Lent::Now => mailboxes[to].post(granted),
            Lent::Closing(conn) => self.close_then_post(p.clone(), conn, to, granted),
            Lent::No if hops > 1 => {
                let next = next_shard(self.id, to, mailboxes.len());
                mailboxes[next].post(ShardMsg::Lend {
                    pool,
                    to,
                    hops: hops - 1,
                    retry: false,
                });
            }
            Lent::No if !retry && p.idle_count() > 0 && !p.lend_retry_pending.get() => {
                // Idle, but too recently used to give up: look again once it has aged
                // (once per pool: a starved shard asks again while it keeps queueing).
                p.lend_retry_pending.set(true);
                let me = mailboxes[self.id].clone();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(LEND_IDLE_MIN).await;
                    me.post(ShardMsg::Lend {
                        pool,
                        to,
                        hops: 1,
                        retry: true,
                    });
                })
                .detach();
            }
            Lent::No => {}
        }
    }

    /// [`ShardMsg::Granted`]: shard `from` lent pool `pool` a slot.
    pub(super) fn on_granted(&self, pool: usize, from: usize) {
        debug!(shard = self.id, pool, from, "slot lent");
        if let Some(p) = self.pool_at(pool) {
            p.receive_slot(Some(from));
        }
    }

    /// [`ShardMsg::Return`]: a slot lent earlier for pool `pool` comes back.
    pub(super) fn on_returned(&self, pool: usize) {
        if let Some(p) = self.pool_at(pool) {
            p.receive_slot(None);
        }
    }

    /// Gives a borrowed slot of `pool` back to its lender when the pool no longer needs it (a
    /// janitor's chore, every tick).
    pub(super) fn return_lent(&self, pool: &Rc<Pool>) {
        let index = self.shared.pool_index(pool.user, pool.backend);
        match pool.maybe_return() {
            Some((lender, Lent::Now)) => {
                if let Some(mb) = self.shared.mailboxes.get().and_then(|m| m.get(lender)) {
                    mb.post(ShardMsg::Return { pool: index });
                }
            }
            Some((lender, Lent::Closing(conn))) => {
                self.close_then_post(pool.clone(), conn, lender, ShardMsg::Return { pool: index })
            }
            _ => {}
        }
    }

    /// Closes a connection given up for another shard, then tells that shard.
    fn close_then_post(&self, pool: Rc<Pool>, conn: Box<BackendConn>, to: usize, msg: ShardMsg) {
        let Some(mb) = self.shared.mailboxes.get().and_then(|m| m.get(to)).cloned() else {
            return;
        };
        glommio::spawn_local(async move {
            conn.quit().await;
            pool.lent_closed();
            mb.post(msg);
        })
        .detach();
    }
}
