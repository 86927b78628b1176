//! The client side of one MySQL connection as a pure state machine over byte buffers: greeting →
//! login (the codec's [`Login`], which handles auth switches and the caching_sha2 fast path) →
//! ready → one COM_QUERY response at a time. No I/O: the worker feeds received bytes in and sends
//! what comes out. Every server byte is untrusted; malformed input is a [`Failure`], never a panic.

use sluice::codec::caps::cap;
use sluice::codec::command::{com, encode_query, ResponseKind};
use sluice::codec::frame::{encode_packet, scan_packet, FrameHeader, Scan, HEADER_LEN, MAX_FRAME};
use sluice::codec::handshake::Handshake;
use sluice::codec::login::{Login, LoginError, LoginParams, LoginStep, BASE_CAPABILITIES};
use sluice::codec::packets::{ErrPacket, ERR};
use sluice::codec::response::{ResponseTracker, Role};
use std::borrow::Cow;

/// No response of the generator's statements comes near this; anything larger is hostile.
const MAX_PAYLOAD: usize = 64 << 20;
/// Login packets are small (a greeting is ~100 bytes); a larger one is refused at once instead
/// of being buffered.
const MAX_LOGIN_PAYLOAD: usize = 64 << 10;

/// Where in a connection's life something went wrong (for error kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Login,
    Idle,
    Query,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Login => "login",
            Phase::Idle => "idle",
            Phase::Query => "query",
        }
    }
}

/// Why a connection or an operation failed. [`Failure::kind`] is the key errors are counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server refused the TCP connection.
    Refused,
    /// The TCP handshake did not complete in time.
    ConnectTimeout,
    /// Connected, but the greeting/login did not finish in time.
    LoginTimeout,
    /// A statement got no complete answer in time.
    QueryTimeout,
    /// A socket error (errno) in a phase.
    Io { errno: i32, phase: Phase },
    /// The server closed the connection (EOF or reset) when it should not have.
    Closed { phase: Phase },
    /// The server refused the login (ERR in place of the greeting or after the auth response).
    Auth { code: u16, message: String },
    /// The server asks for an authentication this client can't do.
    Unsupported(String),
    /// A statement returned ERR.
    Query { code: u16, message: String },
    /// The server sent ERR to an idle connection (MySQL 8 does before closing it).
    IdleError { code: u16, message: String },
    /// The server sent something that is not valid MySQL protocol here.
    Protocol { phase: Phase, what: String },
    /// No source (address, port) could be bound.
    NoSourceAddress(i32),
}

impl Failure {
    pub fn kind(&self) -> String {
        match self {
            Failure::Refused => "connect_refused".into(),
            Failure::ConnectTimeout => "connect_timeout".into(),
            Failure::LoginTimeout => "login_timeout".into(),
            Failure::QueryTimeout => "query_timeout".into(),
            Failure::Io { errno, phase } => {
                if *errno == libc::ECONNRESET || *errno == libc::EPIPE {
                    format!("unexpected_close_{}", phase.name())
                } else {
                    format!("{}_error_{}", phase.name(), crate::sys::errno_name(*errno))
                }
            }
            Failure::Closed { phase } => format!("unexpected_close_{}", phase.name()),
            Failure::Auth { code, .. } => format!("auth_error_{code}"),
            Failure::Unsupported(_) => "auth_unsupported".into(),
            Failure::Query { code, .. } => format!("query_error_{code}"),
            Failure::IdleError { code, .. } => format!("idle_error_{code}"),
            Failure::Protocol { phase, .. } => format!("protocol_{}", phase.name()),
            Failure::NoSourceAddress(_) => "no_source_address".into(),
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Refused => "connection refused".into(),
            Failure::ConnectTimeout => "TCP connect did not complete in time".into(),
            Failure::LoginTimeout => "connected, but greeting/login did not finish in time".into(),
            Failure::QueryTimeout => "no complete response in time".into(),
            Failure::Io { errno, phase } => format!(
                "{} during {}: {}",
                crate::sys::errno_name(*errno),
                phase.name(),
                std::io::Error::from_raw_os_error(*errno)
            ),
            Failure::Closed { phase } => {
                format!("server closed the connection during {}", phase.name())
            }
            Failure::Auth { code, message } => format!("login refused: ERROR {code}: {message}"),
            Failure::Unsupported(s) => s.clone(),
            Failure::Query { code, message } => format!("ERROR {code}: {message}"),
            Failure::IdleError { code, message } => format!("while idle: ERROR {code}: {message}"),
            Failure::Protocol { phase, what } => {
                format!("protocol error during {}: {what}", phase.name())
            }
            Failure::NoSourceAddress(e) => format!(
                "no free source (address, port) in this worker's range (last: {})",
                crate::sys::errno_name(*e)
            ),
        }
    }
}

