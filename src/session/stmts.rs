//! A client's binary prepared statements, kept by sluice so they can be prepared lazily on
//! whichever backend serves each execute: the SQL text (interned), the settings it was prepared
//! under, its parameter count, and the parameter types last bound (a later execute may omit them,
//! but the backend that serves it may never have seen them).

use super::sql::Effects;
use super::state::{FreshCharset, Settings, CLIENT_COLLATION};
use crate::codec::command::com;
use crate::codec::{CodecError, Result};
use std::collections::HashMap;
use std::rc::Rc;

/// What the server converts a statement's string parameters with when an execute binds their
/// types (MariaDB 10.11, `Item_param::setup_conversion_string`): from the session's
/// `character_set_client` to its connection collation (and that collation's character set), as
/// they were then. Where the two character sets are the same nothing is converted and the
/// parameter keeps the collation `character_set_client` carries (its BINARY flag shows it), so
/// that collation is part of the conversion too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    pub client: Box<str>,
    /// [`CLIENT_COLLATION`]: `None` for the character set's default.
    pub client_collation: Option<Box<str>>,
    pub collation: Box<str>,
}

impl Conversion {
    /// The conversion a session with settings `s` binds with.
    pub fn of(s: &Settings, fresh: &FreshCharset) -> Conversion {
        Conversion {
            client: s
                .var("character_set_client")
                .unwrap_or(&fresh.charset)
                .into(),
            client_collation: s.var(CLIENT_COLLATION).map(Into::into),
            collation: s
                .var("collation_connection")
                .unwrap_or(&fresh.collation)
                .into(),
        }
    }

    /// Settings `s` switched to this conversion (`connection`: the collation's character
    /// set).
    pub fn applied_to(&self, s: &Settings, connection: Option<&str>) -> Settings {
        let mut s = s.clone();
        s.set_var("character_set_client", &self.client);
        s.set_client_collation(self.client_collation.as_deref());
        if let Some(cs) = connection {
            s.set_var("character_set_connection", cs);
        }
        s.set_var("collation_connection", &self.collation);
        s
    }
}

#[derive(Debug, Clone)]
pub struct ClientStmt {
    pub sql: Rc<[u8]>,
    /// The client's settings when it prepared (schema and sql_mode decide what the text means).
    pub settings: Rc<Settings>,
    pub params: u16,
    pub columns: u16,
    /// Parameter types (`2 × params` bytes) from the last execute that bound them.
    pub types: Option<Box<[u8]>>,
    /// How the server converted string parameters when the types were bound: later executes
    /// that bind no types convert the same way.
    pub bound_charset: Option<Conversion>,
    /// COM_STMT_SEND_LONG_DATA sent since the last execute: the data lives on one backend.
    pub long_data: bool,
    /// The backend statement holding this statement's pending long data or open cursor, on the
    /// backend the session holds.
    pub pending_at: Option<u32>,
    /// Long data was sent but did not stay on a backend: the next execute must fail rather
    /// than run without it.
    pub long_data_lost: Option<LostData>,
    /// What the statement does, analysed once at prepare.
    pub effects: Rc<Effects>,
    /// How its text was read at prepare (an upgrade analyses it again the same way).
    pub modes: super::sql::Modes,
}

/// Why a statement's long data is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostData {
    /// Its backend connection was lost, or no backend could be had to send it to.
    Backend,
    /// The session's backend refused to prepare the statement (a table a `LOCK TABLES` did not
    /// name, a read-only transaction): the server would refuse the execute there too, so the
    /// execute prepares it again and answers with the server's refusal (with the loss only if
    /// the server now takes it).
    Refused,
}

/// A session's statements by client-visible id.
#[derive(Debug, Default)]
pub struct Stmts {
    next_id: u32,
    pub map: HashMap<u32, ClientStmt>,
    /// Statements whose cursor is open (rows wait on the backend for COM_STMT_FETCH).
    pub cursors: Vec<u32>,
}

impl Stmts {
    /// The last id handed out (an upgrade carries it: ids go on from there).
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Goes on handing out ids after `last` (a session adopted from an older process).
    pub fn set_next_id(&mut self, last: u32) {
        self.next_id = last;
    }

    pub fn allocate_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Forgets every statement (COM_RESET_CONNECTION, COM_CHANGE_USER). Ids go on from where
    /// they were, as the server's do: a stale id never names a new statement.
    pub fn forget_all(&mut self) {
        self.map.clear();
        self.cursors.clear();
    }

    /// Something ties the session to its backend: an open cursor or pending long data.
    pub fn pending(&self) -> bool {
        !self.cursors.is_empty() || self.map.values().any(|s| s.long_data)
    }

    pub fn has_cursor(&self, id: u32) -> bool {
        self.cursors.contains(&id)
    }

    /// Backend statements other statements of this session have something pending on (a
    /// statement with the same text must not use them).
    pub fn busy_except(&self, id: u32) -> Vec<u32> {
        self.map
            .iter()
            .filter(|(c, _)| **c != id)
            .filter_map(|(_, s)| s.pending_at)
            .collect()
    }

    pub fn set_cursor(&mut self, id: u32, open: bool) {
        self.cursors.retain(|&c| c != id);
        if open {
            self.cursors.push(id);
        }
    }

    /// The backend the session held is gone: its cursors with it, and long data sent there is
    /// lost.
    pub fn backend_lost(&mut self) {
        self.cursors.clear();
        for s in self.map.values_mut() {
            s.pending_at = None;
            if s.long_data {
                s.long_data = false;
                s.long_data_lost = Some(LostData::Backend);
            }
        }
    }
}

