//! The binary prepared-statement commands (COM_STMT_PREPARE, EXECUTE, FETCH, SEND_LONG_DATA,
//! RESET, CLOSE) for multiplexed sessions.
//!
//! sluice keeps each client's statements itself (text, analysis, parameter types; see
//! [`crate::session::stmts`]) and prepares them lazily on whichever backend serves an execute,
//! under the schema and parse-relevant settings they were prepared with, switching only those
//! (never autocommit, never the transaction: a backend held in a transaction stays in it).
//! Statements are shared per backend connection by (text, settings), bounded by an LRU.

use super::client::ClientIo;
use super::command::{
    acquire, after_command, backend_error, long_data_lost, lost_backend, reconsider, run_on,
    set_pins, sync_to, unknown_stmt, Cmd, Need, RunWith, Synced,
};
use super::relay::Failure;
use super::session::{fail, reply_err, reply_ok, routines, CmdResult, Flow, Session};
use crate::backend::conn::BackendError;
use crate::backend::pool::Lease;
use crate::codec::caps::status;
use crate::codec::command::{self, com, ResponseKind};
use crate::error::{Error, Reply};
use crate::session::pins::PinReason;
use crate::session::route::replica_may_lack;
use crate::session::sql;
use crate::session::stmts::{bound_types, rewrite_execute, ClientStmt, Conversion, LostData};
use crate::shard::table::ActiveCtl;
use crate::shard::Shard;
use bytes::Bytes;
use std::rc::Rc;
use tracing::debug;

fn stmt_of(sess: &Session, id: u32) -> Option<ClientStmt> {
    sess.stmts.as_ref().and_then(|s| s.map.get(&id)).cloned()
}

/// The statement's id on `lease`'s backend, preparing it there first if needed, under the
/// settings it was prepared with (only those that decide what its text means are switched, and
/// switched back).
async fn ensure_prepared(
    shard: &Rc<Shard>,
    sess: &Session,
    lease: &mut Lease,
    client_id: u32,
    stmt: &ClientStmt,
) -> Result<u32, Error> {
    // Long data or a cursor of this statement lives on a statement of the backend the session
    // holds (and `lease` is that backend).
    if let Some(id) = stmt.pending_at {
        return Ok(id);
    }
    let busy = sess
        .stmts
        .as_ref()
        .map(|s| s.busy_except(client_id))
        .unwrap_or_default();
    if let Some(id) = lease.conn().prepared_id(&stmt.settings, &stmt.sql, &busy) {
        return Ok(id);
    }
    let here = lease.get().settings.clone();
    let switch = here.for_prepare() != *stmt.settings;
    let multi = lease.get().multi_statements;
    let sync = |r: Result<(), Synced>| match r {
        Ok(()) => Ok(()),
        Err(Synced::Lost(e)) | Err(Synced::Refused { error: e, .. }) => Err(e),
    };
    if switch {
        let target = shard.interner.intern(here.with_prepare(&stmt.settings));
        sync(sync_to(shard, lease, &target, multi, None).await)?;
    }
    evict_prepared(shard, sess, lease).await?;
    let id = match lease.conn().prepare_quiet(&stmt.sql).await {
        Ok(id) => id,
        Err(e) => {
            let e = backend_error(shard, lease, e);
            // A refusal leaves the connection usable: it goes back to the session's settings.
            if switch && matches!(e, Error::Refused(_)) {
                sync(sync_to(shard, lease, &here, multi, None).await)?;
            }
            return Err(e);
        }
    };
    shard
        .stats
        .lazy_prepares
        .set(shard.stats.lazy_prepares.get() + 1);
    if let Some(old) =
        lease
            .conn()
            .remember_prepared(stmt.settings.clone(), stmt.sql.clone(), id, &busy)
    {
        let _ = lease.conn().close_statements(&[old]).await;
    }
    if switch {
        sync(sync_to(shard, lease, &here, multi, None).await)?;
    }
    Ok(id)
}