/// What to log in with, shared by all connections of a worker.
#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub params: LoginParams,
    /// The plugin to answer the greeting with, whatever the server proposes (the server may
    /// still switch); `None` follows the server's proposal.
    pub plugin: Option<Vec<u8>>,
}

impl LoginConfig {
    pub fn new(
        user: &str,
        password: &str,
        database: Option<&str>,
        plugin: Option<&[u8]>,
        deprecate_eof: bool,
    ) -> LoginConfig {
        let mut caps = BASE_CAPABILITIES;
        if deprecate_eof {
            caps |= cap::DEPRECATE_EOF;
        }
        LoginConfig {
            params: LoginParams {
                user: user.as_bytes().to_vec(),
                password: password.as_bytes().to_vec(),
                database: database.map(|d| d.as_bytes().to_vec()),
                collation: 45, // utf8mb4_general_ci
                capabilities: caps,
                mariadb_capabilities: 0,
                attributes: vec![(b"_client_name".to_vec(), b"sluice-load".to_vec())],
                secure_transport: false,
            },
            plugin: plugin.map(<[u8]>::to_vec),
        }
    }
}

/// What [`Proto::on_data`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// More bytes are needed.
    Pending,
    /// Logged in.
    LoggedIn,
    /// The response to the statement is complete (`Err` carries the server's ERR).
    Response(Result<(), Failure>),
}

enum State {
    Greeting,
    Auth(Box<Login>),
    Ready,
    Response {
        tracker: ResponseTracker,
        err: Option<Failure>,
    },
}

pub struct Proto {
    state: State,
    /// Sequence id of the next packet we send.
    seq: u8,
    caps: u32,
    plugin: &'static str,
}

impl Default for Proto {
    fn default() -> Self {
        Proto::new()
    }
}

impl Proto {
    pub fn new() -> Proto {
        Proto {
            state: State::Greeting,
            seq: 0,
            caps: 0,
            plugin: "",
        }
    }

