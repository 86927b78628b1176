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
//! **Version 2** is version 1 plus [`BackendRec`] (tag 17): a session that moves *with its
//! backend connection* (its socket rides beside the client's). Only such a record is written as
//! version 2; every other record stays version 1, which every sluice reads. The version byte,
//! not a new tag, marks it because a version-1 reader skips tags it does not know: it would
//! adopt the session without its backend (the temporary tables, locks and transaction on that
//! connection silently gone). A version-1 reader refuses a version-2 record instead, and the
//! old process keeps the session (see `super::predecessor::send_batch`).
//!
//! Turned down: serde + bincode (a dependency, and its layouts are not versioned by field: one
//! added field breaks every older reader), and passing the in-memory structs (`Rc`s, interned
//! pointers, shard clocks mean nothing in another process).

use std::fmt;

/// The record's format version without a backend connection. Version 1: the fields below.
pub const VERSION: u8 = 1;
/// The version of a record that carries its backend connection ([`Record::backend_conn`]).
pub const VERSION_BACKEND: u8 = 2;

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
    /// Version 2 only: the backend connection that moves with the session, a nested list with
    /// the `conn` tags.
    pub const BACKEND_CONN: u8 = 17;

    pub mod conn {
        /// The backend as configured (`host:port` or `unix:/path`): the pool key's backend.
        pub const ADDRESS: u8 = 1;
        /// The account the connection logged in with.
        pub const ACCOUNT: u8 = 2;
        /// bit 0 Unix socket, bit 1 multi-statements on, bit 2 the session holds a unit of the
        /// pin budget, bit 3 one-shot `insert_id` set, bit 4 a transaction may have begun,
        /// bit 5 LAST_INSERT_ID on the backend only, bit 6 FOUND_ROWS on the backend only,
        /// bit 7 the backend is held for the session's diagnostics.
        pub const FLAGS: u8 = 3;
        /// `int<4>`: the server's connection (thread) id.
        pub const THREAD_ID: u8 = 4;
        /// `int<4>`: capabilities negotiated with the server.
        pub const CAPS: u8 = 5;
        /// `int<8>`: the connection's profile (`backend::conn::Profile`).
        pub const PROFILE: u8 = 6;
        /// `int<2>`: status flags of the last OK/EOF.
        pub const STATUS: u8 = 7;
        /// `int<8>`, absent when sluice does not know it.
        pub const LAST_INSERT_ID: u8 = 8;
        pub const LAST_GTID: u8 = 9;
        /// `int<4>`: the session whose statement ran there last (0: nobody's).
        pub const HISTORY_OWNER: u8 = 10;
        /// The transaction-state tracker's last report (8 characters).
        pub const TRX_STATE: u8 = 11;
        /// `int<2>`.
        pub const WARNINGS: u8 = 12;
        /// `int<4>`: seconds since it was opened.
        pub const AGE_SECS: u8 = 13;
        /// The greeting's nonce, and the plugin the login ended with (COM_CHANGE_USER).
        pub const NONCE: u8 = 14;
        pub const PLUGIN: u8 = 15;
        /// The settings applied on it: schema, then variables as the top-level `VAR`.
        pub const SCHEMA: u8 = 16;
        pub const VAR: u8 = 17;
        /// A statement prepared on it: a nested list with the `stmt` tags `ID` (its *backend*
        /// id), `SQL`, `SCHEMA`, `VAR`.
        pub const PREPARED: u8 = 18;
        /// `int<1>`: the session's diagnostics area, 0 clean, 1 dirty, 2 unknown.
        pub const DIAG: u8 = 19;
        /// The session's pins: a nested list with the `pins` tags.
        pub const PINS: u8 = 20;
    }

    pub mod pins {
        /// bit 0 user variables, 1 LOCK TABLES, 2 HANDLER, 3 transaction characteristics, 4 an
        /// unexplained state change, 5 a sequence, 6 a stored function, 7 a savepoint.
        pub const FLAGS: u8 = 1;
        pub const TEMP_TABLE: u8 = 2;
        /// `int<2>` name length, name, `int<1>` text known, text (the rest).
        pub const SQL_PREPARED: u8 = 3;
        pub const NAMED_LOCK: u8 = 4;
        /// `int<4>`: a binary statement (client id) that reads backend-only history values.
        pub const HISTORY_STMT: u8 = 5;
    }

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
        /// The collation `character_set_client` carried when its types were bound, when not
        /// its character set's default (an older decoder ignores it: the default).
        pub const BOUND_CLIENT_COLLATION: u8 = 11;
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
                    "session record version {v} (this sluice reads {VERSION} and {VERSION_BACKEND})"
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
    /// The collation `character_set_client` carried then, when not its default.
    pub bound_client_collation: Option<String>,
    pub long_data_lost: bool,
    /// Lost because the session's backend refused to prepare the statement: its execute asks
    /// the server again first (see `crate::session::stmts::LostData`).
    pub long_data_refused: bool,
    pub ansi_quotes: bool,
    pub no_backslash_escapes: bool,
}

