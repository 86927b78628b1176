//! The shard's half of an upgrade, run on the shard's own thread: which parked sessions may
//! move ([`stays`], pure), taking them out of the table as (socket, record) pairs, and adopting a
//! record (in the successor, or back in the old process when the successor refused it).
//!
//! A session that moves with its backend connection ([`Facts::carriable`]) leaves its lease
//! here, *in transit* (counted in its pool as before), until the successor answers: adopted,
//! the lease is let go without a shutdown ([`ShardRequest::Gone`], `Lease::moved`); refused,
//! the session is adopted back with that same lease (the descriptor the successor got is
//! closed there), so nothing is counted twice and nothing leaks.

use super::record::{
    self, BackendRec, HistoryRec, PinsRec, PreparedRec, Record, StmtRec, TrackersRec,
};
use crate::backend::pool::{Lease, Pool};
use crate::codec::caps::status;
use crate::frontend::session::{Past, Session};
use crate::session::effects::{Diag, Foreign, History, Known};
use crate::session::pins::Pins;
use crate::session::sql::Modes;
use crate::session::state::Settings;
use crate::session::stmts::{ClientStmt, Conversion, LostData, Stmts};
use crate::session::trackers::{Trackers, TrxInfo};
use crate::shard::poller::READABLE;
use crate::shard::table::{ActiveCtl, SlotState, Token};
use crate::shard::Shard;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::task::{Poll, Waker};

/// What a shard is asked during an upgrade.
pub enum ShardRequest {
    /// A duplicate of the shard's listener (`None` once it stopped accepting) and the last
    /// connection-id counter it handed out.
    Listener {
        reply: Sender<(Option<OwnedFd>, u32)>,
    },
    /// Accept on `listener` again (the successor died during the handover).
    Resume { listener: Option<OwnedFd> },
    /// The handover is over: tell each parked session still here why it ends (see
    /// `farewell`) and close it; reply with how many.
    Farewell { reply: Sender<usize> },
    /// Take out up to `max` parked sessions that may move; `carry`: the successor reads
    /// records with a backend connection (version 2), so sessions may move with theirs.
    HandOver {
        max: usize,
        carry: bool,
        reply: Sender<Sweep>,
    },
    /// Adopt a session (with the socket of its backend connection when it moves with it).
    Adopt {
        record: Box<Record>,
        fd: OwnedFd,
        backend_fd: Option<OwnedFd>,
        reply: Sender<Result<(), String>>,
    },
    /// The successor adopted session `conn_id`: it is no longer on its way (see [`moving`]);
    /// when it moved with its backend connection, the lease kept in transit here lets the
    /// connection go.
    Gone { conn_id: u32 },
    /// Session `conn_id`, on its way, was neither adopted nor taken back (it could not be
    /// decoded again, or its shard did not answer): it is no longer on its way.
    Settled { conn_id: u32 },
}

/// One session on its way out: its socket, its backend connection's (a duplicate) when it
/// moves with it, and its encoded record.
pub struct Moving {
    pub conn_id: u32,
    pub fd: OwnedFd,
    pub backend_fd: Option<OwnedFd>,
    pub record: Vec<u8>,
}

/// A lease whose session was handed to the successor with its backend connection, waiting for
/// the answer.
struct InTransit {
    lease: Lease,
    /// `Pool::move_out` gave the slot to the host budget.
    gave: bool,
    /// The pool whose pin budget the session holds a unit of.
    pin_pool: Option<std::rc::Rc<Pool>>,
    /// The session's pin reasons (the shard's pinned-sessions gauges count them).
    pin_mask: u16,
}

thread_local! {
    /// This shard's leases in transit, by connection id.
    static IN_TRANSIT: RefCell<HashMap<u32, InTransit>> = RefCell::new(HashMap::new());
    /// This shard's sessions on their way to the successor (sent, not answered yet), by
    /// connection id: in neither process's table until the answer (see [`moving`]).
    static MOVING: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
    /// Tasks waiting for one of them to settle ([`arrived`]).
    static MOVING_WAITERS: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// Is session `conn_id` of this shard on its way to the successor: taken out of the table and
/// sent, its answer not read yet? Such a session is in neither process's table; a KILL for it
/// waits until it settles ([`arrived`]): adopted by the successor, or taken back here.
pub fn moving(conn_id: u32) -> bool {
    MOVING.with(|m| m.borrow().contains(&conn_id))
}

/// Resolves once session `conn_id` is no longer on its way (see [`moving`]): it is then in
/// this shard's table (taken back), in the successor's (adopted), or gone.
pub async fn arrived(conn_id: u32) {
    std::future::poll_fn(|cx| {
        if !moving(conn_id) {
            return Poll::Ready(());
        }
        MOVING_WAITERS.with(|w| {
            let mut w = w.borrow_mut();
            if !w.iter().any(|x| x.will_wake(cx.waker())) {
                w.push(cx.waker().clone());
            }
        });
        Poll::Pending
    })
    .await
}

/// Session `conn_id` is no longer on its way; wakes whoever waits for one to settle.
fn settle(conn_id: u32) {
    if MOVING.with(|m| m.borrow_mut().remove(&conn_id)) {
        for w in MOVING_WAITERS.with(|w| std::mem::take(&mut *w.borrow_mut())) {
            w.wake();
        }
    }
}

/// Lets a lease in transit go: `moved` (the successor has the connection now) or discarded
/// (the session ends); its session's pin-budget unit and gauges go with it.
fn let_go(shard: &Shard, t: InTransit) {
    let InTransit {
        lease,
        gave: _,
        pin_pool,
        pin_mask,
    } = t;
    lease.moved();
    if let Some(p) = pin_pool {
        p.pin_release();
    }
    shard.stats.pin_transition(pin_mask, 0);
}

/// What a hand-over sweep found.
#[derive(Default)]
pub struct Sweep {
    pub moving: Vec<Moving>,
    /// Sessions left in the shard (active, or parked but staying), after the sweep.
    pub left: usize,
    /// Parked sessions that stay, by reason.
    pub staying: Vec<(Stay, usize)>,
}

/// Why a parked session stays in the old process (served there until it ends or the
/// deadline, see the module doc of [`super`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stay {
    /// Its TLS state lives in this process's rustls object.
    Tls,
    /// It holds a backend connection (session mode, a pin, a transaction, diagnostics).
    HoldsBackend,
    /// A transaction is open, or may be.
    Transaction,
    /// Pinned state (user variables, temporary tables, …), or a one-shot `insert_id`.
    Pinned,
    /// A history value or diagnostics only a backend knows.
    BackendHistory,
    /// A cursor or long data pending on a backend.
    StatementPending,
}

