//! A client session: the compact record a parked client is reduced to, and the loop that serves
//! it while it is active (read a command, dispatch it, repeat until the client goes quiet).
//!
//! Between commands a session is a [`Session`] in its shard's table: no task, no buffer, no
//! glommio source, only identity, capabilities, interned settings and (when it must keep one) the
//! backend lease it holds. When its socket becomes readable, the shard takes the record out and
//! spawns [`serve`], which borrows buffers, serves commands while bytes keep arriving, and parks
//! the record again.
//!
//! What a command does to the session — whether the backend goes back to the pool, which values
//! to record — is decided by [`crate::session::effects`]; [`super::command`] executes commands and
//! that decision, [`super::stmt`] the prepared-statement commands.

use super::client::{ClientIo, Next};
use super::command::{self as exec, Cmd};
use super::relay::Failure;
use crate::auth::Credential;
use crate::codec::caps::{cap, status};
use crate::codec::command::{self, com, set_option, Disposition};
use crate::codec::packets::{encode_ok, EofPacket, OkPacket};
use crate::config::PoolMode;
use crate::error::{Error, Reply};
use crate::session::effects::{History, Known, Outcome};
use crate::session::pins::Pins;
use crate::session::sql::{Context, Modes};
use crate::session::state::Settings;
use crate::session::stmts::Stmts;
use crate::shard::table::{ActiveCtl, KillKind, Token};
use crate::shard::Shard;
use bytes::Bytes;
use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// A user as one shard sees it.
#[derive(Debug)]
pub struct User {
    /// The account whose pools this user's sessions draw on (its stable id: see
    /// [`crate::users`]).
    pub index: u32,
    /// Who the user is (KILL permissions): its account id for configured users; users loaded from
    /// the database share one account but each have an id of their own.
    pub id: u32,
    pub name: Box<str>,
    pub credential: Credential,
    pub pool_mode: PoolMode,
    /// Clients must log in as this user over TLS (`users[].require_tls`, as at the login).
    pub require_tls: bool,
    /// Where this user's plain reads go (transaction mode only), and what they must have seen.
    pub reads: crate::config::Reads,
    pub consistency: crate::config::Consistency,
}

/// What a session remembers of its own past beyond its settings (boxed: most idle sessions have
/// none, and the parked record stays small).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Past {
    pub history: History,
    /// A one-shot variable (`insert_id`) is set and waits for the next statement.
    pub one_shot: bool,
    /// The last command failed with autocommit off: a transaction may have begun.
    pub uncertain: bool,
    /// Since when the backend has been kept for the session's diagnostics.
    pub diag_held_since: Option<std::time::Instant>,
    /// The client's own session trackers, once it changed them (`None`: the server's defaults).
    pub trackers: Option<Rc<crate::session::trackers::Trackers>>,
    /// The client's `session_track_*` values as the server holds them, once it changed them
    /// (`None`: the server's defaults), in [`crate::session::trackers::TRACKER_VARS`] order.
    pub tracker_values: Option<Rc<[Option<String>; 4]>>,
    /// User variables `GET DIAGNOSTICS` set on the replica the session holds (it read that
    /// replica's conditions there): they tie the session to it, and go with the session to its
    /// next backend, where they pin it as any user variable does (see
    /// `command::carry_replica_vars`).
    pub replica_vars: Vec<(Vec<u8>, crate::session::route::DiagValue)>,
    /// The user variables of a session that moved off a backend while they pinned it there,
    /// read there by value, as the `SET` that makes them on its next backend (see
    /// [`crate::session::uservars`]); taken by that backend's checkout.
    pub moved_vars: Option<Box<str>>,
    /// The schema report the client's own connection would be holding back
    /// ([`crate::session::schema_report`]; followed for clients that track their schema).
    pub schema_report: crate::session::schema_report::Held,
    /// The GTIDs the client's connection wrote before its last COM_RESET_CONNECTION or
    /// COM_CHANGE_USER (which empty `@@last_gtid`, the history value, but not what the client
    /// has written): its reads must still see them (read routing, `consistency = "session"`;
    /// see [`Session::written_gtid`]).
    pub written_before_reset: Box<str>,
    /// The last statement that raised conditions, when it was a text read run on a replica (the
    /// last one raised anywhere else clears it): should the session leave that replica before
    /// the client reads them, it runs again, its answer dropped, on the next backend, so that
    /// they are there as in the client's own connection (see `command::get_backend`).
    pub replica_conditions: Option<Box<[u8]>>,
    /// The client's connection holds a `last_gtid` report back (see
    /// `relay::GtidCtx`).
    pub gtid_pending: bool,
}

/// Everything a client is between commands.
pub struct Session {
    pub fd: OwnedFd,
    pub conn_id: u32,
    pub user: Rc<User>,
    /// Capabilities negotiated with the client.
    pub caps: u32,
    /// MariaDB extended capabilities negotiated with the client.
    pub mariadb_caps: u32,
    /// The collation the client logged in with (COM_RESET_CONNECTION returns to it).
    pub collation: u8,
    /// The client's settings (schema, variables), interned per shard.
    pub settings: Rc<Settings>,
    /// The backend connection this session holds, if any.
    pub lease: Option<crate::backend::pool::Lease>,
    /// Index of the backend this session uses.
    pub backend: u16,
    /// Multi-statements wanted (handshake flag, then COM_SET_OPTION).
    pub multi_statements: bool,
    /// Server status flags last reported to this client.
    pub status: u16,
    /// The session holds one unit of its pool's pin budget.
    pub pin_counted: bool,
    /// History values and the like; `None` while they are a fresh session's.
    pub past: Option<Box<Past>>,
    pub pins: Option<Box<Pins>>,
    pub stmts: Option<Box<Stmts>>,
    /// The client's TLS state, if it upgraded (kept while parked).
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// When the client last sent a command (seconds on the shard's clock), for the idle timeout.
    pub last_active: u32,
}

