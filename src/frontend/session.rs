//! A client session: the compact record a parked client is reduced to, and the command loop that
//! serves it while it is active.
//!
//! Between commands a session is a [`Session`] in its shard's table: no task, no buffer, no
//! glommio source, only identity, capabilities, interned settings and (when it must keep one) the
//! backend lease it holds. When its socket becomes readable, the shard takes the record out and
//! spawns [`serve`], which borrows buffers, serves commands while bytes keep arriving, and parks
//! the record again.
//!
//! Pool modes decide when a backend goes back: `session` keeps it until the client leaves;
//! `transaction` and `statement` return it whenever the server says nothing ties it to the client
//! any more — no transaction open (`SERVER_STATUS_IN_TRANS`), no open cursor, no long data sent,
//! nothing pinned (see [`crate::session::pins`]). The next command gets any backend, made equal
//! to the client's settings first (see [`crate::session::state`]).

use super::client::{ClientIo, Next};
use super::relay::{relay, Failure, Observed, RelayCtx};
use crate::auth::Credential;
use crate::backend::conn::{BackendError, ENABLE_TRACKERS};
use crate::backend::pool::Lease;
use crate::codec::caps::{cap, status};
use crate::codec::command::{self, com, set_option, Disposition, ResponseKind};
use crate::codec::packets::{encode_ok, EofPacket, OkPacket};
use crate::config::{PinOverflow, PoolMode};
use crate::error::{code, Error, Reply};
use crate::session::pins::{PinReason, Pins, Reported};
use crate::session::sql::{self, Effects, Intercept, Modes};
use crate::session::state::{self, Settings};
use crate::session::stmts::{rewrite_execute, ClientStmt, Stmts};
use crate::shard::table::{ActiveCtl, KillKind, Token};
use crate::shard::Shard;
use bytes::Bytes;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// MariaDB's status flag for sql_mode ANSI_QUOTES (MySQL leaves this bit unused).
const STATUS_ANSI_QUOTES: u16 = 0x8000;

/// A user as one shard sees it.
#[derive(Debug)]
pub struct User {
    /// The account whose pools this user's sessions draw on (its index in the shared user list).
    pub index: u32,
    /// Who the user is (KILL permissions): its index for configured users; users loaded from
    /// the database share one account but each have an id of their own.
    pub id: u32,
    pub name: Box<str>,
    pub credential: Credential,
    pub pool_mode: PoolMode,
}

/// Everything a client is between commands.
pub struct Session {
    pub fd: OwnedFd,
    pub conn_id: u32,
    pub user: Rc<User>,
    /// Capabilities negotiated with the client.
    pub caps: u32,
    /// The collation the client logged in with (COM_RESET_CONNECTION returns to it).
    pub collation: u8,
    /// The client's settings (schema, variables), interned per shard.
    pub settings: Rc<Settings>,
    /// The backend connection this session holds, if any.
    pub lease: Option<Lease>,
    /// Index of the backend this session uses.
    pub backend: u16,
    /// Multi-statements wanted (handshake flag, then COM_SET_OPTION).
    pub multi_statements: bool,
    /// Server status flags last reported to this client.
    pub status: u16,
    /// The session holds one unit of its pool's pin budget.
    pub pin_counted: bool,
    /// What `LAST_INSERT_ID()`, `ROW_COUNT()` and `FOUND_ROWS()` return now.
    pub last_insert_id: u64,
    pub row_count: i64,
    pub found_rows: u64,
    pub pins: Option<Box<Pins>>,
    pub stmts: Option<Box<Stmts>>,
    /// The client's TLS state, if it upgraded (kept while parked).
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// When the client last sent a command (seconds on the shard's clock), for the idle timeout.
    pub last_active: u32,
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
            collation,
            settings,
            lease: None,
            backend,
            multi_statements: caps & cap::MULTI_STATEMENTS != 0,
            status: status::AUTOCOMMIT,
            pin_counted: false,
            last_insert_id: 0,
            row_count: -1,
            found_rows: 0,
            pins: None,
            stmts: None,
            tls: None,
            last_active: 0,
        }
    }

    fn mode(&self) -> PoolMode {
        self.user.pool_mode
    }

    fn pinned(&self) -> bool {
        self.pins.as_ref().is_some_and(|p| p.is_pinned())
    }

    fn modes(&self) -> Modes {
        let ansi = self.status & STATUS_ANSI_QUOTES != 0
            || self
                .settings
                .var("sql_mode")
                .is_some_and(|m| m.contains("ANSI"));
        Modes {
            ansi_quotes: ansi,
            no_backslash_escapes: self.status & status::NO_BACKSLASH_ESCAPES != 0,
        }
    }
}