/// Why a session holding a backend connection cannot move *with* it (it then stays for the
/// reason [`stays`] gives without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCarried {
    /// The connection runs over TLS (its state lives in this process's rustls object).
    Tls,
    /// Bytes from the server are unread, or a query was sent ahead.
    Busy,
    /// The lease is on another backend than the session's (a routed read).
    Elsewhere,
}

impl Stay {
    pub fn name(self) -> &'static str {
        match self {
            Stay::Tls => "tls",
            Stay::HoldsBackend => "holds_backend",
            Stay::Transaction => "transaction",
            Stay::Pinned => "pinned",
            Stay::BackendHistory => "backend_history",
            Stay::StatementPending => "statement_pending",
        }
    }
}

/// The facts about a parked session that decide whether it may move.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    pub tls: bool,
    pub lease: bool,
    pub pin_counted: bool,
    pub pins: bool,
    pub in_transaction: bool,
    pub uncertain: bool,
    pub one_shot: bool,
    pub replica_vars: bool,
    pub history_on_backend: bool,
    pub diag_not_clean: bool,
    pub statement_pending: bool,
    /// It holds a backend connection that can move with it (see [`carry`]): then what lives
    /// on that connection (a transaction, pins, a one-shot, history values and conditions
    /// only it knows) moves too.
    pub carriable: bool,
}

/// Why a session with `f` stays, or `None`: it moves. Pure; the first reason wins, in the order
/// an operator would look for it.
pub fn stays(f: &Facts) -> Option<Stay> {
    if f.tls {
        Some(Stay::Tls)
    } else if f.carriable {
        // Its backend goes with it; what still stays is state sluice itself holds for it
        // and does not encode: user variables read off a replica (to be made on its next
        // backend), a cursor or long data pending.
        if f.replica_vars {
            Some(Stay::Pinned)
        } else if f.statement_pending {
            Some(Stay::StatementPending)
        } else {
            None
        }
    } else if f.in_transaction || f.uncertain {
        Some(Stay::Transaction)
    } else if f.pins || f.pin_counted || f.one_shot || f.replica_vars {
        Some(Stay::Pinned)
    } else if f.lease {
        Some(Stay::HoldsBackend)
    } else if f.history_on_backend || f.diag_not_clean {
        Some(Stay::BackendHistory)
    } else if f.statement_pending {
        Some(Stay::StatementPending)
    } else {
        None
    }
}

/// Can the session's backend connection move with it, or why not (`None`: it holds none).
fn carry(s: &Session) -> Option<Result<(), NotCarried>> {
    let conn = s.lease.as_ref()?.get();
    Some(if conn.backend != s.backend {
        Err(NotCarried::Elsewhere)
    } else if !conn.movable() {
        Err(if conn.is_tls() {
            NotCarried::Tls
        } else {
            NotCarried::Busy
        })
    } else {
        Ok(())
    })
}

fn facts(s: &Session, carry_ok: bool) -> Facts {
    let past = s.past.as_deref();
    let h = past.map(|p| &p.history);
    Facts {
        tls: s.tls.is_some(),
        lease: s.lease.is_some(),
        pin_counted: s.pin_counted,
        pins: s
            .pins
            .as_deref()
            .is_some_and(|p| *p != crate::session::pins::Pins::default()),
        in_transaction: s.status & status::IN_TRANS != 0,
        uncertain: past.is_some_and(|p| p.uncertain),
        one_shot: past.is_some_and(|p| p.one_shot),
        // (User variables read off a backend and not made on the next yet count as pinning.)
        replica_vars: past.is_some_and(|p| !p.replica_vars.is_empty() || p.moved_vars.is_some()),
        history_on_backend: h.is_some_and(|h| {
            h.last_insert_id == Known::OnBackend || h.found_rows == Known::OnBackend
        }) || past.is_some_and(|p| p.diag_held_since.is_some()),
        diag_not_clean: h.is_some_and(|h| h.diag != Diag::Clean),
        statement_pending: s
            .stmts
            .as_deref()
            .is_some_and(|st| st.pending() || st.map.values().any(|c| c.pending_at.is_some())),
        carriable: carry_ok && carry(s) == Some(Ok(())),
    }
}

fn trackers_rec(t: &Trackers) -> TrackersRec {
    let Trackers {
        all_vars,
        vars,
        schema,
        state_change,
        trx,
    } = t;
    TrackersRec {
        all_vars: *all_vars,
        vars: vars.iter().map(|v| v.to_string()).collect(),
        schema: *schema,
        state_change: *state_change,
        trx: match trx {
            TrxInfo::Off => 0,
            TrxInfo::State => 1,
            TrxInfo::Characteristics => 2,
        },
    }
}