thread_local! {
    /// A fresh session's past (returned by reference for sessions that have none); one per
    /// shard thread, never freed.
    static FRESH: &'static Past = Box::leak(Box::default());
}

fn fresh_past() -> &'static Past {
    FRESH.with(|f| *f)
}

impl Session {
    pub fn new(
        fd: OwnedFd,
        conn_id: u32,
        user: Rc<User>,
        caps: u32,
        collation: u8,
        settings: Rc<Settings>,
        backend: u16,
    ) -> Session {
        Session {
            fd,
            conn_id,
            user,
            caps,
            mariadb_caps: 0,
            collation,
            settings,
            lease: None,
            backend,
            multi_statements: caps & cap::MULTI_STATEMENTS != 0,
            status: status::AUTOCOMMIT,
            pin_counted: false,
            past: None,
            pins: None,
            stmts: None,
            tls: None,
            last_active: 0,
        }
    }

    /// What the session is besides its history, for the hold decision.
    pub(crate) fn facts(&self) -> crate::session::effects::Facts {
        crate::session::effects::Facts {
            session_mode: self.mode() == PoolMode::Session,
            pinned: self.pinned() || self.pin_counted || self.owes_vars(),
            statement_pending: self.stmts.as_ref().is_some_and(|s| s.pending()),
            fresh_backend: false,
        }
    }

    /// Does the session hold its backend for state that cannot move to another one (a
    /// transaction, a pin, a pending one-shot, session mode)? Cursors, long data and
    /// diagnostics do not count: losing them is reported to the client when it asks.
    pub(crate) fn tied_to_backend(&self) -> bool {
        let past = self.past();
        self.lease.is_some()
            && (self.status & status::IN_TRANS != 0
                || self.pinned()
                || self.pin_counted
                || !past.replica_vars.is_empty()
                || past.uncertain
                || past.one_shot
                || self.mode() == PoolMode::Session)
    }

    /// Does the client hear changes of system variable `name` (it negotiated
    /// CLIENT_SESSION_TRACK and its `session_track_system_variables`, or the server's default,
    /// lists it or is `*`)?
    pub fn hears_var(&self, shard: &crate::shard::Shard, name: &str) -> bool {
        self.caps & cap::SESSION_TRACK != 0
            && self
                .past()
                .trackers
                .as_deref()
                .unwrap_or(&shard.default_trackers)
                .tracks_var(name)
    }

    /// Does the client hear its transaction state (it negotiated CLIENT_SESSION_TRACK and its
    /// `session_track_transaction_info`, or the server's default, is not OFF)?
    pub fn hears_trx_state(&self, shard: &crate::shard::Shard) -> bool {
        self.caps & cap::SESSION_TRACK != 0
            && self
                .past()
                .trackers
                .as_deref()
                .unwrap_or(&shard.default_trackers)
                .trx
                != crate::session::trackers::TrxInfo::Off
    }

    /// Does the session keep its backend only for its diagnostics (which may be given up under
    /// pressure or after a second idle, see [`release_soft`])?
    pub fn soft_held(&self) -> bool {
        use crate::session::effects::{hold_for, Diag};
        let Some(lease) = &self.lease else {
            return false;
        };
        let past = self.past();
        if past.history.diag == Diag::Clean {
            return false;
        }
        let mut h = past.history.clone();
        h.diag = Diag::Clean;
        let (hold, read) = hold_for(
            self.facts(),
            &h,
            lease.get().status,
            past.uncertain,
            past.one_shot,
        );
        hold.is_none() && !read
    }

    /// The status flags a server reports for a command that runs no statement.
    pub(crate) fn session_status(&self) -> u16 {
        self.status & status::SESSION_FLAGS
    }

    pub(crate) fn mode(&self) -> PoolMode {
        self.user.pool_mode
    }

    /// Can this session-mode session go on on another backend? Nothing it has lives only on
    /// its backend: no transaction (nor one that may have begun), no pin (user variables,
    /// temporary tables, locks, …), no statement with pending rows or long data, no conditions
    /// to read, no forced `insert_id`. (History values and a diagnostics area only the backend
    /// knows are read first: see [`move_off`].) Session mode tracks all of this as the other
    /// modes do; only its backend is the session's to the end, unless that backend leaves.
    pub(crate) fn movable(&self) -> bool {
        use crate::session::effects::Diag;
        let past = self.past();
        // (Other modes hold a backend between commands only for what pins them, or for
        // conditions and one-shots, which do not move.)
        (self.mode() == PoolMode::Session || self.pinned())
            && self.lease.is_some()
            && self.status & status::IN_TRANS == 0
            && self.pins_carried()
            && !past.uncertain
            && !past.one_shot
            && past.replica_vars.is_empty()
            && past.history.diag != Diag::Dirty
            && !self.stmts.as_ref().is_some_and(|s| s.pending())
    }