/// Will preparing `stmt` on this backend run statements of sluice's own first (its settings
/// switched for the prepare, and back)?
fn prepare_switches(sess: &Session, lease: &mut Lease, client_id: u32, stmt: &ClientStmt) -> bool {
    if stmt.pending_at.is_some() {
        return false;
    }
    let busy = sess
        .stmts
        .as_ref()
        .map(|s| s.busy_except(client_id))
        .unwrap_or_default();
    if lease
        .conn()
        .prepared_id(&stmt.settings, &stmt.sql, &busy)
        .is_some()
    {
        return false;
    }
    lease.get().settings.for_prepare() != *stmt.settings
}

/// Keeps the backend's prepared statements under the configured bound (never closing one that
/// holds the session's long data or cursor).
async fn evict_prepared(shard: &Rc<Shard>, sess: &Session, lease: &mut Lease) -> Result<(), Error> {
    let cap = shard.cfg().pool.prepared_statements_per_connection;
    let busy: Vec<u32> = sess
        .stmts
        .as_ref()
        .map(|s| s.map.values().filter_map(|st| st.pending_at).collect())
        .unwrap_or_default();
    let victims = lease.conn().evict_prepared(cap, |p| busy.contains(&p.id));
    if let Err(e) = lease.conn().close_statements(&victims).await {
        return Err(backend_error(shard, lease, e));
    }
    Ok(())
}

/// COM_STMT_PREPARE: prepared on the session's backend now (the client needs the server's
/// answer: parameter and column definitions); remembered for lazy preparation elsewhere.
pub(crate) async fn prepare(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: Bytes,
) -> CmdResult {
    let sql = shard.sql.intern_bytes(&payload[1..]);
    let routines = routines(shard);
    let effects = Rc::new(sql::analyze_with(&sql, &sess.sql_context(shard, &routines)));
    let client_id = sess.stmts.get_or_insert_with(Box::default).allocate_id();
    let tied = sess.tied_to_backend();
    let mut lease = acquire(shard, sess, Need::default())
        .await
        .map_err(|e| fail(e, next))?;
    if let Err(e) = evict_prepared(shard, sess, &mut lease).await {
        return Err(fail(e, next));
    }
    let obs = match run_on(
        shard,
        ctl,
        sess,
        io,
        next,
        &mut lease,
        &payload,
        ResponseKind::Prepare,
        RunWith {
            prepare_id: Some(client_id),
            ..RunWith::default()
        },
    )
    .await
    {
        Ok(o) => o,
        Err(f) => return Err(lost_backend(sess, f, tied, lease)),
    };
    if let Some((backend_id, columns, params)) = obs.prepared {
        let settings = shard.interner.intern(sess.settings.for_prepare());
        let busy = sess
            .stmts
            .as_ref()
            .map(|s| s.busy_except(client_id))
            .unwrap_or_default();
        if let Some(old) =
            lease
                .conn()
                .remember_prepared(settings.clone(), sql.clone(), backend_id, &busy)
        {
            let _ = lease.conn().close_statements(&[old]).await;
        }
        let stmt = ClientStmt {
            sql,
            settings,
            params,
            columns,
            types: None,
            bound_charset: None,
            long_data: false,
            long_data_lost: None,
            pending_at: None,
            effects,
            modes: sess.modes(),
        };
        let reads_history = stmt.effects.reads_backend_history();
        sess.stmts
            .get_or_insert_with(Box::default)
            .map
            .insert(client_id, stmt);
        if reads_history {
            set_pins(shard, sess, |p| p.history_statement(client_id, true));
        }
    }
    after_command(shard, ctl, sess, lease, &obs, Cmd::Plain).await?;
    Ok(Flow::Continue)
}

/// A replica could not answer a routed execute (it lacks what the statement names): counted,
/// and its connection closed, not pooled (it holds the execute's traces: its error in the
/// diagnostics area). The execute's needs, for the primary.
fn to_primary(shard: &Shard, lease: Lease, need: Need) -> Need {
    shard
        .stats
        .read_fallback(crate::shard::FALLBACK_REPLICA_ERROR);
    drop(lease);
    need.on_primary()
}

