//! The shard's side of the host budget (worker processes; see [`crate::backend::budget`]): a
//! tick every [`TICK`](crate::backend::budget::TICK) in which each pool of this shard looks at
//! what the other workers wait for and gives a slot up when the policy says so. Taking needs no
//! tick: a checkout takes a free slot itself (see `Pool::checkout`).

use super::Shard;
use std::rc::Rc;

/// Runs until the shard drains; returns at once in a single process (no host budget).
pub(super) async fn tick(shard: Rc<Shard>) {
    if shard.shared.budget.is_none() {
        return;
    }
    while !shard.is_draining() {
        glommio::timer::sleep(crate::backend::budget::TICK).await;
        for pool in shard.pools() {
            pool.host_tick();
        }
    }
}