    /// Can what pins the session go with it to another backend? Nothing pins it, or only
    /// user variables (carried by value: [`crate::session::uservars`]).
    fn pins_carried(&self) -> bool {
        use crate::session::pins::PinReason;
        self.pins
            .as_ref()
            .is_none_or(|p| p.mask() & !PinReason::UserVariable.bit() == 0)
    }

    /// Does only the backend know some of the session's history (to be read before it moves)?
    fn history_on_backend(&self) -> bool {
        use crate::session::effects::{Diag, Known};
        let h = &self.past().history;
        h.last_insert_id == Known::OnBackend
            || h.found_rows == Known::OnBackend
            || h.diag == Diag::Unknown
    }

    /// What a replica must have applied before it answers this session's read (`consistency =
    /// "session"`): the session's `last_gtid` and what it wrote before a reset, as a GTID list.
    pub(crate) fn written_gtid(&self) -> String {
        let p = self.past();
        crate::backend::gtid::merge_text(&p.written_before_reset, &p.history.last_gtid)
    }

    /// Holds user variables set on a replica that must go with it to its next backend.
    pub(crate) fn owes_vars(&self) -> bool {
        !self.past().replica_vars.is_empty()
    }

    pub(crate) fn pinned(&self) -> bool {
        self.pins.as_ref().is_some_and(|p| p.is_pinned())
    }

    pub(crate) fn past(&self) -> &Past {
        match self.past.as_deref() {
            Some(p) => p,
            None => fresh_past(),
        }
    }

    pub(crate) fn history(&self) -> &History {
        &self.past().history
    }

    /// Changes the session's past; a past equal to a fresh session's takes no memory.
    pub(crate) fn update_past(&mut self, f: impl FnOnce(&mut Past)) {
        let mut p = self.past.take().unwrap_or_default();
        f(&mut p);
        if *p != *fresh_past() {
            self.past = Some(p);
        }
    }

    pub(crate) fn modes(&self) -> Modes {
        let ansi = self.status & status::ANSI_QUOTES != 0
            || self
                .settings
                .var("sql_mode")
                .is_some_and(|m| m.contains("ANSI"));
        Modes {
            ansi_quotes: ansi,
            no_backslash_escapes: self.status & status::NO_BACKSLASH_ESCAPES != 0,
        }
    }

    /// How the server would read this session's statements now.
    pub(crate) fn sql_context<'a>(
        &'a self,
        shard: &'a Shard,
        routines: &'a HashSet<Vec<u8>>,
    ) -> Context<'a> {
        Context {
            modes: self.modes(),
            schema: self.settings.schema.as_deref().map(str::as_bytes),
            fold_table_names: shard.shared.server.fold_table_names,
            stored_functions: Some(routines),
        }
    }

    /// The session's own `wait_timeout` (seconds): its setting (an interactive client starts
    /// with the server's `interactive_timeout` there), else a fresh connection's.
    pub fn wait_timeout(&self, catalog: &crate::session::state::VarCatalog) -> Option<u64> {
        self.settings
            .var("wait_timeout")
            .or_else(|| catalog.fresh_value("wait_timeout"))
            .and_then(|v| v.parse().ok())
    }
}

thread_local! {
    /// This shard thread's copy of the server's stored functions, and its version.
    static ROUTINES: std::cell::RefCell<(u64, Arc<HashSet<Vec<u8>>>)> =
        std::cell::RefCell::new((0, Arc::default()));
}

/// The server's stored functions, as this thread last saw them (refreshed when they change).
pub(crate) fn routines(shard: &Shard) -> Arc<HashSet<Vec<u8>>> {
    let r = &shard.shared.server.routines;
    ROUTINES.with(|c| {
        let mut c = c.borrow_mut();
        let v = r.version();
        if c.0 != v {
            *c = (v, r.get());
        }
        c.1.clone()
    })
}

/// The ERR that ends a session still holding a backend whose drain is past its deadline (None:
/// the session may go on). Counted in `sluice_drain_closes_total`.
pub fn drained_out(shard: &Shard, sess: &Session) -> Option<Reply> {
    let id = sess.lease.as_ref()?.get().backend;
    if !shard.drain_overdue(id) {
        return None;
    }
    let backend = shard.backend(id);
    let why = why_held(sess);
    shard
        .stats
        .drain_closes
        .set(shard.stats.drain_closes.get() + 1);
    tracing::info!(backend = %backend.address, why = %why, conn = sess.conn_id, "drain deadline: closing a session that could not move");
    Some(Reply::new(
        1053,
        b"08S01",
        format!(
            "sluice: backend {} was drained and this session could not move ({why})",
            backend.address
        ),
    ))
}

/// What keeps a session on its backend, if it holds one (the console's SHOW CLIENTS).
pub fn held_by(sess: &Session) -> Option<String> {
    sess.lease.as_ref()?;
    Some(why_held(sess))
}

