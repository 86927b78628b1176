//! A client session: the compact record a parked client is reduced to, and the command loop that
//! serves it while it is active.
//!
//! Between commands a session is a [`Session`] in its shard's table: no task, no buffer, no
//! glommio source, only identity, capabilities, interned settings and (when pinned or in session
//! mode) the backend lease it holds. When its socket becomes readable, the shard takes the record
//! out and spawns [`serve`], which borrows buffers, serves commands for as long as bytes keep
//! arriving, and parks the record again.

use super::client::{ClientIo, Next};
use super::relay::{relay, Failure, RelayCtx};
use crate::auth::Credential;
use crate::backend::pool::Lease;
use crate::codec::caps::{cap, status};
use crate::codec::command::{self, com, set_option, Disposition, ResponseKind};
use crate::codec::packets::{encode_ok, EofPacket, OkPacket};
use crate::config::PoolMode;
use crate::error::{Error, Reply};
use crate::session::state::{self, Settings};
use crate::shard::table::{ActiveCtl, Token};
use crate::shard::Shard;
use bytes::Bytes;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// A user as one shard sees it.
#[derive(Debug)]
pub struct User {
    pub index: u32,
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
    /// The backend connection this session holds, if any (session mode, or an open transaction).
    pub lease: Option<Lease>,
    /// Index of the backend this session uses.
    pub backend: u16,
    /// Multi-statements wanted (handshake flag, then COM_SET_OPTION).
    pub multi_statements: bool,
    /// Server status flags last reported to this client.
    pub status: u16,
}

/// What to do after a command.
pub(crate) enum Flow {
    Continue,
    Quit,
}