/// COM_STMT_EXECUTE on whichever backend serves the session now.
pub(crate) async fn execute(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: &[u8],
) -> CmdResult {
    let (client_id, flags) = command::execute_flags(payload).map_err(|e| fail(e.into(), next))?;
    let Some(mut stmt) = stmt_of(sess, client_id) else {
        let r = unknown_stmt(client_id, "mysqld_stmt_execute");
        return raise_on_backend(shard, ctl, sess, io, next, r).await;
    };
    // Types bound now are the statement's from now on, even if this execute never reaches a
    // server (a later execute may rely on them).
    let now = Conversion::of(&sess.settings, &shard.fresh_charset);
    let rebinds = match bound_types(payload, stmt.params) {
        Ok(Some(t)) => {
            let t: Box<[u8]> = t.into();
            let cs = (stmt.bound_charset.as_ref() != Some(&now)).then(|| now.clone());
            if let Some(s) = sess.stmts.as_mut().and_then(|s| s.map.get_mut(&client_id)) {
                s.types = Some(t.clone());
                if let Some(cs) = &cs {
                    s.bound_charset = Some(cs.clone());
                }
            }
            stmt.types = Some(t);
            if let Some(cs) = cs {
                stmt.bound_charset = Some(cs);
            }
            false
        }
        _ => stmt.types.is_some(),
    };
    // An execute that binds no types reuses the earlier binding, string conversion included
    // (from the character sets of then). sluice sends the types again (the backend statement
    // may be another's), so it runs under those character sets.
    let bind_charset = stmt.bound_charset.clone().filter(|b| rebinds && *b != now);
    if let Some(why) = stmt.long_data_lost {
        if let Some(s) = sess.stmts.as_mut().and_then(|s| s.map.get_mut(&client_id)) {
            s.long_data_lost = None;
        }
        if why == LostData::Backend {
            return reply_err(io, next, long_data_lost(client_id)).await;
        }
    }
    let effects = stmt.effects.clone();
    // Routed as its text would be. An execute that opens a cursor (CURSOR_TYPE_* flags) or
    // carries long data stays off replicas: a replica given up at the session's next write
    // would take the cursor or the data with it.
    let plain = flags == 0 && !stmt.long_data;
    let need = Need {
        pin: PinReason::predicted(&effects),
        read: plain && super::command::routed_read(sess, &stmt.sql, &effects),
        replica_ok: plain
            && super::command::holds_replica(shard, sess)
            && crate::session::route::may_stay_on_replica(&stmt.sql, &effects, sess.modes()),
        // Preparing it there may come first: a causal wait is answered before.
        ahead: false,
        reads_diagnostics: super::command::reads_diagnostics(&effects),
        clears_conditions: crate::session::route::clears_conditions(
            &stmt.sql,
            &effects,
            sess.modes(),
        ),
    };
    let tied = sess.tied_to_backend();
    let held = sess.lease.is_some();
    let mut need = need;
    let (obs, lease, backend_id) = loop {
        let mut lease = acquire(shard, sess, need)
            .await
            .map_err(|e| fail(e, next))?;
        // A read a replica cannot answer for lack of an object the primary may have (it cannot
        // prepare the statement, or the execute fails so) runs again on the primary, as a text read
        // does: nothing reached the client. (Not on a replica the session keeps for variables set
        // there: they would go with it.)
        let on_replica = need.read && !sess.owes_vars() && shard.reads_only(lease.get().backend);
        // Statements of sluice's own before the execute (the character set its types were bound
        // with, settings switched to prepare it here) change the backend's ROW_COUNT(): the
        // session's is the one sluice counted.
        if !effects.history.is_empty()
            && (bind_charset.is_some() || prepare_switches(sess, &mut lease, client_id, &stmt))
        {
            sess.update_past(|p| p.history.foreign.row_count = true);
        }
        // A statement reading history values the backend does not hold for the session runs as
        // its text with the session's values in place (the same columns and parameters), prepared
        // on the side like any other text.
        let mut run = stmt.clone();
        if !effects.history.is_empty() && !stmt.long_data {
            let mut text = Vec::with_capacity(stmt.sql.len() + 1);
            text.push(com::QUERY);
            text.extend_from_slice(&stmt.sql);
            let text = Bytes::from(text);
            let mut done = super::command::rewrite_history(sess, &effects, text.clone(), held);
            if done[1..] != stmt.sql[..]
                && !sess.history().foreign.row_count
                && lease.get().settings.for_prepare() != *stmt.settings
            {
                // The text with values in place is new here: preparing it switches settings first,
                // so ROW_COUNT() goes in by value too.
                sess.update_past(|p| p.history.foreign.row_count = true);
                done = super::command::rewrite_history(sess, &effects, text.clone(), held);
            }
            if done[1..] != stmt.sql[..] {
                if let Some(open) = stmt.pending_at {
                    // Its cursor is open: executing it again would have closed it.
                    let mut p = vec![com::STMT_RESET];
                    p.extend_from_slice(&open.to_le_bytes());
                    if let Err(e) = lease.conn().command_ok(&p, ResponseKind::OkErr).await {
                        let f = fail(backend_error(shard, &lease, e), next);
                        return Err(lost_backend(sess, f, tied, lease));
                    }
                    if let Some(stmts) = sess.stmts.as_mut() {
                        if let Some(s) = stmts.map.get_mut(&client_id) {
                            s.pending_at = None;
                        }
                        stmts.set_cursor(client_id, false);
                    }
                    // That COM_STMT_RESET is a command of sluice's own: the server's ROW_COUNT()
                    // is 0 now, so the session's goes in by value (a -1 after an error was read
                    // as 0: seed 1796658000 session 14).
                    if !sess.history().foreign.row_count {
                        sess.update_past(|p| p.history.foreign.row_count = true);
                        done = super::command::rewrite_history(sess, &effects, text, held);
                    }
                }
                run.sql = done[1..].into();
                run.pending_at = None;
            }
        }
        // A cursor left open on another backend statement (the text with values in place, run
        // before): this execute runs the client's text as it is now, on its own backend statement.
        // The other cursor is left to its statement (closed when that is run again, closed or the
        // connection reset): closing it here would be a statement of sluice's own, which changes
        // ROW_COUNT(). (Long data stays: it belongs to the statement it was sent to.)
        if let (Some(open), false) = (run.pending_at, stmt.long_data) {
            // (Statements of the session's other cursors are not this one's, even with its text.)
            let busy = sess
                .stmts
                .as_ref()
                .map(|s| s.busy_except(client_id))
                .unwrap_or_default();
            if lease.conn().prepared_id(&stmt.settings, &run.sql, &busy) != Some(open) {
                run.pending_at = None;
            }
        }
        let backend_id = match ensure_prepared(shard, sess, &mut lease, client_id, &run).await {
            Ok(id) => id,
            Err(Error::Refused(r)) if on_replica && replica_may_lack(r.code) => {
                need = to_primary(shard, lease, need);
                continue;
            }
            Err(Error::Refused(r)) => {
                // The server refused to prepare it here (a table dropped since, …): that is the
                // execute's answer. The client's own connection would have switched to the
                // schema it was prepared in and failed there: it holds that schema report back
                // (`session::schema_report`; sluice's switch back reported it to sluice).
                if sess.caps & crate::codec::caps::cap::SESSION_TRACK != 0
                    && stmt.settings.schema != sess.settings.schema
                {
                    sess.update_past(|p| p.schema_report.pending = true);
                }
                let obs = super::relay::Observed {
                    error: Some(r.code),
                    ..Default::default()
                };
                reply_err(io, next, r).await?;
                after_command(shard, ctl, sess, lease, &obs, Cmd::Plain).await?;
                return Ok(Flow::Continue);
            }
            Err(e) => return Err(fail(e, next)),
        };
        if stmt.long_data_lost.is_some() {
            // Refused when the data came, taken now: the data is still lost.
            sess.lease = Some(lease);
            reconsider(shard, sess).await?;
            return reply_err(io, next, long_data_lost(client_id)).await;
        }
        let rewritten = rewrite_execute(payload, backend_id, stmt.params, stmt.types.as_deref())
            .map_err(|e| fail(e.into(), next))?;
        let multi = lease.get().multi_statements;
        let own = sess.settings.clone();
        if let Some(conv) = &bind_charset {
            let server = &shard.shared.server;
            let connection = server
                .collations
                .values()
                .find(|c| *c.name == *conv.collation)
                .map(|c| c.charset.as_str());
            let target = shard.interner.intern(conv.applied_to(&own, connection));
            if let Err(Synced::Lost(e) | Synced::Refused { error: e, .. }) =
                sync_to(shard, &mut lease, &target, multi, None).await
            {
                return Err(lost_backend(sess, fail(e, next), tied, lease));
            }
        }
        let obs = match run_on(
            shard,
            ctl,
            sess,
            io,
            next,
            &mut lease,
            &rewritten,
            ResponseKind::Execute,
            RunWith {
                effects: Some(&effects),
                withhold_error: on_replica.then_some(replica_may_lack as fn(u16) -> bool),
                // Run in the schema it was prepared in, it switches there and back when the
                // session has moved on to another; and into the schema of any routine it calls.
                // (Otherwise a schema entry in its report is a leftover flushed, not its own.)
                schema_turn: Some({
                    let elsewhere = stmt.settings.schema != sess.settings.schema;
                    let code = crate::session::schema_report::Turn::of_text(
                        &stmt.sql,
                        sess.modes(),
                        sess.settings.schema.as_deref().unwrap_or("").as_bytes(),
                        effects.opaque || effects.stored_function,
                    );
                    crate::session::schema_report::Turn {
                        may_switch: elsewhere || code.may_switch,
                        likely: elsewhere || code.likely,
                    }
                }),
                ..RunWith::default()
            },
        )
        .await
        {
            Ok(o) => o,
            Err(f) => return Err(lost_backend(sess, f, tied, lease)),
        };
        if obs.withheld_error.is_some() {
            need = to_primary(shard, lease, need);
            continue;
        }
        break (obs, lease, backend_id);
    };
    // A backend that ran it under the bind-time character set keeps it (recorded in its
    // settings) until the session's next command there, or until a checkout: putting it back
    // now would run a statement of sluice's own after the client's and change its ROW_COUNT().
    if let Some(stmts) = sess.stmts.as_mut() {
        if let Some(s) = stmts.map.get_mut(&client_id) {
            s.long_data = false;
            s.pending_at = obs.cursor_opened.then_some(backend_id);
        }
        stmts.set_cursor(client_id, obs.cursor_opened);
    }
    after_command(shard, ctl, sess, lease, &obs, Cmd::Execute(&effects)).await?;
    Ok(Flow::Continue)
}