/// What keeps a session on its backend, in words (for the error a drain's deadline gives it).
fn why_held(sess: &Session) -> String {
    use crate::session::effects::Diag;
    let mut why: Vec<&str> = Vec::new();
    if sess.status & status::IN_TRANS != 0 {
        why.push("a transaction is open");
    }
    let past = sess.past();
    if past.uncertain {
        why.push("a transaction may have begun");
    }
    if past.one_shot {
        why.push("insert_id is set for its next insert");
    }
    if past.history.diag == Diag::Dirty {
        why.push("conditions not read yet");
    }
    if sess.stmts.as_ref().is_some_and(|s| s.pending()) {
        why.push("a cursor or long data is pending");
    }
    if let Some(p) = &sess.pins {
        let mask = p.mask();
        why.extend(
            crate::session::pins::PinReason::ALL
                .iter()
                .filter(|r| mask & r.bit() != 0)
                .map(|r| r.name()),
        );
    }
    if why.is_empty() {
        why.push(if sess.mode() == PoolMode::Session {
            "session mode: it sent no command to move at"
        } else {
            "it still held its backend"
        });
    }
    why.join(", ")
}

/// Takes the backend of a parked session that keeps it only for its diagnostics (see
/// [`Session::soft_held`]): the session's conditions are given up (its diagnostics area reads
/// empty from now on, counted in `sluice_diagnostics_released_total`).
pub fn take_soft_lease(sess: &mut Session) -> Option<crate::backend::pool::Lease> {
    if !sess.soft_held() {
        return None;
    }
    let lease = sess.lease.take()?;
    sess.update_past(|p| {
        p.history.diag = crate::session::effects::Diag::Clean;
        p.history.foreign = crate::session::effects::Foreign::default();
        p.diag_held_since = None;
    });
    Some(lease)
}

/// A session-mode session whose backend is leaving (draining, in maintenance, removed), or
/// that another backend would serve with less load (one added under load: see
/// [`crate::shard::rebalance`]), gives it up between commands when it can go on elsewhere
/// ([`Session::movable`]); its next command takes another, where its settings are replayed and
/// its history values answered by sluice (as after any release) until its own statements run
/// there. What only that backend knows (history values, whether conditions remain) is read
/// first. Returns whether it moved.
pub(crate) async fn move_off(shard: &Shard, sess: &mut Session) -> bool {
    move_off_if(shard, sess, false).await
}

/// [`move_off`]; `any`: whether its backend is leaving or not (an upgrade: the whole process
/// is leaving; a session pinned by user variables stays then, as every pinned one does).
async fn move_off_if(shard: &Shard, sess: &mut Session, any: bool) -> bool {
    if !sess.movable() || (any && sess.pinned()) {
        return false;
    }
    let why = if any || leaving(shard, sess) {
        // Drains are paced (see `shard::rebalance`); an upgrade is not a drain.
        if !any
            && !sess
                .lease
                .as_ref()
                .is_some_and(|l| shard.may_move_off(l.get().backend))
        {
            return false;
        }
        crate::shard::MOVE_LEAVING
    } else if sess.mode() == PoolMode::Session && rebalances(shard, sess) {
        crate::shard::MOVE_REBALANCE
    } else {
        return false;
    };
    if sess.history_on_backend() {
        let history = sess.past().history.clone();
        let Some(lease) = sess.lease.as_mut() else {
            return false;
        };
        let Ok(out) = exec::read_history(lease, Outcome::reading(history)).await else {
            // Lost with its backend: the command that comes next says so.
            return false;
        };
        let stays = out.hold.is_some();
        sess.update_past(|p| p.history = out.history);
        if stays {
            // Conditions to read there: it stays until the client has (or the deadline).
            return false;
        }
    }
    if sess.pinned() {
        // Pinned by user variables alone (see `movable`): they go with it by value, or it
        // stays. The reads are sluice's own statements there: the backend's history values are
        // no longer the session's, whether it moves or not.
        let Some(lease) = sess.lease.as_mut() else {
            return false;
        };
        let set = exec::read_user_vars(lease).await;
        sess.update_past(|p| p.history.foreign = crate::session::effects::Foreign::ALL);
        match set {
            Some(sql) => sess.update_past(|p| p.moved_vars = Some(sql.into())),
            None => return false,
        }
    }
    match take_for_move(shard, sess, why) {
        Some(lease) => {
            if why == crate::shard::MOVE_LEAVING && !any {
                shard.moved_off();
            }
            lease.release();
            if sess.pin_counted {
                // Its unit of the old pool's pin budget: the next backend's pool counts it
                // when the variables are made there (`command::get_backend`).
                shard.pool(sess.user.index, sess.backend).pin_release();
                sess.pin_counted = false;
            }
            true
        }
        None => false,
    }
}

fn leaving(shard: &Shard, sess: &Session) -> bool {
    sess.lease
        .as_ref()
        .is_some_and(|l| shard.leaving(l.get().backend))
}

/// Would another backend serve this session with less load now (and may the shard move one)?
fn rebalances(shard: &Shard, sess: &Session) -> bool {
    let Some(l) = sess.lease.as_ref() else {
        return false;
    };
    let profile = crate::backend::conn::profile_of(sess.caps, sess.mariadb_caps);
    shard.rebalance(sess.user.index, profile, &sess.settings, l.get().backend)
}

/// [`move_off`] for a parked session, which cannot wait on its backend: when sluice knows
/// everything the backend does (most sessions). The backend to give back, if it moves.
pub fn move_off_parked(shard: &Shard, sess: &mut Session) -> Option<crate::backend::pool::Lease> {
    // (Variables are read from the backend, which a parked session cannot wait for.)
    if sess.history_on_backend() || sess.pinned() || !leaving(shard, sess) || !sess.movable() {
        return None;
    }
    take_for_move(shard, sess, crate::shard::MOVE_LEAVING)
}

