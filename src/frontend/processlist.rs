//! `SHOW [FULL] PROCESSLIST` on the client port. Passed to a backend, it would list sluice's
//! pooled connections under the server's thread ids: ids no client of sluice has, which
//! `CONNECTION_ID()` never returns and `KILL` does not know. sluice answers it itself (unless
//! `processlist = "server"`) with its own clients of the asking client's user, in every worker
//! process, under the ids `CONNECTION_ID()` and `KILL` use, in the server's columns and column
//! definitions (MariaDB 10.11's, lengths in the client's `character_set_results` as the server
//! converts them).
//!
//! What a row holds: `Command` names the command a client is being served as the server does
//! (`Query`, `Execute`, `Fetch`, …; a command waiting for RESUME is a `Query`) and `Sleep`
//! otherwise; `Time` the seconds since a parked client's last command (0 for one being served);
//! `Info` the asking client's own statement (as the server shows it, cut to 100 characters
//! without `FULL`), NULL for the others (sluice does not keep other clients' statement text:
//! copying it on every command would cost the hot path an allocation); `State` likewise
//! (`starting` for the asker, as the server says while it runs `SHOW PROCESSLIST`).
//!
//! The server lists every thread to a user with the PROCESS privilege; sluice lists the same
//! user's clients only (it does not know the user's privileges on the server), in both listings.
//!
//! `information_schema.PROCESSLIST` shows the same listing: a statement that reads the table
//! (where [`sql::info_schema`] finds it) reaches the server with the table replaced by a derived
//! table of literal rows ([`derived_table`]), so the server itself evaluates the rest of the
//! statement (WHERE, ORDER BY, GROUP BY, joins, COUNT, subqueries) over sluice's clients. A
//! listing that would add more than [`MAX_LISTING_TEXT`] bytes to the statement is refused with
//! an error (1235), never cut short. Prepared statements (COM_STMT_PREPARE) are not rewritten:
//! their text is prepared once on a backend, and a listing frozen into it would be stale at the
//! next execution; they read the server's table, like stored code and dynamic SQL.
//!
//! Like the server's, the statement sets `ROW_COUNT()` to -1 and leaves `FOUND_ROWS()` and the
//! diagnostics area (`SHOW WARNINGS` after it still shows the previous statement's) as they were
//! (checked against MariaDB 10.11).

use super::answer::{self, Column};
use super::client::ClientIo;
use super::session::{fail, CmdResult, Flow, Session};
use crate::bootstrap::ColumnTemplate;
use crate::error::Reply;
use crate::metrics::ClientRow;
use crate::session::sql::{self, info_schema::Edit};
use crate::shard::{Reply1, Shard};
use bytes::Bytes;
use std::rc::Rc;
use std::time::Duration;

/// How long sluice waits for its shards and worker processes to list their clients.
const GATHER_TIMEOUT: Duration = Duration::from_secs(2);

/// The server's `Info` without `FULL`: the statement's first 100 characters.
const INFO_CHARS: usize = 100;

/// The charset a column's length is counted in when `character_set_results` converts nothing
/// (NULL, or `binary`): the server's system charset, utf8mb3, and its collation id.
pub(crate) const SYSTEM_MBMAXLEN: u32 = 3;
pub(crate) const SYSTEM_COLLATION: u16 = 33;

/// One column of the server's `SHOW PROCESSLIST`: its name and how the server defines it.
struct Def {
    name: &'static [u8],
    kind: Kind,
    /// Field type, flags and decimals as MariaDB 10.11 sends them.
    ty: u8,
    flags: u16,
    decimals: u8,
}

enum Kind {
    /// A number: this display length, binary collation.
    Number(u32),
    /// A VARCHAR of this many characters.
    Chars(u32),
    /// A LONGTEXT (`Info` of `SHOW FULL PROCESSLIST`): this many bytes per byte of the
    /// results charset's widest character.
    Text(u32),
}

const fn def(name: &'static [u8], kind: Kind, ty: u8, flags: u16, decimals: u8) -> Def {
    Def {
        name,
        kind,
        ty,
        flags,
        decimals,
    }
}

