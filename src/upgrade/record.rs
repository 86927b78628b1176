//! The versioned encoding of a parked session (what a successor process needs besides the
//! socket): pure, no I/O, and a decode that returns an error on any input, never panics.
//!
//! Layout: one version byte ([`VERSION`]), then fields, each `tag: int<1>`, `len: int<4>` (little
//! endian), `len` bytes. A decoder skips tags it does not know, so a newer sluice may add fields
//! an older one ignores; a field that changes meaning gets a new tag, never a new layout under an
//! old one. Nested values (a prepared statement, a variable) are themselves tag-length-value
//! lists or fixed layouts documented at their tag. A record names its user by *name*: the
//! successor resolves it against its own configuration (same rule as a login), and refuses the
//! session when the user is gone (then the old process keeps it).
//!
//! Turned down: serde + bincode (a dependency, and its layouts are not versioned by field: one
//! added field breaks every older reader), and passing the in-memory structs (`Rc`s, interned
//! pointers, shard clocks mean nothing in another process).

use std::fmt;

/// The record's format version. Version 1: the fields below.
pub const VERSION: u8 = 1;

/// A field or a whole record longer than this is refused (a session's statements are bounded by
/// the client's memory at sluice, but a decoder must not trust a length field).
pub const MAX_RECORD: usize = 64 << 20;

mod tag {
    pub const CONN_ID: u8 = 1;
    pub const USER: u8 = 2;
    pub const CAPS: u8 = 3;
    pub const MARIADB_CAPS: u8 = 4;
    pub const COLLATION: u8 = 5;
    pub const SCHEMA: u8 = 6;
    /// `int<2>` name length, name, value (the rest).
    pub const VAR: u8 = 7;
    pub const BACKEND: u8 = 8;
    /// bit 0: multi-statements.
    pub const FLAGS: u8 = 9;
    pub const STATUS: u8 = 10;
    pub const IDLE_SECS: u8 = 11;
    /// `last_insert_id: int<8>`, `row_count: int<8>` (signed), `found_rows: int<8>`,
    /// `foreign: int<1>` (bit 0 row_count, bit 1 found_rows), `last_gtid` (the rest).
    pub const HISTORY: u8 = 12;
    /// `flags: int<1>` (bit 0 all variables, bit 1 schema, bit 2 state change), `trx: int<1>`
    /// (0 off, 1 state, 2 characteristics), then variable names, each `int<2>` length + name.
    pub const TRACKERS: u8 = 13;
    /// Four entries, each `present: int<1>`, `len: int<4>`, bytes.
    pub const TRACKER_VALUES: u8 = 14;
    pub const STMT_NEXT_ID: u8 = 15;
    /// A nested list with the `stmt` tags.
    pub const STMT: u8 = 16;