/// What an upgrade can do with a parked session-mode session's backend (see `crate::upgrade`).
pub enum UpgradeMove {
    /// Given up (sluice knows everything the backend does): the connection to drop.
    GivenUp(crate::backend::pool::Lease),
    /// History values only the backend knows must be read first ([`give_up_for_upgrade`]).
    ReadFirst,
    /// The session needs its backend (a pin, a transaction, …).
    Keeps,
}

/// As [`move_off_parked`], whatever the backend: the whole process is leaving.
pub fn take_for_upgrade(shard: &Shard, sess: &mut Session) -> UpgradeMove {
    // (User variables that would go by value are not carried across an upgrade: it stays.)
    if !sess.movable() || sess.pinned() {
        return UpgradeMove::Keeps;
    }
    if sess.history_on_backend() {
        return UpgradeMove::ReadFirst;
    }
    match take_for_move(shard, sess, crate::shard::MOVE_LEAVING) {
        Some(lease) => UpgradeMove::GivenUp(lease),
        None => UpgradeMove::Keeps,
    }
}

/// As [`move_off`], whatever the backend (an upgrade): reads what only the backend knows, then
/// gives it up when the session can go on without it. Returns whether it did.
pub async fn give_up_for_upgrade(shard: &Shard, sess: &mut Session) -> bool {
    move_off_if(shard, sess, true).await
}

fn take_for_move(
    shard: &Shard,
    sess: &mut Session,
    why: usize,
) -> Option<crate::backend::pool::Lease> {
    let lease = sess.lease.take()?;
    tracing::debug!(
        conn = sess.conn_id,
        backend = %shard.backend(lease.get().backend).address,
        reason = crate::shard::MOVE_REASONS[why],
        "session-mode session moves to another backend"
    );
    // Its next backend holds other values until the session's own statements run there.
    sess.update_past(|p| p.history.foreign = crate::session::effects::Foreign::ALL);
    let moves = &shard.stats.session_moves[why];
    moves.set(moves.get() + 1);
    Some(lease)
}

/// Gives back a backend taken with [`take_soft_lease`], its diagnostics area emptied first.
pub async fn release_soft(shard: Rc<Shard>, mut lease: crate::backend::pool::Lease) {
    match exec::clear_diagnostics(&mut lease).await {
        Ok(()) => {
            shard
                .stats
                .diagnostics_released
                .set(shard.stats.diagnostics_released.get() + 1);
            lease.release()
        }
        Err(e) => debug!(error = %e, "clearing a backend's diagnostics failed; discarding it"),
    }
}

/// What to do after a command.
pub(crate) enum Flow {
    Continue,
    Quit,
}

pub(crate) type CmdResult = Result<Flow, Failure>;

pub(crate) fn fail(error: Error, next_seq: u8) -> Failure {
    Failure::new(error, Some(next_seq))
}

/// Serves an active session until it parks, quits or fails.
/// How long a session stays hot (its task and buffers kept, its socket polled in the shard's
/// ring) after a command before it parks.
const LINGER: Duration = Duration::from_millis(200);
/// At most this many sessions linger per shard: each holds buffers and a poll in the ring, whose
/// cancel cost grows with the polls pending there (see `shard::poller`).
const MAX_LINGERING: u32 = 512;