/// What to do after a command.
pub(crate) enum Flow {
    Continue,
    Quit,
}

pub(crate) type CmdResult = Result<Flow, Failure>;

fn fail(error: Error, next_seq: u8) -> Failure {
    Failure::new(error, Some(next_seq))
}

/// Serves an active session until it parks, quits or fails.
pub async fn serve(shard: Rc<Shard>, token: Token, ctl: Rc<ActiveCtl>, mut sess: Session) {
    let mut io = ClientIo::new(shard.clone(), sess.fd.as_raw_fd(), token, ctl.clone());
    io.tls = sess.tls.take();
    let max = shard.shared.config.max_packet_size;
    let read_timeout = Some(Duration::from_millis(
        shard.shared.config.net_read_timeout_ms,
    ));
    let reason: Option<Error> = loop {
        if let Err(e) = ctl.check() {
            break Some(e);
        }
        match io.next_packet(max, read_timeout).await {
            Ok(Next::Idle) => {
                sess.tls = io.tls.take();
                drop(io);
                shard.park(token, sess);
                return;
            }
            Ok(Next::Closed) => break None,
            Ok(Next::Packet(seq, payload)) => {
                shard.stats.commands.set(shard.stats.commands.get() + 1);
                sess.last_active = shard.clock();
                match handle(&shard, &ctl, &mut sess, &mut io, seq, payload).await {
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
/// pins and statements that lived on it.
async fn drop_backend_state(shard: &Rc<Shard>, sess: &mut Session) {
    if let Some(mut lease) = sess.lease.take() {
        match lease.conn().reset(shard.fresh.clone()).await {
            Ok(()) => lease.release(),
            Err(e) => debug!(error = %e, "backend reset failed; discarding it"),
        }
    }
    set_pins(shard, sess, |p| *p = Pins::default());
    sess.stmts = None;
}

async fn reply_ok(io: &mut ClientIo, sess: &Session, seq: u8) -> CmdResult {
    let mut out = Vec::with_capacity(16);
    encode_ok(&mut out, sess.status, sess.caps);
    io.queue(seq, &out);
    io.flush(None).await.map_err(|e| fail(e, seq))?;
    Ok(Flow::Continue)
}

async fn reply_err(io: &mut ClientIo, seq: u8, reply: Reply) -> CmdResult {
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
            com::PING => reply_ok(io, sess, next).await,
            com::SET_OPTION => set_option(sess, io, &payload, next).await,
            com::RESET_CONNECTION => {
                reset_session(shard, sess).await;
                reply_ok(io, sess, next).await
            }
            com::CHANGE_USER => {
                drop_backend_state(shard, sess).await;
                super::handshake::change_user(shard, sess, io, &payload, seq).await
            }
            com::PROCESS_KILL => {
                let target = command::kill_target(&payload).map_err(|e| fail(e.into(), next))?;
                match shard.kill(target, KillKind::Connection, sess.user.id).await {
                    Ok(()) => reply_ok(io, sess, next).await,
                    Err(e) => Err(fail(e, next)),
                }
            }
            _ => forward(shard, ctl, sess, io, next, &payload, kind, None)
                .await
                .map(|_| Flow::Continue),
        },
        Disposition::Forward(kind) => match code {
            com::QUERY => query(shard, ctl, sess, io, next, payload).await,
            com::STMT_PREPARE => stmt_prepare(shard, ctl, sess, io, next, payload).await,
            com::STMT_EXECUTE => stmt_execute(shard, ctl, sess, io, next, &payload).await,
            com::STMT_SEND_LONG_DATA => stmt_long_data(shard, sess, &payload).await,
            com::STMT_CLOSE => stmt_close(shard, sess, &payload).await,
            com::STMT_RESET => stmt_reset(shard, ctl, sess, io, next, &payload).await,
            com::STMT_FETCH => stmt_fetch(shard, ctl, sess, io, next, &payload).await,
            _ => forward(shard, ctl, sess, io, next, &payload, kind, None)
                .await
                .map(|_| Flow::Continue),
        },
    }
}

async fn set_option(sess: &mut Session, io: &mut ClientIo, payload: &[u8], next: u8) -> CmdResult {
    let opt = command::set_option_value(payload).map_err(|e| fail(e.into(), next))?;
    match opt {
        set_option::MULTI_STATEMENTS_ON => sess.multi_statements = true,
        set_option::MULTI_STATEMENTS_OFF => sess.multi_statements = false,
        _ => {
            return reply_err(
                io,
                next,
                Reply::new(1047, b"08S01", "Unknown command (COM_SET_OPTION value)"),
            )
            .await
        }
    }
    let mut out = Vec::with_capacity(16);
    if sess.caps & cap::DEPRECATE_EOF != 0 {
        OkPacket {
            status: sess.status,
            ..OkPacket::default()
        }
        .encode(&mut out, 0xFE, sess.caps);
    } else {
        EofPacket {
            warnings: 0,
            status: sess.status,
        }
        .encode(&mut out);
    }
    io.queue(next, &out);
    io.flush(None).await.map_err(|e| fail(e, next))?;
    Ok(Flow::Continue)
}

/// COM_RESET_CONNECTION: this client's state returns to what it had after login; other clients'
/// connections are untouched.
async fn reset_session(shard: &Rc<Shard>, sess: &mut Session) {
    drop_backend_state(shard, sess).await;
    // The server keeps the schema across COM_RESET_CONNECTION and returns to the handshake's
    // character set; so does sluice.
    let schema = sess.settings.schema.clone();
    sess.settings = shard.initial_settings(sess.collation, schema);
    // Like the server, COM_RESET_CONNECTION keeps the COM_SET_OPTION multi-statements choice.
    sess.status = status::AUTOCOMMIT;
    sess.last_insert_id = 0;
    sess.row_count = -1;
    sess.found_rows = 0;
}

/// Changes the session's pins and keeps the pool's pin budget and the metrics in step.
fn set_pins(shard: &Rc<Shard>, sess: &mut Session, f: impl FnOnce(&mut Pins)) {
    let pins = sess.pins.get_or_insert_with(Box::default);
    let before = pins.mask();
    f(pins);
    let after = pins.mask();
    shard.stats.pin_transition(before, after);
    let pool = shard.pool(sess.user.index, sess.backend);
    if after != 0 && !sess.pin_counted {
        pool.pin_force();
        sess.pin_counted = true;
    } else if after == 0 && sess.pin_counted {
        pool.pin_release();
        sess.pin_counted = false;
    }
    if after == 0 {
        sess.pins = None;
    }
}

/// Before a statement that would pin a session not pinned yet: take a unit of the pin budget,
/// or refuse / wait as configured.
async fn reserve_pin(
    shard: &Rc<Shard>,
    sess: &mut Session,
    reason: PinReason,
) -> Result<(), Error> {
    if sess.pin_counted || sess.mode() == PoolMode::Session {
        return Ok(());
    }
    let pool = shard.pool(sess.user.index, sess.backend);
    if pool.pin_try_acquire() {
        sess.pin_counted = true;
        return Ok(());
    }
    let cfg = &shard.shared.config.pool;
    if cfg.pin_overflow == PinOverflow::Wait {
        let deadline = Instant::now() + Duration::from_millis(cfg.queue_timeout_ms);
        if pool.pin_wait(deadline).await {
            sess.pin_counted = true;
            return Ok(());
        }
    }
    shard
        .stats
        .pin_refusals
        .set(shard.stats.pin_refusals.get() + 1);
    Err(Error::Refused(Reply::new(
        code::PIN_BUDGET,
        b"HY000",
        format!(
            "sluice: this statement would pin the session to its backend ({}), and {} sessions already are (pool.pin_budget); retry later or avoid session state",
            reason.name(),
            pool.pinned()
        ),
    )))
}

async fn query(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: Bytes,
) -> CmdResult {
    let e = sql::analyze(&payload[1..], sess.modes());
    if let Some(ic) = &e.intercept {
        return answer(shard, sess, io, next, ic).await;
    }
    let payload = if e.connection_id_call {
        let mut p = vec![com::QUERY];
        p.extend(sql::rewrite_connection_id(
            &payload[1..],
            sess.conn_id,
            sess.modes(),
        ));
        Bytes::from(p)
    } else {
        payload
    };
    if sess.mode() != PoolMode::Session && !sess.pinned() {
        if let Some(reason) = PinReason::predicted(&e) {
            reserve_pin(shard, sess, reason)
                .await
                .map_err(|err| fail(err, next))?;
        }
    }
    let obs = forward(
        shard,
        ctl,
        sess,
        io,
        next,
        &payload,
        ResponseKind::Query,
        Some(&e),
    )
    .await?;
    let _ = obs;
    Ok(Flow::Continue)
}

/// Answers a statement sluice handles itself.
async fn answer(
    shard: &Rc<Shard>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    ic: &Intercept,
) -> CmdResult {
    let (label, value, unsigned) = match ic {
        Intercept::LastInsertId(l) => (l, sess.last_insert_id.to_string(), true),
        Intercept::RowCount(l) => (l, sess.row_count.to_string(), false),
        Intercept::FoundRows(l) => (l, sess.found_rows.to_string(), true),
        Intercept::ConnectionId(l) => (l, sess.conn_id.to_string(), true),
        Intercept::Kill { query_only, id } => {
            let kind = if *query_only { KillKind::Query } else { KillKind::Connection };
            let target = u32::try_from(*id).unwrap_or(0);
            return match shard.kill(target, kind, sess.user.id).await {
                Ok(()) => {
                    sess.row_count = 0;
                    reply_ok(io, sess, next).await
                }
                Err(Error::Refused(r)) => reply_err(io, next, r).await,
                Err(e) => Err(fail(e, next)),
            };
        }
        Intercept::KillUnsupported => {
            return reply_err(
                io,
                next,
                Reply::new(1235, b"42000", "sluice: this form of KILL is not supported; use KILL [CONNECTION | QUERY] <connection id>"),
            )
            .await
        }
    };
    let mut seq = next;
    for p in super::answer::single_value(label.as_slice(), &value, unsigned, sess.status, sess.caps)
    {
        seq = io.queue(seq, &p);
    }
    io.flush(None).await.map_err(|e| fail(e, next))?;
    sess.row_count = -1;
    sess.found_rows = 1;
    let _ = shard;
    Ok(Flow::Continue)
}

/// Gets the session's backend: the one it holds, or one from the pool with the session's
/// settings applied.
async fn acquire(shard: &Rc<Shard>, sess: &mut Session) -> Result<Lease, Error> {
    if let Some(l) = sess.lease.take() {
        return Ok(l);
    }
    let pool = shard.pool(sess.user.index, sess.backend);
    let deadline =
        Instant::now() + Duration::from_millis(shard.shared.config.pool.queue_timeout_ms);
    let profile = sess.caps & cap::PROFILE;
    let mut lease = pool.checkout(profile, &sess.settings, deadline).await?;
    let settings = sess.settings.clone();
    sync_to(shard, &mut lease, &settings, sess.multi_statements).await?;
    Ok(lease)
}

fn backend_lost(shard: &Shard, lease: &Lease, e: BackendError) -> Error {
    match e {
        BackendError::Server {
            code,
            sql_state,
            message,
        } => Error::Refused(Reply::new(code, &sql_state, message)),
        BackendError::Broken(detail) => Error::BackendLost {
            backend: shard.shared.backends[usize::from(lease.get().backend)]
                .address
                .clone(),
            detail,
        },
    }
}

/// Makes a backend's settings equal to `settings`, in one round trip.
pub async fn sync_to(
    shard: &Rc<Shard>,
    lease: &mut Lease,
    settings: &Rc<Settings>,
    multi: bool,
) -> Result<(), Error> {
    if Rc::ptr_eq(&lease.get().settings, settings) && lease.get().multi_statements == multi {
        return Ok(());
    }
    let mut plan = state::plan(&lease.get().settings, settings, &shard.fresh_charset);
    if plan.clear_schema {
        let spec = lease.pool().spec().clone();
        if let Err(e) = lease
            .conn()
            .change_user_clear(&spec, shard.fresh.clone())
            .await
        {
            return Err(backend_lost(shard, lease, e));
        }
        plan = state::plan(&lease.get().settings, settings, &shard.fresh_charset);
    }
    let set_option = (lease.get().multi_statements != multi).then_some(if multi {
        set_option::MULTI_STATEMENTS_ON
    } else {
        set_option::MULTI_STATEMENTS_OFF
    });
    shard.stats.syncs.set(shard.stats.syncs.get() + 1);
    match lease
        .conn()
        .apply(plan.schema.as_deref(), plan.set.as_deref(), set_option)
        .await
    {
        Ok(()) => {
            lease.conn().settings = settings.clone();
            lease.conn().multi_statements = multi;
            Ok(())
        }
        Err(e) => {
            warn!(error = %e, "applying session settings on a backend failed");
            Err(backend_lost(shard, lease, e))
        }
    }
}

/// Sends a command on the session's backend and relays the response; then updates the session
/// from what the server reported and decides whether the backend goes back to the pool.
#[allow(clippy::too_many_arguments)]
async fn forward(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: &[u8],
    kind: ResponseKind,
    effects: Option<&Effects>,
) -> Result<Observed, Failure> {
    let held_before = sess.lease.is_some();
    let mut lease = acquire(shard, sess).await.map_err(|e| fail(e, next))?;
    let obs = run_on(shard, ctl, sess, io, next, &mut lease, payload, kind, None).await;
    let obs = match obs {
        Ok(o) => o,
        Err(mut f) => {
            // The lease is dropped: a connection that failed mid-response is discarded. Outside
            // a transaction, with nothing pinned to it, the session goes on with another one.
            f.keep_session = survives_backend_loss(&f, held_before, sess.mode());
            drop(lease);
            if f.keep_session {
                sess.status &= !status::IN_TRANS;
            }
            return Err(f);
        }
    };
    after_command(shard, sess, lease, &obs, effects).await?;
    Ok(obs)
}

/// Can the session go on after its backend failed during a command? Only if nothing tied it to
/// that backend (no transaction, no pin: `held_before` false, not session mode) and the client is
/// at a packet boundary, so it can be told with an ERR (mid-row, its connection must close).
fn survives_backend_loss(f: &Failure, held_before: bool, mode: PoolMode) -> bool {
    matches!(f.error, Error::BackendLost { .. })
        && !held_before
        && mode != PoolMode::Session
        && f.next_seq.is_some()
}

/// Relays one command on `lease` (which the caller keeps).
#[allow(clippy::too_many_arguments)]
async fn run_on(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    lease: &mut Lease,
    payload: &[u8],
    kind: ResponseKind,
    prepare_id: Option<u32>,
) -> Result<Observed, Failure> {
    let backend_name = shard.shared.backends[usize::from(lease.get().backend)]
        .address
        .clone();
    ctl.backend
        .set(Some((lease.get().backend, lease.get().thread_id)));
    let settings = sess.settings.clone();
    let ctx = RelayCtx {
        client_caps: sess.caps,
        settings: &settings,
        client_timeout: Some(Duration::from_millis(
            shard.shared.config.net_write_timeout_ms,
        )),
        first_seq: next,
        backend_name: &backend_name,
        prepare_id,
    };
    let r = relay(io, lease.conn(), payload, kind, &ctx).await;
    ctl.backend.set(None);
    // A KILL QUERY that read this connection's thread id may still be on its way to the server:
    // keep the connection until it has landed, so it cannot interrupt another client's statement.
    ctl.kills_settled().await;
    let mut obs = r?;
    if let Some(s) = obs.settings.take() {
        let mut s = s;
        if obs.charset_changed {
            // MariaDB reports character_set_connection but not always collation_connection.
            match lease
                .conn()
                .query_value("SELECT @@collation_connection")
                .await
            {
                Ok(Some(c)) => s.set_var("collation_connection", &c),
                Ok(None) => {}
                Err(e) => {
                    let mut f = Failure::new(backend_lost(shard, lease, e), None);
                    f.told_client = true;
                    return Err(f);
                }
            }
        }
        let rc = shard.interner.intern(s);
        lease.conn().settings = rc.clone();
        sess.settings = rc;
    }
    if let Some(st) = obs.status {
        sess.status = st;
    }
    Ok(obs)
}

/// Session bookkeeping after a command, then the release decision.
async fn after_command(
    shard: &Rc<Shard>,
    sess: &mut Session,
    mut lease: Lease,
    obs: &Observed,
    effects: Option<&Effects>,
) -> Result<(), Failure> {
    if let Some((_, id)) = obs.last_ok {
        if id != 0 {
            sess.last_insert_id = id;
        }
    }
    if obs.error.is_some() {
        sess.row_count = -1;
    } else if obs.result_set {
        sess.row_count = -1;
        sess.found_rows = obs.rows;
    } else if let Some((affected, _)) = obs.last_ok {
        sess.row_count = affected as i64;
    }
    let told = |e: BackendError, lease: &Lease| {
        let mut f = Failure::new(backend_lost(shard, lease, e), None);
        f.told_client = true;
        f
    };
    if let Some(e) = effects {
        if e.calc_found_rows && obs.error.is_none() {
            match lease.conn().query_value("SELECT FOUND_ROWS()").await {
                Ok(v) => sess.found_rows = v.and_then(|v| v.parse().ok()).unwrap_or(0),
                Err(err) => return Err(told(err, &lease)),
            }
        }
        if e.session_track {
            // A client changed the session trackers sluice relies on: turn them back on.
            if let Err(err) = lease.conn().query_ok(ENABLE_TRACKERS).await {
                return Err(told(err, &lease));
            }
        }
        if sess.mode() != PoolMode::Session {
            let in_trans = lease.get().status & status::IN_TRANS != 0;
            set_pins(shard, sess, |p| {
                p.after(
                    e,
                    Reported {
                        failed: obs.error.is_some(),
                        state_changed: obs.state_changed,
                        trx_state: obs.trx_state.as_deref(),
                        trx_characteristics: obs.trx_characteristics.as_deref(),
                        in_transaction: in_trans,
                    },
                )
            });
        }
    } else if obs.state_changed && sess.mode() != PoolMode::Session {
        // A command other than a query (prepared statement, COM_INIT_DB…) changed something the
        // trackers did not describe.
        let e = Effects {
            explains_state_change: false,
            ..Effects::default()
        };
        set_pins(shard, sess, |p| {
            p.after(
                &e,
                Reported {
                    state_changed: true,
                    ..Reported::default()
                },
            )
        });
    }
    sess.lease = Some(lease);
    maybe_release(sess, obs.error.is_some());
    Ok(())
}

/// Returns the backend to the pool unless something ties it to the session.
fn maybe_release(sess: &mut Session, errored: bool) {
    let Some(lease) = sess.lease.as_ref() else {
        return;
    };
    if sess.mode() == PoolMode::Session {
        return;
    }
    let st = lease.get().status;
    let in_trans = st & status::IN_TRANS != 0;
    // After an ERR the server does not report its status; with autocommit off a transaction may
    // have begun, so keep the connection until an OK says otherwise.
    let uncertain = errored && st & status::AUTOCOMMIT == 0;
    let pending = sess.stmts.as_ref().is_some_and(|s| s.pending());
    if in_trans || uncertain || pending || sess.pinned() || sess.pin_counted {
        return;
    }
    if let Some(l) = sess.lease.take() {
        l.release();
    }
}

fn unknown_stmt(id: u32, cmd: &str) -> Reply {
    Reply::new(
        1243,
        b"HY000",
        format!("Unknown prepared statement handler ({id}) given to {cmd}"),
    )
}

fn stmt_of(sess: &Session, id: u32) -> Option<ClientStmt> {
    sess.stmts.as_ref().and_then(|s| s.map.get(&id)).cloned()
}

/// The statement's id on `lease`'s backend, preparing it there first if needed (under the
/// settings it was prepared with, which the backend then returns to the session's).
async fn ensure_prepared(
    shard: &Rc<Shard>,
    sess: &Session,
    lease: &mut Lease,
    stmt: &ClientStmt,
) -> Result<u32, Error> {
    if let Some(id) = lease.conn().prepared_id(&stmt.settings, &stmt.sql) {
        return Ok(id);
    }
    let switch = !Rc::ptr_eq(&lease.get().settings, &stmt.settings);
    if switch {
        sync_to(shard, lease, &stmt.settings, sess.multi_statements).await?;
    }
    evict_prepared(shard, sess, lease).await?;
    let id = match lease.conn().prepare_quiet(&stmt.sql).await {
        Ok(id) => id,
        Err(e) => return Err(backend_lost(shard, lease, e)),
    };
    shard
        .stats
        .lazy_prepares
        .set(shard.stats.lazy_prepares.get() + 1);
    if let Some(old) = lease
        .conn()
        .remember_prepared(stmt.settings.clone(), stmt.sql.clone(), id)
    {
        let _ = lease.conn().close_statements(&[old]).await;
    }
    if switch {
        let settings = sess.settings.clone();
        sync_to(shard, lease, &settings, sess.multi_statements).await?;
    }
    Ok(id)
}

/// Keeps the backend's prepared statements under the configured bound.
async fn evict_prepared(shard: &Rc<Shard>, sess: &Session, lease: &mut Lease) -> Result<(), Error> {
    let cap = shard.shared.config.pool.prepared_statements_per_connection;
    let pending: Vec<(Rc<Settings>, Rc<[u8]>)> = sess
        .stmts
        .as_ref()
        .map(|s| {
            s.map
                .iter()
                .filter(|(id, st)| st.long_data || s.cursor == Some(**id))
                .map(|(_, st)| (st.settings.clone(), st.sql.clone()))
                .collect()
        })
        .unwrap_or_default();
    let victims = lease.conn().evict_prepared(cap, |p| {
        pending
            .iter()
            .any(|(s, q)| Rc::ptr_eq(s, &p.settings) && *q == p.sql)
    });
    if let Err(e) = lease.conn().close_statements(&victims).await {
        return Err(backend_lost(shard, lease, e));
    }
    Ok(())
}

async fn stmt_prepare(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: Bytes,
) -> CmdResult {
    let sql = shard.sql.intern_bytes(&payload[1..]);
    let client_id = sess.stmts.get_or_insert_with(Box::default).allocate_id();
    let mut lease = acquire(shard, sess).await.map_err(|e| fail(e, next))?;
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
        Some(client_id),
    )
    .await
    {
        Ok(o) => o,
        Err(mut f) => {
            f.keep_session = survives_backend_loss(&f, sess.lease.is_some(), sess.mode());
            return Err(f);
        }
    };
    if let Some((backend_id, columns, params)) = obs.prepared {
        let settings = sess.settings.clone();
        if let Some(old) = lease
            .conn()
            .remember_prepared(settings.clone(), sql.clone(), backend_id)
        {
            let _ = lease.conn().close_statements(&[old]).await;
        }
        let stmt = ClientStmt {
            sql,
            settings,
            params,
            columns,
            types: None,
            long_data: false,
        };
        sess.stmts
            .get_or_insert_with(Box::default)
            .map
            .insert(client_id, stmt);
    }
    after_command(shard, sess, lease, &obs, None).await?;
    Ok(Flow::Continue)
}

async fn stmt_execute(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: &[u8],
) -> CmdResult {
    let (client_id, _flags) = command::execute_flags(payload).map_err(|e| fail(e.into(), next))?;
    let Some(stmt) = stmt_of(sess, client_id) else {
        return reply_err(io, next, unknown_stmt(client_id, "mysqld_stmt_execute")).await;
    };
    let effects = sql::analyze(&stmt.sql, sess.modes());
    if sess.mode() != PoolMode::Session && !sess.pinned() {
        if let Some(reason) = PinReason::predicted(&effects) {
            reserve_pin(shard, sess, reason)
                .await
                .map_err(|err| fail(err, next))?;
        }
    }
    let held_before = sess.lease.is_some();
    let mut lease = acquire(shard, sess).await.map_err(|e| fail(e, next))?;
    let backend_id = match ensure_prepared(shard, sess, &mut lease, &stmt).await {
        Ok(id) => id,
        Err(Error::Refused(r)) => {
            // The server refused to prepare it here (a table dropped since, …): that is the
            // execute's answer.
            sess.lease = Some(lease);
            maybe_release(sess, true);
            return reply_err(io, next, r).await;
        }
        Err(e) => return Err(fail(e, next)),
    };
    let (rewritten, bound) =
        rewrite_execute(payload, backend_id, stmt.params, stmt.types.as_deref())
            .map_err(|e| fail(e.into(), next))?;
    let obs = match run_on(
        shard,
        ctl,
        sess,
        io,
        next,
        &mut lease,
        &rewritten,
        ResponseKind::Execute,
        None,
    )
    .await
    {
        Ok(o) => o,
        Err(mut f) => {
            f.keep_session = survives_backend_loss(&f, held_before, sess.mode());
            return Err(f);
        }
    };
    if let Some(stmts) = sess.stmts.as_mut() {
        if let Some(s) = stmts.map.get_mut(&client_id) {
            s.long_data = false;
            if let Some(t) = bound {
                s.types = Some(t.into_boxed_slice());
            }
        }
        if obs.cursor_opened {
            stmts.cursor = Some(client_id);
        } else if stmts.cursor == Some(client_id) {
            stmts.cursor = None;
        }
    }
    after_command(shard, sess, lease, &obs, Some(&effects)).await?;
    Ok(Flow::Continue)
}

/// COM_STMT_SEND_LONG_DATA: no response; the data accumulates on one backend, which the session
/// keeps until the execute.
async fn stmt_long_data(shard: &Rc<Shard>, sess: &mut Session, payload: &[u8]) -> CmdResult {
    let Ok(client_id) = command::statement_id(payload) else {
        return Ok(Flow::Continue);
    };
    // Unknown statements are ignored, as the server ignores them (there is no response).
    let Some(stmt) = stmt_of(sess, client_id) else {
        return Ok(Flow::Continue);
    };
    let mut lease = acquire(shard, sess)
        .await
        .map_err(|e| Failure::new(e, None))?;
    let backend_id = match ensure_prepared(shard, sess, &mut lease, &stmt).await {
        Ok(id) => id,
        Err(e) => {
            sess.lease = Some(lease);
            maybe_release(sess, true);
            // Nothing can be answered now; the execute will report the problem.
            debug!(error = %e, "long data for a statement the backend would not prepare");
            return Ok(Flow::Continue);
        }
    };
    let mut p = payload.to_vec();
    let _ = command::set_statement_id(&mut p, backend_id);
    if let Err(e) = lease.conn().write_packet(0, &p).await {
        return Err(Failure::new(backend_lost(shard, &lease, e), None));
    }
    if let Some(s) = sess.stmts.as_mut().and_then(|s| s.map.get_mut(&client_id)) {
        s.long_data = true;
    }
    sess.lease = Some(lease);
    Ok(Flow::Continue)
}

/// COM_STMT_CLOSE: no response. The backend keeps the statement for other clients (bounded by
/// the LRU); only pending cursor or long data are cleared there.
async fn stmt_close(shard: &Rc<Shard>, sess: &mut Session, payload: &[u8]) -> CmdResult {
    let Ok(client_id) = command::statement_id(payload) else {
        return Ok(Flow::Continue);
    };
    let Some(stmts) = sess.stmts.as_mut() else {
        return Ok(Flow::Continue);
    };
    let Some(stmt) = stmts.map.remove(&client_id) else {
        return Ok(Flow::Continue);
    };
    let had_pending = stmt.long_data || stmts.cursor == Some(client_id);
    if stmts.cursor == Some(client_id) {
        stmts.cursor = None;
    }
    if had_pending {
        if let Some(mut lease) = sess.lease.take() {
            if let Some(id) = lease.conn().prepared_id(&stmt.settings, &stmt.sql) {
                let mut p = vec![com::STMT_RESET];
                p.extend_from_slice(&id.to_le_bytes());
                if let Err(e) = lease.conn().command_ok(&p, ResponseKind::OkErr).await {
                    if let BackendError::Broken(_) = e {
                        return Err(Failure::new(backend_lost(shard, &lease, e), None));
                    }
                }
            }
            sess.lease = Some(lease);
            maybe_release(sess, false);
        }
    }
    Ok(Flow::Continue)
}

async fn stmt_reset(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: &[u8],
) -> CmdResult {
    let client_id = command::statement_id(payload).map_err(|e| fail(e.into(), next))?;
    let Some(stmt) = stmt_of(sess, client_id) else {
        return reply_err(io, next, unknown_stmt(client_id, "mysqld_stmt_reset")).await;
    };
    let cursor = sess
        .stmts
        .as_ref()
        .is_some_and(|s| s.cursor == Some(client_id));
    if !(stmt.long_data || cursor) || sess.lease.is_none() {
        // Nothing is pending for it anywhere: the reset is a no-op, answered here.
        return reply_ok(io, sess, next).await;
    }
    let mut lease = sess.lease.take().expect("checked above");
    let Some(backend_id) = lease.conn().prepared_id(&stmt.settings, &stmt.sql) else {
        sess.lease = Some(lease);
        return reply_ok(io, sess, next).await;
    };
    let mut p = payload.to_vec();
    let _ = command::set_statement_id(&mut p, backend_id);
    let obs = run_on(
        shard,
        ctl,
        sess,
        io,
        next,
        &mut lease,
        &p,
        ResponseKind::OkErr,
        None,
    )
    .await?;
    if let Some(stmts) = sess.stmts.as_mut() {
        if let Some(s) = stmts.map.get_mut(&client_id) {
            s.long_data = false;
        }
        if stmts.cursor == Some(client_id) {
            stmts.cursor = None;
        }
    }
    after_command(shard, sess, lease, &obs, None).await?;
    Ok(Flow::Continue)
}

async fn stmt_fetch(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    payload: &[u8],
) -> CmdResult {
    let client_id = command::statement_id(payload).map_err(|e| fail(e.into(), next))?;
    let Some(stmt) = stmt_of(sess, client_id) else {
        return reply_err(io, next, unknown_stmt(client_id, "mysqld_stmt_fetch")).await;
    };
    let cursor = sess
        .stmts
        .as_ref()
        .is_some_and(|s| s.cursor == Some(client_id));
    let backend_id = match sess.lease.as_mut() {
        Some(l) if cursor => l.conn().prepared_id(&stmt.settings, &stmt.sql),
        _ => None,
    };
    let Some(backend_id) = backend_id else {
        return reply_err(
            io,
            next,
            Reply::new(
                1421,
                b"HY000",
                format!("The statement ({client_id}) has no open cursor."),
            ),
        )
        .await;
    };
    let mut lease = sess.lease.take().expect("checked above");
    let mut p = payload.to_vec();
    let _ = command::set_statement_id(&mut p, backend_id);
    let obs = run_on(
        shard,
        ctl,
        sess,
        io,
        next,
        &mut lease,
        &p,
        ResponseKind::Fetch,
        None,
    )
    .await?;
    let st = obs.status.unwrap_or(0);
    if st & status::CURSOR_EXISTS == 0 || st & status::LAST_ROW_SENT != 0 || obs.error.is_some() {
        if let Some(stmts) = sess.stmts.as_mut() {
            stmts.cursor = None;
        }
    }
    after_command(shard, sess, lease, &obs, None).await?;
    Ok(Flow::Continue)
}