    pub mod stmt {
        pub const ID: u8 = 1;
        pub const SQL: u8 = 2;
        pub const SCHEMA: u8 = 3;
        pub const VAR: u8 = 4;
        pub const PARAMS: u8 = 5;
        pub const COLUMNS: u8 = 6;
        pub const TYPES: u8 = 7;
        pub const BOUND_CLIENT: u8 = 8;
        pub const BOUND_COLLATION: u8 = 9;
        /// bit 0 long data lost, bit 1 ANSI_QUOTES, bit 2 NO_BACKSLASH_ESCAPES (the modes the
        /// statement's text is read with), bit 3 the long data was lost because the backend
        /// refused to prepare the statement (a decoder that ignores it reports the loss at once).
        pub const FLAGS: u8 = 10;
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Empty,
    /// A version this build does not read (a newer sluice's record under a new version byte).
    Version(u8),
    /// A field runs past the end of the record.
    Truncated,
    /// A field's length does not match its type, or its contents are invalid.
    Field {
        tag: u8,
        why: &'static str,
    },
    /// A required field is absent.
    Missing(&'static str),
    TooLarge,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => write!(f, "empty session record"),
            DecodeError::Version(v) => {
                write!(
                    f,
                    "session record version {v} (this sluice reads {VERSION})"
                )
            }
            DecodeError::Truncated => write!(f, "session record truncated"),
            DecodeError::Field { tag, why } => write!(f, "session record field {tag}: {why}"),
            DecodeError::Missing(what) => write!(f, "session record without {what}"),
            DecodeError::TooLarge => write!(f, "session record too large"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The history values a session carries (see `session::effects::History`); only values sluice
/// knows (a value only a backend knows keeps its session in the old process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRec {
    pub last_insert_id: u64,
    pub row_count: i64,
    pub found_rows: u64,
    pub foreign_row_count: bool,
    pub foreign_found_rows: bool,
    pub last_gtid: String,
}

/// The client's own session trackers (see `session::trackers::Trackers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackersRec {
    pub all_vars: bool,
    pub vars: Vec<String>,
    pub schema: bool,
    pub state_change: bool,
    /// 0 off, 1 state, 2 characteristics.
    pub trx: u8,
}

/// One binary prepared statement (see `session::stmts::ClientStmt`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StmtRec {
    pub id: u32,
    pub sql: Vec<u8>,
    /// The settings it was prepared under.
    pub schema: Option<String>,
    pub vars: Vec<(String, String)>,
    pub params: u16,
    pub columns: u16,
    pub types: Option<Vec<u8>>,
    /// `character_set_client` and `collation_connection` when its types were bound.
    pub bound: Option<(String, String)>,
    pub long_data_lost: bool,
    /// Lost because the session's backend refused to prepare the statement: its execute asks
    /// the server again first (see `crate::session::stmts::LostData`).
    pub long_data_refused: bool,
    pub ansi_quotes: bool,
    pub no_backslash_escapes: bool,
}

/// Everything a parked session is, in plain values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub conn_id: u32,
    pub user: String,
    pub caps: u32,
    pub mariadb_caps: u32,
    pub collation: u8,
    pub schema: Option<String>,
    /// Changed system variables, sorted by name.
    pub vars: Vec<(String, String)>,
    pub backend: u16,
    pub multi_statements: bool,
    pub status: u16,
    /// Seconds since the client's last command.
    pub idle_secs: u32,
    /// `None`: a fresh session's.
    pub history: Option<HistoryRec>,
    pub trackers: Option<TrackersRec>,
    pub tracker_values: Option<[Option<String>; 4]>,
    /// `None`: the session never prepared a statement.
    pub stmt_next_id: Option<u32>,
    pub stmts: Vec<StmtRec>,
}

fn put(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn var_bytes(name: &str, value: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + name.len() + value.len());
    v.extend_from_slice(&(name.len().min(u16::MAX as usize) as u16).to_le_bytes());
    v.extend_from_slice(&name.as_bytes()[..name.len().min(u16::MAX as usize)]);
    v.extend_from_slice(value.as_bytes());
    v
}

fn encode_stmt(s: &StmtRec) -> Vec<u8> {
    use tag::stmt as t;
    let mut out = Vec::with_capacity(64 + s.sql.len());
    put(&mut out, t::ID, &s.id.to_le_bytes());
    put(&mut out, t::SQL, &s.sql);
    if let Some(schema) = &s.schema {
        put(&mut out, t::SCHEMA, schema.as_bytes());
    }
    for (n, v) in &s.vars {
        put(&mut out, t::VAR, &var_bytes(n, v));
    }
    put(&mut out, t::PARAMS, &s.params.to_le_bytes());
    put(&mut out, t::COLUMNS, &s.columns.to_le_bytes());
    if let Some(types) = &s.types {
        put(&mut out, t::TYPES, types);
    }
    if let Some((client, collation)) = &s.bound {
        put(&mut out, t::BOUND_CLIENT, client.as_bytes());
        put(&mut out, t::BOUND_COLLATION, collation.as_bytes());
    }
    let flags = u8::from(s.long_data_lost)
        | u8::from(s.ansi_quotes) << 1
        | u8::from(s.no_backslash_escapes) << 2
        | u8::from(s.long_data_refused) << 3;
    put(&mut out, t::FLAGS, &[flags]);
    out
}

