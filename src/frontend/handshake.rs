//! The server side of the connection phase: sluice's greeting (carrying the backends' version
//! and capabilities), authentication against the configured users with a switch to each user's
//! plugin, and COM_CHANGE_USER.
//!
//! A wrong password and an unknown user take the same path, the same exchange (an unknown name
//! gets the plugin and full-authentication request its keyed hash picks, see
//! [`crate::auth::Decoys`]), the same configured delay and the same ERR 1045, so the answer tells
//! an attacker nothing about which users exist. COM_CHANGE_USER runs the same exchange and the
//! same TLS requirements as the login.

use super::client::ClientIo;
use super::relay::Failure;
use super::session::{Session, User};
use crate::auth::Plugin;
use crate::codec::auth::{AuthSwitch, AUTH_MORE_DATA, SHA2_FAST_AUTH_OK, SHA2_PERFORM_FULL_AUTH};
use crate::codec::caps::{cap, status};
use crate::codec::command::ChangeUser;
use crate::codec::handshake::{is_ssl_request, Handshake, HandshakeResponse};
use crate::codec::packets::encode_login_ok;
use crate::error::{Error, Reply};
use crate::shard::Shard;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

/// Printable, NUL-free nonce bytes, as MySQL servers send.
pub fn nonce() -> [u8; 20] {
    let mut n = [0u8; 20];
    if getrandom::getrandom(&mut n).is_err() {
        // getrandom(2) does not fail on Linux ≥ 3.17; fall back to the clock rather than panic.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, b) in n.iter_mut().enumerate() {
            *b = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(37);
        }
    }
    for b in &mut n {
        *b = 0x21 + (*b % 94);
    }
    n
}

/// The outcome of checking credentials.
struct Authenticated {
    user: Rc<User>,
}