/// Serves an active session until it parks, quits or fails.
pub async fn serve(shard: Rc<Shard>, token: Token, ctl: Rc<ActiveCtl>, mut sess: Session) {
    let mut io = ClientIo::new(shard.clone(), sess.fd.as_raw_fd(), token, ctl.clone());
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
                drop(io);
                shard.park(token, sess);
                return;
            }
            Ok(Next::Closed) => break None,
            Ok(Next::Packet(seq, payload)) => {
                shard.stats.commands.set(shard.stats.commands.get() + 1);
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
                        if f.error.closes_session() {
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

/// Ends a session: its backend (if held) is reset and returned, its slot freed, its socket closed.
pub async fn finish(shard: &Rc<Shard>, token: Token, mut sess: Session) {
    if let Some(mut lease) = sess.lease.take() {
        let fresh = shard.fresh.clone();
        match lease.conn().reset(fresh).await {
            Ok(()) => lease.release(),
            Err(e) => debug!(error = %e, "backend reset failed; discarding it"),
        }
    }
    shard.remove_session(token);
    drop(sess);
}

pub(crate) type CmdResult = Result<Flow, Failure>;

fn fail(error: Error, next_seq: u8) -> Failure {
    Failure {
        error,
        told_client: false,
        next_seq: Some(next_seq),
    }
}

async fn reply_ok(io: &mut ClientIo, sess: &Session, seq: u8) -> CmdResult {
    let mut out = Vec::with_capacity(16);
    encode_ok(&mut out, sess.status, sess.caps);
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
                com::BINLOG_DUMP | com::BINLOG_DUMP_GTID | com::REGISTER_SLAVE | com::TABLE_DUMP => {
                    Reply::new(
                        1235,
                        b"42000",
                        format!(
                            "sluice: {} (replication) is not supported through the proxy; connect replicas to the server directly",
                            command::name(code)
                        ),
                    )
                }
                _ => Reply::new(1047, b"08S01", format!("Unknown command ({})", command::name(code))),
            };
            Err(fail(Error::Refused(reply), next))
        }
        Disposition::Intercept(kind) => match code {
            com::QUIT => Ok(Flow::Quit),
            com::PING => reply_ok(io, sess, next).await,
            com::SET_OPTION => {
                let opt = command::set_option_value(&payload).map_err(|e| fail(e.into(), next))?;
                match opt {
                    set_option::MULTI_STATEMENTS_ON => sess.multi_statements = true,
                    set_option::MULTI_STATEMENTS_OFF => sess.multi_statements = false,
                    _ => {
                        return Err(fail(
                            Error::Refused(Reply::new(
                                1047,
                                b"08S01",
                                "Unknown command (COM_SET_OPTION value)",
                            )),
                            next,
                        ))
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
            com::RESET_CONNECTION => {
                reset_session(shard, sess).await;
                reply_ok(io, sess, next).await
            }
            com::CHANGE_USER => super::handshake::change_user(shard, sess, io, &payload, seq).await,
            com::PROCESS_KILL => {
                let target = command::kill_target(&payload).map_err(|e| fail(e.into(), next))?;
                shard
                    .kill(
                        target,
                        crate::shard::table::KillKind::Connection,
                        sess.conn_id,
                    )
                    .await
                    .map_err(|e| fail(e, next))?;
                reply_ok(io, sess, next).await
            }
            _ => forward(shard, ctl, sess, io, seq, payload, kind).await,
        },
        Disposition::Forward(kind) => forward(shard, ctl, sess, io, seq, payload, kind).await,
    }
}

/// COM_RESET_CONNECTION: the client's own state returns to what it had after login.
async fn reset_session(shard: &Rc<Shard>, sess: &mut Session) {
    if let Some(mut lease) = sess.lease.take() {
        match lease.conn().reset(shard.fresh.clone()).await {
            Ok(()) => lease.release(),
            Err(e) => debug!(error = %e, "backend reset failed; discarding it"),
        }
    }
    // The server keeps the schema across COM_RESET_CONNECTION and returns to the handshake's
    // character set; so does sluice.
    let schema = sess.settings.schema.clone();
    sess.settings = shard.initial_settings(sess.collation, schema);
    sess.multi_statements = sess.caps & cap::MULTI_STATEMENTS != 0;
    sess.status = status::AUTOCOMMIT;
}

async fn forward(
    shard: &Rc<Shard>,
    ctl: &Rc<ActiveCtl>,
    sess: &mut Session,
    io: &mut ClientIo,
    seq: u8,
    payload: Bytes,
    kind: ResponseKind,
) -> CmdResult {
    let next = seq.wrapping_add(1);
    let mut lease = match sess.lease.take() {
        Some(l) => l,
        None => checkout(shard, sess).await.map_err(|e| fail(e, next))?,
    };
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
    };
    let result = relay(io, lease.conn(), &payload, kind, &ctx).await;
    ctl.backend.set(None);
    let obs = match result {
        Ok(obs) => obs,
        Err(f) => {
            // The lease is dropped here: a connection that failed mid-response is discarded.
            return Err(f);
        }
    };
    if let Some(s) = obs.settings {
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
                    return Err(Failure {
                        error: Error::BackendLost {
                            backend: backend_name,
                            detail: e.to_string(),
                        },
                        told_client: true,
                        next_seq: None,
                    })
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
    sess.lease = Some(lease);
    maybe_release(sess, obs.error.is_some(), obs.cursor_opened);
    Ok(Flow::Continue)
}

/// Decides whether the session keeps its backend after a command.
fn maybe_release(sess: &mut Session, errored: bool, cursor_opened: bool) {
    let Some(lease) = sess.lease.as_ref() else {
        return;
    };
    if sess.user.pool_mode == PoolMode::Session {
        return;
    }
    let st = lease.get().status;
    let in_trans = st & status::IN_TRANS != 0;
    // After an ERR the server does not report its status; with autocommit off a transaction may
    // have begun, so keep the connection until an OK says otherwise.
    let uncertain = errored && st & status::AUTOCOMMIT == 0;
    if in_trans || uncertain || cursor_opened || st & status::CURSOR_EXISTS != 0 {
        return;
    }
    if let Some(l) = sess.lease.take() {
        l.release();
    }
}

/// Gets a backend connection for the session and gives it the session's settings.
async fn checkout(shard: &Rc<Shard>, sess: &mut Session) -> Result<Lease, Error> {
    let pool = shard.pool(sess.user.index, sess.backend);
    let deadline =
        Instant::now() + Duration::from_millis(shard.shared.config.pool.queue_timeout_ms);
    let profile = sess.caps & cap::PROFILE;
    let mut lease = pool.checkout(profile, &sess.settings, deadline).await?;
    sync(shard, sess, &mut lease).await?;
    Ok(lease)
}

/// Makes the backend's settings equal to the session's, in one round trip.
pub async fn sync(shard: &Rc<Shard>, sess: &Session, lease: &mut Lease) -> Result<(), Error> {
    let backend = usize::from(lease.get().backend);
    let backend_name = || shard.shared.backends[backend].address.clone();
    if Rc::ptr_eq(&lease.get().settings, &sess.settings)
        && lease.get().multi_statements == sess.multi_statements
    {
        return Ok(());
    }
    let nbe = lease.get().status & status::NO_BACKSLASH_ESCAPES != 0;
    let mut plan = state::plan(
        &lease.get().settings,
        &sess.settings,
        &shard.fresh_charset,
        nbe,
    );
    if plan.clear_schema {
        let spec = lease.pool().spec().clone();
        lease
            .conn()
            .change_user_clear(&spec, shard.fresh.clone())
            .await
            .map_err(|e| Error::BackendLost {
                backend: backend_name(),
                detail: e.to_string(),
            })?;
        plan = state::plan(
            &lease.get().settings,
            &sess.settings,
            &shard.fresh_charset,
            nbe,
        );
    }
    let set_option = (lease.get().multi_statements != sess.multi_statements).then_some(
        if sess.multi_statements {
            set_option::MULTI_STATEMENTS_ON
        } else {
            set_option::MULTI_STATEMENTS_OFF
        },
    );
    let r = lease
        .conn()
        .apply(plan.schema.as_deref(), plan.set.as_deref(), set_option)
        .await;
    match r {
        Ok(()) => {
            lease.conn().settings = sess.settings.clone();
            lease.conn().multi_statements = sess.multi_statements;
            Ok(())
        }
        Err(crate::backend::conn::BackendError::Server {
            code,
            sql_state,
            message,
        }) => {
            warn!(code, message = %message, "applying session settings on a backend failed");
            Err(Error::Refused(Reply::new(code, &sql_state, message)))
        }
        Err(e) => Err(Error::BackendLost {
            backend: backend_name(),
            detail: e.to_string(),
        }),
    }
}