/// Encodes `r` (the version byte first).
pub fn encode(r: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.push(VERSION);
    put(&mut out, tag::CONN_ID, &r.conn_id.to_le_bytes());
    put(&mut out, tag::USER, r.user.as_bytes());
    put(&mut out, tag::CAPS, &r.caps.to_le_bytes());
    put(&mut out, tag::MARIADB_CAPS, &r.mariadb_caps.to_le_bytes());
    put(&mut out, tag::COLLATION, &[r.collation]);
    if let Some(s) = &r.schema {
        put(&mut out, tag::SCHEMA, s.as_bytes());
    }
    for (n, v) in &r.vars {
        put(&mut out, tag::VAR, &var_bytes(n, v));
    }
    put(&mut out, tag::BACKEND, &r.backend.to_le_bytes());
    put(&mut out, tag::FLAGS, &[u8::from(r.multi_statements)]);
    put(&mut out, tag::STATUS, &r.status.to_le_bytes());
    put(&mut out, tag::IDLE_SECS, &r.idle_secs.to_le_bytes());
    if let Some(h) = &r.history {
        let mut v = Vec::with_capacity(25 + h.last_gtid.len());
        v.extend_from_slice(&h.last_insert_id.to_le_bytes());
        v.extend_from_slice(&h.row_count.to_le_bytes());
        v.extend_from_slice(&h.found_rows.to_le_bytes());
        v.push(u8::from(h.foreign_row_count) | u8::from(h.foreign_found_rows) << 1);
        v.extend_from_slice(h.last_gtid.as_bytes());
        put(&mut out, tag::HISTORY, &v);
    }
    if let Some(t) = &r.trackers {
        let mut v = vec![
            u8::from(t.all_vars) | u8::from(t.schema) << 1 | u8::from(t.state_change) << 2,
            t.trx,
        ];
        for name in &t.vars {
            let n = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
            v.extend_from_slice(&(n.len() as u16).to_le_bytes());
            v.extend_from_slice(n);
        }
        put(&mut out, tag::TRACKERS, &v);
    }
    if let Some(values) = &r.tracker_values {
        let mut v = Vec::new();
        for e in values {
            match e {
                Some(s) => {
                    v.push(1);
                    v.extend_from_slice(&(s.len() as u32).to_le_bytes());
                    v.extend_from_slice(s.as_bytes());
                }
                None => v.push(0),
            }
        }
        put(&mut out, tag::TRACKER_VALUES, &v);
    }
    if let Some(n) = r.stmt_next_id {
        put(&mut out, tag::STMT_NEXT_ID, &n.to_le_bytes());
    }
    for s in &r.stmts {
        put(&mut out, tag::STMT, &encode_stmt(s));
    }
    out
}

/// Walks a tag-length-value list.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u8, &'a [u8]), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        if self.rest.len() < 5 {
            self.rest = &[];
            return Some(Err(DecodeError::Truncated));
        }
        let tag = self.rest[0];
        let len = u32::from_le_bytes([self.rest[1], self.rest[2], self.rest[3], self.rest[4]]);
        let len = len as usize;
        let body = &self.rest[5..];
        if body.len() < len {
            self.rest = &[];
            return Some(Err(DecodeError::Truncated));
        }
        self.rest = &body[len..];
        Some(Ok((tag, &body[..len])))
    }
}

fn fixed<const N: usize>(tag: u8, v: &[u8]) -> Result<[u8; N], DecodeError> {
    v.try_into().map_err(|_| DecodeError::Field {
        tag,
        why: "wrong length",
    })
}