/// `Info` is VARCHAR(100) without `FULL`, LONGTEXT with it.
fn defs(full: bool) -> [Def; 9] {
    const LONGLONG: u8 = 0x08;
    const LONG: u8 = 0x03;
    const DOUBLE: u8 = 0x05;
    const VARCHAR: u8 = 0xfd;
    const LONG_BLOB: u8 = 0xfb;
    const NOT_NULL: u16 = 0x01;
    const UNSIGNED_NOT_NULL: u16 = 0x81;
    // What the server sends as "decimals" for strings.
    const STR: u8 = 39;
    [
        def(b"Id", Kind::Number(11), LONGLONG, UNSIGNED_NOT_NULL, 0),
        def(b"User", Kind::Chars(128), VARCHAR, NOT_NULL, STR),
        def(b"Host", Kind::Chars(64), VARCHAR, NOT_NULL, STR),
        def(b"db", Kind::Chars(64), VARCHAR, 0, STR),
        def(b"Command", Kind::Chars(16), VARCHAR, NOT_NULL, STR),
        def(b"Time", Kind::Number(7), LONG, UNSIGNED_NOT_NULL, 0),
        def(b"State", Kind::Chars(30), VARCHAR, 0, STR),
        if full {
            def(b"Info", Kind::Text(201_326_592), LONG_BLOB, 0, STR)
        } else {
            def(b"Info", Kind::Chars(INFO_CHARS as u32), VARCHAR, 0, STR)
        },
        def(b"Progress", Kind::Number(7), DOUBLE, UNSIGNED_NOT_NULL, 3),
    ]
}

/// How the server converts string columns for the client: to its `character_set_results`
/// (that charset's default collation id and widest character), or not at all (`None`: NULL or
/// `binary`).
pub type Results = Option<(u16, u32)>;

/// The widest character of a MariaDB character set, in bytes (1 for those not listed: every
/// other charset MariaDB has is single-byte).
pub(crate) fn mbmaxlen(charset: &str) -> u32 {
    match charset.to_ascii_lowercase().as_str() {
        "utf8mb4" | "utf16" | "utf16le" | "utf32" => 4,
        "utf8mb3" | "utf8" | "ujis" | "eucjpms" => 3,
        "big5" | "sjis" | "euckr" | "gb2312" | "gbk" | "cp932" | "ucs2" => 2,
        _ => 1,
    }
}

/// The conversion for `character_set_results` = `charset` (`None`: NULL), given the default
/// collation id of each charset.
pub fn results(charset: Option<&str>, default_collation: impl Fn(&str) -> Option<u16>) -> Results {
    let cs = charset.filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("NULL"))?;
    if cs.eq_ignore_ascii_case("binary") {
        return None;
    }
    Some((default_collation(cs)?, mbmaxlen(cs)))
}

/// The column definitions the server sends, converted as `results` says.
pub fn columns(full: bool, results: Results, extended: bool) -> Vec<Vec<u8>> {
    defs(full)
        .iter()
        .map(|d| {
            let (charset, length) = match (&d.kind, results) {
                (Kind::Number(n), _) => (63, *n),
                (Kind::Chars(n), Some((cs, m))) => (cs, n * m),
                (Kind::Chars(n), None) => (SYSTEM_COLLATION, n * SYSTEM_MBMAXLEN),
                (Kind::Text(n), Some((cs, m))) => (cs, n.saturating_mul(m)),
                (Kind::Text(n), None) => (SYSTEM_COLLATION, *n),
            };
            let mut t: ColumnTemplate = [0; 13];
            t[0] = 0x0c;
            t[1..3].copy_from_slice(&charset.to_le_bytes());
            t[3..7].copy_from_slice(&length.to_le_bytes());
            t[7] = d.ty;
            t[8..10].copy_from_slice(&d.flags.to_le_bytes());
            t[10] = d.decimals;
            answer::column(
                &Column {
                    name: d.name,
                    template: &t,
                    charset: None,
                    value: None,
                },
                extended,
            )
        })
        .collect()
}

/// Who asks: their connection id, login name, and how: `SHOW PROCESSLIST` (command `Query`,
/// the statement's text) or COM_PROCESS_INFO (command `Processlist`, no text).
pub struct Asker<'a> {
    pub id: u32,
    pub user: &'a str,
    pub command: &'static str,
    pub sql: Option<&'a [u8]>,
}

/// What a listing shows of one client: the same in `SHOW PROCESSLIST` and
/// `information_schema.PROCESSLIST`.
struct Entry<'a> {
    id: u32,
    user: &'a str,
    /// `ip:port`, the IP alone, or empty (not known).
    host: String,
    db: Option<&'a str>,
    command: &'a [u8],
    /// Seconds in its state: since its last command for a sleeping client, 0 for one being
    /// served.
    time: u64,
    /// The asker itself.
    me: bool,
}

