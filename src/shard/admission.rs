//! Admission: who gets in. The accept loop on the shard's listener, the limits a new client
//! must pass before it has a session (its address not blocked for failed logins, its place
//! under `max_client_connections` and under what the file-descriptor limit leaves for clients),
//! how a refused client is told (an ERR before the greeting, as the server does), and closing
//! the listener (SHUTDOWN WAIT_FOR_CLIENTS, shutdown).
//!
//! Owns the shard's `spare_fd` (a descriptor held in reserve so that a client can still be
//! accepted and refused when the process has run out) and `fd_warned` (log rate limit); uses
//! the process-wide client count (`Shared::clients`) and failed-login table
//! (`Shared::guard`). An admitted client goes on to `Shard::start_session` (`sessions.rs`).

use super::poller::READABLE;
use super::table::ActiveCtl;
use super::{Shard, LISTENER};
use crate::error::Reply;
use crate::net;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How often a shard that ran out of descriptors says so in the log.
const FD_WARN_EVERY: Duration = Duration::from_secs(10);

impl Shard {
    /// Counts a failed login from `ip` towards `auth_failure_limit`: in the table every shard
    /// and every worker process of the instance shares (see [`crate::auth::guard`]).
    pub(crate) fn note_auth_failure(&self, ip: std::net::IpAddr) {
        self.stats
            .auth_failures
            .set(self.stats.auth_failures.get() + 1);
        self.shared.guard.note_failure(ip);
    }

    /// Is `ip` over the failed-login limit for the current minute?
    fn auth_blocked(&self, ip: std::net::IpAddr) -> Option<u32> {
        let limit = self.cfg().auth_failure_limit;
        if limit == 0 {
            return None;
        }
        let n = self.shared.guard.failures(ip);
        (n >= limit).then_some(n)
    }

