//! A shard's session table: one slot per client connection. A slot holds the session itself while
//! the client is idle (*parked*: no task, no buffer), or a small control block while a task serves
//! it (*active*). Tokens given to the poller carry the slot's generation, so an event for a slot
//! that has since been reused is recognised and dropped.
//!
//! Storage is chunked (fixed 1024-slot blocks) rather than one growing `Vec`: growth never copies
//! existing sessions and never leaves a doubled, half-empty allocation behind. Freed slots are
//! reused first-in first-out, so a slot (and the poller token built from it) is not recycled right
//! after its client leaves.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

/// Slots per chunk: 4096 × ~100 B is over glibc's mmap threshold, so chunks live in their own
/// mappings rather than interleaved with short-lived heap allocations.
const CHUNK: usize = 4096;

/// Identifies a slot and its generation; what the poller hands back with each event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub index: u32,
    pub gen: u32,
}

impl Token {
    pub fn to_u64(self) -> u64 {
        u64::from(self.gen) << 32 | u64::from(self.index)
    }
    pub fn from_u64(v: u64) -> Token {
        Token {
            index: v as u32,
            gen: (v >> 32) as u32,
        }
    }
}

/// How a KILL asked the session to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillKind {
    /// KILL QUERY: interrupt the running statement, keep the session.
    Query,
    /// KILL [CONNECTION]: end the session.
    Connection,
    /// The proxy is shutting down: end the session after its current command.
    Shutdown,
}

/// A statement of the session running on a backend: what a KILL QUERY aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// The backend's index.
    pub backend: u16,
    /// The server thread (connection id) of the backend connection running it.
    pub thread: u32,
    /// Which of the session's statements it is (they are numbered from 1 as they start).
    pub run: u64,
}

/// The last KILL QUERY sluice sent to a backend for one of the session's statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SentKill {
    /// The statement it was sent for ([`Running::run`]).
    pub run: u64,
    /// When the server answered it; `None` while it is in flight.
    pub answered: Option<Instant>,
}

/// Shared between an active session's task and the shard: readiness delivered by the poller, the
/// waker to call, and requests from elsewhere (KILL, shutdown).
#[derive(Default)]
pub struct ActiveCtl {
    pub waker: Cell<Option<Waker>>,
    pub ready: Cell<u32>,
    pub kill: Cell<Option<KillKind>>,
    /// The statement running on a backend for this session now, for KILL QUERY.
    running: Cell<Option<Running>>,
    /// Statements started so far (numbers them: [`Running::run`]).
    runs: Cell<u64>,
    /// The last KILL QUERY sent for one of this session's statements (see `shard::kill`).
    pub last_kill: Cell<Option<SentKill>>,
    /// The session's user id, for KILL permission checks.
    pub user: Cell<u32>,
    /// The account (pool user index) the session's backend connections belong to.
    pub pool_user: Cell<u32>,
    /// The client's socket while the session's task holds it, for the source address the
    /// console lists (read only while this block is in the slot: the task owns the socket until
    /// the slot is freed).
    pub fd: Cell<Option<std::os::fd::RawFd>>,
    /// The client has logged in (`user` names it): not during the handshake, nor for a session
    /// taken out only to be closed.
    pub logged_in: Cell<bool>,
    /// The connection no longer counts towards `max_client_connections` (it was refused and
    /// gave its place back before being told).
    pub uncounted: Cell<bool>,
    /// KILL QUERYs in flight against this session's backend connection: counted before the
    /// thread id is read from `running`, uncounted once the server answered the KILL (or it
    /// failed). While any is in flight the session must not give its connection back, or the
    /// KILL could land on another client's statement (see [`ActiveCtl::kills_settled`]).
    kills: Cell<u32>,
    /// Tasks waiting in [`ActiveCtl::kills_settled`] (in practice the session's own task).
    settle_wakers: Cell<Vec<Waker>>,
    /// The session is serving a command now (for PAUSE: see [`super::pause`]).
    pub serving: Cell<bool>,
    /// The server said the session is inside a transaction after its last command.
    pub in_transaction: Cell<bool>,
    /// The session's command waits at the pause gate.
    pub gated: Cell<bool>,
    /// A KILL QUERY ended the command waiting at the gate (answered ERR 1317).
    pub gate_cancelled: Cell<bool>,
    /// What the session's last command left, for listings (SHOW PROCESSLIST, the console):
    /// its settings (the schema) and when it ended (shard clock seconds).
    pub seen: std::cell::RefCell<Option<Rc<crate::session::state::Settings>>>,
    pub last_active: Cell<u32>,
    /// The command byte of the command being served (or last served).
    pub command: Cell<u8>,
}