/// COM_STMT_SEND_LONG_DATA: no response; the data accumulates on one backend, which the session
/// keeps until the execute. If it cannot be delivered, the execute will say so.
pub(crate) async fn long_data(shard: &Rc<Shard>, sess: &mut Session, payload: &[u8]) -> CmdResult {
    let Ok(client_id) = command::statement_id(payload) else {
        return Ok(Flow::Continue);
    };
    // Unknown statements are ignored, as the server ignores them (there is no response).
    let Some(stmt) = stmt_of(sess, client_id) else {
        return Ok(Flow::Continue);
    };
    let lost = |sess: &mut Session, why: LostData| {
        if let Some(s) = sess.stmts.as_mut().and_then(|s| s.map.get_mut(&client_id)) {
            s.long_data = false;
            s.long_data_lost = Some(why);
        }
    };
    let mut lease = match acquire(shard, sess, Need::default()).await {
        Ok(l) => l,
        Err(e) => {
            debug!(error = %e, "no backend for long data; the execute will report it");
            lost(sess, LostData::Backend);
            return Ok(Flow::Continue);
        }
    };
    let backend_id = match ensure_prepared(shard, sess, &mut lease, client_id, &stmt).await {
        Ok(id) => id,
        Err(e) => {
            debug!(error = %e, "long data for a statement the backend would not prepare");
            if matches!(e, Error::Refused(_)) {
                lost(sess, LostData::Refused);
                sess.lease = Some(lease);
                reconsider(shard, sess).await?;
            } else {
                lost(sess, LostData::Backend);
            }
            return Ok(Flow::Continue);
        }
    };
    let mut p = payload.to_vec();
    let _ = command::set_statement_id(&mut p, backend_id);
    if let Err(e) = lease.conn().write_packet(0, &p).await {
        let err = backend_error(shard, &lease, e);
        drop(lease);
        if let Some(stmts) = sess.stmts.as_mut() {
            stmts.backend_lost();
        }
        lost(sess, LostData::Backend);
        return Err(Failure::new(err, None));
    }
    if let Some(s) = sess.stmts.as_mut().and_then(|s| s.map.get_mut(&client_id)) {
        s.long_data = true;
        s.long_data_lost = None;
        s.pending_at = Some(backend_id);
    }
    sess.lease = Some(lease);
    Ok(Flow::Continue)
}