/// The clients `asker` sees, in id order: those of its own user (the one rule of both
/// listings).
fn listing<'a>(clients: &'a [ClientRow], asker: &Asker<'a>) -> Vec<Entry<'a>> {
    let mut mine: Vec<&ClientRow> = clients
        .iter()
        .filter(|c| c.user == asker.user && !c.user.is_empty())
        .collect();
    mine.sort_by_key(|c| c.id);
    mine.dedup_by_key(|c| c.id);
    mine.into_iter()
        .map(|c| {
            let me = c.id == asker.id;
            let busy = me || c.busy || c.state == "paused";
            let host = match (&c.source, c.port) {
                (Some(ip), Some(port)) => format!("{ip}:{port}"),
                (Some(ip), None) => ip.clone(),
                (None, _) => String::new(),
            };
            let command = match (me, busy, &c.command) {
                (true, ..) => asker.command.as_bytes(),
                (false, true, Some(name)) => name.as_bytes(),
                (false, true, None) => b"Query",
                (false, false, _) => b"Sleep",
            };
            Entry {
                id: c.id,
                user: &c.user,
                host,
                db: c.schema.as_deref(),
                command,
                time: if busy { 0 } else { c.idle_s },
                me,
            }
        })
        .collect()
}

/// The rows (text protocol) for `asker` out of every client of sluice, in id order.
pub fn rows(clients: &[ClientRow], asker: &Asker<'_>, full: bool) -> Vec<Vec<u8>> {
    listing(clients, asker)
        .into_iter()
        .map(|e| {
            let info = asker.sql.filter(|_| e.me).map(|sql| {
                if full {
                    sql
                } else {
                    first_chars(sql, INFO_CHARS)
                }
            });
            let id = e.id.to_string();
            let time = e.time.to_string();
            let values: [Option<&[u8]>; 9] = [
                Some(id.as_bytes()),
                Some(e.user.as_bytes()),
                Some(e.host.as_bytes()),
                e.db.map(str::as_bytes),
                Some(e.command),
                Some(time.as_bytes()),
                Some(if e.me { &b"starting"[..] } else { b"" }),
                info,
                Some(b"0.000"),
            ];
            answer::text_row(values)
        })
        .collect()
}

/// The first `n` characters of UTF-8 text `s` (bytes that are not UTF-8 count one each).
fn first_chars(s: &[u8], n: usize) -> &[u8] {
    let mut chars = 0;
    for (i, &b) in s.iter().enumerate() {
        // A character starts at every byte that is not a continuation byte.
        if b & 0xc0 != 0x80 {
            if chars == n {
                return &s[..i];
            }
            chars += 1;
        }
    }
    s
}