impl ActiveCtl {
    /// Records what a session's command left for listings: its settings (a pointer compare
    /// unless they changed) and when.
    pub fn note(&self, settings: &Rc<crate::session::state::Settings>, last_active: u32) {
        self.last_active.set(last_active);
        let mut seen = self.seen.borrow_mut();
        if !seen.as_ref().is_some_and(|s| Rc::ptr_eq(s, settings)) {
            *seen = Some(settings.clone());
        }
    }

    /// Must the session stop waiting for its client (KILL CONNECTION, shutdown)?
    pub fn interrupted(&self) -> bool {
        matches!(
            self.kill.get(),
            Some(KillKind::Connection | KillKind::Shutdown)
        )
    }

    /// The error that ends an interrupted session, if it was interrupted.
    pub fn check(&self) -> crate::error::Result<()> {
        match self.kill.get() {
            Some(KillKind::Connection) => Err(crate::error::Error::Fatal(
                crate::error::Reply::new(1927, b"70100", "Connection was killed"),
            )),
            Some(KillKind::Shutdown) => Err(crate::error::Error::Shutdown),
            _ => Ok(()),
        }
    }

    /// The session's statement starts on backend connection `thread` of backend `backend`.
    pub fn start_run(&self, backend: u16, thread: u32) {
        let run = self.runs.get() + 1;
        self.runs.set(run);
        self.running.set(Some(Running {
            backend,
            thread,
            run,
        }));
    }

    /// The statement's response has been relayed (or the relay failed): no KILL may start
    /// against it from now on. Those already in flight are awaited with
    /// [`ActiveCtl::kills_settled`].
    pub fn end_run(&self) {
        self.running.set(None);
    }

    /// The statement running on a backend now, if any.
    pub fn running(&self) -> Option<Running> {
        self.running.get()
    }

    /// Counts a KILL in flight against this session's backend until the returned guard is
    /// dropped. Take it *before* reading [`ActiveCtl::running`]: the session cannot release the
    /// connection whose thread id the KILL is about to use while the guard lives.
    pub fn kill_started(self: &Rc<Self>) -> KillInFlight {
        self.kills.set(self.kills.get() + 1);
        KillInFlight(self.clone())
    }

    /// KILLs in flight against this session now.
    pub fn kills_in_flight(&self) -> u32 {
        self.kills.get()
    }

    /// Returns at once when no KILL is in flight against this session; otherwise waits until
    /// every one has been answered by the server (or failed). The session awaits this after its
    /// statement and before its backend connection can go back to the pool (or to anyone else),
    /// so a KILL QUERY meant for this session's statement never reaches another client's.
    pub async fn kills_settled(&self) {
        poll_fn(|cx| {
            if self.kills.get() == 0 {
                return Poll::Ready(());
            }
            let mut w = self.settle_wakers.take();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
            self.settle_wakers.set(w);
            Poll::Pending
        })
        .await
    }

