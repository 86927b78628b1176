//! A raw, blocking MySQL protocol client on a std `TcpStream`, built on sluice's codec: it logs in
//! with the codec's [`Login`] machine, sends any command as bytes, and hands back every packet of
//! the response with the role the codec's [`ResponseTracker`] gives it. It interprets nothing
//! else: recording and normalizing are [`crate::record`]'s job.

use sluice::codec::caps::cap;
use sluice::codec::command::{com, ChangeUser, ResponseKind};
use sluice::codec::frame::{encode_packet, scan_packet, FrameHeader, Scan, HEADER_LEN, MAX_FRAME};
use sluice::codec::handshake::Handshake;
use sluice::codec::login::{Login, LoginError, LoginParams, LoginStep, BASE_CAPABILITIES};
use sluice::codec::packets::{ERR, OK};
use sluice::codec::response::{ResponseTracker, Role};
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// No response the corpus provokes comes near this; a larger announced packet is a broken peer.
const MAX_PAYLOAD: usize = 64 << 20;
/// A response has at most this many packets (the corpus's largest results are a few hundred rows):
/// a peer that never ends a response is cut off instead of filling memory.
const MAX_PACKETS: usize = 100_000;

/// Why the client could not go on. Every one of them ends the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// No answer within the read timeout.
    Timeout,
    /// The peer closed the connection.
    Closed,
    /// A socket error.
    Io(String),
    /// The peer sent something that is not valid protocol here.
    Protocol(String),
    /// The login was refused or could not be done.
    Login(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Timeout => f.write_str("timed out waiting for the server"),
            ClientError::Closed => f.write_str("connection closed by the server"),
            ClientError::Io(e) => write!(f, "socket error: {e}"),
            ClientError::Protocol(e) => write!(f, "protocol error: {e}"),
            ClientError::Login(e) => write!(f, "login failed: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

fn io_error(e: std::io::Error) -> ClientError {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout,
        std::io::ErrorKind::UnexpectedEof
        | std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::ConnectionAborted
        | std::io::ErrorKind::BrokenPipe => ClientError::Closed,
        _ => ClientError::Io(e.to_string()),
    }
}

/// One whole (reassembled) packet as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawPacket {
    /// Sequence id of its (last) frame.
    pub seq: u8,
    pub payload: Vec<u8>,
}

/// What a packet of a response is, as far as the client is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketRole {
    /// A role from the codec's response tracker.
    Tracked(Role),
    /// An authentication switch request during COM_CHANGE_USER.
    AuthSwitch,
    /// More authentication data during COM_CHANGE_USER.
    AuthMoreData,
    /// The OK/ERR that ends a COM_CHANGE_USER.
    AuthResult,
}

/// The capabilities a session asks for, on top of the codec's base set.
pub fn session_capabilities(deprecate_eof: bool, session_track: bool) -> u32 {
    let mut c =
        BASE_CAPABILITIES | cap::MULTI_STATEMENTS | cap::MULTI_RESULTS | cap::PS_MULTI_RESULTS;
    if deprecate_eof {
        c |= cap::DEPRECATE_EOF;
    }
    if session_track {
        c |= cap::SESSION_TRACK;
    }
    c
}

/// Credentials and the schema to log in with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// A logged-in connection.
pub struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Capabilities in force (what we asked for AND what the server offered).
    pub caps: u32,
    pub greeting: Handshake,
    /// The answer that ended the login (OK).
    pub login_ok: RawPacket,
    plugin: Vec<u8>,
    creds: Credentials,
}