pub async fn serve(shard: Rc<Shard>, token: Token, ctl: Rc<ActiveCtl>, mut sess: Session) {
    let mut io = ClientIo::new(shard.clone(), sess.fd.as_raw_fd(), token, ctl.clone());
    io.tls = sess.tls.take();
    let live = shard.cfg();
    let max = live.max_packet_size;
    let read_timeout = Some(Duration::from_millis(live.net_read_timeout_ms));
    ctl.in_transaction.set(sess.status & status::IN_TRANS != 0);
    if sess.last_active == 0 {
        // Just logged in: idle since now.
        sess.last_active = shard.clock();
    }
    ctl.note(&sess.settings, sess.last_active);
    let reason: Option<Error> = loop {
        if let Err(e) = ctl.check() {
            break Some(e);
        }
        match io.next_packet(max, read_timeout).await {
            Ok(Next::Idle) => {
                // A client that sends its next command right away (most do, under load) finds
                // its session still running: no park, no epoll registration, no task to spawn.
                // Only one that stays quiet for LINGER is parked as a compact record.
                // During an upgrade's handover sessions park at once: a parked session is one
                // that can move (see crate::upgrade).
                let hot = if !shard.is_draining() && !crate::upgrade::handing_over() {
                    shard.linger(MAX_LINGERING)
                } else {
                    None
                };
                if let Some(hot) = hot {
                    let came = io.linger(LINGER).await;
                    drop(hot);
                    if came {
                        continue;
                    }
                }
                sess.tls = io.tls.take();
                drop(io);
                shard.park(token, sess);
                return;
            }
            Ok(Next::Closed) => break None,
            Ok(Next::Packet(seq, payload)) => {
                // A session-mode session, or a session pinned by user variables alone, on a
                // backend that is leaving moves if it can (session mode also for balance).
                if sess.lease.is_some() && (sess.mode() == PoolMode::Session || sess.pinned()) {
                    move_off(&shard, &mut sess).await;
                }
                // A session still on a backend whose drain is overdue: its next command is
                // answered with why it ends (its state cannot move), then the connection closes.
                if let Some(reply) = drained_out(&shard, &sess) {
                    let mut out = Vec::new();
                    reply.encode(&mut out);
                    io.queue(seq.wrapping_add(1), &out);
                    let _ = io.flush(Some(Duration::from_secs(1))).await;
                    break None;
                }
                // PAUSE: a command that needs a backend waits here, as for a pool slot.
                let in_trx = sess.status & status::IN_TRANS != 0;
                if crate::shard::pause::waits(shard.is_paused(), &payload, in_trx) {
                    crate::shard::pause::gate(|| shard.is_paused(), &ctl).await;
                    if let Err(e) = ctl.check() {
                        break Some(e);
                    }
                    let code = payload.first().copied().unwrap_or(0);
                    if ctl.gate_cancelled.replace(false) && crate::shard::pause::answered(code) {
                        let reply = Reply::new(1317, b"70100", "Query execution was interrupted");
                        let mut out = Vec::new();
                        reply.encode(&mut out);
                        io.queue(seq.wrapping_add(1), &out);
                        if let Err(e) = io.flush(None).await {
                            break Some(e);
                        }
                        continue;
                    }
                }
                shard.stats.commands.set(shard.stats.commands.get() + 1);
                sess.last_active = shard.clock();
                ctl.command.set(payload.first().copied().unwrap_or(0));
                ctl.serving.set(true);
                let done = handle(&shard, &ctl, &mut sess, &mut io, seq, payload).await;
                ctl.serving.set(false);
                ctl.in_transaction.set(sess.status & status::IN_TRANS != 0);
                ctl.note(&sess.settings, sess.last_active);
                match done {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Quit) => break None,
                    Err(f) => {
                        shard.count_error(&f.error);
                        if !f.told_client {
                            if let (Some(seq), Some(reply)) = (f.next_seq, f.error.reply()) {
                                let mut out = Vec::new();
                                reply.encode(&mut out);
                                io.queue(seq, &out);
                                let _ = io.flush(Some(Duration::from_secs(1))).await;
                            }
                        }
                        if f.ends_session() {
                            debug!(conn = sess.conn_id, error = %f.error, "session ends");
                            break None;
                        }
                    }
                }
                if shard.is_draining() && sess.lease.is_none() {
                    break Some(Error::Shutdown);
                }
            }
            Err(e) => break Some(e),
        }
    };
    if let Some(e) = &reason {
        // The client is between commands: an ERR with sequence id 0 tells it why it is dropped.
        if let Some(reply) = e.reply() {
            let mut out = Vec::new();
            reply.encode(&mut out);
            io.queue(0, &out);
            let _ = io.flush(Some(Duration::from_millis(200))).await;
        }
    }
    drop(io);
    finish(&shard, token, sess).await;
}

/// Ends a session: its backend (if held) is reset and returned, its pins released, its slot
/// freed, its socket closed.
pub async fn finish(shard: &Rc<Shard>, token: Token, mut sess: Session) {
    drop_backend_state(shard, &mut sess).await;
    shard.shared.leave_user(sess.user.index);
    shard.remove_session(token);
    drop(sess);
}

/// Returns a held backend reset (its server-side state belongs to this client) and clears the
/// pins and statements that lived on it. The schema the backend kept through its reset, if it
/// was held and the reset worked: the server's, which sluice may not have heard of (a
/// session-mode client can turn schema tracking off).
pub(crate) async fn drop_backend_state(
    shard: &Rc<Shard>,
    sess: &mut Session,
) -> Option<Option<Box<str>>> {
    let mut kept = None;
    if let Some(mut lease) = sess.lease.take() {
        match lease.conn().reset(shard.fresh.clone()).await {
            Ok(()) => {
                kept = Some(lease.get().settings.schema.clone());
                lease.release();
            }
            Err(e) => debug!(error = %e, "backend reset failed; discarding it"),
        }
    }
    exec::set_pins(shard, sess, |p| *p = Pins::default());
    if let Some(s) = sess.stmts.as_mut() {
        s.forget_all();
    }
    kept
}

/// A command sluice answers with an OK the server would have counted (COM_PING, a
/// COM_STMT_RESET with nothing pending): ROW_COUNT() is 0 after it; the held backend, if any,
/// never saw it.
pub(crate) fn counted_as_ok(sess: &mut Session) {
    if sess.history().row_count != 0 {
        sess.update_past(|p| {
            p.history.row_count = 0;
            p.history.foreign.row_count = true;
        });
    }
}

/// Before sluice answers a command itself: after a command that failed with autocommit off,
/// only the server knows whether a transaction began (an ERR carries no status; MariaDB begins
/// one for a failed statement that touched a transactional table), so the backend the session
/// holds for that reason is asked (a COM_PING, which the client's own OK-answered command stands
/// for) and its status becomes the session's.
pub(crate) async fn settle_status(sess: &mut Session) {
    if !sess.past().uncertain {
        return;
    }
    let Some(lease) = sess.lease.as_mut() else {
        return;
    };
    match lease
        .conn()
        .command_ok(&[com::PING], crate::codec::command::ResponseKind::OkErr)
        .await
    {
        Ok((st, _)) => sess.status = st,
        Err(e) => debug!(error = %e, "reading the held backend's status failed"),
    }
}