/// Runs the connection phase on a freshly accepted socket; returns the new session.
pub async fn accept(
    shard: &Rc<Shard>,
    io: &mut ClientIo,
    fd: OwnedFd,
    conn_id: u32,
    peer: SocketAddr,
) -> Result<Session, Error> {
    let handshake_timeout = Duration::from_millis(shard.cfg().handshake_timeout_ms);
    let timeout = Some(handshake_timeout);
    let nonce = nonce();
    let server = &shard.shared.server;
    let tls = shard.shared.tls();
    let mut offered = server.client_capabilities();
    if tls.is_some() {
        offered |= cap::SSL;
    }
    let greeting = Handshake {
        server_version: server.version.clone(),
        connection_id: conn_id,
        nonce: nonce.to_vec(),
        capabilities: offered,
        collation: server.collation,
        status: status::AUTOCOMMIT,
        mariadb_capabilities: server.client_mariadb_capabilities(),
        auth_plugin: Plugin::Native.name().to_vec(),
    };
    let mut out = Vec::with_capacity(128);
    greeting.encode(&mut out);
    io.queue(0, &out);
    io.flush(timeout).await?;

    // Errors carry the sequence id the client expects next, so the ERR lands where it looks.
    let handshake = async {
        let (mut seq, mut p) = io.read_packet(64 << 10, None).await.map_err(|e| (e, 2))?;
        if is_ssl_request(&p) {
            let Some(config) = tls.clone() else {
                let r = Reply::new(
                    1043,
                    b"08S01",
                    "sluice: TLS is not enabled on this listener",
                );
                return Err((Error::Fatal(r), seq.wrapping_add(1)));
            };
            // The TLS handshake follows; the real handshake response comes over it.
            io.start_tls(config).map_err(|e| (e, 0))?;
            (seq, p) = io.read_packet(64 << 10, None).await.map_err(|e| (e, 0))?;
            shard
                .stats
                .tls_clients
                .set(shard.stats.tls_clients.get() + 1);
        }
        let next = seq.wrapping_add(1);
        if let Some(r) = tls_required(shard, None, io.is_tls()) {
            return Err((Error::Fatal(r), next));
        }
        let resp = HandshakeResponse::decode(&p).map_err(|_| {
            (
                Error::Fatal(Reply::new(1043, b"08S01", "Bad handshake")),
                next,
            )
        })?;
        if resp.capabilities & cap::REQUIRED_FROM_CLIENT != cap::REQUIRED_FROM_CLIENT {
            let r = Reply::new(
                1251,
                b"08004",
                "Client does not support authentication protocol requested by server; consider upgrading MariaDB client",
            );
            return Err((Error::Fatal(r), next));
        }
        let caps = resp.capabilities & offered;
        let mariadb_caps = resp.mariadb_capabilities & server.client_mariadb_capabilities();
        let ip = peer.ip();
        let plugin = resp
            .auth_plugin
            .as_deref()
            .and_then(Plugin::from_name)
            .unwrap_or(Plugin::Native);
        let verdict = authenticate(
            shard,
            io,
            &resp.username,
            Some(plugin),
            resp.auth_response.clone(),
            &nonce,
            seq,
            Some(ip),
        )
        .await
        .map_err(|e| (e, 0))?;
        let (user, seq) = match verdict {
            Verdict::Accepted(user, seq) => (user, seq),
            Verdict::Denied(reply, next) => {
                let mut out = Vec::new();
                reply.encode(&mut out);
                io.queue(next, &out);
                let _ = io.flush(Some(Duration::from_secs(1))).await;
                let e = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "access denied");
                return Err((Error::ClientGone(e), 0));
            }
        };
        let auth = Authenticated { user };
        let next = seq.wrapping_add(1);
        if let Some(r) = tls_required(shard, Some(&auth.user), io.is_tls()) {
            return Err((Error::Fatal(r), next));
        }
        let schema = resp
            .database
            .as_deref()
            .filter(|d| !d.is_empty())
            .map(|d| String::from_utf8_lossy(d).into_owned());
        if let Some(db) = &schema {
            if let Err(reply) = shard.check_schema(auth.user.index, db).await {
                return Err((Error::Fatal(reply), next));
            }
        }
        // Counted last, so no failure after this point leaves the count behind.
        if let Err(limit) = shard.shared.admit_user(auth.user.index) {
            let r = Reply::user_connection_limit(&auth.user.name, limit);
            return Err((Error::Fatal(r), next));
        }
        let tracked = schema
            .as_deref()
            .filter(|_| shard.shared.server.default_trackers.schema)
            .map(str::as_bytes);
        let mut out = Vec::with_capacity(16);
        encode_login_ok(&mut out, status::AUTOCOMMIT, caps, tracked);
        let settings = shard.initial_settings(resp.collation, schema.map(Into::into), caps);
        io.queue(next, &out);
        Ok((auth.user, caps, mariadb_caps, resp.collation, settings))
    };
    let outcome =
        match glommio::timer::timeout(handshake_timeout, async { Ok(handshake.await) }).await {
            Ok(r) => r,
            Err(_) => Err((
                Error::ClientTimeout {
                    what: "during the handshake",
                },
                2,
            )),
        };
    let (user, caps, mariadb_caps, collation, settings) = match outcome {
        Ok(v) => v,
        Err((e, next)) => {
            shard.uncount_client(&io.ctl);
            if let (Some(reply), true) = (e.reply(), next != 0) {
                let mut out = Vec::new();
                reply.encode(&mut out);
                io.queue(next, &out);
                let _ = io.flush(Some(Duration::from_secs(1))).await;
            }
            return Err(e);
        }
    };
    if let Err(e) = io.flush(timeout).await {
        shard.shared.leave_user(user.index);
        return Err(e);
    }
    let backend = shard.pick_backend();
    let mut sess = Session::new(fd, conn_id, user, caps, collation, settings, backend);
    sess.mariadb_caps = mariadb_caps;
    sess.tls = io.tls.take();
    sess.last_active = shard.clock();
    Ok(sess)
}

/// The outcome of an authentication exchange that ran to its end.
enum Verdict {
    /// The user, and the sequence id of the last packet queued or read.
    Accepted(Rc<User>, u8),
    /// Refused (after the failure delay): the ERR to send and its sequence id.
    Denied(Reply, u8),
}