fn vars_of(s: &Settings) -> Vec<(String, String)> {
    s.vars
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The record of a session that may move (see [`stays`]). `idle_secs`: since its last command.
///
/// Every struct is taken apart field by field, without `..`: a field added to a session (or
/// to what it holds) does not compile here until someone decides how it moves (ARCHITECTURE
/// 8b). Fields not encoded are named with why.
pub fn to_record(s: &Session, idle_secs: u32) -> Record {
    let Session {
        // Passed with SCM_RIGHTS beside the record.
        fd: _,
        conn_id,
        user,
        caps,
        mariadb_caps,
        collation,
        settings,
        // Its backend connection, when it moves with it: [`backend_rec`] (with `pin_counted`,
        // `pins` and what of `past` lives on that connection). A session holding a backend
        // that cannot move, or on TLS, does not move (`stays`).
        lease: _,
        backend,
        multi_statements,
        status,
        pin_counted: _,
        past,
        pins: _,
        stmts,
        tls: _,
        // Encoded as `idle_secs` (a shard clock means nothing in another process).
        last_active: _,
    } = s;
    let Settings { schema, vars: _ } = &**settings;
    let mut r = Record {
        conn_id: *conn_id,
        user: user.name.to_string(),
        caps: *caps,
        mariadb_caps: *mariadb_caps,
        collation: *collation,
        schema: schema.as_deref().map(str::to_string),
        vars: vars_of(settings),
        backend: *backend,
        multi_statements: *multi_statements,
        status: *status,
        idle_secs,
        ..Record::default()
    };
    if let Some(p) = past.as_deref() {
        let Past {
            history,
            // Carried with its backend connection ([`backend_rec`]); without one, a session
            // with any of these does not move (`stays`).
            one_shot: _,
            uncertain: _,
            diag_held_since: _,
            // A session with either does not move (`stays`).
            replica_vars: _,
            moved_vars: _,
            // Not carried: after an upgrade, conditions left on a replica are lost when the
            // session goes on to the primary (as before this field).
            replica_conditions: _,
            // Not carried: a `last_gtid` report the client's connection would be holding back
            // is dropped (its next report lacks the unchanged value).
            gtid_pending: _,
            // Not carried: a schema report the client's connection would be holding back is
            // dropped (at worst a later report of the client's lacks its unchanged schema).
            schema_report: _,
            // Not carried (the record has no place for it yet): a session that reset after
            // writing may read its earlier writes on a replica without waiting right after an
            // upgrade.
            written_before_reset: _,
            trackers,
            tracker_values,
        } = p;
        let History {
            last_insert_id,
            row_count,
            found_rows,
            // Clean for a session that moves without its backend (`stays`); with it:
            // [`backend_rec`].
            diag: _,
            last_gtid,
            foreign,
        } = history;
        r.history = Some(HistoryRec {
            last_insert_id: last_insert_id.value().unwrap_or(0),
            row_count: *row_count,
            found_rows: found_rows.value().unwrap_or(0),
            foreign_row_count: foreign.row_count,
            foreign_found_rows: foreign.found_rows,
            last_gtid: last_gtid.to_string(),
        });
        r.trackers = trackers.as_deref().map(trackers_rec);
        r.tracker_values = tracker_values.as_deref().cloned();
    }
    if let Some(st) = stmts.as_deref() {
        // Cursors: none for a session that moves (`stays`).
        r.stmt_next_id = Some(st.next_id());
        let mut list: Vec<StmtRec> = st
            .map
            .iter()
            .map(|(&id, c)| {
                let ClientStmt {
                    sql,
                    settings,
                    params,
                    columns,
                    types,
                    bound_charset,
                    // Neither pending for a session that moves (`stays`).
                    long_data: _,
                    pending_at: _,
                    long_data_lost,
                    // Derived again from the text and `modes` by the successor.
                    effects: _,
                    modes,
                } = c;
                StmtRec {
                    id,
                    sql: sql.to_vec(),
                    schema: settings.schema.as_deref().map(str::to_string),
                    vars: vars_of(settings),
                    params: *params,
                    columns: *columns,
                    types: types.as_deref().map(<[u8]>::to_vec),
                    bound: bound_charset
                        .as_ref()
                        .map(|b| (b.client.to_string(), b.collation.to_string())),
                    bound_client_collation: bound_charset
                        .as_ref()
                        .and_then(|b| b.client_collation.as_deref().map(str::to_string)),
                    long_data_lost: long_data_lost.is_some(),
                    long_data_refused: *long_data_lost == Some(LostData::Refused),
                    ansi_quotes: modes.ansi_quotes,
                    no_backslash_escapes: modes.no_backslash_escapes,
                }
            })
            .collect();
        list.sort_by_key(|s| s.id);
        r.stmts = list;
    }
    r
}

/// The record of the backend connection a session moves with (see [`Facts::carriable`]), and of
/// the session's state that lives on it; `None` when it holds none.
pub fn backend_rec(shard: &Shard, s: &Session) -> Option<BackendRec> {
    let lease = s.lease.as_ref()?;
    let crate::backend::conn::Parts {
        backend,
        unix,
        profile,
        caps,
        thread_id,
        status,
        settings,
        multi_statements,
        last_insert_id,
        last_gtid,
        history_owner,
        trx_state,
        last_warnings,
        age,
        nonce,
        auth_plugin,
        prepared,
    } = lease.get().parts();
    let past = s.past();
    let h = &past.history;
    let pins = s.pins.as_deref().map(|p| {
        let Pins {
            user_vars,
            temp_tables,
            sql_prepared,
            named_locks,
            lock_tables,
            handler,
            trx_characteristics,
            unknown,
            sequence,
            stored_function,
            history_statements,
            savepoint,
        } = p.clone();
        PinsRec {
            user_vars,
            temp_tables,
            sql_prepared,
            named_locks,
            lock_tables,
            handler,
            trx_characteristics,
            unknown,
            sequence,
            stored_function,
            history_statements,
            savepoint,
        }
    });
    Some(BackendRec {
        address: shard.backend(backend).address.clone(),
        account: String::from_utf8_lossy(&lease.pool().spec().user).into_owned(),
        unix,
        thread_id,
        caps,
        profile,
        status,
        multi_statements,
        last_insert_id,
        last_gtid: last_gtid.to_string(),
        history_owner,
        trx_state: trx_state.to_vec(),
        last_warnings,
        age_secs: age.as_secs().min(u64::from(u32::MAX)) as u32,
        nonce,
        auth_plugin,
        schema: settings.schema.as_deref().map(str::to_string),
        vars: vars_of(&settings),
        prepared: prepared
            .into_iter()
            .map(|(settings, sql, id)| PreparedRec {
                id,
                sql: sql.to_vec(),
                schema: settings.schema.as_deref().map(str::to_string),
                vars: vars_of(&settings),
            })
            .collect(),
        pin_counted: s.pin_counted,
        one_shot: past.one_shot,
        uncertain: past.uncertain,
        last_insert_id_on_backend: h.last_insert_id == Known::OnBackend,
        found_rows_on_backend: h.found_rows == Known::OnBackend,
        diag: match h.diag {
            Diag::Clean => 0,
            Diag::Dirty => 1,
            Diag::Unknown => 2,
        },
        diag_held: past.diag_held_since.is_some(),
        pins,
    })
}

/// Puts back on `s` (built by [`from_record`]) the session state that lived on its backend
/// connection: history values and conditions only that connection knows, a transaction that
/// may have begun, a one-shot, its pins.
fn restore_backend_state(s: &mut Session, b: &BackendRec) {
    s.update_past(|p| {
        if b.last_insert_id_on_backend {
            p.history.last_insert_id = Known::OnBackend;
        }
        if b.found_rows_on_backend {
            p.history.found_rows = Known::OnBackend;
        }
        p.history.diag = match b.diag {
            1 => Diag::Dirty,
            2 => Diag::Unknown,
            _ => Diag::Clean,
        };
        p.diag_held_since = b.diag_held.then(std::time::Instant::now);
        p.one_shot = b.one_shot;
        p.uncertain = b.uncertain;
    });
    s.pins = b.pins.clone().map(|p| {
        let PinsRec {
            user_vars,
            temp_tables,
            sql_prepared,
            named_locks,
            lock_tables,
            handler,
            trx_characteristics,
            unknown,
            sequence,
            stored_function,
            history_statements,
            savepoint,
        } = p;
        Box::new(Pins {
            user_vars,
            temp_tables,
            sql_prepared,
            named_locks,
            lock_tables,
            handler,
            trx_characteristics,
            unknown,
            sequence,
            stored_function,
            history_statements,
            savepoint,
        })
    });
    if s.pins.as_deref().is_some_and(|p| !p.is_pinned()) {
        s.pins = None;
    }
    s.pin_counted = b.pin_counted;
}

/// Makes the backend connection a record describes (its socket `fd`, handed over by the old
/// process) this session's, checked out of the pool of (its backend, its user) here, which
/// counts it. Refused when that backend is not configured here (by address; removed, or now
/// on TLS), when the pool logs in with another account now, or when the pool is at its bound
/// and the host budget has no slot.
fn adopt_backend(
    shard: &Shard,
    s: &mut Session,
    b: &BackendRec,
    fd: OwnedFd,
) -> Result<(), String> {
    use crate::backend::router::Admin;
    let backend = shard
        .shared
        .backends
        .snapshot()
        .iter()
        .find(|x| x.address == b.address && x.admin() != Admin::Removed)
        .cloned()
        .ok_or_else(|| format!("backend {} is not configured here", b.address))?;
    if backend.tls.is_some() {
        return Err(format!(
            "backend {} is configured with TLS here; its connection is plaintext",
            b.address
        ));
    }
    let pool = shard.pool(s.user.index, backend.id);
    if pool.spec().user != b.account.as_bytes() {
        return Err(format!(
            "the pool of user {} on {} logs in as another account here",
            s.user.name, b.address
        ));
    }
    let intern = |schema: &Option<String>, vars: &[(String, String)]| {
        shard
            .interner
            .intern(settings_of(schema.clone(), vars.to_vec()))
    };
    let parts = crate::backend::conn::Parts {
        backend: backend.id,
        unix: b.unix,
        profile: b.profile,
        caps: b.caps,
        thread_id: b.thread_id,
        status: b.status,
        settings: intern(&b.schema, &b.vars),
        multi_statements: b.multi_statements,
        last_insert_id: b.last_insert_id,
        last_gtid: b.last_gtid.as_str().into(),
        history_owner: b.history_owner,
        trx_state: b.trx_state.clone().into_boxed_slice(),
        last_warnings: b.last_warnings,
        age: std::time::Duration::from_secs(u64::from(b.age_secs)),
        nonce: b.nonce.clone(),
        auth_plugin: b.auth_plugin.clone(),
        prepared: b
            .prepared
            .iter()
            .map(|p| {
                (
                    intern(&p.schema, &p.vars),
                    shard.sql.intern_bytes(&p.sql),
                    p.id,
                )
            })
            .collect(),
    };
    let conn =
        crate::backend::conn::BackendConn::adopt(fd, parts, &pool.spec(), backend.conn_gen());
    let lease = pool.adopt(Box::new(conn)).map_err(|_| {
        format!(
            "the pool of user {} on {} is at its bound here",
            s.user.name, b.address
        )
    })?;
    s.backend = backend.id;
    s.lease = Some(lease);
    Ok(())
}

fn settings_of(schema: Option<String>, vars: Vec<(String, String)>) -> Settings {
    let mut s = Settings {
        schema: schema.map(Into::into),
        vars: Vec::with_capacity(vars.len()),
    };
    // Through set_var: the list stays sorted whatever order the record had.
    for (n, v) in vars {
        s.set_var(&n, &v);
    }
    s
}

/// Builds the session a record describes, on this shard (its user looked up by name as at a
/// login, its settings and statement texts interned here).
pub fn from_record(shard: &Shard, r: Record, fd: OwnedFd) -> Result<Session, String> {
    let Some(user) = shard.user(r.user.as_bytes()) else {
        return Err(format!("user {:?} is not configured here", r.user));
    };
    let settings = shard.interner.intern(settings_of(r.schema, r.vars));
    let backends = shard.shared.backends.snapshot().len();
    let backend = if usize::from(r.backend) < backends {
        r.backend
    } else {
        shard.pick_backend()
    };
    let mut s = Session::new(fd, r.conn_id, user, r.caps, r.collation, settings, backend);
    s.mariadb_caps = r.mariadb_caps;
    s.multi_statements = r.multi_statements;
    s.status = r.status;
    s.last_active = shard.clock().saturating_sub(r.idle_secs);
    if r.history.is_some() || r.trackers.is_some() || r.tracker_values.is_some() {
        let h = r.history.unwrap_or(HistoryRec {
            last_insert_id: 0,
            row_count: -1,
            found_rows: 0,
            foreign_row_count: false,
            foreign_found_rows: false,
            last_gtid: String::new(),
        });
        let past = Past {
            history: History {
                last_insert_id: Known::Is(h.last_insert_id),
                row_count: h.row_count,
                found_rows: Known::Is(h.found_rows),
                diag: Diag::Clean,
                last_gtid: h.last_gtid.into(),
                foreign: Foreign {
                    row_count: h.foreign_row_count,
                    found_rows: h.foreign_found_rows,
                },
            },
            trackers: r.trackers.map(|t| {
                Rc::new(Trackers {
                    all_vars: t.all_vars,
                    vars: t.vars.into_iter().map(Into::into).collect(),
                    schema: t.schema,
                    state_change: t.state_change,
                    trx: match t.trx {
                        1 => TrxInfo::State,
                        2 => TrxInfo::Characteristics,
                        _ => TrxInfo::Off,
                    },
                })
            }),
            tracker_values: r.tracker_values.map(Rc::new),
            ..Past::default()
        };
        if past != Past::default() {
            s.past = Some(Box::new(past));
        }
    }
    if let Some(next) = r.stmt_next_id {
        let mut st = Stmts::default();
        st.set_next_id(next);
        let routines = crate::frontend::session::routines(shard);
        for c in r.stmts {
            let settings = shard.interner.intern(settings_of(c.schema, c.vars));
            let sql = shard.sql.intern_bytes(&c.sql);
            let modes = Modes {
                ansi_quotes: c.ansi_quotes,
                no_backslash_escapes: c.no_backslash_escapes,
            };
            // What the statement does is a pure function of its text and how it was read then
            // (modes, schema): derived again rather than carried.
            let ctx = crate::session::sql::Context {
                modes,
                schema: settings.schema.as_deref().map(str::as_bytes),
                fold_table_names: shard.shared.server.fold_table_names,
                stored_functions: Some(&routines),
            };
            let effects = Rc::new(crate::session::sql::analyze_with(&sql, &ctx));
            if c.types
                .as_ref()
                .is_some_and(|t| t.len() != 2 * usize::from(c.params))
            {
                return Err(format!("statement {}: parameter types do not match", c.id));
            }
            st.map.insert(
                c.id,
                ClientStmt {
                    sql,
                    settings,
                    params: c.params,
                    columns: c.columns,
                    types: c.types.map(Vec::into_boxed_slice),
                    bound_charset: c.bound.map(|(client, collation)| Conversion {
                        client: client.into(),
                        client_collation: c.bound_client_collation.map(Into::into),
                        collation: collation.into(),
                    }),
                    long_data: false,
                    pending_at: None,
                    long_data_lost: match (c.long_data_lost, c.long_data_refused) {
                        (false, _) => None,
                        (true, false) => Some(LostData::Backend),
                        (true, true) => Some(LostData::Refused),
                    },
                    effects,
                    modes,
                },
            );
        }
        s.stmts = Some(Box::new(st));
    }
    Ok(s)
}

/// Serves an upgrade request on the shard's thread.
pub fn on_request(shard: &Rc<Shard>, req: ShardRequest) {
    match req {
        ShardRequest::Listener { reply } => {
            let dup = shard
                .listener
                .borrow()
                .as_ref()
                .and_then(|l| l.try_clone().ok());
            let _ = reply.send((dup, shard.next_id.get()));
        }
        ShardRequest::Resume { listener } => {
            let Some(l) = listener else { return };
            if shard.listener.borrow().is_some() {
                return;
            }
            match shard
                .poller
                .add(l.as_raw_fd(), crate::shard::LISTENER, READABLE)
            {
                Ok(()) => *shard.listener.borrow_mut() = Some(l),
                Err(e) => tracing::error!(shard = shard.id, error = %e, "cannot accept again"),
            }
        }
        ShardRequest::Farewell { reply } => {
            let _ = reply.send(farewell(shard));
        }
        ShardRequest::HandOver { max, carry, reply } => {
            let _ = reply.send(hand_over(shard, max, carry));
        }
        ShardRequest::Adopt {
            record,
            fd,
            backend_fd,
            reply,
        } => {
            let _ = reply.send(adopt(shard, *record, fd, backend_fd));
        }
        ShardRequest::Gone { conn_id } => {
            if let Some(t) = IN_TRANSIT.with(|m| m.borrow_mut().remove(&conn_id)) {
                let_go(shard, t);
            }
            settle(conn_id);
        }
        ShardRequest::Settled { conn_id } => settle(conn_id),
    }
}

/// Takes up to `max` parked sessions that may move out of the table (and out of the epoll
/// set), as sockets and records; nothing of them stays here, but the lease of one that moves
/// with its backend connection (`carry`: the successor reads such records), in transit until
/// the successor answers.
fn hand_over(shard: &Rc<Shard>, max: usize, carry: bool) -> Sweep {
    let mut sweep = Sweep::default();
    let now = shard.clock();
    let tokens = shard.table.borrow().tokens();
    let mut read_first = Vec::new();
    for t in tokens {
        let mut given_up = None;
        let reason = match shard.table.borrow_mut().parked_mut(t) {
            Some(s) => {
                let f = facts(s, carry);
                // A session-mode session that holds its backend only because session mode
                // keeps it gives it up and moves, as it moves off a drained backend; when
                // only that backend knows some of its history, that is read first. (Giving
                // it up is preferred to carrying it: nothing of the session is left on a
                // connection that moves.)
                let without_backend = Facts {
                    lease: false,
                    history_on_backend: false,
                    diag_not_clean: false,
                    carriable: false,
                    ..f
                };
                let mut reading = false;
                if f.lease && stays(&without_backend).is_none() {
                    use crate::frontend::session::{take_for_upgrade, UpgradeMove};
                    match take_for_upgrade(shard, s) {
                        UpgradeMove::GivenUp(lease) => given_up = Some(lease),
                        UpgradeMove::ReadFirst => {
                            read_first.push(t);
                            reading = true;
                        }
                        UpgradeMove::Keeps => {}
                    }
                }
                if reading {
                    Some(Stay::HoldsBackend)
                } else {
                    stays(&facts(s, carry))
                }
            }
            None => continue,
        };
        // Dropped outside the table's borrow: the connection is discarded (this process goes).
        drop(given_up);
        if let Some(why) = reason {
            if let Some(SlotState::Parked(s)) = shard.table.borrow().get(t).map(|x| &x.state) {
                if why == Stay::HoldsBackend || s.lease.is_some() {
                    tracing::debug!(conn = s.conn_id, held_by = ?crate::frontend::session::held_by(s), not_carried = ?carry_why(s, carry), "upgrade: a session keeps its backend");
                }
            }
            match sweep.staying.iter_mut().find(|(w, _)| *w == why) {
                Some((_, n)) => *n += 1,
                None => sweep.staying.push((why, 1)),
            }
            continue;
        }
        if sweep.moving.len() >= max {
            break;
        }
        // The backend connection's socket, duplicated for the successor (before the session
        // leaves the table: if that fails, it stays).
        let dup = match shard.table.borrow().get(t).map(|x| &x.state) {
            Some(SlotState::Parked(s)) => s.lease.as_ref().map(|l| l.get().dup_fd()),
            _ => None,
        };
        let backend_fd = match dup {
            None => None,
            Some(Ok(fd)) => Some(fd),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "upgrade: cannot duplicate a backend connection's socket; its session stays");
                match sweep
                    .staying
                    .iter_mut()
                    .find(|(w, _)| *w == Stay::HoldsBackend)
                {
                    Some((_, n)) => *n += 1,
                    None => sweep.staying.push((Stay::HoldsBackend, 1)),
                }
                continue;
            }
        };
        let Some(mut sess) = shard.table.borrow_mut().remove(t) else {
            continue;
        };
        // On its way from now until the successor answers (in the same step as leaving the
        // table: a KILL on this shard never finds it in neither).
        MOVING.with(|m| m.borrow_mut().insert(sess.conn_id));
        shard.poller.remove(sess.fd.as_raw_fd());
        shard.shared.clients.fetch_sub(1, Ordering::Relaxed);
        shard.shared.leave_user(sess.user.index);
        let mut rec = to_record(&sess, now.saturating_sub(sess.last_active));
        rec.backend_conn = backend_rec(shard, &sess);
        if let Some(lease) = sess.lease.take() {
            // (`stays` let it go: its connection moves with it.) Kept here until the
            // successor answers.
            let gave = lease.pool().move_out();
            let pin_pool = sess
                .pin_counted
                .then(|| shard.pool(sess.user.index, sess.backend));
            let pin_mask = sess.pins.as_deref().map_or(0, Pins::mask);
            let transit = InTransit {
                lease,
                gave,
                pin_pool,
                pin_mask,
            };
            if let Some(old) = IN_TRANSIT.with(|m| m.borrow_mut().insert(sess.conn_id, transit)) {
                let_go(shard, old);
            }
        }
        sweep.moving.push(Moving {
            conn_id: sess.conn_id,
            record: record::encode(&rec),
            fd: sess.fd,
            backend_fd,
        });
    }
    for t in read_first {
        read_then_park(shard, t);
    }
    sweep.left = shard.table.borrow().len();
    sweep
}

