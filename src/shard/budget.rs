//! The shard's side of the host budget (worker processes; see [`crate::backend::budget`]): a
//! tick every [`TICK`](crate::backend::budget::TICK) while any checkout of the host waits for a
//! slot (every [`IDLE_TICK`](crate::backend::budget::IDLE_TICK) while none does) in which each
//! pool of this shard looks at what the other workers wait for and gives a slot up when the
//! policy says so. Taking needs no
//! tick: a checkout takes a free slot itself (see `Pool::checkout`).

use super::Shard;
use std::rc::Rc;

/// Runs until the shard drains; returns at once in a single process (no host budget).
pub(super) async fn tick(shard: Rc<Shard>) {
    let Some(host) = shard.shared.budget.clone() else {
        return;
    };
    while !shard.is_draining() {
        let busy = host.anyone_waiting();
        glommio::timer::sleep(if busy {
            crate::backend::budget::TICK
        } else {
            crate::backend::budget::IDLE_TICK
        })
        .await;
        for pool in shard.pools() {
            pool.host_tick();
        }
    }
}