    /// The authentication plugin the login ended with.
    pub fn plugin(&self) -> &'static str {
        self.plugin
    }

    /// The connection negotiated CLIENT_DEPRECATE_EOF (valid after login).
    pub fn deprecate_eof(&self) -> bool {
        self.caps & cap::DEPRECATE_EOF != 0
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready)
    }

    fn phase(&self) -> Phase {
        match self.state {
            State::Greeting | State::Auth(_) => Phase::Login,
            State::Ready => Phase::Idle,
            State::Response { .. } => Phase::Query,
        }
    }

    /// Consumes every whole packet at the front of `rbuf` and appends what to send to `out`.
    pub fn on_data(
        &mut self,
        rbuf: &mut Vec<u8>,
        login: &LoginConfig,
        out: &mut Vec<u8>,
    ) -> Result<Event, Failure> {
        let mut pos = 0;
        let mut event = Event::Pending;
        let result = loop {
            let max = match self.state {
                State::Greeting | State::Auth(_) => MAX_LOGIN_PAYLOAD,
                _ => MAX_PAYLOAD,
            };
            let (payload, first_len, last_seq, wire) = match next_packet(&rbuf[pos..], max) {
                Ok(Some(p)) => p,
                Ok(None) => break Ok(()),
                Err(what) => break Err(what),
            };
            if event != Event::Pending {
                break Err("data after the end of a response".to_string());
            }
            pos += wire;
            match self.on_packet(&payload, first_len, last_seq, login, out) {
                Ok(ev) => event = ev,
                Err(f) => {
                    rbuf.clear();
                    return Err(f);
                }
            }
        };
        rbuf.drain(..pos);
        match result {
            Ok(()) => Ok(event),
            Err(what) => {
                rbuf.clear();
                Err(Failure::Protocol {
                    phase: self.phase(),
                    what,
                })
            }
        }
    }

    fn on_packet(
        &mut self,
        payload: &[u8],
        first_len: usize,
        last_seq: u8,
        login: &LoginConfig,
        out: &mut Vec<u8>,
    ) -> Result<Event, Failure> {
        let protocol = |phase, e: String| Failure::Protocol { phase, what: e };
        match &mut self.state {
            State::Greeting => {
                if payload.first() == Some(&ERR) {
                    let e = ErrPacket::decode(payload)
                        .map_err(|e| protocol(Phase::Login, e.to_string()))?;
                    return Err(Failure::Auth {
                        code: e.code,
                        message: String::from_utf8_lossy(e.message).into_owned(),
                    });
                }
                let mut greeting = Handshake::decode(payload)
                    .map_err(|e| protocol(Phase::Login, format!("greeting: {e}")))?;
                if let Some(p) = &login.plugin {
                    greeting.auth_plugin = p.clone();
                }
                let mut l = Box::new(Login::new(login.params.clone()));
                let resp = l.respond(&greeting).map_err(login_failure)?;
                self.seq = encode_packet(out, last_seq.wrapping_add(1), &resp);
                self.caps = l.capabilities();
                self.state = State::Auth(l);
                Ok(Event::Pending)
            }
            State::Auth(l) => match l.on_packet(payload).map_err(login_failure)? {
                LoginStep::Send(v) => {
                    if !v.is_empty() {
                        self.seq = encode_packet(out, last_seq.wrapping_add(1), &v);
                    }
                    Ok(Event::Pending)
                }
                LoginStep::Done { .. } => {
                    self.plugin = plugin_name(l.plugin());
                    self.state = State::Ready;
                    Ok(Event::LoggedIn)
                }
            },
            State::Ready => Err(protocol(
                Phase::Idle,
                format!(
                    "unsolicited packet (first byte {:#04x}, {} bytes)",
                    payload.first().copied().unwrap_or(0),
                    payload.len()
                ),
            )),
            State::Response { tracker, err } => {
                let role = tracker
                    .on_packet(first_len, payload)
                    .map_err(|e| protocol(Phase::Query, e.to_string()))?;
                match role {
                    Role::Err => {
                        let e = ErrPacket::decode(payload)
                            .map_err(|e| protocol(Phase::Query, e.to_string()))?;
                        *err = Some(Failure::Query {
                            code: e.code,
                            message: String::from_utf8_lossy(e.message).into_owned(),
                        });
                    }
                    Role::LocalInfile => {
                        return Err(protocol(
                            Phase::Query,
                            "server asks for LOCAL INFILE data".into(),
                        ))
                    }
                    _ => {}
                }
                if tracker.is_done() {
                    let err = err.take();
                    self.state = State::Ready;
                    Ok(Event::Response(err.map_or(Ok(()), Err)))
                } else {
                    Ok(Event::Pending)
                }
            }
        }
    }

    /// Appends a COM_QUERY for `sql` to `out`; the connection must be ready.
    pub fn query(&mut self, sql: &[u8], out: &mut Vec<u8>) {
        debug_assert!(self.is_ready());
        let mut payload = Vec::with_capacity(1 + sql.len());
        encode_query(&mut payload, sql);
        encode_packet(out, 0, &payload);
        self.seq = 1;
        self.state = State::Response {
            tracker: ResponseTracker::new(ResponseKind::Query, self.caps & cap::DEPRECATE_EOF != 0),
            err: None,
        };
    }
}

/// The COM_QUIT packet.
pub fn quit_packet() -> [u8; 5] {
    [1, 0, 0, 0, com::QUIT]
}

fn plugin_name(p: &[u8]) -> &'static str {
    match p {
        b"mysql_native_password" => "mysql_native_password",
        b"caching_sha2_password" => "caching_sha2_password",
        b"mysql_clear_password" => "mysql_clear_password",
        _ => "other",
    }
}

fn login_failure(e: LoginError) -> Failure {
    match e {
        LoginError::Server { code, message, .. } => Failure::Auth { code, message },
        LoginError::Protocol(e) => Failure::Protocol {
            phase: Phase::Login,
            what: e.to_string(),
        },
        LoginError::Unsupported(s) => Failure::Unsupported(s),
    }
}