    /// Gives a refused connection's place under `max_client_connections` back before the
    /// refusal is sent, so a client that retries at once finds it free.
    pub(crate) fn uncount_client(&self, ctl: &ActiveCtl) {
        if !ctl.uncounted.replace(true) {
            self.shared.clients.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Closes the listener: with SO_REUSEPORT, once every shard has, new connections are
    /// refused; the clients there are keep being served.
    pub(super) fn stop_accepting(&self) {
        if let Some(l) = self.listener.borrow_mut().take() {
            self.poller.remove(l.as_raw_fd());
            info!(shard = self.id, "stopped accepting clients");
        }
    }

    pub(super) fn on_accept(self: &Rc<Self>) {
        let Some(lfd) = self.listener.borrow().as_ref().map(|l| l.as_raw_fd()) else {
            return;
        };
        for _ in 0..128 {
            match net::accept(lfd) {
                Ok(Some((fd, peer))) => {
                    if self.admit(&fd, peer) {
                        self.start_session(fd, peer);
                    }
                }
                Ok(None) => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if self.refuse_with_spare(lfd) {
                        continue;
                    }
                    self.warn_fds("out of file descriptors (the spare one is taken): clients wait in the backlog until some leave");
                    // Leave the connection in the backlog; try again after a pause.
                    let shard = self.clone();
                    glommio::spawn_local(async move {
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                        if shard.spare_fd.borrow().is_none() {
                            *shard.spare_fd.borrow_mut() = net::spare_fd().ok();
                        }
                        shard.rearm_listener();
                    })
                    .detach();
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    break;
                }
            }
        }
        self.rearm_listener();
    }

    /// The process is out of descriptors (a real EMFILE, past the admission limit): frees the
    /// spare one, accepts a waiting client into it, answers ERR 1040 and closes, then takes the
    /// spare back. Returns whether a client was answered.
    fn refuse_with_spare(&self, lfd: std::os::fd::RawFd) -> bool {
        let Some(spare) = self.spare_fd.borrow_mut().take() else {
            *self.spare_fd.borrow_mut() = net::spare_fd().ok();
            return false;
        };
        drop(spare);
        let answered = match net::accept(lfd) {
            Ok(Some((fd, peer))) => {
                self.warn_fds(
                    "out of file descriptors: refusing new clients with ERR 1040 until some leave",
                );
                debug!(%peer, "refused: out of file descriptors");
                self.refuse_too_many(&fd, true);
                true
            }
            _ => false,
        };
        *self.spare_fd.borrow_mut() = net::spare_fd().ok();
        answered
    }

    fn warn_fds(&self, what: &str) {
        let now = Instant::now();
        if self
            .fd_warned
            .get()
            .is_none_or(|t| now.duration_since(t) >= FD_WARN_EVERY)
        {
            self.fd_warned.set(Some(now));
            warn!(shard = self.id, "{what}");
        }
    }

    /// Answers a client accepted only to be refused: like the server, an ERR 1040 instead of the
    /// greeting (sequence id 0, pre-handshake format), then the close. The packet is tiny, so a
    /// non-blocking send on a fresh socket takes it whole. `fds`: refused for lack of file
    /// descriptors (counted as an error of kind `fd_limit`), not `max_client_connections`.
    fn refuse_too_many(&self, fd: &OwnedFd, fds: bool) {
        self.stats
            .refused_max_clients
            .set(self.stats.refused_max_clients.get() + 1);
        if fds {
            *self
                .stats
                .errors
                .borrow_mut()
                .entry("fd_limit")
                .or_insert(0) += 1;
        }
        let mut out = Vec::new();
        let mut p = Vec::new();
        Reply::new(1040, b"08004", "Too many connections").encode_before_handshake(&mut p);
        crate::codec::frame::encode_packet(&mut out, 0, &p);
        let _ = net::send(fd.as_raw_fd(), &out);
    }

    fn rearm_listener(&self) {
        if let Some(l) = self.listener.borrow().as_ref() {
            let _ = self.poller.rearm(l.as_raw_fd(), LISTENER, READABLE);
        }
    }

    /// Decides whether a client just accepted may start a session: counts it, then refuses it
    /// (answered and closed by the caller dropping `fd`) if its address is blocked for failed
    /// logins (ERR 1129) or the client limit is reached (ERR 1040). An admitted client holds
    /// its place under the limit until its session is removed.
    fn admit(&self, fd: &OwnedFd, peer: std::net::SocketAddr) -> bool {
        self.stats.accepted.set(self.stats.accepted.get() + 1);
        if let Some(n) = self.auth_blocked(peer.ip()) {
            self.stats
                .auth_blocked
                .set(self.stats.auth_blocked.get() + 1);
            let mut out = Vec::new();
            let mut p = Vec::new();
            Reply::new(
                1129,
                b"HY000",
                format!("Host '{}' is blocked because of many connection errors (sluice: {n} failed logins in the last minute)", peer.ip()),
            )
            .encode_before_handshake(&mut p);
            crate::codec::frame::encode_packet(&mut out, 0, &p);
            let _ = net::send(fd.as_raw_fd(), &out);
            return false;
        }
        let open = self.shared.clients.fetch_add(1, Ordering::Relaxed);
        let limit = self.shared.client_limit();
        if open >= limit {
            self.shared.clients.fetch_sub(1, Ordering::Relaxed);
            // The file-descriptor budget, not max_client_connections, is what ran out.
            let fds = limit == self.shared.fd_client_limit.load(Ordering::Relaxed)
                && (self.cfg().max_client_connections == 0
                    || limit < self.cfg().max_client_connections);
            if fds {
                self.warn_fds("clients reached what the file-descriptor limit allows (the rest is reserved for backends, KILL, admin and metrics); refusing new ones with ERR 1040");
            }
            self.refuse_too_many(fd, fds);
            debug!(%peer, fds, "refused: too many connections");
            return false;
        }
        true
    }
}