/// Why a session's backend connection does not move with it (for the log).
fn carry_why(s: &Session, carry_ok: bool) -> Option<&'static str> {
    match carry(s)? {
        _ if !carry_ok => Some("the successor does not read records with a backend connection"),
        Ok(()) => None,
        Err(NotCarried::Tls) => Some("tls"),
        Err(NotCarried::Busy) => Some("bytes unread or a query sent ahead"),
        Err(NotCarried::Elsewhere) => Some("held on another backend than the session's"),
    }
}

/// Takes a parked session-mode session out to read the history values only its backend knows
/// and give that backend up (a task: it waits on the backend), then parks it again, for the
/// next sweep to move. A KILL that came meanwhile ends it instead.
fn read_then_park(shard: &Rc<Shard>, t: Token) {
    let ctl = Rc::new(ActiveCtl::default());
    let Some(mut sess) = shard.table.borrow_mut().unpark(t, ctl.clone()) else {
        return;
    };
    ctl.user.set(sess.user.id);
    ctl.pool_user.set(sess.user.index);
    ctl.logged_in.set(true);
    ctl.fd.set(Some(sess.fd.as_raw_fd()));
    let shard = shard.clone();
    glommio::spawn_local(async move {
        crate::frontend::session::give_up_for_upgrade(&shard, &mut sess).await;
        if ctl.interrupted() {
            crate::frontend::session::finish(&shard, t, sess).await;
        } else {
            shard.park(t, sess);
        }
    })
    .detach();
}