/// COM_STMT_CLOSE: no response. The backend keeps the statement for other clients (bounded by
/// the LRU); only pending cursor or long data are cleared there.
pub(crate) async fn close(
    shard: &Rc<Shard>,
    _ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    payload: &[u8],
) -> CmdResult {
    let Ok(client_id) = command::statement_id(payload) else {
        return Ok(Flow::Continue);
    };
    let Some(stmts) = sess.stmts.as_mut() else {
        return Ok(Flow::Continue);
    };
    let Some(stmt) = stmts.map.remove(&client_id) else {
        return Ok(Flow::Continue);
    };
    let had_pending = stmt.long_data || stmts.has_cursor(client_id);
    stmts.set_cursor(client_id, false);
    if stmt.effects.reads_backend_history() && sess.pins.is_some() {
        set_pins(shard, sess, |p| p.history_statement(client_id, false));
        if !had_pending {
            reconsider(shard, sess).await?;
        }
    }
    if had_pending {
        if let Some(mut lease) = sess.lease.take() {
            if let Some(id) = stmt.pending_at {
                let mut p = vec![com::STMT_RESET];
                p.extend_from_slice(&id.to_le_bytes());
                let r = lease.conn().command_ok(&p, ResponseKind::OkErr).await;
                // A command of sluice's own (the client's COM_STMT_CLOSE has no answer and
                // leaves ROW_COUNT() as it was; a reset makes the server's 0): the session's
                // goes in by value from now on (seed 1796710072 session 10).
                sess.update_past(|p| p.history.foreign.row_count = true);
                if let Err(e) = r {
                    if let BackendError::Broken(_) = e {
                        return Err(Failure::new(backend_error(shard, &lease, e), None));
                    }
                }
            }
            sess.lease = Some(lease);
            reconsider(shard, sess).await?;
        }
    }
    Ok(Flow::Continue)
}