/// Runs the authentication exchange for `username` and checks what the client sends.
///
/// `client_plugin` is the plugin the client's `response` was computed with; `None` (COM_CHANGE_USER,
/// whose response used an old nonce) always switches. Known users get their own plugin; unknown
/// names get the decoy exchange their keyed hash picks ([`crate::auth::Decoys`]): the same
/// packets, the same checks against stand-in credentials, the same delay and the same ERR 1045,
/// so nothing on the wire says whether the name exists.
#[allow(clippy::too_many_arguments)]
async fn authenticate(
    shard: &Rc<Shard>,
    io: &mut ClientIo,
    username: &[u8],
    client_plugin: Option<Plugin>,
    mut response: Vec<u8>,
    nonce: &[u8],
    mut seq: u8,
    peer: Option<std::net::IpAddr>,
) -> Result<Verdict, Error> {
    let shared = &shard.shared;
    let user = shard.user(username);
    let exchange = match &user {
        Some(u) => u.credential.exchange(),
        None => shared.decoys.pick(shared.guard.name_hash(username)),
    };
    let plugin = exchange.plugin;
    if client_plugin != Some(plugin) {
        let mut out = Vec::with_capacity(64);
        AuthSwitch {
            plugin: plugin.name().to_vec(),
            data: nonce.to_vec(),
        }
        .encode(&mut out);
        io.queue(seq.wrapping_add(1), &out);
        io.flush(None).await?;
        let (s, p) = io.read_packet(4096, None).await?;
        seq = s;
        response = p.to_vec();
    }
    let credential = user
        .as_ref()
        .map(|u| &u.credential)
        .unwrap_or(&shared.decoys.stand_in);
    let mut ok = credential.verify(plugin, nonce, &response) && user.is_some();
    let mut fail_detail = None;
    if !ok && plugin == Plugin::CachingSha2 {
        // The scramble did not check out against a stored double hash. With a crypt credential
        // the fast path needs the cache a full authentication fills.
        if let Some(stage2) = user.as_ref().and_then(|u| shard.sha2_cached(u.index)) {
            ok = crate::codec::auth::sha2_verify(&stage2, nonce, &response);
        }
        if !ok && exchange.full_auth && !response.is_empty() {
            // Ask for the password itself, which the client sends only over TLS.
            seq = seq.wrapping_add(1);
            io.queue(seq, &[AUTH_MORE_DATA, SHA2_PERFORM_FULL_AUTH]);
            io.flush(None).await?;
            let (s, p) = io.read_packet(4096, None).await?;
            seq = s;
            if io.is_tls() {
                let clear = p.strip_suffix(&[0]).unwrap_or(&p);
                match &user {
                    Some(u) if u.credential.verify_clear(clear) => {
                        shard.sha2_cache_fill(u.index, crate::codec::auth::sha2_stage2(clear));
                        return Ok(Verdict::Accepted(u.clone(), seq));
                    }
                    Some(_) => {}
                    // The same work as checking a real crypt hash.
                    None => {
                        let _ = shared.decoys.stand_in_crypt.verify(clear);
                    }
                }
            } else {
                // The client asks for the server's RSA key (or gives up): sluice has none.
                fail_detail = Some(
                    "caching_sha2_password full authentication needs TLS (sluice does not do the RSA key exchange); \
                     connect once with TLS, after which logins use the fast path",
                );
            }
        }
    }
    match user {
        Some(user) if ok => {
            if plugin == Plugin::CachingSha2 && !response.is_empty() {
                // Fast-auth success, then the OK.
                seq = seq.wrapping_add(1);
                io.queue(seq, &[AUTH_MORE_DATA, SHA2_FAST_AUTH_OK]);
            }
            Ok(Verdict::Accepted(user, seq))
        }
        _ => {
            if let Some(ip) = peer {
                shard.note_auth_failure(ip);
            }
            sleep_at_least(Duration::from_millis(shared.live().auth_failure_delay_ms)).await;
            let host = peer.map(|ip| ip.to_string()).unwrap_or_default();
            let mut reply = Reply::access_denied(username, &host, !response.is_empty());
            if let Some(d) = fail_detail {
                reply.message = format!("{}: {d}", reply.message);
            }
            Ok(Verdict::Denied(reply, seq.wrapping_add(1)))
        }
    }
}

