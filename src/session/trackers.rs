//! A client's own session trackers, and which of the session-state items a backend reports it
//! would have received directly.
//!
//! sluice runs every backend connection with all trackers on (it needs them to follow the
//! session), so a backend reports more than a client asked for: `last_gtid` after each write,
//! "state changed" after a SET, the transaction state. A client that negotiated
//! CLIENT_SESSION_TRACK gets exactly what its own `session_track_*` variables select — the
//! server's defaults until it changes them — and nothing else.

use crate::codec::packets::{session_track, SessionChange};
use crate::codec::wire::{put_lenenc_bytes, Reader};
use crate::codec::Result;

/// `session_track_transaction_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrxInfo {
    #[default]
    Off,
    State,
    Characteristics,
}

/// What one client's trackers select.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trackers {
    /// `session_track_system_variables = '*'`.
    pub all_vars: bool,
    /// The listed variables (lowercase), when not all.
    pub vars: Vec<Box<str>>,
    pub schema: bool,
    pub state_change: bool,
    pub trx: TrxInfo,
}

impl Default for Trackers {
    /// MariaDB 10.11's defaults.
    fn default() -> Self {
        Trackers {
            all_vars: false,
            vars: [
                "autocommit",
                "character_set_client",
                "character_set_connection",
                "character_set_results",
                "time_zone",
            ]
            .into_iter()
            .map(Into::into)
            .collect(),
            schema: true,
            state_change: false,
            trx: TrxInfo::Off,
        }
    }
}

fn on(v: &str) -> bool {
    v.eq_ignore_ascii_case("ON") || v == "1"
}

impl Trackers {
    /// Applies a `session_track_*` value (from the server's defaults or the client's SET);
    /// returns `false` for any other variable.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        match name {
            "session_track_system_variables" => {
                let list: Vec<&str> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect();
                self.all_vars = list.contains(&"*");
                self.vars = list
                    .into_iter()
                    .filter(|v| *v != "*")
                    .map(|v| v.to_ascii_lowercase().into())
                    .collect();
            }
            "session_track_schema" => self.schema = on(value),
            "session_track_state_change" => self.state_change = on(value),
            "session_track_transaction_info" => {
                self.trx = if value.eq_ignore_ascii_case("CHARACTERISTICS") {
                    TrxInfo::Characteristics
                } else if value.eq_ignore_ascii_case("STATE") {
                    TrxInfo::State
                } else {
                    TrxInfo::Off
                }
            }
            _ => return false,
        }
        true
    }

    /// Would the client's trackers have reported this item?
    pub fn keeps(&self, c: &SessionChange<'_>) -> bool {
        match c {
            SessionChange::SystemVariable { name, .. } => {
                self.all_vars
                    || self
                        .vars
                        .iter()
                        .any(|v| v.as_bytes().eq_ignore_ascii_case(name))
            }
            SessionChange::Schema(_) => self.schema,
            SessionChange::StateChange(_) => self.state_change,
            SessionChange::TransactionState(_) => self.trx != TrxInfo::Off,
            SessionChange::TransactionCharacteristics(_) => self.trx == TrxInfo::Characteristics,
            SessionChange::Gtids(_) | SessionChange::Other(_) => true,
        }
    }

    /// The entries of a session-state block the client's trackers select, in order, as raw
    /// bytes (`None` when every entry is kept: the block can pass unchanged).
    pub fn filter(&self, block: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut r = Reader::new(block);
        let mut out = Vec::new();
        let mut dropped = false;
        while !r.is_empty() {
            let start = r.clone().rest();
            let ty = r.u8("session state type")?;
            let data = r.lenenc_bytes("session state data")?;
            let entry_len = start.len() - r.clone().rest().len();
            let mut d = Reader::new(data);
            let c = match ty {
                session_track::SYSTEM_VARIABLES => SessionChange::SystemVariable {
                    name: d.lenenc_bytes("tracked variable name")?,
                    value: d.lenenc_bytes("tracked variable value")?,
                },
                session_track::SCHEMA => SessionChange::Schema(d.lenenc_bytes("tracked schema")?),
                session_track::STATE_CHANGE => SessionChange::StateChange(data == b"1"),
                session_track::GTIDS => SessionChange::Gtids(data),
                session_track::TRANSACTION_CHARACTERISTICS => {
                    SessionChange::TransactionCharacteristics(data)
                }
                session_track::TRANSACTION_STATE => SessionChange::TransactionState(data),
                other => SessionChange::Other(other),
            };
            if self.keeps(&c) {
                out.extend_from_slice(&start[..entry_len]);
            } else {
                dropped = true;
            }
        }
        Ok(dropped.then_some(out))
    }
}

/// Encodes one system-variable entry (for tests and fakes).
pub fn encode_var(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let mut data = Vec::new();
    put_lenenc_bytes(&mut data, name);
    put_lenenc_bytes(&mut data, value);
    out.push(session_track::SYSTEM_VARIABLES);
    put_lenenc_bytes(out, &data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Vec<u8> {
        let mut b = Vec::new();
        encode_var(&mut b, b"last_gtid", b"0-1-5");
        encode_var(&mut b, b"time_zone", b"+01:00");
        b.push(session_track::STATE_CHANGE);
        put_lenenc_bytes(&mut b, b"1");
        b.push(session_track::SCHEMA);
        let mut s = Vec::new();
        put_lenenc_bytes(&mut s, b"app");
        put_lenenc_bytes(&mut b, &s);
        b.push(session_track::TRANSACTION_STATE);
        let mut t = Vec::new();
        put_lenenc_bytes(&mut t, b"________");
        put_lenenc_bytes(&mut b, &t);
        b
    }

    #[test]
    fn defaults_keep_what_the_server_reports_by_default() {
        let t = Trackers::default();
        let out = t.filter(&block()).unwrap().expect("some dropped");
        let mut want = Vec::new();
        encode_var(&mut want, b"time_zone", b"+01:00");
        want.push(session_track::SCHEMA);
        let mut s = Vec::new();
        put_lenenc_bytes(&mut s, b"app");
        put_lenenc_bytes(&mut want, &s);
        assert_eq!(out, want);
    }

    #[test]
    fn a_client_that_tracks_everything_gets_everything() {
        let mut t = Trackers::default();
        assert!(t.set("session_track_system_variables", "*"));
        assert!(t.set("session_track_state_change", "ON"));
        assert!(t.set("session_track_transaction_info", "STATE"));
        assert_eq!(t.filter(&block()).unwrap(), None);
        assert!(!t.set("time_zone", "UTC"));
        t.set("session_track_schema", "OFF");
        t.set("session_track_system_variables", "");
        assert!(!t.all_vars && t.vars.is_empty());
        let out = t.filter(&block()).unwrap().unwrap();
        assert_eq!(out[0], session_track::STATE_CHANGE);
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let t = Trackers::default();
        let b = block();
        for cut in 0..b.len() {
            let _ = t.filter(&b[..cut]);
        }
        assert!(t.filter(&[0, 5, 1]).is_err());
    }
}