/// Listings gathered at once in this process (each on a thread of its own, for at most about
/// [`GATHER_TIMEOUT`]): a client sending SHOW PROCESSLIST in a loop from many connections gets
/// its answers in turn, not a thread each.
const MAX_LISTINGS: usize = 4;
static LISTINGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the [`MAX_LISTINGS`], given back when dropped (on the listing's thread).
struct Listing;

impl Listing {
    /// Waits (polling every 5 ms) until fewer than [`MAX_LISTINGS`] run.
    async fn take() -> Listing {
        use std::sync::atomic::Ordering;
        while LISTINGS.fetch_add(1, Ordering::AcqRel) >= MAX_LISTINGS {
            LISTINGS.fetch_sub(1, Ordering::AcqRel);
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
        Listing
    }
}

impl Drop for Listing {
    fn drop(&mut self) {
        LISTINGS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Every client of this sluice: this process's shards and the other worker processes. Listed
/// from a plain thread, since the shards answer over blocking channels (this shard among
/// them: its executor serves the request while this task waits). `Err` when no thread could be
/// made (the server's ER_CANT_CREATE_THREAD).
async fn every_client(shard: &Shard) -> Result<Vec<ClientRow>, Reply> {
    let slot = Listing::take().await;
    let reply = Reply1::default();
    let r = reply.clone();
    let shared = shard.shared.clone();
    std::thread::Builder::new()
        .name("sluice-processlist".into())
        .spawn(move || {
            let _slot = slot;
            let mut rows = crate::metrics::collect_clients(&shared, GATHER_TIMEOUT);
            if let Some(sup) = shared.supervisor {
                for w in (0..shared.workers).filter(|w| *w != shared.worker) {
                    rows.extend(crate::admin::remote_clients(sup, w).unwrap_or_default());
                }
            }
            r.send(rows)
        })
        .map_err(|e| {
            Reply::new(
                1135,
                b"HY000",
                format!(
                    "Can't create a new thread (errno {}): sluice could not list its clients",
                    e.raw_os_error().unwrap_or(0)
                ),
            )
        })?;
    Ok(reply.recv().await)
}

/// Answers `SHOW [FULL] PROCESSLIST` (`sql`: the statement as the client sent it), or
/// COM_PROCESS_INFO (`sql` `None`), which the server answers as `SHOW PROCESSLIST`.
pub(crate) async fn show(
    shard: &Rc<Shard>,
    sess: &mut Session,
    io: &mut ClientIo,
    next: u8,
    full: bool,
    sql: Option<&[u8]>,
) -> CmdResult {
    let clients = match every_client(shard).await {
        Ok(c) => c,
        Err(r) => return super::session::reply_err(io, next, r).await,
    };
    let asker = Asker {
        id: sess.conn_id,
        user: &sess.user.name,
        command: if sql.is_some() {
            "Query"
        } else {
            "Processlist"
        },
        sql,
    };
    let server = &shard.shared.server;
    let charset = super::command::results_charset(shard, sess);
    let conversion = results(charset.as_deref(), |cs| {
        server.default_collations.get(cs).copied()
    });
    let extended = sess.mariadb_caps & crate::codec::caps::mariadb_cap::EXTENDED_METADATA != 0;
    let packets = answer::result_set(
        columns(full, conversion, extended),
        rows(&clients, &asker, full),
        sess.session_status(),
        sess.caps,
    );
    let mut seq = next;
    for p in packets {
        seq = io.queue(seq, &p);
    }
    io.flush(None).await.map_err(|e| fail(e, next))?;
    // The server's ROW_COUNT() after it is -1; FOUND_ROWS() and the diagnostics stay. A
    // backend the session holds did not run it.
    sess.update_past(|p| {
        p.history.row_count = -1;
        p.history.foreign.row_count = true;
    });
    Ok(Flow::Continue)
}

// ---- information_schema.PROCESSLIST ---------------------------------------------------------

/// What the server keeps of a statement in `INFO` and `INFO_BINARY`: its first 65,535 bytes
/// (`PROCESS_LIST_INFO_WIDTH`).
const INFO_BYTES: usize = 65_535;

/// The most text sluice adds to a statement for its listings (every reference together): half of
/// MariaDB's default `max_allowed_packet` (16 MiB), so that the statement stays well under what
/// the server takes. sluice does not know the server's own setting: a server configured below
/// this refuses a large listing with its own error (1153).
pub const MAX_LISTING_TEXT: usize = 4 << 20;

/// The server's `STATE` of the thread reading the table.
const READING_STATE: &[u8] = b"Filling schema table";

/// `bytes` as the server shows a statement in `INFO` (a utf8mb3 column): every byte that does
/// not start a well-formed utf8mb3 character of 1 to 3 bytes becomes `?` (so a 4-byte character
/// becomes `????`, as MariaDB 10.11 shows it, whatever the client's character set).
pub fn utf8mb3_lossy(bytes: &[u8]) -> Vec<u8> {
    let cont = |i: usize| bytes.get(i).is_some_and(|b| b & 0xc0 == 0x80);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let len = match c {
            0x00..=0x7f => 1,
            0xc2..=0xdf if cont(i + 1) => 2,
            0xe0..=0xef if cont(i + 1) && cont(i + 2) && (c != 0xe0 || bytes[i + 1] >= 0xa0) => 3,
            _ => 0,
        };
        if len == 0 {
            out.push(b'?');
            i += 1;
        } else {
            out.extend_from_slice(&bytes[i..i + len]);
            i += len;
        }
    }
    out
}

/// Appends `introducer X'<hex of bytes>'`: a literal no byte of `bytes` can break out of.
fn push_hex(out: &mut Vec<u8>, introducer: &[u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(introducer);
    out.extend_from_slice(b"X'");
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0x0f)]);
    }
    out.push(b'\'');
}

/// A utf8mb3 string literal of `bytes` (as the server would store them in its utf8mb3 column).
fn push_text(out: &mut Vec<u8>, bytes: &[u8]) {
    push_hex(out, b"_utf8mb3 ", &utf8mb3_lossy(bytes));
}