    pub fn notify(&self, events: u32) {
        self.ready.set(self.ready.get() | events);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

/// One KILL in flight against a session (see [`ActiveCtl::kill_started`]); dropping it, on every
/// path (answered, failed, its task dropped), uncounts the KILL and wakes the session when it was
/// the last.
pub struct KillInFlight(Rc<ActiveCtl>);

impl Drop for KillInFlight {
    fn drop(&mut self) {
        let n = self.0.kills.get().saturating_sub(1);
        self.0.kills.set(n);
        if n == 0 {
            for w in self.0.settle_wakers.take() {
                w.wake();
            }
        }
    }
}

pub enum SlotState<S> {
    Free,
    Parked(S),
    Active(Rc<ActiveCtl>),
}

pub struct Slot<S> {
    pub gen: u32,
    /// The client-visible connection id of the session in this slot.
    pub conn_id: u32,
    pub state: SlotState<S>,
}

pub struct Table<S> {
    chunks: Vec<Box<[Slot<S>]>>,
    free: VecDeque<u32>,
    used: usize,
    parked: usize,
}

impl<S> Default for Table<S> {
    fn default() -> Self {
        Table {
            chunks: Vec::new(),
            free: VecDeque::new(),
            used: 0,
            parked: 0,
        }
    }
}

impl<S> Table<S> {
    /// Sessions in the table (parked or active).
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    pub fn parked(&self) -> usize {
        self.parked
    }

    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot<S>> {
        let i = index as usize;
        self.chunks.get_mut(i / CHUNK).map(|c| &mut c[i % CHUNK])
    }

    fn slot(&self, index: u32) -> Option<&Slot<S>> {
        let i = index as usize;
        self.chunks.get(i / CHUNK).map(|c| &c[i % CHUNK])
    }

    /// Takes a free slot for a new, active session.
    pub fn insert(&mut self, conn_id: u32, ctl: Rc<ActiveCtl>) -> Token {
        if self.free.is_empty() {
            let base = (self.chunks.len() * CHUNK) as u32;
            let chunk: Vec<Slot<S>> = (0..CHUNK)
                .map(|_| Slot {
                    gen: 0,
                    conn_id: 0,
                    state: SlotState::Free,
                })
                .collect();
            self.chunks.push(chunk.into_boxed_slice());
            self.free.extend(base..base + CHUNK as u32);
        }
        let index = self.free.pop_front().expect("a free slot after growth");
        let slot = self.slot_mut(index).expect("free slot exists");
        slot.conn_id = conn_id;
        slot.state = SlotState::Active(ctl);
        let gen = slot.gen;
        self.used += 1;
        Token { index, gen }
    }

    /// The slot for `token`, if it still belongs to that token's session.
    pub fn get(&self, token: Token) -> Option<&Slot<S>> {
        self.slot(token.index)
            .filter(|s| s.gen == token.gen && !matches!(s.state, SlotState::Free))
    }

    /// Parks `session` in its slot (which must be active).
    pub fn park(&mut self, token: Token, session: S) -> Result<(), S> {
        match self.slot_mut(token.index) {
            Some(s) if s.gen == token.gen && matches!(s.state, SlotState::Active(_)) => {
                s.state = SlotState::Parked(session);
                self.parked += 1;
                Ok(())
            }
            _ => Err(session),
        }
    }

    /// The parked session in `token`'s slot, to change in place (it stays parked).
    pub fn parked_mut(&mut self, token: Token) -> Option<&mut S> {
        match self.slot_mut(token.index) {
            Some(Slot {
                gen,
                state: SlotState::Parked(s),
                ..
            }) if *gen == token.gen => Some(s),
            _ => None,
        }
    }

    /// Takes a parked session out for a task to serve, leaving `ctl` in its place.
    pub fn unpark(&mut self, token: Token, ctl: Rc<ActiveCtl>) -> Option<S> {
        let s = self.slot_mut(token.index)?;
        if s.gen != token.gen || !matches!(s.state, SlotState::Parked(_)) {
            return None;
        }
        let SlotState::Parked(session) = std::mem::replace(&mut s.state, SlotState::Active(ctl))
        else {
            unreachable!("checked above")
        };
        self.parked -= 1;
        Some(session)
    }

    /// Frees the slot; returns the parked session if there was one.
    pub fn remove(&mut self, token: Token) -> Option<S> {
        let s = self.slot_mut(token.index)?;
        if s.gen != token.gen || matches!(s.state, SlotState::Free) {
            return None;
        }
        let old = std::mem::replace(&mut s.state, SlotState::Free);
        s.gen = s.gen.wrapping_add(1);
        self.used -= 1;
        self.free.push_back(token.index);
        match old {
            SlotState::Parked(sess) => {
                self.parked -= 1;
                Some(sess)
            }
            _ => None,
        }
    }

    /// Finds a session by its connection id (a scan: only KILL and admin requests need this).
    pub fn find_conn(&self, conn_id: u32) -> Option<Token> {
        self.chunks.iter().enumerate().find_map(|(ci, chunk)| {
            chunk.iter().enumerate().find_map(|(i, s)| {
                (s.conn_id == conn_id && !matches!(s.state, SlotState::Free)).then(|| Token {
                    index: (ci * CHUNK + i) as u32,
                    gen: s.gen,
                })
            })
        })
    }

    /// Every occupied slot's token.
    /// Slots the table has room for now (used or free): the range [`Table::tokens_in`] takes.
    pub fn slots(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// The tokens of the sessions in slots `range` (a slice of [`Table::slots`]).
    pub fn tokens_in(&self, range: std::ops::Range<usize>) -> Vec<Token> {
        let mut out = Vec::new();
        for index in range.start..range.end.min(self.slots()) {
            let s = &self.chunks[index / CHUNK][index % CHUNK];
            if !matches!(s.state, SlotState::Free) {
                out.push(Token {
                    index: index as u32,
                    gen: s.gen,
                });
            }
        }
        out
    }

    pub fn tokens(&self) -> Vec<Token> {
        let mut out = Vec::with_capacity(self.used);
        for (ci, chunk) in self.chunks.iter().enumerate() {
            for (i, s) in chunk.iter().enumerate() {
                if !matches!(s.state, SlotState::Free) {
                    out.push(Token {
                        index: (ci * CHUNK + i) as u32,
                        gen: s.gen,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn park_unpark_and_stale_tokens() {
        let mut t: Table<String> = Table::default();
        let ctl = Rc::new(ActiveCtl::default());
        let a = t.insert(7, ctl.clone());
        assert_eq!(t.len(), 1);
        t.park(a, "a".into()).unwrap();
        assert_eq!(t.parked(), 1);
        assert!(t.park(a, "again".into()).is_err(), "already parked");
        assert_eq!(t.unpark(a, ctl.clone()).as_deref(), Some("a"));
        assert!(t.unpark(a, ctl.clone()).is_none(), "already active");
        assert_eq!(t.find_conn(7), Some(a));
        assert!(t.remove(a).is_none());
        assert!(t.get(a).is_none(), "stale token after removal");
        let b = t.insert(8, ctl);
        assert_ne!(
            b.index, a.index,
            "FIFO reuse does not hand the same slot back at once"
        );
        assert_eq!(Token::from_u64(b.to_u64()), b);
    }

    #[test]
    fn slices_of_the_table_cover_every_session_once() {
        let mut t: Table<String> = Table::default();
        let ctl = Rc::new(ActiveCtl::default());
        let tokens: Vec<Token> = (0..5000).map(|i| t.insert(i, ctl.clone())).collect();
        for tok in tokens.iter().step_by(3) {
            t.remove(*tok);
        }
        let all = t.tokens();
        assert_eq!(all.len(), t.len());
        for of in [1u32, 3, 10] {
            let slots = t.slots();
            let at = |k: u32| slots * k as usize / of as usize;
            let mut seen: Vec<Token> = (0..of)
                .flat_map(|k| t.tokens_in(at(k)..at(k + 1)))
                .collect();
            seen.sort_by_key(|t| t.index);
            assert_eq!(seen, all, "{of} slices");
        }
        assert!(t.tokens_in(t.slots()..t.slots() + 10).is_empty());
    }

    #[test]
    fn kills_settled_waits_for_every_kill_in_flight() {
        use std::future::Future;
        use std::task::{Context, Wake};
        struct Flag(std::sync::atomic::AtomicBool);
        impl Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let flag = std::sync::Arc::new(Flag(false.into()));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let ctl = Rc::new(ActiveCtl::default());
        // None in flight: settled at once.
        assert!(std::pin::pin!(ctl.kills_settled())
            .as_mut()
            .poll(&mut cx)
            .is_ready());
        let a = ctl.kill_started();
        let b = ctl.kill_started();
        assert_eq!(ctl.kills_in_flight(), 2);
        let mut wait = std::pin::pin!(ctl.kills_settled());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drop(a);
        assert!(!flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drop(b);
        assert!(
            flag.0.load(std::sync::atomic::Ordering::SeqCst),
            "the last one wakes the waiter"
        );
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert_eq!(ctl.kills_in_flight(), 0);
    }

    #[test]
    fn grows_in_chunks_and_reuses_freed_slots() {
        let mut t: Table<u32> = Table::default();
        let ctl = Rc::new(ActiveCtl::default());
        let n = 2 * CHUNK as u32 + 10;
        let toks: Vec<_> = (0..n).map(|i| t.insert(i, ctl.clone())).collect();
        assert_eq!(t.chunks.len(), 3);
        for tok in &toks[..1000] {
            t.remove(*tok);
        }
        for i in 0..1000 {
            t.insert(n + i, ctl.clone());
        }
        assert_eq!(t.chunks.len(), 3, "freed slots were reused");
        assert_eq!(t.len(), n as usize);
        assert_eq!(t.tokens().len(), n as usize);
    }
}