/// Answers OK with the session's status (settled first: see [`settle_status`]).
pub(crate) async fn reply_ok(io: &mut ClientIo, sess: &mut Session, seq: u8) -> CmdResult {
    settle_status(sess).await;
    let mut out = Vec::with_capacity(16);
    encode_ok(&mut out, sess.session_status(), sess.caps);
    io.queue(seq, &out);
    io.flush(None).await.map_err(|e| fail(e, seq))?;
    Ok(Flow::Continue)
}

pub(crate) async fn reply_err(io: &mut ClientIo, seq: u8, reply: Reply) -> CmdResult {
    let mut out = Vec::new();
    reply.encode(&mut out);
    io.queue(seq, &out);
    io.flush(None).await.map_err(|e| fail(e, seq))?;
    Ok(Flow::Continue)
}

async fn handle(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    seq: u8,
    payload: Bytes,
) -> CmdResult {
    use super::stmt;
    let next = seq.wrapping_add(1);
    let Some(&code) = payload.first() else {
        return Err(fail(
            Error::ClientProtocol(crate::codec::CodecError::truncated("command")),
            next,
        ));
    };
    match command::disposition(code) {
        Disposition::Refuse => {
            let reply = match code {
                com::BINLOG_DUMP | com::BINLOG_DUMP_GTID | com::REGISTER_SLAVE | com::TABLE_DUMP => Reply::new(
                    1235,
                    b"42000",
                    format!(
                        "sluice: {} (replication) is not supported through the proxy; connect replicas to the server directly",
                        command::name(code)
                    ),
                ),
                _ => Reply::new(1047, b"08S01", format!("Unknown command ({})", command::name(code))),
            };
            Err(fail(Error::Refused(reply), next))
        }
        Disposition::Intercept(kind) => match code {
            com::QUIT => Ok(Flow::Quit),
            com::PING => {
                counted_as_ok(sess);
                reply_ok(io, sess, next).await
            }
            com::SET_OPTION => set_option(shard, sess, io, &payload, next).await,
            com::RESET_CONNECTION => {
                reset_session(shard, sess).await;
                reply_ok(io, sess, next).await
            }
            com::CHANGE_USER => {
                learn_found_rows(sess).await;
                drop_backend_state(shard, sess).await;
                forget_past(sess);
                super::handshake::change_user(shard, sess, io, &payload, seq).await
            }
            com::PROCESS_KILL => {
                let target = command::kill_target(&payload).map_err(|e| fail(e.into(), next))?;
                match shard.kill(target, KillKind::Connection, sess.user.id).await {
                    Ok(()) => reply_ok(io, sess, next).await,
                    Err(e) => Err(fail(e, next)),
                }
            }
            _ => exec::forward(shard, ctl, sess, io, next, &payload, kind, Cmd::Plain)
                .await
                .map(|_| Flow::Continue),
        },
        Disposition::Forward(kind) => match code {
            com::QUERY => exec::query(shard, ctl, sess, io, next, payload).await,
            com::INIT_DB => exec::forward(shard, ctl, sess, io, next, &payload, kind, Cmd::InitDb)
                .await
                .map(|_| Flow::Continue),
            com::STMT_PREPARE => stmt::prepare(shard, ctl, sess, io, next, payload).await,
            com::STMT_EXECUTE => stmt::execute(shard, ctl, sess, io, next, &payload).await,
            com::STMT_SEND_LONG_DATA => stmt::long_data(shard, sess, &payload).await,
            com::STMT_CLOSE => stmt::close(shard, ctl, sess, &payload).await,
            com::STMT_RESET => stmt::reset(shard, ctl, sess, io, next, &payload).await,
            com::STMT_FETCH => stmt::fetch(shard, ctl, sess, io, next, &payload).await,
            com::PROCESS_INFO if shard.cfg().processlist == crate::config::Processlist::Sluice => {
                super::processlist::show(shard, sess, io, next, false, None).await
            }
            _ => exec::forward(shard, ctl, sess, io, next, &payload, kind, Cmd::Plain)
                .await
                .map(|_| Flow::Continue),
        },
    }
}

