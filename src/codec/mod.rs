//! The MySQL/MariaDB client/server wire protocol as pure functions: bytes in, values out, and back.
//!
//! Nothing in this module does I/O, reads a clock or awaits. Every decoder takes a byte slice that
//! may come from a hostile client and returns a [`CodecError`] on malformed input; none panics and
//! none allocates a buffer sized by a length field before the bytes it announces are present.
//! That keeps the codec unit-testable against captured server bytes, fuzzable, and reusable by the
//! load generator.

pub mod auth;
pub mod caps;
pub mod command;
pub mod frame;
pub mod handshake;
pub mod login;
pub mod packets;
pub mod response;
pub mod wire;

use std::fmt;

/// A malformed or unsupported packet. `what` names the field or structure being decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    pub kind: CodecErrorKind,
    pub what: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecErrorKind {
    /// The packet ended before the field was complete.
    Truncated,
    /// The field's value is not allowed here.
    Invalid,
    /// A packet or field is larger than the configured limit.
    TooLarge,
}

impl CodecError {
    pub const fn truncated(what: &'static str) -> Self {
        CodecError {
            kind: CodecErrorKind::Truncated,
            what,
        }
    }
    pub const fn invalid(what: &'static str) -> Self {
        CodecError {
            kind: CodecErrorKind::Invalid,
            what,
        }
    }
    pub const fn too_large(what: &'static str) -> Self {
        CodecError {
            kind: CodecErrorKind::TooLarge,
            what,
        }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            CodecErrorKind::Truncated => write!(f, "truncated {}", self.what),
            CodecErrorKind::Invalid => write!(f, "invalid {}", self.what),
            CodecErrorKind::TooLarge => write!(f, "{} too large", self.what),
        }
    }
}

impl std::error::Error for CodecError {}

pub type Result<T> = std::result::Result<T, CodecError>;