/// The error a session that could not move is told when the old process stops after the
/// handover.
pub fn farewell_reply(why: Option<Stay>) -> crate::error::Reply {
    let why = match why {
        Some(Stay::Tls) => "its TLS state cannot move",
        Some(Stay::HoldsBackend) => "it holds a backend connection (session mode)",
        Some(Stay::Transaction) => "a transaction is open",
        Some(Stay::Pinned) => {
            "it is pinned to its backend (user variables, temporary tables, locks, …)"
        }
        Some(Stay::BackendHistory) => "a history value or diagnostics live on its backend only",
        Some(Stay::StatementPending) => "a cursor or long data is pending",
        None => "it did not become idle before the deadline",
    };
    crate::error::Reply::new(
        1053,
        b"08S01",
        format!("sluice was upgraded and this session could not move to the new process ({why}); reconnect"),
    )
}

/// Closes every parked session still here, each told why first: an ERR packet with sequence
/// id 1, which is what the client reads as the answer to its next command (it sends that with
/// sequence id 0), so it sees this error instead of a bare lost connection. A TLS session gets
/// it through its own TLS state, followed by close_notify.
fn farewell(shard: &Rc<Shard>) -> usize {
    let tokens = shard.table.borrow().tokens();
    let mut n = 0;
    for t in tokens {
        let sess = {
            let mut table = shard.table.borrow_mut();
            if !matches!(table.get(t).map(|s| &s.state), Some(SlotState::Parked(_))) {
                continue;
            }
            table.unpark(t, Rc::new(ActiveCtl::default()))
        };
        let Some(sess) = sess else { continue };
        shard.poller.remove(sess.fd.as_raw_fd());
        let mut sess = sess;
        let why = stays(&facts(&sess, false));
        let mut payload = Vec::new();
        farewell_reply(why).encode(&mut payload);
        let mut out = Vec::new();
        crate::codec::frame::encode_packet(&mut out, 1, &payload);
        if let Some(tls) = sess.tls.as_mut() {
            // Through the session's own TLS state, then close_notify: the client reads the
            // error, not a TLS error about a cut connection.
            let _ = std::io::Write::write_all(&mut tls.writer(), &out);
            tls.send_close_notify();
            let mut records = Vec::new();
            while tls.wants_write() {
                if tls.write_tls(&mut records).is_err() {
                    break;
                }
            }
            out = records;
        }
        // A parked session's socket buffer is empty: the few bytes go out at once.
        let _ = crate::net::send(sess.fd.as_raw_fd(), &out);
        n += 1;
        let shard = shard.clone();
        glommio::spawn_local(
            async move { crate::frontend::session::finish(&shard, t, sess).await },
        )
        .detach();
    }
    n
}