/// COM_STMT_RESET: reaches the backend only when something is pending there for the statement.
pub(crate) async fn reset(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: &[u8],
) -> CmdResult {
    let client_id = command::statement_id(payload).map_err(|e| fail(e.into(), next))?;
    let Some(stmt) = stmt_of(sess, client_id) else {
        let r = unknown_stmt(client_id, "mysqld_stmt_reset");
        return raise_on_backend(shard, ctl, sess, io, next, r).await;
    };
    if let Some(s) = sess.stmts.as_mut().and_then(|s| s.map.get_mut(&client_id)) {
        // A reset discards long data, lost or not.
        s.long_data_lost = None;
    }
    let cursor = sess.stmts.as_ref().is_some_and(|s| s.has_cursor(client_id));
    let Some(backend_id) = stmt
        .pending_at
        .filter(|_| (stmt.long_data || cursor) && sess.lease.is_some())
    else {
        // Nothing is pending for it anywhere: the reset is a no-op, answered here (and counted
        // as the server counts its OK).
        super::session::counted_as_ok(sess);
        return reply_ok(io, sess, next).await;
    };
    let tied = sess.tied_to_backend();
    let mut lease = sess.lease.take().expect("checked above");
    let mut p = payload.to_vec();
    let _ = command::set_statement_id(&mut p, backend_id);
    let obs = match run_on(
        shard,
        ctl,
        sess,
        io,
        next,
        &mut lease,
        &p,
        ResponseKind::OkErr,
        RunWith::default(),
    )
    .await
    {
        Ok(o) => o,
        Err(f) => return Err(lost_backend(sess, f, tied, lease)),
    };
    if let Some(stmts) = sess.stmts.as_mut() {
        if let Some(s) = stmts.map.get_mut(&client_id) {
            s.long_data = false;
            s.pending_at = None;
        }
        stmts.set_cursor(client_id, false);
    }
    after_command(shard, ctl, sess, lease, &obs, Cmd::Plain).await?;
    Ok(Flow::Continue)
}