impl Conn {
    /// Connects to `addr` and logs in. `timeout` bounds the connect and every later read/write.
    pub fn connect(
        addr: &str,
        creds: &Credentials,
        schema: Option<&str>,
        capabilities: u32,
        timeout: Duration,
    ) -> Result<Conn, ClientError> {
        let sa = addr
            .to_socket_addrs()
            .map_err(|e| ClientError::Io(format!("resolve {addr}: {e}")))?
            .next()
            .ok_or_else(|| ClientError::Io(format!("no address for {addr}")))?;
        let stream = TcpStream::connect_timeout(&sa, timeout).map_err(io_error)?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
        let mut rbuf = Vec::new();
        let mut stream_ref = &stream;
        let g = read_packet(&mut stream_ref, &mut rbuf)?;
        if g.payload.first() == Some(&ERR) {
            return Err(ClientError::Login(describe_err(&g.payload)));
        }
        let greeting =
            Handshake::decode(&g.payload).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut login = Login::new(LoginParams {
            user: creds.user.as_bytes().to_vec(),
            password: creds.password.as_bytes().to_vec(),
            database: schema.map(|s| s.as_bytes().to_vec()),
            collation: 45, // utf8mb4_general_ci
            capabilities,
            ..LoginParams::default()
        });
        let resp = login.respond(&greeting).map_err(login_error)?;
        let mut out = Vec::new();
        encode_packet(&mut out, g.seq.wrapping_add(1), &resp);
        stream_ref.write_all(&out).map_err(io_error)?;
        // Bounded: a login is a handful of round trips.
        for _ in 0..8 {
            let p = read_packet(&mut stream_ref, &mut rbuf)?;
            match login.on_packet(&p.payload).map_err(login_error)? {
                LoginStep::Done { .. } => {
                    let caps = login.capabilities();
                    let plugin = login.plugin().to_vec();
                    return Ok(Conn {
                        stream,
                        rbuf,
                        caps,
                        greeting,
                        login_ok: p,
                        plugin,
                        creds: creds.clone(),
                    });
                }
                LoginStep::Send(v) if v.is_empty() => {}
                LoginStep::Send(v) => {
                    out.clear();
                    encode_packet(&mut out, p.seq.wrapping_add(1), &v);
                    stream_ref.write_all(&out).map_err(io_error)?;
                }
            }
        }
        Err(ClientError::Login(
            "login did not finish in 8 exchanges".into(),
        ))
    }

    pub fn deprecate_eof(&self) -> bool {
        self.caps & cap::DEPRECATE_EOF != 0
    }

    fn send(&mut self, payload: &[u8]) -> Result<(), ClientError> {
        let mut out = Vec::with_capacity(payload.len() + HEADER_LEN);
        encode_packet(&mut out, 0, payload);
        self.stream.write_all(&out).map_err(io_error)
    }

    fn read(&mut self) -> Result<RawPacket, ClientError> {
        let mut s = &self.stream;
        read_packet(&mut s, &mut self.rbuf)
    }

    /// Sends a command (sequence id 0) and reads its whole response, each packet with its role.
    /// Commands without a response return an empty list.
    pub fn command(
        &mut self,
        payload: &[u8],
        kind: ResponseKind,
    ) -> Result<Vec<(PacketRole, RawPacket)>, ClientError> {
        self.send(payload)?;
        let mut tracker = ResponseTracker::new(kind, self.deprecate_eof());
        let mut out = Vec::new();
        while !tracker.is_done() {
            if out.len() >= MAX_PACKETS {
                return Err(ClientError::Protocol(format!(
                    "response longer than {MAX_PACKETS} packets"
                )));
            }
            let p = self.read()?;
            let len = p.payload.len().min(MAX_FRAME);
            let role = tracker
                .on_packet(len, &p.payload)
                .map_err(|e| ClientError::Protocol(format!("{e} (packet {})", out.len())))?;
            if role == Role::LocalInfile {
                return Err(ClientError::Protocol(
                    "LOCAL INFILE request (the corpus never asks for one)".into(),
                ));
            }
            out.push((PacketRole::Tracked(role), p));
        }
        Ok(out)
    }

    /// COM_CHANGE_USER to the same user with `schema`; answers auth switches with the same
    /// password. Returns every packet of the exchange.
    pub fn change_user(
        &mut self,
        schema: Option<&str>,
    ) -> Result<Vec<(PacketRole, RawPacket)>, ClientError> {
        let params = LoginParams {
            user: self.creds.user.as_bytes().to_vec(),
            password: self.creds.password.as_bytes().to_vec(),
            database: schema.map(|s| s.as_bytes().to_vec()),
            collation: 45,
            capabilities: self.caps,
            ..LoginParams::default()
        };
        let (mut login, scramble) =
            Login::change_user(params, self.caps, &self.plugin, self.greeting.nonce.clone())
                .map_err(login_error)?;
        let cu = ChangeUser {
            username: self.creds.user.as_bytes().to_vec(),
            auth_response: scramble,
            database: schema.unwrap_or_default().as_bytes().to_vec(),
            collation: Some(45),
            auth_plugin: Some(self.plugin.clone()),
            attributes: Vec::new(),
        };
        let mut payload = Vec::new();
        cu.encode(&mut payload, self.caps);
        self.send(&payload)?;
        let mut out = Vec::new();
        for _ in 0..8 {
            let p = self.read()?;
            let first = p.payload.first().copied();
            if first == Some(ERR) {
                out.push((PacketRole::AuthResult, p));
                return Ok(out);
            }
            let role = match first {
                Some(OK) => PacketRole::AuthResult,
                Some(0xFE) => PacketRole::AuthSwitch,
                _ => PacketRole::AuthMoreData,
            };
            let step = login.on_packet(&p.payload);
            let seq = p.seq;
            out.push((role, p));
            match step {
                Ok(LoginStep::Done { .. }) => {
                    self.plugin = login.plugin().to_vec();
                    return Ok(out);
                }
                Ok(LoginStep::Send(v)) if v.is_empty() => {}
                Ok(LoginStep::Send(v)) => {
                    let mut w = Vec::new();
                    encode_packet(&mut w, seq.wrapping_add(1), &v);
                    self.stream.write_all(&w).map_err(io_error)?;
                }
                // A refusal arrives as ERR (handled above); anything else is a protocol problem.
                Err(e) => return Err(login_error(e)),
            }
        }
        Err(ClientError::Protocol(
            "COM_CHANGE_USER did not finish in 8 exchanges".into(),
        ))
    }

