//! The runtime's side of a session's life, from its slot in the table to its end:
//!
//! - **start** ([`Shard::start_session`]): an admitted client gets a connection id and a slot,
//!   and a task runs its handshake (`frontend::handshake::accept`) then
//!   [`session::serve`];
//! - **park** ([`Shard::park`]): `serve` hands back a session whose client went quiet; it
//!   becomes a compact record in the table, its socket re-armed in the shard's poller;
//! - **wake** ([`Shard::on_client_event`]): readiness on a parked socket unparks the session
//!   into a new task running `serve` again (readiness on an active one goes to its task
//!   through its control block);
//! - **end** ([`Shard::remove_session`]): `session::finish` (or a failed handshake) frees the
//!   slot and the client's place under the limit; [`tell_and_finish`] ends a parked session
//!   with a last word (the janitor's idle timeouts and overdue drains).
//!
//! Also the one counter a session task keeps on the shard: how many sessions linger (stay hot
//! between commands; see [`Shard::linger`]). Owns the shard's `lingering`; the table itself is
//! [`super::table`].

use super::poller::READABLE;
use super::table::{ActiveCtl, SlotState, Token};
use super::{Shard, ShardMsg};
use crate::error::{Error, Reply};
use crate::frontend::client::ClientIo;
use crate::frontend::session::{self, Session};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tracing::{debug, warn};

/// A session kept hot between commands: counted in its shard's `lingering` while this lives
/// (see [`Shard::linger`]).
pub(crate) struct Linger<'a>(&'a Shard);

impl Drop for Linger<'_> {
    fn drop(&mut self) {
        self.0.lingering.set(self.0.lingering.get() - 1);
    }
}

impl Shard {
    /// Starts the session of a client just admitted: gives it a connection id and a slot (its
    /// socket watched by the poller, disarmed), and spawns its task: the handshake, then
    /// [`session::serve`].
    pub(super) fn start_session(self: &Rc<Self>, fd: OwnedFd, peer: std::net::SocketAddr) {
        let conn_id = self.next_conn_id();
        let ctl = Rc::new(ActiveCtl::default());
        ctl.fd.set(Some(fd.as_raw_fd()));
        let token = self.table.borrow_mut().insert(conn_id, ctl.clone());
        if let Err(e) = self.poller.add(fd.as_raw_fd(), token.to_u64(), 0) {
            warn!(error = %e, "cannot watch a new client socket");
            self.remove_session(token);
            return;
        }
        let shard = self.clone();
        glommio::spawn_local(async move {
            let mut io = ClientIo::new(shard.clone(), fd.as_raw_fd(), token, ctl.clone());
            let r = crate::frontend::handshake::accept(&shard, &mut io, fd, conn_id, peer).await;
            drop(io);
            match r {
                Ok(sess) => {
                    ctl.user.set(sess.user.id);
                    ctl.pool_user.set(sess.user.index);
                    ctl.logged_in.set(true);
                    session::serve(shard, token, ctl, sess).await
                }
                Err(e) => {
                    debug!(error = %e, %peer, "handshake failed");
                    // A client that leaves during the handshake (a TCP health check, a port
                    // probe) is not an error of sluice's; failed logins have their own counter.
                    if !matches!(e, Error::ClientGone(_)) {
                        shard.count_error(&e);
                    }
                    shard.remove_session(token);
                }
            }
        })
        .detach();
    }

    /// Puts an idle session back in the table and re-arms its socket (called by
    /// [`session::serve`] when its client went quiet; while the shard drains, the session is
    /// finished instead).
    pub(crate) fn park(self: &Rc<Self>, token: Token, sess: Session) {
        if self.draining.get() {
            let shard = self.clone();
            glommio::spawn_local(async move { session::finish(&shard, token, sess).await })
                .detach();
            return;
        }
        let fd = sess.fd.as_raw_fd();
        if let Err(sess) = self.table.borrow_mut().park(token, sess) {
            warn!("park of a session whose slot is not active; closing it");
            drop(sess);
            return;
        }
        if let Err(e) = self.poller.rearm(fd, token.to_u64(), READABLE) {
            debug!(error = %e, "re-arming a parked client failed; closing it");
            if let Some(sess) = self.table.borrow_mut().remove(token) {
                self.drop_session(sess);
            }
        }
    }

    /// Frees a session's slot (the session itself was consumed by the caller).
    pub(crate) fn remove_session(&self, token: Token) {
        let counted = match self.table.borrow().get(token).map(|s| &s.state) {
            Some(SlotState::Active(ctl)) => !ctl.uncounted.get(),
            _ => true,
        };
        if let Some(sess) = self.table.borrow_mut().remove(token) {
            self.drop_session(sess);
        }
        if counted {
            self.shared.clients.fetch_sub(1, Ordering::Relaxed);
        }
        if self.draining.get() && self.table.borrow().is_empty() {
            self.poller.mailbox().post(ShardMsg::Wake);
        }
    }

    fn drop_session(&self, sess: Session) {
        // A parked session with a lease (session mode) is dropped without a reset: the lease
        // discards its connection.
        drop(sess);
    }

    /// Readiness on client socket `token`: an active session's task is told through its control
    /// block; a parked session is unparked into a new task serving it.
    pub(super) fn on_client_event(self: &Rc<Self>, token: Token, events: u32) {
        let ctl = {
            let table = self.table.borrow();
            match table.get(token).map(|s| &s.state) {
                Some(SlotState::Active(ctl)) => Some(ctl.clone()),
                Some(SlotState::Parked(_)) => None,
                _ => return,
            }
        };
        if let Some(ctl) = ctl {
            ctl.notify(events);
            return;
        }
        let ctl = Rc::new(ActiveCtl::default());
        let Some(sess) = self.table.borrow_mut().unpark(token, ctl.clone()) else {
            return;
        };
        ctl.user.set(sess.user.id);
        ctl.pool_user.set(sess.user.index);
        ctl.logged_in.set(true);
        ctl.fd.set(Some(sess.fd.as_raw_fd()));
        glommio::spawn_local(session::serve(self.clone(), token, ctl, sess)).detach();
    }

    /// Lets a session linger (stay hot between commands) unless `max` of this shard's already
    /// do; it lingers as long as the returned guard lives.
    pub(crate) fn linger(&self, max: u32) -> Option<Linger<'_>> {
        let n = self.lingering.get();
        if n >= max {
            return None;
        }
        self.lingering.set(n + 1);
        Some(Linger(self))
    }
}

/// Sends a parked client one ERR when given (unsolicited, as a server does before closing) and
/// ends its session.
pub(super) async fn tell_and_finish(
    shard: Rc<Shard>,
    t: Token,
    ctl: Rc<ActiveCtl>,
    mut sess: Session,
    reply: Option<Reply>,
) {
    if let Some(reply) = reply {
        let mut io = ClientIo::new(shard.clone(), sess.fd.as_raw_fd(), t, ctl);
        io.tls = sess.tls.take();
        let mut p = Vec::new();
        reply.encode(&mut p);
        io.queue(0, &p);
        let _ = io.flush(Some(Duration::from_millis(200))).await;
    }
    session::finish(&shard, t, sess).await;
}
