//! The shard's half of an upgrade, run on the shard's own thread: which parked sessions may
//! move ([`stays`], pure), taking them out of the table as (socket, record) pairs, and adopting a
//! record (in the successor, or back in the old process when the successor refused it).

use super::record::{self, HistoryRec, Record, StmtRec, TrackersRec};
use crate::codec::caps::status;
use crate::frontend::session::{Past, Session};
use crate::session::effects::{Diag, Foreign, History, Known};
use crate::session::sql::Modes;
use crate::session::state::Settings;
use crate::session::stmts::{ClientStmt, Conversion, LostData, Stmts};
use crate::session::trackers::{Trackers, TrxInfo};
use crate::shard::poller::READABLE;
use crate::shard::table::{ActiveCtl, SlotState, Token};
use crate::shard::Shard;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;

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
    /// Take out up to `max` parked sessions that may move.
    HandOver { max: usize, reply: Sender<Sweep> },
    /// Adopt a session.
    Adopt {
        record: Box<Record>,
        fd: OwnedFd,
        reply: Sender<Result<(), String>>,
    },
}

/// One session on its way out: its socket and its encoded record.
pub struct Moving {
    pub conn_id: u32,
    pub fd: OwnedFd,
    pub record: Vec<u8>,
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
}

/// Why a session with `f` stays, or `None`: it moves. Pure; the first reason wins, in the order
/// an operator would look for it.
pub fn stays(f: &Facts) -> Option<Stay> {
    if f.tls {
        Some(Stay::Tls)
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

fn facts(s: &Session) -> Facts {
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
        // A session holding a backend, pinned, pin-counted or on TLS does not move (`stays`).
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
            // A session with any of these does not move (`stays`).
            one_shot: _,
            uncertain: _,
            diag_held_since: _,
            replica_vars: _,
            moved_vars: _,
            trackers,
            tracker_values,
        } = p;
        let History {
            last_insert_id,
            row_count,
            found_rows,
            // Clean for a session that moves (`stays`): nothing to carry.
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
        ShardRequest::HandOver { max, reply } => {
            let _ = reply.send(hand_over(shard, max));
        }
        ShardRequest::Adopt { record, fd, reply } => {
            let _ = reply.send(adopt(shard, *record, fd));
        }
    }
}

/// Takes up to `max` parked sessions that may move out of the table (and out of the epoll
/// set), as sockets and records; nothing of them stays here.
fn hand_over(shard: &Rc<Shard>, max: usize) -> Sweep {
    let mut sweep = Sweep::default();
    let now = shard.clock();
    let tokens = shard.table.borrow().tokens();
    let mut read_first = Vec::new();
    for t in tokens {
        let mut given_up = None;
        let reason = match shard.table.borrow_mut().parked_mut(t) {
            Some(s) => {
                let f = facts(s);
                // A session-mode session that holds its backend only because session mode
                // keeps it gives it up and moves, as it moves off a drained backend; when
                // only that backend knows some of its history, that is read first.
                let without_backend = Facts {
                    lease: false,
                    history_on_backend: false,
                    diag_not_clean: false,
                    ..f
                };
                if f.lease && stays(&without_backend).is_none() {
                    use crate::frontend::session::{take_for_upgrade, UpgradeMove};
                    match take_for_upgrade(shard, s) {
                        UpgradeMove::GivenUp(lease) => given_up = Some(lease),
                        UpgradeMove::ReadFirst => read_first.push(t),
                        UpgradeMove::Keeps => {}
                    }
                }
                stays(&facts(s))
            }
            None => continue,
        };
        // Dropped outside the table's borrow: the connection is discarded (this process goes).
        drop(given_up);
        if let Some(why) = reason {
            if why == Stay::HoldsBackend {
                if let Some(SlotState::Parked(s)) = shard.table.borrow().get(t).map(|x| &x.state) {
                    tracing::debug!(conn = s.conn_id, held_by = ?crate::frontend::session::held_by(s), "upgrade: a session keeps its backend");
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
        let Some(sess) = shard.table.borrow_mut().remove(t) else {
            continue;
        };
        shard.poller.remove(sess.fd.as_raw_fd());
        shard.shared.clients.fetch_sub(1, Ordering::Relaxed);
        shard.shared.leave_user(sess.user.index);
        let rec = to_record(&sess, now.saturating_sub(sess.last_active));
        sweep.moving.push(Moving {
            conn_id: sess.conn_id,
            record: record::encode(&rec),
            fd: sess.fd,
        });
    }
    for t in read_first {
        read_then_park(shard, t);
    }
    sweep.left = shard.table.borrow().len();
    sweep
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
        let why = stays(&facts(&sess));
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
fn adopt(shard: &Rc<Shard>, r: Record, fd: OwnedFd) -> Result<(), String> {
    if shard.table.borrow().find_conn(r.conn_id).is_some() {
        return Err(format!("connection id {} is in use here", r.conn_id));
    }
    let sess = from_record(shard, r, fd)?;
    shard
        .shared
        .admit_user(sess.user.index)
        .map_err(|limit| format!("user {} is at its limit of {limit}", sess.user.name))?;
    let ctl = Rc::new(ActiveCtl::default());
    ctl.user.set(sess.user.id);
    ctl.pool_user.set(sess.user.index);
    ctl.logged_in.set(true);
    let token: Token = shard.table.borrow_mut().insert(sess.conn_id, ctl);
    shard.shared.clients.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = shard.poller.add(sess.fd.as_raw_fd(), token.to_u64(), 0) {
        shard.shared.leave_user(sess.user.index);
        shard.remove_session(token);
        return Err(format!("cannot watch the socket: {e}"));
    }
    // Parks and arms the socket: bytes the client sent meanwhile wait in the kernel and are
    // reported at once.
    shard.park(token, sess);
    Ok(())
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
        ];
        for (facts, want) in cases {
            assert_eq!(stays(&facts), want, "{facts:?}");
        }
    }
}
