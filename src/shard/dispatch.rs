//! The dispatcher: the shard's one loop. [`run`] starts a shard on its executor thread (its
//! listener, its background tasks: the janitor, the host-budget tick, on shard 0 the health
//! probe), then [`Shard::dispatch`] turns poller events (the listener, client sockets) and
//! mailbox messages into work until the shard has drained. Each event or message is handed to
//! the module that owns the idea: accepting to [`super::admission`], a client socket to
//! [`super::sessions`], lending to [`super::lend`], and so on; nothing is decided here.
//!
//! Owns no shard field of its own; the poller and the mailbox are [`super::poller`].

use super::poller::{self, READABLE};
use super::table::Token;
use super::{budget, probe, Shard, ShardMsg, LISTENER};
use crate::net;
use crate::shared::Shared;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use tracing::info;

/// Runs shard `id` on the current (executor) thread until it has shut down.
pub async fn run(
    shared: Arc<Shared>,
    id: usize,
    core: Option<core_affinity::CoreId>,
    ready: std::sync::mpsc::Sender<Result<(usize, poller::Mailbox<ShardMsg>), String>>,
) {
    let addr: std::net::SocketAddr = match shared.config.listen.parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = ready.send(Err(format!("listen: {e}")));
            return;
        }
    };
    let shard = match Shard::new(shared.clone(), id, core) {
        Ok(s) => Rc::new(s),
        Err(e) => {
            let _ = ready.send(Err(format!("shard {id}: {e}")));
            return;
        }
    };
    // upgrade: a successor takes over its predecessor's listener and id counter.
    if let Some(last) = crate::upgrade::inherited_next_id(id) {
        shard.next_id.set(last);
    }
    let listener = match crate::upgrade::inherited_listener(id) {
        Some(l) => l,
        None => match net::reuseport_listener(addr, shared.config.listen_backlog) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("listen on {addr}: {e}")));
                return;
            }
        },
    };
    if let Err(e) = shard.poller.add(listener.as_raw_fd(), LISTENER, READABLE) {
        let _ = ready.send(Err(format!("watch listener: {e}")));
        return;
    }
    *shard.listener.borrow_mut() = Some(listener);
    shard.set_db_users(&shared.db_users_initial);
    let _ = ready.send(Ok((id, shard.poller.mailbox())));
    info!(shard = id, %addr, "shard listening");
    glommio::spawn_local(shard.clone().janitor()).detach();
    glommio::spawn_local(budget::tick(shard.clone())).detach();
    if id == 0 {
        glommio::spawn_local(probe::run(shard.clone())).detach();
    }
    shard.clone().dispatch().await;
    // (Questions from the other process of an upgrade for this shard's ids answer at once.)
    crate::upgrade::peer::shard_stopped(id);
    info!(shard = id, "shard stopped");
}

impl Shard {
    /// Handles one message from another thread (see [`ShardMsg`] for what each asks).
    fn on_message(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Shutdown => self.begin_shutdown(),
            ShardMsg::Upgrade(req) => crate::upgrade::shard_side::on_request(self, req),
            ShardMsg::Wake => {}
            ShardMsg::DbUsers(list) => self.set_db_users(&list),
            ShardMsg::Sha2Cached { user, stage2 } => self.sha2_cache_learn(user, stage2),
            ShardMsg::Lend {
                pool,
                to,
                hops,
                retry,
            } => self.on_lend(pool, to, hops, retry),
            ShardMsg::Granted { pool, from } => self.on_granted(pool, from),
            ShardMsg::Return { pool } => self.on_returned(pool),
            ShardMsg::Stats { reply } => {
                let _ = reply.send(self.snapshot());
            }
            ShardMsg::Clients { reply } => {
                let _ = reply.send(self.clients());
            }
            ShardMsg::Reconnect { backend, reply } => {
                let _ = reply.send(self.retire_idle(backend));
            }
            ShardMsg::Pause { set, reply } => {
                let _ = reply.send(self.pause(set));
            }
            ShardMsg::StopAccepting { reply } => {
                self.stop_accepting();
                let _ = reply.send(self.table.borrow().tokens().len() as u64);
            }
            ShardMsg::Kill {
                conn_id,
                kind,
                by_user,
                ask_peer,
                reply,
            } => {
                let shard = self.clone();
                glommio::spawn_local(async move {
                    let r = if ask_peer {
                        shard.kill_anywhere(conn_id, kind, by_user).await
                    } else {
                        shard.kill_local(conn_id, kind, by_user).await
                    };
                    reply.send(r);
                })
                .detach();
            }
            ShardMsg::PeerKill {
                conn_id,
                kind,
                by,
                reply,
            } => {
                let by_user = match by {
                    None => super::kill::BY_ADMIN,
                    Some(name) => self.user_id_named(&name).unwrap_or(super::kill::NOBODY),
                };
                let shard = self.clone();
                glommio::spawn_local(async move {
                    reply.send(shard.kill_local(conn_id, kind, by_user).await);
                })
                .detach();
            }
        }
    }

    /// One poller event: the listener is readable, or a client socket is.
    fn on_event(self: &Rc<Self>, token: u64, events: u32) {
        if token == LISTENER {
            self.on_accept();
            return;
        }
        self.on_client_event(Token::from_u64(token), events);
    }

    /// Turns poller events and mailbox messages into work, until the shard has drained.
    async fn dispatch(self: Rc<Self>) {
        let mut events = Vec::with_capacity(256);
        let mut messages = Vec::new();
        loop {
            if self.drained() {
                return;
            }
            events.clear();
            self.poller.heartbeat();
            self.poller.poll_now(&mut events);
            self.poller.try_take(&mut messages);
            if events.is_empty() && messages.is_empty() {
                self.poller.ready(&mut messages).await;
                self.poller.poll_now(&mut events);
            }
            for (t, ev) in events.drain(..) {
                self.on_event(t, ev);
            }
            for m in messages.drain(..) {
                self.on_message(m);
            }
            futures_lite::future::yield_now().await;
        }
    }
}