/// COM_SET_OPTION: the session's multi-statements choice. A held backend gets it at once (the
/// session's next statement runs there without a settings sync); otherwise the next checkout
/// applies it.
async fn set_option(
    shard: &Rc<Shard>,
    sess: &mut Session,
    io: &mut ClientIo,
    payload: &[u8],
    next: u8,
) -> CmdResult {
    let opt = command::set_option_value(payload).map_err(|e| fail(e.into(), next))?;
    let on = match opt {
        set_option::MULTI_STATEMENTS_ON => true,
        set_option::MULTI_STATEMENTS_OFF => false,
        _ => {
            return reply_err(
                io,
                next,
                Reply::new(1047, b"08S01", "Unknown command (COM_SET_OPTION value)"),
            )
            .await
        }
    };
    sess.multi_statements = on;
    // Inside a transaction the server's answer (an EOF) marks it as having sent a result
    // set (`S` in the transaction state, MariaDB 10.11, checked): the held backend gets the
    // command even when its choice is already the session's, so that its state says so too
    // (the flags a client hears stay a subset of its backend's, see
    // `trackers::client_trx_state`), and a client tracking the state hears of it below.
    let in_trans = sess.lease.as_ref().is_some_and(|l| {
        l.get().status & crate::codec::caps::status::IN_TRANS != 0
            && l.get().trx_client.first().is_some_and(|&c| c != b'_')
    });
    if let Some(lease) = sess.lease.as_mut() {
        if lease.get().multi_statements != on || in_trans {
            match lease.conn().apply(None, None, Some(opt)).await {
                Ok(a) if a.ok() => lease.conn().multi_statements = on,
                Ok(a) => {
                    let e = a
                        .first_error()
                        .map(|e| exec::backend_error(shard, lease, e));
                    if let Some(Error::Refused(r)) = e {
                        return reply_err(io, next, r).await;
                    }
                }
                Err(e) => return Err(fail(exec::backend_error(shard, lease, e), next)),
            }
        }
    }
    settle_status(sess).await;
    // (Heard even by a client whose answer is a classic EOF, which carries no state: its
    // connection's next report includes the flag.)
    let heard = sess
        .lease
        .as_mut()
        .and_then(|l| result_set_sent(l, in_trans));
    let mut out = Vec::with_capacity(16);
    if sess.caps & cap::DEPRECATE_EOF != 0 {
        let mut status = sess.session_status();
        let mut state = Vec::new();
        if let Some(view) = heard.filter(|_| sess.hears_trx_state(shard)) {
            crate::session::trackers::encode_trx_state(&mut state, &view);
            status |= crate::codec::caps::status::SESSION_STATE_CHANGED;
        }
        OkPacket {
            status,
            session_state: &state,
            ..OkPacket::default()
        }
        .encode(&mut out, 0xFE, sess.caps);
    } else {
        EofPacket {
            warnings: 0,
            status: sess.session_status(),
        }
        .encode(&mut out);
    }
    io.queue(next, &out);
    io.flush(None).await.map_err(|e| fail(e, next))?;
    // The server counts its EOF like a result: ROW_COUNT() is -1 after it (MariaDB 10.11,
    // checked). A held backend's own is whatever sluice's COM_SET_OPTION left.
    if sess.history().row_count != -1 || sess.lease.is_some() {
        sess.update_past(|p| {
            p.history.row_count = -1;
            p.history.foreign.row_count = true;
        });
    }
    Ok(Flow::Continue)
}

/// A command answered with an EOF ran in the open transaction of `lease` (`in_trans`): the
/// transaction state the client's connection has now, when that adds the result-set flag
/// (recorded as heard).
fn result_set_sent(lease: &mut crate::backend::pool::Lease, in_trans: bool) -> Option<Box<[u8]>> {
    use crate::session::trackers::{TRX_RESULT_SET, TRX_STATE_LEN};
    let heard = &lease.get().trx_client;
    if !in_trans || heard.len() != TRX_STATE_LEN || heard[TRX_RESULT_SET] != b'_' {
        return None;
    }
    let mut view = heard.clone();
    view[TRX_RESULT_SET] = b'S';
    lease.conn().trx_client = view.clone();
    Some(view)
}

/// COM_RESET_CONNECTION: this client's state returns to what it had after login; other clients'
/// connections are untouched.
async fn reset_session(shard: &Rc<Shard>, sess: &mut Session) {
    learn_found_rows(sess).await;
    let kept = drop_backend_state(shard, sess).await;
    // The server keeps the schema across COM_RESET_CONNECTION and returns to the handshake's
    // character set; so does sluice (the held backend's schema is the server's own).
    let schema = kept.unwrap_or_else(|| sess.settings.schema.clone());
    sess.settings = shard.initial_settings(sess.collation, schema, sess.caps);
    // Like the server, COM_RESET_CONNECTION keeps the COM_SET_OPTION multi-statements choice.
    sess.status = status::AUTOCOMMIT;
    forget_past(sess);
}

/// Before a reset gives the session's backend back: the `FOUND_ROWS()` only that backend knows
/// (the reset keeps it; the session's next statement runs elsewhere). If it cannot be read, the
/// backend is lost anyway and the value with it (0 from then on).
async fn learn_found_rows(sess: &mut Session) {
    if sess.history().found_rows != Known::OnBackend {
        return;
    }
    let Some(lease) = sess.lease.as_mut() else {
        return;
    };
    if let Ok(v) = lease.conn().query_value("SELECT FOUND_ROWS()").await {
        let n = v.and_then(|v| v.parse().ok()).unwrap_or(0);
        sess.update_past(|p| p.history.found_rows = Known::Is(n));
    }
}

/// What COM_RESET_CONNECTION and COM_CHANGE_USER leave of a session's past: the server forgets
/// everything but FOUND_ROWS() (MariaDB 10.11, checked), and its OK makes ROW_COUNT() 0.
fn forget_past(sess: &mut Session) {
    let found_rows = match sess.history().found_rows {
        Known::Is(n) => n,
        _ => 0,
    };
    // What the client wrote is still on the primary for it to read (a direct connection reads
    // there), though `@@last_gtid` is empty again.
    let written = sess.written_gtid().into_boxed_str();
    sess.past = None;
    sess.update_past(|p| {
        p.written_before_reset = written;
        p.history.found_rows = Known::Is(found_rows);
        p.history.row_count = 0;
        // The backend went back at the reset: the next one holds another session's values.
        p.history.foreign = crate::session::effects::Foreign::ALL;
    });
}