fn text(tag: u8, v: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(v.to_vec()).map_err(|_| DecodeError::Field {
        tag,
        why: "not UTF-8",
    })
}

fn var(tag: u8, v: &[u8]) -> Result<(String, String), DecodeError> {
    let bad = DecodeError::Field {
        tag,
        why: "bad variable",
    };
    let n: [u8; 2] = v
        .get(..2)
        .ok_or(bad.clone())?
        .try_into()
        .map_err(|_| bad.clone())?;
    let n = u16::from_le_bytes(n) as usize;
    let name = v.get(2..2 + n).ok_or(bad.clone())?;
    let value = &v[2 + n..];
    Ok((text(tag, name)?, text(tag, value)?))
}

fn decode_stmt(v: &[u8]) -> Result<StmtRec, DecodeError> {
    use tag::stmt as t;
    let mut s = StmtRec::default();
    let (mut id, mut sql) = (false, false);
    for f in (Fields { rest: v }) {
        let (k, v) = f?;
        match k {
            t::ID => {
                s.id = u32::from_le_bytes(fixed(k, v)?);
                id = true;
            }
            t::SQL => {
                s.sql = v.to_vec();
                sql = true;
            }
            t::SCHEMA => s.schema = Some(text(k, v)?),
            t::VAR => s.vars.push(var(k, v)?),
            t::PARAMS => s.params = u16::from_le_bytes(fixed(k, v)?),
            t::COLUMNS => s.columns = u16::from_le_bytes(fixed(k, v)?),
            t::TYPES => s.types = Some(v.to_vec()),
            t::BOUND_CLIENT => {
                let c = text(k, v)?;
                s.bound = Some((c, s.bound.take().map(|b| b.1).unwrap_or_default()));
            }
            t::BOUND_COLLATION => {
                let c = text(k, v)?;
                s.bound = Some((s.bound.take().map(|b| b.0).unwrap_or_default(), c));
            }
            t::FLAGS => {
                let [b] = fixed::<1>(k, v)?;
                s.long_data_lost = b & 1 != 0;
                s.ansi_quotes = b & 2 != 0;
                s.no_backslash_escapes = b & 4 != 0;
                s.long_data_refused = b & 8 != 0;
            }
            _ => {}
        }
    }
    if !id {
        return Err(DecodeError::Missing("a statement id"));
    }
    if !sql {
        return Err(DecodeError::Missing("a statement text"));
    }
    if s.types
        .as_ref()
        .is_some_and(|t| t.len() != 2 * s.params as usize)
    {
        return Err(DecodeError::Field {
            tag: tag::STMT,
            why: "parameter types do not match the parameter count",
        });
    }
    Ok(s)
}