/// COM_STMT_FETCH: rows of an open cursor, on the backend that holds it.
pub(crate) async fn fetch(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: &[u8],
) -> CmdResult {
    let client_id = command::statement_id(payload).map_err(|e| fail(e.into(), next))?;
    let Some(stmt) = stmt_of(sess, client_id) else {
        let r = unknown_stmt(client_id, "mysqld_stmt_fetch");
        return raise_on_backend(shard, ctl, sess, io, next, r).await;
    };
    let cursor = sess.stmts.as_ref().is_some_and(|s| s.has_cursor(client_id));
    let backend_id = stmt.pending_at.filter(|_| cursor && sess.lease.is_some());
    let Some(backend_id) = backend_id else {
        let r = Reply::new(
            1421,
            b"HY000",
            format!("The statement ({client_id}) has no open cursor"),
        );
        return raise_on_backend(shard, ctl, sess, io, next, r).await;
    };
    let tied = sess.tied_to_backend();
    let mut lease = sess.lease.take().expect("checked above");
    let mut p = payload.to_vec();
    let _ = command::set_statement_id(&mut p, backend_id);
    let obs = match run_on(
        shard,
        ctl,
        sess,
        io,
        next,
        &mut lease,
        &p,
        ResponseKind::Fetch,
        RunWith::default(),
    )
    .await
    {
        Ok(o) => o,
        Err(f) => return Err(lost_backend(sess, f, tied, lease)),
    };
    let st = obs.status.unwrap_or(0);
    if st & status::CURSOR_EXISTS == 0 || st & status::LAST_ROW_SENT != 0 || obs.error.is_some() {
        if let Some(stmts) = sess.stmts.as_mut() {
            stmts.set_cursor(client_id, false);
            if let Some(s) = stmts.map.get_mut(&client_id) {
                s.pending_at = None;
            }
        }
    }
    after_command(shard, ctl, sess, lease, &obs, Cmd::Fetch).await?;
    Ok(Flow::Continue)
}

/// Answers with an error the server itself would have given (an unknown statement id, a fetch
/// without a cursor), raised with SIGNAL on a backend so that it is in the diagnostics area
/// there, as on the server: `SHOW WARNINGS`, `GET DIAGNOSTICS` and `@@error_count` see it. If no
/// backend can be had, the error is answered from here.
async fn raise_on_backend(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    reply: Reply,
) -> CmdResult {
    let sql = format!(
        "SIGNAL SQLSTATE '{}' SET MYSQL_ERRNO = {}, MESSAGE_TEXT = {}",
        String::from_utf8_lossy(&reply.sql_state),
        reply.code,
        crate::session::state::quote(&reply.message)
    );
    let effects = sql::analyze(sql.as_bytes(), sess.modes());
    let mut payload = Vec::with_capacity(sql.len() + 1);
    payload.push(com::QUERY);
    payload.extend_from_slice(sql.as_bytes());
    let cmd = Cmd::Query(&effects);
    match super::command::forward(
        shard,
        ctl,
        sess,
        io,
        next,
        &payload,
        ResponseKind::Query,
        cmd,
    )
    .await
    {
        Ok(_) => Ok(Flow::Continue),
        Err(f) if !f.told_client => {
            debug!(error = %f.error, "raising an error on a backend failed; answering it here");
            reply_err(io, next, reply).await
        }
        Err(f) => Err(f),
    }
}
