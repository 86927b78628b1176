//! Shutdown: a shard that is told to stop ([`ShardMsg::Shutdown`]) closes its listener, ends a
//! pause, finishes its parked sessions at once and its active ones after their current command,
//! closes its idle backend connections, its KILL connections and its position followers, and
//! stops once no session is left or `shutdown_timeout_ms` has passed ([`Shard::drained`], asked
//! by the dispatcher each turn).
//!
//! Owns the shard's `draining` flag and `drain_deadline`. While draining, the janitor and the
//! budget tick stop, and [`Shard::park`] finishes a session instead of parking it.

use super::table::{ActiveCtl, SlotState};
use super::{Shard, ShardMsg};
use crate::frontend::session;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::warn;

impl Shard {
    /// Starts draining (once; a second request does nothing).
    pub(super) fn begin_shutdown(self: &Rc<Self>) {
        if self.draining.replace(true) {
            return;
        }
        let deadline = Duration::from_millis(self.shared.config.shutdown_timeout_ms);
        self.drain_deadline.set(Some(Instant::now() + deadline));
        let mailbox = self.poller.mailbox();
        glommio::spawn_local(async move {
            glommio::timer::sleep(deadline).await;
            mailbox.post(ShardMsg::Wake);
        })
        .detach();
        self.stop_accepting();
        // A pause ends with the process: waiting commands run, then their sessions close.
        self.pause(Some(false));
        // Idle clients are closed now; active ones after their current command.
        let tokens = self.table.borrow().tokens();
        for t in tokens {
            let sess = {
                let mut table = self.table.borrow_mut();
                let parked = matches!(table.get(t).map(|s| &s.state), Some(SlotState::Parked(_)));
                if parked {
                    table.unpark(t, Rc::new(ActiveCtl::default()))
                } else {
                    None
                }
            };
            if let Some(sess) = sess {
                let shard = self.clone();
                glommio::spawn_local(async move { session::finish(&shard, t, sess).await })
                    .detach();
            }
        }
        for p in &self.pools() {
            p.close_idle();
        }
        self.kill_lines.sweep(Duration::ZERO);
        self.stop_following();
    }

    /// Has a draining shard finished: no session left, or the deadline passed (the rest are
    /// closed with the executor)?
    pub(super) fn drained(&self) -> bool {
        if !self.draining.get() {
            return false;
        }
        let left = self.table.borrow().len();
        if left == 0 {
            return true;
        }
        if self
            .drain_deadline
            .get()
            .is_some_and(|d| Instant::now() >= d)
        {
            warn!(
                shard = self.id,
                sessions = left,
                "shutdown deadline passed; closing the rest"
            );
            return true;
        }
        false
    }
}