/// Puts the session a record describes in this shard's table, parked, its socket watched.
/// With its backend connection: in the old process taking it back (refused by the successor),
/// the lease it left in transit here; in the successor, the socket `backend_fd` adopted into its
/// pool ([`adopt_backend`]). On any refusal, what was taken is given back: a lease in transit
/// is discarded with its session (which ends), an adopted one closes only this process's
/// descriptor.
fn adopt(
    shard: &Rc<Shard>,
    mut r: Record,
    fd: OwnedFd,
    backend_fd: Option<OwnedFd>,
) -> Result<(), String> {
    let transit = IN_TRANSIT.with(|m| m.borrow_mut().remove(&r.conn_id));
    // Taken back (in the old process): no longer on its way. This function does not yield,
    // so a KILL woken by this finds the session in the table, or finds it gone.
    settle(r.conn_id);
    let backend = r.backend_conn.take();
    let give_back = |transit: Option<InTransit>| {
        if let Some(t) = transit {
            // The session ends here: its connection is discarded (not handed anywhere).
            let InTransit {
                lease,
                pin_pool,
                pin_mask,
                gave: _,
            } = t;
            drop(lease);
            if let Some(p) = pin_pool {
                p.pin_release();
            }
            shard.stats.pin_transition(pin_mask, 0);
        }
    };
    if shard.table.borrow().find_conn(r.conn_id).is_some() {
        give_back(transit);
        return Err(format!("connection id {} is in use here", r.conn_id));
    }
    let mut sess = match from_record(shard, r, fd) {
        Ok(s) => s,
        Err(e) => {
            give_back(transit);
            return Err(e);
        }
    };
    if let Err(limit) = shard.shared.admit_user(sess.user.index) {
        give_back(transit);
        return Err(format!(
            "user {} is at its limit of {limit}",
            sess.user.name
        ));
    }
    if let Some(b) = &backend {
        let attached = match (transit, backend_fd) {
            (Some(t), _) => {
                // Taken back: the lease never left (the descriptor the successor had is
                // closed there; ours, `backend_fd`, here).
                t.lease.pool().move_back(t.gave);
                sess.lease = Some(t.lease);
                restore_backend_state(&mut sess, b);
                Ok(())
            }
            (None, Some(bfd)) => adopt_backend(shard, &mut sess, b, bfd).map(|()| {
                restore_backend_state(&mut sess, b);
                if sess.pin_counted {
                    shard.pool(sess.user.index, sess.backend).pin_force();
                }
                let mask = sess.pins.as_deref().map_or(0, Pins::mask);
                shard.stats.pin_transition(0, mask);
            }),
            (None, None) => Err("a backend connection without its socket".to_string()),
        };
        if let Err(e) = attached {
            shard.shared.leave_user(sess.user.index);
            return Err(e);
        }
    } else {
        give_back(transit);
    }
    let ctl = Rc::new(ActiveCtl::default());
    ctl.user.set(sess.user.id);
    ctl.pool_user.set(sess.user.index);
    ctl.logged_in.set(true);
    let token: Token = shard.table.borrow_mut().insert(sess.conn_id, ctl);
    shard.shared.clients.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = shard.poller.add(sess.fd.as_raw_fd(), token.to_u64(), 0) {
        shard.shared.leave_user(sess.user.index);
        unpin(shard, &mut sess);
        // (Its lease, if any, is discarded with it.)
        drop(sess);
        shard.remove_session(token);
        return Err(format!("cannot watch the socket: {e}"));
    }
    // Parks and arms the socket: bytes the client sent meanwhile wait in the kernel and are
    // reported at once.
    shard.park(token, sess);
    Ok(())
}

