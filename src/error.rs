//! Errors with their origin (client, backend, proxy), and the one place that decides what a
//! client is told: a MySQL ERR packet with the right code and SQLSTATE.
//!
//! sluice's own conditions use codes in the 9000 range (documented in the README); conditions
//! MySQL already names use MySQL's code (1040 too many connections, 1045 access denied, 1153
//! packet too large, 2013 lost connection, …) so clients and tools recognise them.

use crate::codec::packets::ErrPacket;
use crate::codec::CodecError;
use std::fmt;
use std::io;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Backend,
    Proxy,
}

/// sluice-specific error codes.
pub mod code {
    /// No backend connection became available within the queue timeout.
    pub const POOL_TIMEOUT: u16 = 9001;
    /// A backend connection could not be opened.
    pub const BACKEND_UNAVAILABLE: u16 = 9002;
    /// A statement that would pin the session was refused (pin budget exhausted).
    pub const PIN_BUDGET: u16 = 9003;
    /// The session's transaction was lost with its backend; roll back to continue.
    pub const TRANSACTION_LOST: u16 = 9004;
}

/// What a client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub sql_state: [u8; 5],
    pub message: String,
}

impl Reply {
    pub fn new(code: u16, sql_state: &[u8; 5], message: impl Into<String>) -> Reply {
        Reply {
            code,
            sql_state: *sql_state,
            message: message.into(),
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        ErrPacket {
            code: self.code,
            sql_state: self.sql_state,
            message: self.message.as_bytes(),
        }
        .encode(out);
    }

    /// The ERR a server sends in place of its greeting (nothing negotiated yet: no SQLSTATE).
    pub fn encode_before_handshake(&self, out: &mut Vec<u8>) {
        out.push(crate::codec::packets::ERR);
        out.extend_from_slice(&self.code.to_le_bytes());
        out.extend_from_slice(self.message.as_bytes());
    }

    /// A login beyond `users[].max_connections`: MySQL's "too many connections" (1040, as for
    /// the global limit), naming the user and the limit.
    pub fn user_connection_limit(user: &str, limit: usize) -> Reply {
        Reply::new(
            1040,
            b"08004",
            format!(
                "Too many connections: user '{user}' already has {limit} (users[].max_connections)"
            ),
        )
    }

    pub fn access_denied(user: &[u8], host: &str, with_password: bool) -> Reply {
        Reply::new(
            1045,
            b"28000",
            format!(
                "Access denied for user '{}'@'{}' (using password: {})",
                String::from_utf8_lossy(user),
                host,
                if with_password { "YES" } else { "NO" }
            ),
        )
    }
}

#[derive(Debug)]
pub enum Error {
    /// The client's socket failed or closed; nothing can be sent to it.
    ClientGone(io::Error),
    /// The client sent a malformed packet.
    ClientProtocol(CodecError),
    /// The client announced a packet larger than `max_packet_size`.
    PacketTooLarge { limit: usize },
    /// The client did not send (or read) in time.
    ClientTimeout { what: &'static str },
    /// A backend connection failed while serving a command.
    BackendLost { backend: String, detail: String },
    /// A backend connection could not be opened.
    BackendConnect {
        backend: String,
        detail: String,
        /// Nothing listened there (certain evidence the server is not running).
        refused: bool,
    },
    /// No backend connection became available in time.
    PoolTimeout { waited_ms: u64 },
    /// sluice refuses the request (unsupported command, a limit); the session goes on.
    Refused(Reply),
    /// sluice refuses the request and closes the connection.
    Fatal(Reply),
    /// The proxy is shutting down.
    Shutdown,
}

impl Error {
    pub fn origin(&self) -> Origin {
        match self {
            Error::ClientGone(_)
            | Error::ClientProtocol(_)
            | Error::PacketTooLarge { .. }
            | Error::ClientTimeout { .. } => Origin::Client,
            Error::BackendLost { .. } | Error::BackendConnect { .. } => Origin::Backend,
            Error::PoolTimeout { .. } | Error::Refused(_) | Error::Fatal(_) | Error::Shutdown => {
                Origin::Proxy
            }
        }
    }