/// The derived table that stands in for `information_schema.PROCESSLIST`: `asker`'s listing
/// (the rows `SHOW PROCESSLIST` shows it) as literal rows, after an empty read of the server's
/// table that gives the columns their names, types, lengths, character set and nullability
/// (a `UNION` takes them from every part). Columns sluice has no notion of: `STAGE`,
/// `MAX_STAGE`, `EXAMINED_ROWS` 0 and `PROGRESS` 0.000, as the server shows an idle connection;
/// `MEMORY_USED`, `MAX_MEMORY_USED`, `QUERY_ID`, `TID` 0, which the server never shows (a
/// client of sluice has no server memory, query id or thread of its own: 0 says "none", where
/// a backend's values would be another connection's); `TIME_MS` is `TIME` in milliseconds
/// (sluice counts whole seconds). `INFO` is the asker's own statement, NULL for the others (as in
/// `SHOW PROCESSLIST`); `INFO_BINARY` the same bytes unconverted. Every string is a hex literal.
pub fn derived_table(clients: &[ClientRow], asker: &Asker<'_>) -> Vec<u8> {
    let entries = listing(clients, asker);
    let mut out = Vec::with_capacity(64 + entries.len() * 192);
    out.extend_from_slice(b"(SELECT * FROM information_schema.PROCESSLIST WHERE 0");
    for e in entries {
        out.extend_from_slice(b" UNION ALL SELECT ");
        out.extend_from_slice(e.id.to_string().as_bytes());
        out.push(b',');
        push_text(&mut out, e.user.as_bytes());
        out.push(b',');
        push_text(&mut out, e.host.as_bytes());
        out.push(b',');
        match e.db {
            Some(db) => push_text(&mut out, db.as_bytes()),
            None => out.extend_from_slice(b"NULL"),
        }
        out.push(b',');
        push_text(&mut out, e.command);
        out.push(b',');
        out.extend_from_slice(e.time.to_string().as_bytes());
        out.push(b',');
        let info = asker
            .sql
            .filter(|_| e.me)
            .map(|sql| &sql[..sql.len().min(INFO_BYTES)]);
        push_text(&mut out, if e.me { READING_STATE } else { b"" });
        out.push(b',');
        match info {
            Some(sql) => push_text(&mut out, sql),
            None => out.extend_from_slice(b"NULL"),
        }
        // TIME_MS, STAGE, MAX_STAGE, PROGRESS, MEMORY_USED, MAX_MEMORY_USED, EXAMINED_ROWS,
        // QUERY_ID.
        out.extend_from_slice(format!(",{}.000,0,0,0.000,0,0,0,0,", e.time * 1000).as_bytes());
        match info {
            Some(sql) => push_hex(&mut out, b"_binary ", sql),
            None => out.extend_from_slice(b"NULL"),
        }
        // TID.
        out.extend_from_slice(b",0");
    }
    out.push(b')');
    out
}

/// Quotes `name` as an identifier (backquotes, doubled inside).
fn quoted_ident(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    out.push(b'`');
    for &b in name {
        if b == b'`' {
            out.push(b'`');
        }
        out.push(b);
    }
    out.push(b'`');
    out
}

/// `sql` with every edit applied, `table` standing in for each table reference; `Err(bytes)`
/// when the listings would add more than `limit` bytes.
pub fn rewrite(sql: &[u8], edits: &[Edit], table: &[u8], limit: usize) -> Result<Vec<u8>, usize> {
    let mut added = 0usize;
    let mut out: Vec<(std::ops::Range<usize>, Vec<u8>)> = Vec::with_capacity(edits.len());
    for e in edits {
        match e {
            Edit::Table { at, alias } => {
                let mut t = table.to_vec();
                if let Some(a) = alias {
                    t.extend_from_slice(b" AS ");
                    t.extend_from_slice(&quoted_ident(a));
                }
                added += t.len();
                out.push((at.clone(), t));
            }
            Edit::Qualifier { at } => out.push((at.clone(), Vec::new())),
        }
    }
    if added > limit {
        return Err(added);
    }
    Ok(sql::splice(sql, &out))
}

