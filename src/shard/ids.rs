//! Connection ids: the id a client sees as its thread id (the handshake's, `CONNECTION_ID()`,
//! `KILL <id>`, SHOW PROCESSLIST) is where its session lives, composed by
//! [`IdLayout`](crate::shared::IdLayout) from (worker process, shard, per-shard counter), so a
//! KILL finds its target's process and shard from the id alone (see [`super::kill`]).
//!
//! Owns the shard's `ids` (the layout) and `next_id` (the counter; an upgrade's successor
//! takes its predecessor's, so its new sessions do not take the ids of those it adopts). The
//! counter skips 0 and wraps within the layout's local bits.

use super::Shard;

impl Shard {
    /// The id of the next session accepted on this shard.
    pub(super) fn next_conn_id(&self) -> u32 {
        let local_bits = self.ids.local_bits();
        let max = if local_bits >= 32 {
            u32::MAX
        } else {
            (1u32 << local_bits) - 1
        };
        let mut n = self.next_id.get().wrapping_add(1) & max;
        if n == 0 {
            n = 1;
        }
        self.next_id.set(n);
        self.ids.compose(self.shared.worker, self.id as u32, n)
    }
}