/// Decodes a record; any input gives a record or an error.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    if bytes.len() > MAX_RECORD {
        return Err(DecodeError::TooLarge);
    }
    let mut r = Record::default();
    let (mut conn, mut user, mut caps, mut coll) = (false, false, false, false);
    for f in (Fields { rest: body }) {
        let (k, v) = f?;
        match k {
            tag::CONN_ID => {
                r.conn_id = u32::from_le_bytes(fixed(k, v)?);
                conn = true;
            }
            tag::USER => {
                r.user = text(k, v)?;
                user = true;
            }
            tag::CAPS => {
                r.caps = u32::from_le_bytes(fixed(k, v)?);
                caps = true;
            }
            tag::MARIADB_CAPS => r.mariadb_caps = u32::from_le_bytes(fixed(k, v)?),
            tag::COLLATION => {
                r.collation = fixed::<1>(k, v)?[0];
                coll = true;
            }
            tag::SCHEMA => r.schema = Some(text(k, v)?),
            tag::VAR => r.vars.push(var(k, v)?),
            tag::BACKEND => r.backend = u16::from_le_bytes(fixed(k, v)?),
            tag::FLAGS => r.multi_statements = fixed::<1>(k, v)?[0] & 1 != 0,
            tag::STATUS => r.status = u16::from_le_bytes(fixed(k, v)?),
            tag::IDLE_SECS => r.idle_secs = u32::from_le_bytes(fixed(k, v)?),
            tag::HISTORY => {
                if v.len() < 25 {
                    return Err(DecodeError::Field {
                        tag: k,
                        why: "wrong length",
                    });
                }
                let u = |i: usize| u64::from_le_bytes(v[i..i + 8].try_into().unwrap_or([0; 8]));
                r.history = Some(HistoryRec {
                    last_insert_id: u(0),
                    row_count: u(8) as i64,
                    found_rows: u(16),
                    foreign_row_count: v[24] & 1 != 0,
                    foreign_found_rows: v[24] & 2 != 0,
                    last_gtid: text(k, &v[25..])?,
                });
            }
            tag::TRACKERS => {
                let bad = DecodeError::Field {
                    tag: k,
                    why: "bad trackers",
                };
                let (&flags, rest) = v.split_first().ok_or(bad.clone())?;
                let (&trx, mut rest) = rest.split_first().ok_or(bad.clone())?;
                if trx > 2 {
                    return Err(bad);
                }
                let mut vars = Vec::new();
                while !rest.is_empty() {
                    let n = rest.get(..2).ok_or(bad.clone())?;
                    let n = u16::from_le_bytes([n[0], n[1]]) as usize;
                    let name = rest.get(2..2 + n).ok_or(bad.clone())?;
                    vars.push(text(k, name)?);
                    rest = &rest[2 + n..];
                }
                r.trackers = Some(TrackersRec {
                    all_vars: flags & 1 != 0,
                    schema: flags & 2 != 0,
                    state_change: flags & 4 != 0,
                    trx,
                    vars,
                });
            }
            tag::TRACKER_VALUES => {
                let bad = DecodeError::Field {
                    tag: k,
                    why: "bad tracker values",
                };
                let mut out: [Option<String>; 4] = Default::default();
                let mut rest = v;
                for slot in out.iter_mut() {
                    let (&present, after) = rest.split_first().ok_or(bad.clone())?;
                    rest = after;
                    match present {
                        0 => {}
                        1 => {
                            let n = rest.get(..4).ok_or(bad.clone())?;
                            let n = u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
                            let s = rest.get(4..4usize.saturating_add(n)).ok_or(bad.clone())?;
                            *slot = Some(text(k, s)?);
                            rest = &rest[4 + n..];
                        }
                        _ => return Err(bad),
                    }
                }
                if !rest.is_empty() {
                    return Err(bad);
                }
                r.tracker_values = Some(out);
            }
            tag::STMT_NEXT_ID => r.stmt_next_id = Some(u32::from_le_bytes(fixed(k, v)?)),
            tag::STMT => r.stmts.push(decode_stmt(v)?),
            // A newer sluice's field: skipped.
            _ => {}
        }
    }
    if !conn {
        return Err(DecodeError::Missing("a connection id"));
    }
    if !user {
        return Err(DecodeError::Missing("a user"));
    }
    if !caps {
        return Err(DecodeError::Missing("capabilities"));
    }
    if !coll {
        return Err(DecodeError::Missing("a collation"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Record {
        Record {
            conn_id: 0x1234_5678,
            user: "app".into(),
            caps: 0x00ff_a685,
            mariadb_caps: 0x1d,
            collation: 45,
            schema: Some("shop".into()),
            vars: vec![
                ("sql_mode".into(), "ANSI_QUOTES".into()),
                ("time_zone".into(), "+02:00".into()),
                ("".into(), "".into()),
            ],
            backend: 3,
            multi_statements: true,
            status: 0x4002,
            idle_secs: 77,
            history: Some(HistoryRec {
                last_insert_id: u64::MAX,
                row_count: -1,
                found_rows: 12,
                foreign_row_count: true,
                foreign_found_rows: false,
                last_gtid: "0-1-42".into(),
            }),
            trackers: Some(TrackersRec {
                all_vars: false,
                vars: vec!["autocommit".into(), "time_zone".into()],
                schema: true,
                state_change: true,
                trx: 2,
            }),
            tracker_values: Some([Some("x".into()), None, Some("".into()), None]),
            stmt_next_id: Some(9),
            stmts: vec![
                StmtRec {
                    id: 3,
                    sql: b"SELECT ?, \xff".to_vec(),
                    schema: None,
                    vars: vec![("sql_mode".into(), "".into())],
                    params: 1,
                    columns: 1,
                    types: Some(vec![8, 0]),
                    bound: Some(("utf8mb4".into(), "utf8mb4_general_ci".into())),
                    long_data_lost: true,
                    long_data_refused: true,
                    ansi_quotes: true,
                    no_backslash_escapes: false,
                },
                StmtRec {
                    id: 9,
                    sql: b"DO 1".to_vec(),
                    ..StmtRec::default()
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let minimal = Record {
            conn_id: 1,
            user: "u".into(),
            ..Record::default()
        };
        for r in [full(), minimal] {
            assert_eq!(decode(&encode(&r)), Ok(r));
        }
    }

    #[test]
    fn version_1_records_written_elsewhere_still_decode() {
        // Written by hand (fuzz/corpus): version 1's layout must keep decoding as it did.
        let r = decode(include_bytes!(
            "../../fuzz/corpus/upgrade_record/session_record"
        ))
        .unwrap();
        assert_eq!(
            (r.conn_id, r.user.as_str(), r.collation),
            (0x4000_0007, "app", 45)
        );
        assert_eq!(r.schema.as_deref(), Some("app"));
        assert_eq!(r.vars.len(), 2);
        assert_eq!(r.history.as_ref().map(|h| h.last_insert_id), Some(42));
        assert_eq!(r.stmt_next_id, Some(3));
        assert_eq!(r.stmts.len(), 1);
        assert_eq!(r.stmts[0].types.as_deref(), Some(&[8u8, 0][..]));
        assert!(r.stmts[0].ansi_quotes);
        assert_eq!(decode(&encode(&r)), Ok(r));
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let r = full();
        let mut bytes = encode(&r);
        put(&mut bytes, 200, b"from a newer sluice");
        assert_eq!(decode(&bytes), Ok(r));
    }

    #[test]
    fn refusals() {
        let good = encode(&full());
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (vec![], DecodeError::Empty),
            (vec![2], DecodeError::Version(2)),
            (vec![VERSION], DecodeError::Missing("a connection id")),
            (good[..good.len() - 1].to_vec(), DecodeError::Truncated),
            (good[..3].to_vec(), DecodeError::Truncated),
            (
                {
                    let mut b = vec![VERSION];
                    put(&mut b, tag::CONN_ID, &[1, 2]);
                    b
                },
                DecodeError::Field {
                    tag: tag::CONN_ID,
                    why: "wrong length",
                },
            ),
            (
                {
                    let mut b = vec![VERSION];
                    put(&mut b, tag::USER, &[0xff]);
                    b
                },
                DecodeError::Field {
                    tag: tag::USER,
                    why: "not UTF-8",
                },
            ),
            (
                {
                    let mut b = vec![VERSION];
                    put(&mut b, tag::STMT, &[]);
                    b
                },
                DecodeError::Missing("a statement id"),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(&bytes), Err(want), "{bytes:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Every prefix and every single-byte corruption of a full record, and pseudo-random
        // bytes: a record or an error, never a panic.
        let good = encode(&full());
        for n in 0..good.len() {
            let _ = decode(&good[..n]);
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut c = good.clone();
                c[n] = b;
                let _ = decode(&c);
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut v = vec![VERSION];
            for _ in 0..(x % 97) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8 % 20);
            }
            let _ = decode(&v);
        }
    }
}