/// The parameter types a COM_STMT_EXECUTE binds (new-params-bound flag 1), if it binds any: the
/// client considers them bound from then on, whatever becomes of this execute.
pub fn bound_types(payload: &[u8], params: u16) -> Result<Option<&[u8]>> {
    if params == 0 {
        return Ok(None);
    }
    let flag_at = 10 + usize::from(params).div_ceil(8);
    match payload.get(flag_at) {
        Some(1) => payload
            .get(flag_at + 1..flag_at + 1 + 2 * usize::from(params))
            .map(Some)
            .ok_or(CodecError::truncated("COM_STMT_EXECUTE parameter types")),
        Some(_) => Ok(None),
        None => Err(CodecError::truncated("COM_STMT_EXECUTE parameters")),
    }
}

/// Rewrites a COM_STMT_EXECUTE payload for a backend: the statement id becomes `backend_id`, and
/// when the client relies on previously bound parameter types (new-params-bound flag 0), the
/// `remembered` types are written in explicitly (the backend that serves it may never have seen
/// them). Types the execute binds itself are read with [`bound_types`].
pub fn rewrite_execute(
    payload: &[u8],
    backend_id: u32,
    params: u16,
    remembered: Option<&[u8]>,
) -> Result<Vec<u8>> {
    if payload.first() != Some(&com::STMT_EXECUTE) || payload.len() < 10 {
        return Err(CodecError::truncated("COM_STMT_EXECUTE header"));
    }
    let mut out = Vec::with_capacity(payload.len() + 2 * usize::from(params) + 1);
    out.push(com::STMT_EXECUTE);
    out.extend_from_slice(&backend_id.to_le_bytes());
    out.extend_from_slice(&payload[5..10]);
    if params == 0 {
        out.extend_from_slice(&payload[10..]);
        return Ok(out);
    }
    let flag_at = 10 + usize::from(params).div_ceil(8);
    let flag = *payload
        .get(flag_at)
        .ok_or(CodecError::truncated("COM_STMT_EXECUTE parameters"))?;
    out.extend_from_slice(&payload[10..flag_at]);
    match (flag, remembered) {
        (0, Some(t)) if t.len() == 2 * usize::from(params) => {
            out.push(1);
            out.extend_from_slice(t);
            out.extend_from_slice(&payload[flag_at + 1..]);
        }
        (1, _) => {
            bound_types(payload, params)?;
            out.extend_from_slice(&payload[flag_at..]);
        }
        _ => out.extend_from_slice(&payload[flag_at..]),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_types_are_rewritten() {
        // stmt 7, no cursor, 1 iteration, 2 params: bitmap 1 byte, bound=1, types LONG, VARCHAR.
        let mut p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0b00, 1, 3, 0, 0xfd, 0];
        p.extend_from_slice(&[5, 0, 0, 0, 2, b'h', b'i']);
        let out = rewrite_execute(&p, 0x0102_0304, 2, None).unwrap();
        assert_eq!(&out[1..5], &0x0102_0304u32.to_le_bytes());
        let types = bound_types(&p, 2).unwrap();
        assert_eq!(types, Some(&[3, 0, 0xfd, 0][..]));
        assert_eq!(&out[5..], &p[5..]);
        // A later execute without types gets the remembered ones.
        let mut q = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0b00, 0];
        q.extend_from_slice(&[6, 0, 0, 0, 2, b'y', b'o']);
        let out = rewrite_execute(&q, 9, 2, types).unwrap();
        assert_eq!(out[11], 1);
        assert_eq!(&out[12..16], &[3, 0, 0xfd, 0]);
        assert_eq!(&out[16..], &[6, 0, 0, 0, 2, b'y', b'o']);
    }

    #[test]
    fn statements_without_parameters_and_bad_packets() {
        let p = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0];
        let out = rewrite_execute(&p, 2, 0, None).unwrap();
        assert_eq!(out, vec![0x17, 2, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert!(rewrite_execute(&[0x17, 1, 0], 2, 0, None).is_err());
        assert!(rewrite_execute(&[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0], 2, 3, None).is_err());
        assert!(rewrite_execute(&[0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3], 2, 3, None).is_err());
    }

    #[test]
    fn bound_types_are_read_from_the_execute() {
        let p = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0b00, 1, 3, 0, 0xfd, 0];
        assert_eq!(bound_types(&p, 2).unwrap(), Some(&[3, 0, 0xfd, 0][..]));
        let q = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0b00, 0];
        assert_eq!(bound_types(&q, 2).unwrap(), None);
        assert_eq!(bound_types(&q, 0).unwrap(), None);
        assert!(bound_types(&q[..11], 2).is_err());
        assert!(bound_types(&p[..13], 2).is_err());
    }

    #[test]
    fn ids_are_never_handed_out_again_after_a_reset() {
        let mut s = Stmts::default();
        assert_eq!(s.allocate_id(), 1);
        assert_eq!(s.allocate_id(), 2);
        s.forget_all();
        assert!(s.map.is_empty());
        assert_eq!(s.allocate_id(), 3);
    }

    #[test]
    fn ids_stay_positive() {
        let mut s = Stmts::default();
        assert_eq!(s.allocate_id(), 1);
        s.next_id = u32::MAX;
        assert_eq!(s.allocate_id(), 1);
    }
}