    /// Sends COM_QUIT and closes.
    pub fn quit(mut self) {
        let _ = self.send(&[com::QUIT]);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Runs a text query and returns its rows' fields (None for NULL), of every result set;
    /// an ERR becomes `Err(ClientError::Protocol("ERROR …"))`. For the tester's own chores
    /// (setup, PROCESSLIST polling), not for recorded steps.
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<Vec<u8>>>>, ClientError> {
        let mut payload = vec![com::QUERY];
        payload.extend_from_slice(sql.as_bytes());
        let packets = self.command(&payload, ResponseKind::Query)?;
        let mut rows = Vec::new();
        for (role, p) in packets {
            match role {
                PacketRole::Tracked(Role::Err) => {
                    return Err(ClientError::Protocol(format!(
                        "{} (from: {})",
                        describe_err(&p.payload),
                        sql.chars().take(120).collect::<String>()
                    )))
                }
                PacketRole::Tracked(Role::Row { .. }) => rows.push(
                    crate::record::text_fields(&p.payload)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?,
                ),
                _ => {}
            }
        }
        Ok(rows)
    }

    /// Changes the read timeout (the sidecar polls with short ones).
    pub fn set_timeout(&self, t: Duration) {
        let _ = self.stream.set_read_timeout(Some(t));
        let _ = self.stream.set_write_timeout(Some(t));
    }
}

fn login_error(e: LoginError) -> ClientError {
    ClientError::Login(e.to_string())
}

/// "ERROR code (state): message" for an ERR payload.
pub fn describe_err(payload: &[u8]) -> String {
    match sluice::codec::packets::ErrPacket::decode(payload) {
        Ok(e) => format!(
            "ERROR {} ({}): {}",
            e.code,
            String::from_utf8_lossy(&e.sql_state),
            String::from_utf8_lossy(e.message)
        ),
        Err(e) => format!("malformed ERR packet: {e}"),
    }
}

/// Reads one logical packet (reassembling continuation frames) from `s`, buffering in `rbuf`.
fn read_packet(s: &mut impl Read, rbuf: &mut Vec<u8>) -> Result<RawPacket, ClientError> {
    loop {
        match scan_packet(rbuf, MAX_PAYLOAD).map_err(|e| ClientError::Protocol(e.to_string()))? {
            Scan::Complete(span) => {
                let mut payload = Vec::with_capacity(span.payload_len);
                let mut rest = &rbuf[..span.wire_len];
                // Frames of a complete span are all present; each header is followed by its bytes.
                while let Some(h) = FrameHeader::parse(rest) {
                    let end = HEADER_LEN + h.len;
                    let Some(body) = rest.get(HEADER_LEN..end) else {
                        return Err(ClientError::Protocol(
                            "frame shorter than its header".into(),
                        ));
                    };
                    payload.extend_from_slice(body);
                    rest = &rest[end..];
                }
                rbuf.drain(..span.wire_len);
                return Ok(RawPacket {
                    seq: span.last_seq,
                    payload,
                });
            }
            Scan::Incomplete { .. } => {
                let mut chunk = [0u8; 65536];
                let n = s.read(&mut chunk).map_err(io_error)?;
                if n == 0 {
                    return Err(ClientError::Closed);
                }
                rbuf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reassembles_split_frames_and_reports_a_closed_peer() {
        let mut wire = Vec::new();
        encode_packet(&mut wire, 1, b"hello");
        let payload = vec![7u8; MAX_FRAME + 3];
        encode_packet(&mut wire, 2, &payload);
        let mut src = std::io::Cursor::new(wire);
        let mut rbuf = Vec::new();
        let a = read_packet(&mut src, &mut rbuf).unwrap();
        assert_eq!((a.seq, a.payload.as_slice()), (1, &b"hello"[..]));
        let b = read_packet(&mut src, &mut rbuf).unwrap();
        assert_eq!(b.seq, 3);
        assert_eq!(b.payload, payload);
        assert_eq!(read_packet(&mut src, &mut rbuf), Err(ClientError::Closed));
    }
}