    /// The ERR packet for the client, or `None` when the client cannot be told anything.
    pub fn reply(&self) -> Option<Reply> {
        Some(match self {
            Error::ClientGone(_) => return None,
            Error::ClientProtocol(e) => {
                Reply::new(1835, b"HY000", format!("Malformed communication packet ({e})"))
            }
            Error::PacketTooLarge { limit } => Reply::new(
                1153,
                b"08S01",
                format!("Got a packet bigger than 'max_allowed_packet' bytes (sluice limit: {limit} bytes)"),
            ),
            Error::ClientTimeout { what } => {
                Reply::new(1159, b"08S01", format!("Got timeout {what}"))
            }
            Error::BackendLost { backend, detail } => Reply::new(
                2013,
                b"HY000",
                format!("Lost connection to backend {backend} during query ({detail})"),
            ),
            Error::BackendConnect {
                backend, detail, ..
            } => Reply::new(
                code::BACKEND_UNAVAILABLE,
                b"HY000",
                format!("sluice: cannot connect to backend {backend}: {detail}"),
            ),
            Error::PoolTimeout { waited_ms } => Reply::new(
                code::POOL_TIMEOUT,
                b"HY000",
                format!("sluice: no backend connection available within {waited_ms} ms"),
            ),
            Error::Refused(r) | Error::Fatal(r) => r.clone(),
            Error::Shutdown => Reply::new(1053, b"08S01", "Server shutdown in progress"),
        })
    }

    /// Does the client's connection end after this error?
    pub fn closes_session(&self) -> bool {
        !matches!(
            self,
            Error::Refused(_) | Error::PoolTimeout { .. } | Error::BackendConnect { .. }
        )
    }

    /// A short label for the errors-by-kind metric.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ClientGone(_) => "client_gone",
            Error::ClientProtocol(_) => "client_protocol",
            Error::PacketTooLarge { .. } => "packet_too_large",
            Error::ClientTimeout { .. } => "client_timeout",
            Error::BackendLost { .. } => "backend_lost",
            Error::BackendConnect { .. } => "backend_connect",
            Error::PoolTimeout { .. } => "pool_timeout",
            Error::Refused(r) | Error::Fatal(r) => match r.code {
                1040 => "connection_limit",
                1045 => "access_denied",
                3159 => "tls_required",
                _ if matches!(self, Error::Refused(_)) => "refused",
                _ => "fatal",
            },
            Error::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match self.origin() {
            Origin::Client => "client",
            Origin::Backend => "backend",
            Origin::Proxy => "proxy",
        };
        match self {
            Error::ClientGone(e) => write!(f, "{origin}: connection closed: {e}"),
            _ => write!(
                f,
                "{origin}: {}",
                self.reply().map(|r| r.message).unwrap_or_default()
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<CodecError> for Error {
    fn from(e: CodecError) -> Self {
        Error::ClientProtocol(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_mysql_codes_and_sqlstates() {
        let r = Error::PoolTimeout { waited_ms: 5000 }.reply().unwrap();
        assert_eq!((r.code, &r.sql_state), (9001, b"HY000"));
        assert_eq!(
            r.message,
            "sluice: no backend connection available within 5000 ms"
        );
        let r = Error::PacketTooLarge { limit: 1024 }.reply().unwrap();
        assert_eq!((r.code, &r.sql_state), (1153, b"08S01"));
        let r = Reply::access_denied(b"bob", "127.0.0.1", true);
        assert_eq!(
            r.message,
            "Access denied for user 'bob'@'127.0.0.1' (using password: YES)"
        );
        assert!(Error::ClientGone(io::ErrorKind::BrokenPipe.into())
            .reply()
            .is_none());
        assert!(!Error::PoolTimeout { waited_ms: 1 }.closes_session());
        assert!(Error::BackendLost {
            backend: "b".into(),
            detail: "x".into()
        }
        .closes_session());
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(&out[..3], &[0xFF, 0x15, 0x04]);
        assert_eq!(&out[3..9], b"#28000");
    }
}