/// Gives up a session's pin-budget unit and its place in the pinned gauges (it ends).
fn unpin(shard: &Shard, s: &mut Session) {
    if s.pin_counted {
        shard.pool(s.user.index, s.backend).pin_release();
        s.pin_counted = false;
    }
    shard
        .stats
        .pin_transition(s.pins.as_deref().map_or(0, Pins::mask), 0);
    s.pins = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_moves() {
        let f = Facts::default();
        let cases: Vec<(Facts, Option<Stay>)> = vec![
            (f, None),
            (Facts { tls: true, ..f }, Some(Stay::Tls)),
            (Facts { lease: true, ..f }, Some(Stay::HoldsBackend)),
            (
                Facts {
                    lease: true,
                    in_transaction: true,
                    ..f
                },
                Some(Stay::Transaction),
            ),
            (
                Facts {
                    uncertain: true,
                    ..f
                },
                Some(Stay::Transaction),
            ),
            (Facts { pins: true, ..f }, Some(Stay::Pinned)),
            (
                Facts {
                    pin_counted: true,
                    ..f
                },
                Some(Stay::Pinned),
            ),
            (
                Facts {
                    one_shot: true,
                    ..f
                },
                Some(Stay::Pinned),
            ),
            (
                Facts {
                    replica_vars: true,
                    ..f
                },
                Some(Stay::Pinned),
            ),
            (
                Facts {
                    history_on_backend: true,
                    ..f
                },
                Some(Stay::BackendHistory),
            ),
            (
                Facts {
                    diag_not_clean: true,
                    ..f
                },
                Some(Stay::BackendHistory),
            ),
            (
                Facts {
                    statement_pending: true,
                    ..f
                },
                Some(Stay::StatementPending),
            ),
            (
                Facts {
                    tls: true,
                    lease: true,
                    pins: true,
                    ..f
                },
                Some(Stay::Tls),
            ),
            // With a backend connection that moves with it: what lives there moves too.
            (
                Facts {
                    lease: true,
                    carriable: true,
                    in_transaction: true,
                    uncertain: true,
                    pins: true,
                    pin_counted: true,
                    one_shot: true,
                    history_on_backend: true,
                    diag_not_clean: true,
                    ..f
                },
                None,
            ),
            (
                Facts {
                    lease: true,
                    carriable: true,
                    ..f
                },
                None,
            ),
            (
                Facts {
                    tls: true,
                    lease: true,
                    carriable: true,
                    ..f
                },
                Some(Stay::Tls),
            ),
            (
                Facts {
                    lease: true,
                    carriable: true,
                    pins: true,
                    replica_vars: true,
                    ..f
                },
                Some(Stay::Pinned),
            ),
            (
                Facts {
                    lease: true,
                    carriable: true,
                    in_transaction: true,
                    statement_pending: true,
                    ..f
                },
                Some(Stay::StatementPending),
            ),
        ];
        for (facts, want) in cases {
            assert_eq!(stays(&facts), want, "{facts:?}");
        }
    }
}