/// COM_QUERY `payload` (the text as it goes to the server: history reads may already be
/// rewritten) with its references to `information_schema.PROCESSLIST` replaced by sluice's
/// listing (unless `processlist = "server"`, or the text has none; see [`sql::info_schema`]).
/// `original` is the client's own text, its `INFO`. `Err`: the answer for the client (a listing
/// too large to send, or no thread to gather it).
pub(crate) async fn information_schema(
    shard: &Rc<Shard>,
    sess: &Session,
    original: &[u8],
    payload: Bytes,
) -> Result<Bytes, Reply> {
    if shard.cfg().processlist != crate::config::Processlist::Sluice
        // (MySQL's table has eight columns, not the ones sluice writes: it passes unchanged.)
        || !shard.shared.server.is_mariadb()
    {
        return Ok(payload);
    }
    let ctx = sql::Context {
        modes: sess.modes(),
        schema: sess.settings.schema.as_deref().map(str::as_bytes),
        ..sql::Context::default()
    };
    let Some(text) = payload.get(1..) else {
        return Ok(payload);
    };
    let edits = sql::info_schema::processlist_edits(text, &ctx);
    if edits.is_empty() {
        return Ok(payload);
    }
    let clients = every_client(shard).await?;
    let asker = Asker {
        id: sess.conn_id,
        user: &sess.user.name,
        command: "Query",
        sql: Some(original),
    };
    let table = derived_table(&clients, &asker);
    let rewritten = rewrite(text, &edits, &table, MAX_LISTING_TEXT).map_err(too_large)?;
    let mut out = Vec::with_capacity(rewritten.len() + 1);
    out.push(payload[0]);
    out.extend_from_slice(&rewritten);
    Ok(Bytes::from(out))
}