/// A statement prepared on a backend connection that moves (see `backend::conn::Prepared`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PreparedRec {
    /// The server's statement id.
    pub id: u32,
    pub sql: Vec<u8>,
    /// The settings it was prepared under.
    pub schema: Option<String>,
    pub vars: Vec<(String, String)>,
}

/// Why the session is pinned (see `session::pins::Pins`, field for field).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PinsRec {
    pub user_vars: bool,
    pub temp_tables: Vec<Vec<u8>>,
    pub sql_prepared: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    pub named_locks: Vec<Vec<u8>>,
    pub lock_tables: bool,
    pub handler: bool,
    pub trx_characteristics: bool,
    pub unknown: bool,
    pub sequence: bool,
    pub stored_function: bool,
    pub history_statements: Vec<u32>,
    pub savepoint: bool,
}

/// A session's backend connection, moving with it (see `backend::conn::BackendConn`), and the
/// session's state that lives on that connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BackendRec {
    pub address: String,
    pub account: String,
    pub unix: bool,
    pub thread_id: u32,
    pub caps: u32,
    pub profile: u64,
    pub status: u16,
    pub multi_statements: bool,
    pub last_insert_id: Option<u64>,
    pub last_gtid: String,
    pub history_owner: u32,
    pub trx_state: Vec<u8>,
    pub last_warnings: u16,
    pub age_secs: u32,
    pub nonce: Vec<u8>,
    pub auth_plugin: Vec<u8>,
    pub schema: Option<String>,
    pub vars: Vec<(String, String)>,
    pub prepared: Vec<PreparedRec>,
    /// The session's, about this connection:
    pub pin_counted: bool,
    pub one_shot: bool,
    pub uncertain: bool,
    pub last_insert_id_on_backend: bool,
    pub found_rows_on_backend: bool,
    /// 0 clean, 1 dirty, 2 unknown.
    pub diag: u8,
    pub diag_held: bool,
    pub pins: Option<PinsRec>,
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
    /// The backend connection that moves with the session (version 2).
    pub backend_conn: Option<BackendRec>,
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
    if let Some(c) = &s.bound_client_collation {
        put(&mut out, t::BOUND_CLIENT_COLLATION, c.as_bytes());
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
    if let Some(b) = &r.backend_conn {
        out[0] = VERSION_BACKEND;
        put(&mut out, tag::BACKEND_CONN, &encode_backend(b));
    }
    out
}

fn bits(flags: &[bool]) -> u8 {
    flags
        .iter()
        .enumerate()
        .fold(0, |acc, (i, &on)| acc | u8::from(on) << i)
}