/// The next whole packet at the front of `buf`: payload (reassembled if it spans frames), the
/// first frame's length, the last frame's sequence id, and the bytes it occupies.
#[allow(clippy::type_complexity)]
fn next_packet(
    buf: &[u8],
    max: usize,
) -> Result<Option<(Cow<'_, [u8]>, usize, u8, usize)>, String> {
    match scan_packet(buf, max).map_err(|e| e.to_string())? {
        Scan::Incomplete { .. } => Ok(None),
        Scan::Complete(span) => {
            if span.frames == 1 {
                let payload = &buf[HEADER_LEN..span.wire_len];
                Ok(Some((
                    Cow::Borrowed(payload),
                    payload.len(),
                    span.last_seq,
                    span.wire_len,
                )))
            } else {
                let mut out = Vec::with_capacity(span.payload_len);
                let mut rest = &buf[..span.wire_len];
                while let Some(h) = FrameHeader::parse(rest) {
                    out.extend_from_slice(&rest[HEADER_LEN..HEADER_LEN + h.len]);
                    rest = &rest[HEADER_LEN + h.len..];
                }
                Ok(Some((
                    Cow::Owned(out),
                    MAX_FRAME,
                    span.last_seq,
                    span.wire_len,
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice::codec::auth::{native_stage2, native_verify, AuthSwitch};
    use sluice::codec::handshake::HandshakeResponse;
    use sluice::codec::packets::{encode_ok, EofPacket};
    use sluice::codec::wire::put_lenenc_bytes;

    fn greeting(plugin: &[u8]) -> Vec<u8> {
        let g = Handshake {
            server_version: b"5.5.5-10.11.6-MariaDB".to_vec(),
            connection_id: 7,
            nonce: b"abcdefghijklmnopqrst".to_vec(),
            capabilities: 0xf7fe_f7ff & !cap::LONG_PASSWORD,
            collation: 45,
            status: 2,
            mariadb_capabilities: 0,
            auth_plugin: plugin.to_vec(),
        };
        let mut p = Vec::new();
        g.encode(&mut p);
        let mut w = Vec::new();
        encode_packet(&mut w, 0, &p);
        w
    }

    fn frame(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut w = Vec::new();
        encode_packet(&mut w, seq, payload);
        w
    }

    fn ok(seq: u8) -> Vec<u8> {
        let mut p = Vec::new();
        encode_ok(&mut p, 2, 0);
        frame(seq, &p)
    }

    fn login_cfg(eof: bool) -> LoginConfig {
        LoginConfig::new("app", "pw", Some("app"), None, eof)
    }

    fn logged_in(eof: bool) -> Proto {
        let cfg = login_cfg(eof);
        let mut p = Proto::new();
        let mut out = Vec::new();
        let mut rbuf = greeting(b"mysql_native_password");
        assert_eq!(
            p.on_data(&mut rbuf, &cfg, &mut out).unwrap(),
            Event::Pending
        );
        let mut rbuf = ok(2);
        assert_eq!(
            p.on_data(&mut rbuf, &cfg, &mut out).unwrap(),
            Event::LoggedIn
        );
        p
    }

    #[test]
    fn native_login_sends_a_valid_scramble() {
        let cfg = login_cfg(false);
        let mut p = Proto::new();
        let mut out = Vec::new();
        let mut rbuf = greeting(b"mysql_native_password");
        assert_eq!(
            p.on_data(&mut rbuf, &cfg, &mut out).unwrap(),
            Event::Pending
        );
        assert!(rbuf.is_empty());
        let h = FrameHeader::parse(&out).unwrap();
        assert_eq!(h.seq, 1);
        let resp = HandshakeResponse::decode(&out[4..]).unwrap();
        assert_eq!(resp.username, b"app");
        assert_eq!(resp.database.as_deref(), Some(&b"app"[..]));
        assert!(native_verify(
            &native_stage2(b"pw"),
            b"abcdefghijklmnopqrst",
            &resp.auth_response
        ));
        let mut rbuf = ok(2);
        assert_eq!(
            p.on_data(&mut rbuf, &cfg, &mut out).unwrap(),
            Event::LoggedIn
        );
        assert_eq!(p.plugin(), "mysql_native_password");
        assert!(p.is_ready());
    }

    #[test]
    fn caching_sha2_fast_path_and_auth_switch() {
        // The server proposes caching_sha2: fast-auth-ok, then OK.
        let cfg = login_cfg(false);
        let mut p = Proto::new();
        let mut out = Vec::new();
        let mut rbuf = greeting(b"caching_sha2_password");
        p.on_data(&mut rbuf, &cfg, &mut out).unwrap();
        let mut rbuf = frame(2, &[1, 3]);
        rbuf.extend(ok(3));
        out.clear();
        assert_eq!(
            p.on_data(&mut rbuf, &cfg, &mut out).unwrap(),
            Event::LoggedIn
        );
        assert!(out.is_empty());
        assert_eq!(p.plugin(), "caching_sha2_password");

        // Preferring native, the server switches us to caching_sha2 with a new nonce.
        let cfg = LoginConfig::new("app", "pw", None, Some(b"mysql_native_password"), false);
        let mut p = Proto::new();
        let mut rbuf = greeting(b"caching_sha2_password");
        let mut out = Vec::new();
        p.on_data(&mut rbuf, &cfg, &mut out).unwrap();
        let resp = HandshakeResponse::decode(&out[4..]).unwrap();
        assert_eq!(
            resp.auth_plugin.as_deref(),
            Some(&b"mysql_native_password"[..])
        );
        let mut sw = Vec::new();
        AuthSwitch {
            plugin: b"caching_sha2_password".to_vec(),
            data: b"01234567890123456789".to_vec(),
        }
        .encode(&mut sw);
        let mut rbuf = frame(2, &sw);
        out.clear();
        assert_eq!(
            p.on_data(&mut rbuf, &cfg, &mut out).unwrap(),
            Event::Pending
        );
        assert_eq!(FrameHeader::parse(&out).unwrap().seq, 3);
        assert_eq!(out.len(), 4 + 32);
    }

    #[test]
    fn login_errors_are_classified() {
        let cfg = login_cfg(false);
        // ERR in place of the greeting (e.g. too many connections).
        let mut p = Proto::new();
        let mut rbuf = frame(
            0,
            &[&[0xff, 0x10, 0x04][..], b"#08004Too many connections"].concat(),
        );
        let f = p.on_data(&mut rbuf, &cfg, &mut Vec::new()).unwrap_err();
        assert_eq!(f.kind(), "auth_error_1040");
        // Access denied after the auth response.
        let mut p = Proto::new();
        let mut out = Vec::new();
        p.on_data(&mut greeting(b"mysql_native_password"), &cfg, &mut out)
            .unwrap();
        let mut rbuf = frame(
            2,
            &[&[0xff, 0x15, 0x04][..], b"#28000Access denied"].concat(),
        );
        let f = p.on_data(&mut rbuf, &cfg, &mut out).unwrap_err();
        assert_eq!(f.kind(), "auth_error_1045");
        assert!(f.message().contains("Access denied"));
        // Garbage greeting.
        let mut p = Proto::new();
        let f = p
            .on_data(&mut frame(0, b"\x09junk"), &cfg, &mut out)
            .unwrap_err();
        assert_eq!(f.kind(), "protocol_login");
        // A greeting announcing 16 MiB is refused from its header.
        let mut p = Proto::new();
        let f = p
            .on_data(&mut vec![0xff, 0xff, 0xff, 0, b'x'], &cfg, &mut out)
            .unwrap_err();
        assert_eq!(f.kind(), "protocol_login");
    }

    fn result_set(eof: bool) -> Vec<u8> {
        let mut w = Vec::new();
        let mut seq = 1;
        let mut push = |p: &[u8]| {
            encode_packet(&mut w, seq, p);
            seq += 1;
        };
        push(&[1]); // one column
        let mut def = Vec::new();
        for s in [
            &b"def"[..],
            b"app",
            b"sluice_load",
            b"sluice_load",
            b"v",
            b"v",
        ] {
            put_lenenc_bytes(&mut def, s);
        }
        def.extend_from_slice(&[0x0c, 45, 0, 0, 1, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
        push(&def);
        let mut eofp = Vec::new();
        EofPacket {
            warnings: 0,
            status: 2,
        }
        .encode(&mut eofp);
        if !eof {
            push(&eofp);
        }
        let mut row = Vec::new();
        put_lenenc_bytes(&mut row, b"value-42");
        push(&row);
        if eof {
            let mut okp = Vec::new();
            OkPacketLike::encode(&mut okp);
            push(&okp);
        } else {
            push(&eofp);
        }
        w
    }

    /// An OK-shaped terminator (header 0xFE) as sent under DEPRECATE_EOF.
    struct OkPacketLike;
    impl OkPacketLike {
        fn encode(out: &mut Vec<u8>) {
            out.extend_from_slice(&[0xfe, 0, 0, 2, 0, 0, 0]);
        }
    }

    #[test]
    fn query_responses_complete_byte_by_byte() {
        for eof in [false, true] {
            let cfg = login_cfg(eof);
            let mut p = logged_in(eof);
            let mut out = Vec::new();
            p.query(b"SELECT v FROM sluice_load WHERE id = 42", &mut out);
            assert_eq!(out[4], com::QUERY);
            assert_eq!(FrameHeader::parse(&out).unwrap().seq, 0);
            let wire = result_set(eof);
            let mut rbuf = Vec::new();
            for (i, b) in wire.iter().enumerate() {
                rbuf.push(*b);
                let ev = p.on_data(&mut rbuf, &cfg, &mut out).unwrap();
                if i + 1 < wire.len() {
                    assert_eq!(ev, Event::Pending, "eof={eof} byte {i}");
                } else {
                    assert_eq!(ev, Event::Response(Ok(())));
                }
            }
            assert!(rbuf.is_empty());
            assert!(p.is_ready());
        }
    }

    #[test]
    fn query_errors_and_protocol_violations() {
        let cfg = login_cfg(false);
        let mut p = logged_in(false);
        let mut out = Vec::new();
        p.query(b"SELECT nope", &mut out);
        let mut rbuf = frame(
            1,
            &[&[0xff, 0x7a, 0x04][..], b"#42S02Table doesn't exist"].concat(),
        );
        let ev = p.on_data(&mut rbuf, &cfg, &mut out).unwrap();
        let Event::Response(Err(f)) = ev else {
            panic!("{ev:?}")
        };
        assert_eq!(f.kind(), "query_error_1146");
        // Still usable.
        p.query(b"SELECT 1", &mut out);
        let mut rbuf = ok(1);
        assert_eq!(
            p.on_data(&mut rbuf, &cfg, &mut out).unwrap(),
            Event::Response(Ok(()))
        );
        // A packet while idle is a protocol error.
        let f = p.on_data(&mut ok(0), &cfg, &mut out).unwrap_err();
        assert_eq!(f.kind(), "protocol_idle");
        // Two responses for one statement.
        let mut p = logged_in(false);
        p.query(b"SELECT 1", &mut out);
        let mut rbuf = ok(1);
        rbuf.extend(ok(2));
        assert!(p.on_data(&mut rbuf, &cfg, &mut out).is_err());
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let cfg = login_cfg(true);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut p = Proto::new();
            let mut out = Vec::new();
            let mut bytes = greeting(b"mysql_native_password");
            // Corrupt the greeting or follow it with random packets.
            let n = (rnd() % 64) as usize;
            if rnd() % 2 == 0 {
                let i = (rnd() as usize) % bytes.len();
                bytes[i] = rnd() as u8;
            }
            for _ in 0..n {
                bytes.push(rnd() as u8);
            }
            let mut rbuf = bytes.clone();
            let _ = p.on_data(&mut rbuf, &cfg, &mut out);
            let mut p = logged_in(true);
            p.query(b"SELECT 1", &mut out);
            let mut rbuf: Vec<u8> = (0..n).map(|_| rnd() as u8).collect();
            if rbuf.len() > 4 {
                let l = rbuf.len() - 4;
                rbuf[0] = l as u8;
                rbuf[1] = 0;
                rbuf[2] = 0;
                rbuf[3] = 1;
            }
            let _ = p.on_data(&mut rbuf, &cfg, &mut out);
        }
    }
}
