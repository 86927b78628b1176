//! The typed messages other threads send a shard: the whole cross-core vocabulary in one enum
//! (seastar's `invoke_on` by name). Each variant says what it asks and how it is answered: a
//! [`Reply1`] or a `std::sync::mpsc::Sender` carried in the message, or nothing.
//!
//! Messages travel through the shard's [`Mailbox`](super::poller::Mailbox) and are handled one
//! at a time by the dispatcher (`dispatch.rs`, `Shard::on_message`); this file only defines
//! them.

use super::pause;
use super::table::KillKind;
use super::Reply1;
use crate::error::Reply;
use std::sync::Arc;

/// Typed messages other threads send a shard.
pub enum ShardMsg {
    /// Stop accepting, let commands in flight finish, close everything.
    Shutdown,
    /// KILL a session of this shard; the reply says whether it was found and allowed.
    /// `ask_peer`: during an upgrade's handover, when it is not here, ask the other process
    /// (see `upgrade::peer`).
    Kill {
        conn_id: u32,
        kind: KillKind,
        by_user: u32,
        ask_peer: bool,
        reply: Reply1<Result<(), Reply>>,
    },
    /// KILL a session of this shard for the other process of an upgrade's handover, for the
    /// user it names (`None`: the admin console): here only (see `upgrade::peer`).
    PeerKill {
        conn_id: u32,
        kind: KillKind,
        by: Option<String>,
        reply: Reply1<Result<(), Reply>>,
    },
    /// Re-check the drain condition (the last session left, or the deadline passed).
    Wake,
    /// Lend pool `pool` one slot to shard `to`, or pass the request on (`hops` shards left).
    /// `retry`: this lender already deferred the request once (its idle connections were too
    /// recently used to give up).
    Lend {
        pool: usize,
        to: usize,
        hops: usize,
        retry: bool,
    },
    /// Shard `from` lent pool `pool` a slot.
    Granted { pool: usize, from: usize },
    /// A slot lent earlier for pool `pool` comes back.
    Return { pool: usize },
    /// A caching_sha2_password full authentication on another shard cached this double hash.
    Sha2Cached { user: u32, stage2: [u8; 32] },
    /// The users loaded from the database changed (with their ids).
    DbUsers(Arc<Vec<(u32, crate::bootstrap::DbUser)>>),
    /// Send a snapshot of this shard's counters (metrics scrape).
    Stats {
        reply: std::sync::mpsc::Sender<crate::metrics::ShardSnapshot>,
    },
    /// List this shard's clients (the console's SHOW CLIENTS).
    Clients {
        reply: std::sync::mpsc::Sender<Vec<crate::metrics::ClientRow>>,
    },
    /// RECONNECT (the backends' connection generation was bumped): close the idle connections
    /// of `backend` (every backend: `None`) now; reply, per backend, (id, closed now, out and
    /// closing as they come back).
    Reconnect {
        backend: Option<u16>,
        reply: std::sync::mpsc::Sender<Vec<(u16, usize, usize)>>,
    },
    /// PAUSE (`Some(true)`), RESUME (`Some(false)`) or neither (`None`: just the status);
    /// reply with what this shard's sessions are doing (see [`pause`]).
    Pause {
        set: Option<bool>,
        reply: std::sync::mpsc::Sender<pause::PauseStatus>,
    },
    /// SHUTDOWN WAIT_FOR_CLIENTS: close the listener (new clients are refused), keep serving
    /// the clients there are; reply with how many.
    StopAccepting { reply: std::sync::mpsc::Sender<u64> },
    /// An upgrade's request (hand sessions over, adopt one): see `upgrade::shard_side`.
    Upgrade(crate::upgrade::shard_side::ShardRequest),
}