fn encode_pins(p: &PinsRec) -> Vec<u8> {
    use tag::pins as t;
    let mut out = Vec::new();
    let flags = bits(&[
        p.user_vars,
        p.lock_tables,
        p.handler,
        p.trx_characteristics,
        p.unknown,
        p.sequence,
        p.stored_function,
        p.savepoint,
    ]);
    put(&mut out, t::FLAGS, &[flags]);
    for name in &p.temp_tables {
        put(&mut out, t::TEMP_TABLE, name);
    }
    for (name, text) in &p.sql_prepared {
        let name = &name[..name.len().min(u16::MAX as usize)];
        let mut v = (name.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(name);
        v.push(u8::from(text.is_some()));
        v.extend_from_slice(text.as_deref().unwrap_or_default());
        put(&mut out, t::SQL_PREPARED, &v);
    }
    for name in &p.named_locks {
        put(&mut out, t::NAMED_LOCK, name);
    }
    for id in &p.history_statements {
        put(&mut out, t::HISTORY_STMT, &id.to_le_bytes());
    }
    out
}

fn encode_backend(b: &BackendRec) -> Vec<u8> {
    use tag::conn as t;
    let mut out = Vec::with_capacity(256);
    put(&mut out, t::ADDRESS, b.address.as_bytes());
    put(&mut out, t::ACCOUNT, b.account.as_bytes());
    let flags = bits(&[
        b.unix,
        b.multi_statements,
        b.pin_counted,
        b.one_shot,
        b.uncertain,
        b.last_insert_id_on_backend,
        b.found_rows_on_backend,
        b.diag_held,
    ]);
    put(&mut out, t::FLAGS, &[flags]);
    put(&mut out, t::THREAD_ID, &b.thread_id.to_le_bytes());
    put(&mut out, t::CAPS, &b.caps.to_le_bytes());
    put(&mut out, t::PROFILE, &b.profile.to_le_bytes());
    put(&mut out, t::STATUS, &b.status.to_le_bytes());
    if let Some(id) = b.last_insert_id {
        put(&mut out, t::LAST_INSERT_ID, &id.to_le_bytes());
    }
    put(&mut out, t::LAST_GTID, b.last_gtid.as_bytes());
    put(&mut out, t::HISTORY_OWNER, &b.history_owner.to_le_bytes());
    put(&mut out, t::TRX_STATE, &b.trx_state);
    put(&mut out, t::WARNINGS, &b.last_warnings.to_le_bytes());
    put(&mut out, t::AGE_SECS, &b.age_secs.to_le_bytes());
    put(&mut out, t::NONCE, &b.nonce);
    put(&mut out, t::PLUGIN, &b.auth_plugin);
    if let Some(schema) = &b.schema {
        put(&mut out, t::SCHEMA, schema.as_bytes());
    }
    for (n, v) in &b.vars {
        put(&mut out, t::VAR, &var_bytes(n, v));
    }
    for p in &b.prepared {
        use tag::stmt as st;
        let mut v = Vec::with_capacity(16 + p.sql.len());
        put(&mut v, st::ID, &p.id.to_le_bytes());
        put(&mut v, st::SQL, &p.sql);
        if let Some(schema) = &p.schema {
            put(&mut v, st::SCHEMA, schema.as_bytes());
        }
        for (n, val) in &p.vars {
            put(&mut v, st::VAR, &var_bytes(n, val));
        }
        put(&mut out, t::PREPARED, &v);
    }
    put(&mut out, t::DIAG, &[b.diag]);
    if let Some(p) = &b.pins {
        put(&mut out, t::PINS, &encode_pins(p));
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
            t::BOUND_CLIENT_COLLATION => s.bound_client_collation = Some(text(k, v)?),
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

fn decode_pins(v: &[u8]) -> Result<PinsRec, DecodeError> {
    use tag::pins as t;
    let mut p = PinsRec::default();
    for f in (Fields { rest: v }) {
        let (k, v) = f?;
        match k {
            t::FLAGS => {
                let [b] = fixed::<1>(k, v)?;
                let on = |i: u8| b & 1 << i != 0;
                p.user_vars = on(0);
                p.lock_tables = on(1);
                p.handler = on(2);
                p.trx_characteristics = on(3);
                p.unknown = on(4);
                p.sequence = on(5);
                p.stored_function = on(6);
                p.savepoint = on(7);
            }
            t::TEMP_TABLE => p.temp_tables.push(v.to_vec()),
            t::SQL_PREPARED => {
                let bad = DecodeError::Field {
                    tag: k,
                    why: "bad SQL-level statement",
                };
                let n = v.get(..2).ok_or(bad.clone())?;
                let n = u16::from_le_bytes([n[0], n[1]]) as usize;
                let name = v.get(2..2 + n).ok_or(bad.clone())?;
                let (&known, text) = v[2 + n..].split_first().ok_or(bad.clone())?;
                let text = match known {
                    0 if text.is_empty() => None,
                    1 => Some(text.to_vec()),
                    _ => return Err(bad),
                };
                p.sql_prepared.push((name.to_vec(), text));
            }
            t::NAMED_LOCK => p.named_locks.push(v.to_vec()),
            t::HISTORY_STMT => p.history_statements.push(u32::from_le_bytes(fixed(k, v)?)),
            _ => {}
        }
    }
    Ok(p)
}

fn decode_prepared(v: &[u8]) -> Result<PreparedRec, DecodeError> {
    use tag::stmt as t;
    let mut p = PreparedRec::default();
    let (mut id, mut sql) = (false, false);
    for f in (Fields { rest: v }) {
        let (k, v) = f?;
        match k {
            t::ID => {
                p.id = u32::from_le_bytes(fixed(k, v)?);
                id = true;
            }
            t::SQL => {
                p.sql = v.to_vec();
                sql = true;
            }
            t::SCHEMA => p.schema = Some(text(k, v)?),
            t::VAR => p.vars.push(var(k, v)?),
            _ => {}
        }
    }
    if !id || !sql {
        return Err(DecodeError::Missing("a backend statement's id and text"));
    }
    Ok(p)
}

fn decode_backend(v: &[u8]) -> Result<BackendRec, DecodeError> {
    use tag::conn as t;
    let mut b = BackendRec::default();
    let (mut address, mut thread, mut caps, mut profile) = (false, false, false, false);
    for f in (Fields { rest: v }) {
        let (k, v) = f?;
        match k {
            t::ADDRESS => {
                b.address = text(k, v)?;
                address = true;
            }
            t::ACCOUNT => b.account = text(k, v)?,
            t::FLAGS => {
                let [f] = fixed::<1>(k, v)?;
                let on = |i: u8| f & 1 << i != 0;
                b.unix = on(0);
                b.multi_statements = on(1);
                b.pin_counted = on(2);
                b.one_shot = on(3);
                b.uncertain = on(4);
                b.last_insert_id_on_backend = on(5);
                b.found_rows_on_backend = on(6);
                b.diag_held = on(7);
            }
            t::THREAD_ID => {
                b.thread_id = u32::from_le_bytes(fixed(k, v)?);
                thread = true;
            }
            t::CAPS => {
                b.caps = u32::from_le_bytes(fixed(k, v)?);
                caps = true;
            }
            t::PROFILE => {
                b.profile = u64::from_le_bytes(fixed(k, v)?);
                profile = true;
            }
            t::STATUS => b.status = u16::from_le_bytes(fixed(k, v)?),
            t::LAST_INSERT_ID => b.last_insert_id = Some(u64::from_le_bytes(fixed(k, v)?)),
            t::LAST_GTID => b.last_gtid = text(k, v)?,
            t::HISTORY_OWNER => b.history_owner = u32::from_le_bytes(fixed(k, v)?),
            t::TRX_STATE => b.trx_state = v.to_vec(),
            t::WARNINGS => b.last_warnings = u16::from_le_bytes(fixed(k, v)?),
            t::AGE_SECS => b.age_secs = u32::from_le_bytes(fixed(k, v)?),
            t::NONCE => b.nonce = v.to_vec(),
            t::PLUGIN => b.auth_plugin = v.to_vec(),
            t::SCHEMA => b.schema = Some(text(k, v)?),
            t::VAR => b.vars.push(var(k, v)?),
            t::PREPARED => b.prepared.push(decode_prepared(v)?),
            t::DIAG => {
                let [d] = fixed::<1>(k, v)?;
                if d > 2 {
                    return Err(DecodeError::Field {
                        tag: k,
                        why: "bad diagnostics state",
                    });
                }
                b.diag = d;
            }
            t::PINS => b.pins = Some(decode_pins(v)?),
            _ => {}
        }
    }
    if !address {
        return Err(DecodeError::Missing("the backend connection's backend"));
    }
    if !(thread && caps && profile) {
        return Err(DecodeError::Missing(
            "the backend connection's thread id, capabilities and profile",
        ));
    }
    Ok(b)
}

/// Decodes a record; any input gives a record or an error.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != VERSION && version != VERSION_BACKEND {
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
            // (In a version-1 record, a field a version-1 reader skips: skipped too.)
            tag::BACKEND_CONN if version == VERSION_BACKEND => {
                if r.backend_conn.is_some() {
                    return Err(DecodeError::Field {
                        tag: k,
                        why: "two backend connections",
                    });
                }
                r.backend_conn = Some(decode_backend(v)?);
            }
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
    if version == VERSION_BACKEND && r.backend_conn.is_none() {
        return Err(DecodeError::Missing("a backend connection"));
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
                    bound_client_collation: Some("utf8mb4_bin".into()),
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
            backend_conn: None,
        }
    }

    fn backend() -> BackendRec {
        BackendRec {
            address: "127.0.0.1:3306".into(),
            account: "app".into(),
            unix: false,
            thread_id: 77,
            caps: 0x0fa6_a28f,
            profile: 1 << 24 | 1 << 35,
            status: 0x4003,
            multi_statements: true,
            last_insert_id: None,
            last_gtid: "0-1-9".into(),
            history_owner: 0x1234_5678,
            trx_state: b"T___W___".to_vec(),
            last_warnings: 2,
            age_secs: 61,
            nonce: vec![1; 20],
            auth_plugin: b"mysql_native_password".to_vec(),
            schema: Some("shop".into()),
            vars: vec![("time_zone".into(), "+02:00".into())],
            prepared: vec![
                PreparedRec {
                    id: 5,
                    sql: b"SELECT ?".to_vec(),
                    schema: Some("shop".into()),
                    vars: vec![("sql_mode".into(), "".into())],
                },
                PreparedRec {
                    id: 6,
                    sql: b"DO 1".to_vec(),
                    ..PreparedRec::default()
                },
            ],
            pin_counted: true,
            one_shot: false,
            uncertain: true,
            last_insert_id_on_backend: true,
            found_rows_on_backend: false,
            diag: 2,
            diag_held: true,
            pins: Some(PinsRec {
                user_vars: true,
                temp_tables: vec![b"shop.t".to_vec()],
                sql_prepared: vec![
                    (b"s".to_vec(), Some(b"SELECT 1".to_vec())),
                    (b"v".to_vec(), None),
                ],
                named_locks: vec![b"job".to_vec(), b"job".to_vec()],
                lock_tables: true,
                handler: false,
                trx_characteristics: true,
                unknown: false,
                sequence: true,
                stored_function: false,
                history_statements: vec![3],
                savepoint: true,
            }),
        }
    }

    #[test]
    fn a_record_with_its_backend_is_version_2_and_round_trips() {
        let mut r = full();
        r.backend_conn = Some(backend());
        let bytes = encode(&r);
        assert_eq!(bytes[0], VERSION_BACKEND);
        assert_eq!(decode(&bytes), Ok(r.clone()));
        // Without pins, with every flag off.
        let mut b = BackendRec {
            pins: None,
            diag: 0,
            ..backend()
        };
        b.prepared.clear();
        r.backend_conn = Some(b);
        assert_eq!(decode(&encode(&r)), Ok(r));
        // Without one, version 1 as before.
        assert_eq!(encode(&full())[0], VERSION);
    }

    #[test]
    fn version_2_refusals() {
        // (A version-1 sluice refuses any version byte but 1, so it refuses these records
        // rather than skip the backend connection: see `a_record_with_its_backend_is_version_2`.)
        let mut r = full();
        r.backend_conn = Some(backend());
        let bytes = encode(&r);
        // Version 2 without its backend connection.
        let mut no_conn = encode(&full());
        no_conn[0] = VERSION_BACKEND;
        assert_eq!(
            decode(&no_conn),
            Err(DecodeError::Missing("a backend connection"))
        );
        // A backend connection in a version-1 record is skipped, as a version-1 reader does.
        let mut v1 = bytes.clone();
        v1[0] = VERSION;
        assert_eq!(decode(&v1), Ok(full()));
        // A bad diagnostics state, a backend without its address.
        let mut bad = encode(&full());
        bad[0] = VERSION_BACKEND;
        let mut conn = Vec::new();
        put(&mut conn, tag::conn::ADDRESS, b"x:1");
        put(&mut conn, tag::conn::THREAD_ID, &1u32.to_le_bytes());
        put(&mut conn, tag::conn::CAPS, &1u32.to_le_bytes());
        put(&mut conn, tag::conn::PROFILE, &1u64.to_le_bytes());
        put(&mut conn, tag::conn::DIAG, &[3]);
        let mut b1 = bad.clone();
        put(&mut b1, tag::BACKEND_CONN, &conn);
        assert_eq!(
            decode(&b1),
            Err(DecodeError::Field {
                tag: tag::conn::DIAG,
                why: "bad diagnostics state"
            })
        );
        let mut b2 = bad;
        // (Without the address field, 8 bytes, nor the bad state, the last 6.)
        put(&mut b2, tag::BACKEND_CONN, &conn[8..conn.len() - 6]);
        assert_eq!(
            decode(&b2),
            Err(DecodeError::Missing("the backend connection's backend"))
        );
    }

    #[test]
    fn version_2_records_written_elsewhere_still_decode() {
        // The fuzz corpus's seed for version 2 (written by this build's encoder once, then
        // committed): its layout must keep decoding.
        let r = decode(include_bytes!(
            "../../fuzz/corpus/upgrade_record/session_record_with_backend"
        ))
        .unwrap();
        let b = r.backend_conn.as_ref().unwrap();
        assert_eq!((b.thread_id, b.address.as_str()), (77, "127.0.0.1:3306"));
        assert_eq!(
            b.pins.as_ref().unwrap().temp_tables,
            vec![b"shop.t".to_vec()]
        );
        assert_eq!(b.prepared.len(), 2);
        assert_eq!(decode(&encode(&r)), Ok(r));
    }

    /// The fuzz corpus's version-2 seed is this encoder's output for [`full`] with a backend
    /// (so the fuzzer starts from a record that decodes whole). After a deliberate change of
    /// the format, `SLUICE_WRITE_SEEDS=1 cargo test --lib version_2_seed` writes it again.
    #[test]
    fn version_2_seed_is_what_the_encoder_writes() {
        let mut r = full();
        r.backend_conn = Some(backend());
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/corpus/upgrade_record/session_record_with_backend"
        );
        if std::env::var_os("SLUICE_WRITE_SEEDS").is_some() {
            std::fs::write(path, encode(&r)).unwrap();
        }
        let seed = std::fs::read(path).unwrap();
        assert_eq!(decode(&seed), Ok(r.clone()));
        assert_eq!(seed, encode(&r), "the seed is stale: see this test's doc");
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
            (vec![3], DecodeError::Version(3)),
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
        let mut with_backend = full();
        with_backend.backend_conn = Some(backend());
        for good in [encode(&full()), encode(&with_backend)] {
            for n in 0..good.len() {
                let _ = decode(&good[..n]);
                for b in [0u8, 1, 0x7f, 0xff] {
                    let mut c = good.clone();
                    c[n] = b;
                    let _ = decode(&c);
                }
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut v = vec![if x & 1 == 0 { VERSION } else { VERSION_BACKEND }];
            for _ in 0..(x % 97) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8 % 22);
            }
            let _ = decode(&v);
        }
    }
}
