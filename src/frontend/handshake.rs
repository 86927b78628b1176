//! The server side of the connection phase: sluice's greeting (carrying the backends' version
//! and capabilities), authentication against the configured users with a switch to each user's
//! plugin, and COM_CHANGE_USER.
//!
//! A wrong password and an unknown user take the same path and the same configured delay, and
//! get the same ERR 1045, so the answer tells an attacker nothing about which users exist.

use super::client::ClientIo;
use super::relay::Failure;
use super::session::{Session, User};
use crate::auth::Plugin;
use crate::codec::auth::{AuthSwitch, AUTH_MORE_DATA, SHA2_FAST_AUTH_OK, SHA2_PERFORM_FULL_AUTH};
use crate::codec::caps::{cap, status};
use crate::codec::command::ChangeUser;
use crate::codec::handshake::{is_ssl_request, Handshake, HandshakeResponse};
use crate::codec::packets::encode_ok;
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
    let cfg = &shard.shared.config;
    let handshake_timeout = Duration::from_millis(cfg.handshake_timeout_ms);
    let timeout = Some(handshake_timeout);
    let nonce = nonce();
    let server = &shard.shared.server;
    let tls = shard.shared.tls.clone();
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
        if shard.shared.config.tls.require && !io.is_tls() {
            let r = Reply::new(
                3159,
                b"HY000",
                "Connections using insecure transport are prohibited (sluice: tls.require); connect with TLS",
            );
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
        let (auth, seq) = authenticate(
            shard,
            io,
            &resp.username,
            plugin,
            resp.auth_response.clone(),
            &nonce,
            seq,
            ip,
        )
        .await
        .map_err(|e| (e, 0))?;
        let next = seq.wrapping_add(1);
        if shard.shared.users[auth.user.index as usize].require_tls && !io.is_tls() {
            let r = Reply::new(
                3159,
                b"HY000",
                format!("sluice: user '{}' must connect with TLS", auth.user.name),
            );
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
        let settings = shard.initial_settings(resp.collation, schema.map(Into::into));
        let mut out = Vec::with_capacity(16);
        encode_ok(&mut out, status::AUTOCOMMIT, caps);
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

/// Checks the client's scramble, switching it to the user's plugin when it used another one.
/// Returns the user and the sequence id of the client's last packet.
#[allow(clippy::too_many_arguments)]
async fn authenticate(
    shard: &Rc<Shard>,
    io: &mut ClientIo,
    username: &[u8],
    client_plugin: Plugin,
    mut response: Vec<u8>,
    nonce: &[u8],
    mut seq: u8,
    peer: std::net::IpAddr,
) -> Result<(Authenticated, u8), Error> {
    let user = shard.user(username);
    // Unknown users go through the same exchange as known ones, against the default plugin.
    let plugin = user
        .as_ref()
        .map(|u| u.credential.plugin)
        .unwrap_or(Plugin::Native);
    if plugin != client_plugin {
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
    let mut ok = user
        .as_ref()
        .is_some_and(|u| u.credential.verify(plugin, nonce, &response));
    let mut fail_detail = None;
    if let (false, Some(u), Plugin::CachingSha2) = (ok, &user, plugin) {
        // The scramble did not check out against a stored double hash. With a crypt credential
        // the fast path needs the cache a full authentication fills; ask for the password
        // itself, which the client sends only over TLS.
        if let Some(stage2) = shard.sha2_cached(u.index) {
            ok = crate::codec::auth::sha2_verify(&stage2, nonce, &response);
        }
        if !ok && u.credential.crypt.is_some() && !response.is_empty() {
            seq = seq.wrapping_add(1);
            io.queue(seq, &[AUTH_MORE_DATA, SHA2_PERFORM_FULL_AUTH]);
            io.flush(None).await?;
            let (s, p) = io.read_packet(4096, None).await?;
            seq = s;
            if io.is_tls() {
                let clear = p.strip_suffix(&[0]).unwrap_or(&p);
                if u.credential.verify_clear(clear) {
                    shard.sha2_cache_fill(u.index, crate::codec::auth::sha2_stage2(clear));
                    return Ok((Authenticated { user: u.clone() }, seq));
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
    match (ok, user) {
        (true, Some(user)) => {
            if plugin == Plugin::CachingSha2 && !response.is_empty() {
                // Fast-auth success, then the OK.
                seq = seq.wrapping_add(1);
                io.queue(seq, &[AUTH_MORE_DATA, SHA2_FAST_AUTH_OK]);
            }
            Ok((Authenticated { user }, seq))
        }
        _ => {
            shard.note_auth_failure(peer);
            glommio::timer::sleep(Duration::from_millis(
                shard.shared.config.auth_failure_delay_ms,
            ))
            .await;
            let mut reply = Reply::access_denied(username, &peer.to_string(), !response.is_empty());
            if let Some(d) = fail_detail {
                reply.message = format!("{}: {d}", reply.message);
            }
            let mut out = Vec::new();
            reply.encode(&mut out);
            io.queue(seq.wrapping_add(1), &out);
            let _ = io.flush(Some(Duration::from_secs(1))).await;
            Err(Error::ClientGone(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "access denied",
            )))
        }
    }
}

/// COM_CHANGE_USER: authenticates as another configured user and starts a fresh session state.
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
    // The scramble of COM_CHANGE_USER is computed over a nonce the client already has; sluice
    // issues a fresh one with an auth switch, which every client library handles.
    let nonce = nonce();
    let user = shard.user(&cu.username);
    let plugin = user
        .as_ref()
        .map(|u| u.credential.plugin)
        .unwrap_or(Plugin::Native);
    let mut out = Vec::with_capacity(64);
    AuthSwitch {
        plugin: plugin.name().to_vec(),
        data: nonce.to_vec(),
    }
    .encode(&mut out);
    io.queue(seq.wrapping_add(1), &out);
    io.flush(None)
        .await
        .map_err(|e| fail(e, seq.wrapping_add(1)))?;
    let (s, p) = io
        .read_packet(4096, None)
        .await
        .map_err(|e| fail(e, seq.wrapping_add(2)))?;
    let ok = user
        .as_ref()
        .is_some_and(|u| u.credential.verify(plugin, &nonce, &p));
    let mut next = s.wrapping_add(1);
    let Some(user) = user.filter(|_| ok) else {
        if let Some(a) = crate::net::peer_addr(&sess.fd) {
            shard.note_auth_failure(a.ip());
        }
        glommio::timer::sleep(Duration::from_millis(
            shard.shared.config.auth_failure_delay_ms,
        ))
        .await;
        let host = crate::net::peer_addr(&sess.fd)
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        return Err(Failure::new(
            Error::Fatal(Reply::access_denied(&cu.username, &host, !p.is_empty())),
            Some(next),
        ));
    };
    if plugin == Plugin::CachingSha2 && !p.is_empty() {
        io.queue(next, &[AUTH_MORE_DATA, SHA2_FAST_AUTH_OK]);
        next = next.wrapping_add(1);
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
    let collation = cu.collation.map(|c| c as u8).unwrap_or(sess.collation);
    sess.user = user;
    sess.collation = collation;
    sess.settings = shard.initial_settings(collation, schema.map(Into::into));
    sess.status = status::AUTOCOMMIT;
    let mut out = Vec::with_capacity(16);
    encode_ok(&mut out, sess.status, sess.caps);
    io.queue(next, &out);
    io.flush(None).await.map_err(|e| fail(e, next))?;
    Ok(super::session::Flow::Continue)
}