/// The answer when the listing does not fit in a statement: an error, never a shorter list
/// that would pass for the whole.
fn too_large(bytes: usize) -> Reply {
    Reply::new(
        1235,
        b"42000",
        format!(
            "sluice: information_schema.PROCESSLIST would take {bytes} bytes of SQL here, more than sluice puts in one statement ({MAX_LISTING_TEXT}); use SHOW PROCESSLIST"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::packets::column_fixed_part;

    /// (charset, length) of each column, as a client reads them.
    fn shape(full: bool, r: Results) -> Vec<(u16, u32)> {
        columns(full, r, false)
            .iter()
            .map(|d| {
                let f = column_fixed_part(d, false).unwrap();
                (
                    u16::from_le_bytes([f[1], f[2]]),
                    u32::from_le_bytes([f[3], f[4], f[5], f[6]]),
                )
            })
            .collect()
    }

    #[test]
    fn column_lengths_follow_the_results_charset_as_the_server_converts_them() {
        // Measured on MariaDB 10.11: latin1, utf8mb4, NULL (no conversion), utf8mb3.
        type Shape = [(u16, u32); 9];
        let cases: [(bool, Results, Shape); 4] = [
            (
                false,
                Some((8, 1)),
                [
                    (63, 11),
                    (8, 128),
                    (8, 64),
                    (8, 64),
                    (8, 16),
                    (63, 7),
                    (8, 30),
                    (8, 100),
                    (63, 7),
                ],
            ),
            (
                false,
                Some((45, 4)),
                [
                    (63, 11),
                    (45, 512),
                    (45, 256),
                    (45, 256),
                    (45, 64),
                    (63, 7),
                    (45, 120),
                    (45, 400),
                    (63, 7),
                ],
            ),
            (
                true,
                None,
                [
                    (63, 11),
                    (33, 384),
                    (33, 192),
                    (33, 192),
                    (33, 48),
                    (63, 7),
                    (33, 90),
                    (33, 201_326_592),
                    (63, 7),
                ],
            ),
            (
                true,
                Some((33, 3)),
                [
                    (63, 11),
                    (33, 384),
                    (33, 192),
                    (33, 192),
                    (33, 48),
                    (63, 7),
                    (33, 90),
                    (33, 603_979_776),
                    (63, 7),
                ],
            ),
        ];
        for (full, r, want) in cases {
            assert_eq!(shape(full, r), want, "full {full}, {r:?}");
        }
    }

    #[test]
    fn results_conversion() {
        let dc = |cs: &str| match cs {
            "latin1" => Some(8),
            "utf8mb4" => Some(45),
            _ => None,
        };
        assert_eq!(results(Some("latin1"), dc), Some((8, 1)));
        assert_eq!(results(Some("utf8mb4"), dc), Some((45, 4)));
        assert_eq!(results(None, dc), None);
        assert_eq!(results(Some(""), dc), None);
        assert_eq!(results(Some("NULL"), dc), None);
        assert_eq!(results(Some("binary"), dc), None);
    }

    fn client(id: u32, user: &str, state: &str, busy: bool) -> ClientRow {
        ClientRow {
            id,
            user: user.into(),
            source: Some("127.0.0.1".into()),
            port: Some(4000 + id as u16),
            state: state.into(),
            busy,
            idle_s: 7,
            ..ClientRow::default()
        }
    }

    /// A text row's values.
    fn values(row: &[u8]) -> Vec<Option<String>> {
        let mut r = crate::codec::wire::Reader::new(row);
        let mut out = Vec::new();
        while let Some(b) = r.peek_u8() {
            if b == 0xfb {
                r.skip(1, "null").unwrap();
                out.push(None);
            } else {
                let v = r.lenenc_bytes("value").unwrap();
                out.push(Some(String::from_utf8_lossy(v).into_owned()));
            }
        }
        out
    }

    #[test]
    fn rows_are_the_users_own_clients_in_id_order() {
        let clients = [
            client(9, "app", "parked", false),
            ClientRow {
                command: Some("Execute".into()),
                ..client(3, "app", "active", true)
            },
            client(5, "other", "parked", false),
            client(4, "app", "active", false),
            client(8, "app", "paused", false),
            client(6, "", "active", true), // still in its handshake
        ];
        let sql = "SHOW PROCESSLIST".as_bytes();
        let asker = Asker {
            id: 4,
            user: "app",
            command: "Query",
            sql: Some(sql),
        };
        let rows: Vec<_> = rows(&clients, &asker, false)
            .iter()
            .map(|r| values(r))
            .collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            rows,
            vec![
                vec![
                    s("3"),
                    s("app"),
                    s("127.0.0.1:4003"),
                    None,
                    s("Execute"),
                    s("0"),
                    s(""),
                    None,
                    s("0.000")
                ],
                vec![
                    s("4"),
                    s("app"),
                    s("127.0.0.1:4004"),
                    None,
                    s("Query"),
                    s("0"),
                    s("starting"),
                    s("SHOW PROCESSLIST"),
                    s("0.000")
                ],
                vec![
                    s("8"),
                    s("app"),
                    s("127.0.0.1:4008"),
                    None,
                    s("Query"),
                    s("0"),
                    s(""),
                    None,
                    s("0.000")
                ],
                vec![
                    s("9"),
                    s("app"),
                    s("127.0.0.1:4009"),
                    None,
                    s("Sleep"),
                    s("7"),
                    s(""),
                    None,
                    s("0.000")
                ],
            ]
        );
    }

    #[test]
    fn info_is_cut_to_100_characters_without_full() {
        let long = format!("SELECT '{}'", "é".repeat(200));
        let asker = Asker {
            id: 1,
            user: "u",
            command: "Query",
            sql: Some(long.as_bytes()),
        };
        let clients = [client(1, "u", "active", true)];
        let info = |full| values(&rows(&clients, &asker, full)[0])[7].clone().unwrap();
        assert_eq!(info(false).chars().count(), 100);
        assert!(long.starts_with(&info(false)));
        assert_eq!(info(true), long);
        let by_com = Asker {
            command: "Processlist",
            sql: None,
            ..asker
        };
        let row = values(&rows(&clients, &by_com, false)[0]);
        assert_eq!(
            (row[4].as_deref(), row[7].as_deref()),
            (Some("Processlist"), None)
        );
        assert_eq!(first_chars(b"abc", 100), b"abc");
        assert_eq!(first_chars(b"", 0), b"");
    }

    #[test]
    fn info_is_converted_as_the_server_shows_it() {
        // Measured on MariaDB 10.11 (INFO of the thread's own statement).
        let cases: &[(&[u8], &[u8])] = &[
            (b"SELECT 1", b"SELECT 1"),
            ("é".as_bytes(), "é".as_bytes()),
            ("😀".as_bytes(), b"????"),
            (b"a\xffb", b"a?b"),
            (b"a\x00b", b"a\x00b"),
            (b"\xed\xa0\x80", b"\xed\xa0\x80"),
            (b"\xefb", b"?b"),
            (b"\xe0\x80\x80", b"???"),
            (b"\xc0\x80", b"??"),
            (b"x\xc3", b"x?"),
            (b"\xe9t\xe9", b"?t?"),
        ];
        for (from, want) in cases {
            assert_eq!(utf8mb3_lossy(from), *want, "{from:?}");
        }
    }

    fn asker<'a>(sql: &'a [u8]) -> Asker<'a> {
        Asker {
            id: 4,
            user: "app",
            command: "Query",
            sql: Some(sql),
        }
    }

    #[test]
    fn the_derived_table_holds_the_same_listing_as_literal_rows() {
        let clients = [
            ClientRow {
                schema: Some("app".into()),
                ..client(9, "app", "parked", false)
            },
            client(5, "other", "parked", false),
            client(4, "app", "active", true),
        ];
        let t = derived_table(&clients, &asker(b"SELECT 'x'"));
        let want = "(SELECT * FROM information_schema.PROCESSLIST WHERE 0 \
             UNION ALL SELECT 4,_utf8mb3 X'617070',_utf8mb3 X'3132372E302E302E313A34303034',NULL,\
             _utf8mb3 X'5175657279',0,_utf8mb3 X'46696C6C696E6720736368656D61207461626C65',\
             _utf8mb3 X'53454C45435420277827',0.000,0,0,0.000,0,0,0,0,_binary X'53454C45435420277827',0 \
             UNION ALL SELECT 9,_utf8mb3 X'617070',_utf8mb3 X'3132372E302E302E313A34303039',\
             _utf8mb3 X'617070',_utf8mb3 X'536C656570',7,_utf8mb3 X'',NULL,7000.000,0,0,0.000,0,0,0,0,NULL,0)";
        assert_eq!(String::from_utf8(t).unwrap(), want);
        // No client of the user (the asker's own row not gathered in time): the empty read.
        let t = derived_table(&clients[1..2], &asker(b"x"));
        assert_eq!(t, b"(SELECT * FROM information_schema.PROCESSLIST WHERE 0)");
    }

    #[test]
    fn no_text_breaks_out_of_its_literal() {
        // The asker's statement (INFO), another client's schema: quotes, backslashes, NUL,
        // comment and statement ends, invalid UTF-8, multi-byte text.
        let nasty: &[u8] = b"SELECT '\\'', \"\\\"\", `x``y` /* */ -- \n; DROP TABLE t; \x00 \xff\xfe \xe2\x82 \xf0\x9f\x98\x80 \xc3\xa9 */ #";
        let clients = [
            client(4, "app", "active", true),
            ClientRow {
                schema: Some(String::from_utf8_lossy(nasty).into_owned()),
                ..client(6, "app", "parked", false)
            },
        ];
        let t = derived_table(&clients, &asker(nasty));
        for modes in [
            sql::Modes::default(),
            sql::Modes {
                ansi_quotes: true,
                no_backslash_escapes: true,
            },
        ] {
            for l in sql::lex(&t, modes) {
                match l.tok {
                    // Every literal is hex digits.
                    sql::Tok::Str(s) => assert!(s.iter().all(u8::is_ascii_hexdigit), "{s:?}"),
                    sql::Tok::Word(_) | sql::Tok::Number(_) | sql::Tok::Punct(_) => {}
                    other => panic!("{other:?} in {}", String::from_utf8_lossy(&t)),
                }
            }
        }
        assert!(t.is_ascii());
        assert!(!t.windows(2).any(|w| w == b"*/" || w == b"--"));
    }

    #[test]
    fn rewriting_applies_every_edit_or_refuses() {
        let sql = b"SELECT information_schema.PROCESSLIST.ID FROM information_schema.PROCESSLIST, information_schema.PROCESSLIST p";
        let ctx = sql::Context::default();
        let edits = sql::info_schema::processlist_edits(sql, &ctx);
        assert_eq!(
            rewrite(sql, &edits, b"(T)", 100).unwrap(),
            b"SELECT PROCESSLIST.ID FROM (T) AS `PROCESSLIST`, (T) p"
        );
        // Two listings of 3 bytes and ` AS `PROCESSLIST`` (17): 23 bytes added.
        assert_eq!(rewrite(sql, &edits, b"(T)", 22), Err(23));
        assert!(rewrite(sql, &edits, b"(T)", 23).is_ok());
        let odd = sql::info_schema::Edit::Table {
            at: 0..1,
            alias: Some(b"a`b".to_vec()),
        };
        assert_eq!(
            rewrite(b"x", &[odd], b"(T)", 100).unwrap(),
            b"(T) AS `a``b`"
        );
    }
}