/// The ERR a plain-text connection gets when TLS is required (`tls.require`, or `user`'s
/// `require_tls`), as at login.
fn tls_required(shard: &Shard, user: Option<&User>, is_tls: bool) -> Option<Reply> {
    if is_tls {
        return None;
    }
    if shard.cfg().tls.require {
        return Some(Reply::new(
            3159,
            b"HY000",
            "Connections using insecure transport are prohibited (sluice: tls.require); connect with TLS",
        ));
    }
    let user = user?;
    user.require_tls.then(|| {
        Reply::new(
            3159,
            b"HY000",
            format!("sluice: user '{}' must connect with TLS", user.name),
        )
    })
}

/// COM_CHANGE_USER: authenticates as another user, under the login's rules (TLS requirements,
/// failed-login counting, the same answers for unknown users), and starts a fresh session state
/// under the new identity — which KILL permissions and the per-user limits follow at once.
pub(crate) async fn change_user(
    shard: &Rc<Shard>,
    sess: &mut Session,
    io: &mut ClientIo,
    payload: &[u8],
    seq: u8,
) -> super::session::CmdResult {
    let fail = |e: Error, s: u8| Failure::new(e, Some(s));
    let cu =
        ChangeUser::decode(payload, sess.caps).map_err(|e| fail(e.into(), seq.wrapping_add(1)))?;
    if let Some(r) = tls_required(shard, None, io.is_tls()) {
        return Err(fail(Error::Fatal(r), seq.wrapping_add(1)));
    }
    // The scramble of COM_CHANGE_USER is computed over a nonce the client already has; sluice
    // issues a fresh one with an auth switch, which every client library handles.
    let nonce = nonce();
    let peer = crate::net::peer_addr(&sess.fd).map(|a| a.ip());
    let verdict = authenticate(shard, io, &cu.username, None, Vec::new(), &nonce, seq, peer)
        .await
        .map_err(|e| fail(e, seq.wrapping_add(2)))?;
    let (user, s) = match verdict {
        Verdict::Accepted(user, s) => (user, s),
        Verdict::Denied(reply, next) => return Err(fail(Error::Fatal(reply), next)),
    };
    let next = s.wrapping_add(1);
    if let Some(r) = tls_required(shard, Some(&user), io.is_tls()) {
        return Err(fail(Error::Fatal(r), next));
    }
    // Drop everything the old identity had: its backend goes back reset.
    if let Some(mut lease) = sess.lease.take() {
        if lease.conn().reset(shard.fresh.clone()).await.is_ok() {
            lease.release();
        }
    }
    let schema =
        (!cu.database.is_empty()).then(|| String::from_utf8_lossy(&cu.database).into_owned());
    if let Some(db) = &schema {
        if let Err(reply) = shard.check_schema(user.index, db).await {
            return Err(Failure::new(Error::Refused(reply), Some(next)));
        }
    }
    if user.index != sess.user.index {
        if let Err(limit) = shard.shared.admit_user(user.index) {
            let r = Reply::user_connection_limit(&user.name, limit);
            return Err(Failure::new(Error::Fatal(r), Some(next)));
        }
        shard.shared.leave_user(sess.user.index);
    }
    // The session is active now, and its control block was filled when it became so: KILL
    // permissions and KILL's backend account must follow the new user from this moment.
    io.ctl.user.set(user.id);
    io.ctl.pool_user.set(user.index);
    let collation = cu.collation.map(|c| c as u8).unwrap_or(sess.collation);
    sess.user = user;
    sess.collation = collation;
    let mut out = Vec::with_capacity(16);
    let tracked = schema
        .as_deref()
        .filter(|_| shard.shared.server.default_trackers.schema)
        .map(str::as_bytes);
    encode_login_ok(&mut out, status::AUTOCOMMIT, sess.caps, tracked);
    sess.settings = shard.initial_settings(collation, schema.map(Into::into), sess.caps);
    sess.status = status::AUTOCOMMIT;
    io.queue(next, &out);
    io.flush(None).await.map_err(|e| fail(e, next))?;
    Ok(super::session::Flow::Continue)
}

/// Sleeps for at least `d`: a timer may fire a little early (its wheel's granularity), and the
/// failed-login delay is a promise (every failure answers after it, none sooner).
async fn sleep_at_least(d: Duration) {
    let until = std::time::Instant::now() + d;
    loop {
        let now = std::time::Instant::now();
        if now >= until {
            return;
        }
        glommio::timer::sleep(until - now).await;
    }
}
