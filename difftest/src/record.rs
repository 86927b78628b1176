//! Turns a response's packets into transcript lines: one readable line per packet, decoding
//! every byte of it (OK: affected rows, insert id, status flags, warnings, info, session-state
//! block; ERR: code, SQLSTATE, message; column definitions field by field; rows value by value;
//! PREPARE_OK and its definitions; classic EOFs). A byte a decoder does not account for is shown
//! as `trailing=<hex>`, so two lines are equal exactly when the packets are, up to the rules in
//! [`crate::normalize`]. Nothing here panics on server input: malformed packets become lines
//! saying so.

use crate::client::{PacketRole, RawPacket};
use crate::normalize::Normalizer;
use sluice::codec::caps::{cap, status};
use sluice::codec::response::Role;
use sluice::codec::wire::Reader;
use sluice::codec::CodecError;
use std::fmt::Write as _;

/// Printable form of bytes: ASCII as is, the rest (and `\`) escaped.
pub fn escape(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        match c {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

/// The fields of a text-protocol row (`string<lenenc>` each, 0xFB for NULL).
pub fn text_fields(payload: &[u8]) -> Result<Vec<Option<Vec<u8>>>, CodecError> {
    let mut r = Reader::new(payload);
    let mut out = Vec::new();
    while !r.is_empty() {
        if r.peek_u8() == Some(0xFB) {
            r.skip(1, "NULL")?;
            out.push(None);
        } else {
            out.push(Some(r.lenenc_bytes("text row field")?.to_vec()));
        }
    }
    Ok(out)
}

/// Status flags as `0xNNNN(NAME|NAME)`.
pub fn status_text(st: u16) -> String {
    // Normalization rule 6.
    let st = st & !(status::NO_INDEX_USED | status::NO_GOOD_INDEX_USED | status::QUERY_WAS_SLOW);
    const NAMES: [(u16, &str); 14] = [
        (status::IN_TRANS, "IN_TRANS"),
        (status::AUTOCOMMIT, "AUTOCOMMIT"),
        (status::MORE_RESULTS_EXISTS, "MORE_RESULTS"),
        (status::NO_GOOD_INDEX_USED, "NO_GOOD_INDEX"),
        (status::NO_INDEX_USED, "NO_INDEX"),
        (status::CURSOR_EXISTS, "CURSOR_EXISTS"),
        (status::LAST_ROW_SENT, "LAST_ROW_SENT"),
        (status::DB_DROPPED, "DB_DROPPED"),
        (status::NO_BACKSLASH_ESCAPES, "NO_BACKSLASH_ESCAPES"),
        (status::METADATA_CHANGED, "METADATA_CHANGED"),
        (status::QUERY_WAS_SLOW, "QUERY_WAS_SLOW"),
        (status::PS_OUT_PARAMS, "PS_OUT_PARAMS"),
        (status::IN_TRANS_READONLY, "IN_TRANS_READONLY"),
        (status::SESSION_STATE_CHANGED, "SESSION_STATE_CHANGED"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(b, _)| st & b != 0)
        .map(|(_, n)| *n)
        .collect();
    format!("0x{st:04x}({})", names.join("|"))
}

/// A column definition's fields that the recorder needs later (binary rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnType {
    pub ty: u8,
    pub flags: u16,
}

const UNSIGNED_FLAG: u16 = 0x20;

/// Decodes and renders a column (or parameter) definition. Returns the line and the type.
fn column_def(label: &str, p: &[u8]) -> (String, Option<ColumnType>) {
    let parse = || -> Result<(String, ColumnType), CodecError> {
        let mut r = Reader::new(p);
        let catalog = r.lenenc_bytes("catalog")?;
        let schema = r.lenenc_bytes("schema")?;
        let table = r.lenenc_bytes("table")?;
        let org_table = r.lenenc_bytes("org_table")?;
        let name = r.lenenc_bytes("name")?;
        let org_name = r.lenenc_bytes("org_name")?;
        let fixed = r.lenenc_int("fixed length")?;
        let charset = r.u16("charset")?;
        let length = r.u32("column length")?;
        let ty = r.u8("type")?;
        let flags = r.u16("flags")?;
        let decimals = r.u8("decimals")?;
        let filler = r.take(2.min(r.remaining()), "filler")?;
        let mut s = format!(
            "{label} schema='{}' table='{}' org_table='{}' name='{}' org_name='{}' charset={charset} length={length} type={} flags=0x{flags:04x} decimals={decimals}",
            escape(schema),
            escape(table),
            escape(org_table),
            escape(name),
            escape(org_name),
            type_name(ty)
        );
        if catalog != b"def" {
            let _ = write!(s, " catalog='{}'", escape(catalog));
        }
        if fixed != 0x0c {
            let _ = write!(s, " fixed_len={fixed}");
        }
        if filler != [0, 0] {
            let _ = write!(s, " filler={}", hex(filler));
        }
        if !r.is_empty() {
            let _ = write!(s, " trailing={}", hex(r.rest()));
        }
        Ok((s, ColumnType { ty, flags }))
    };
    match parse() {
        Ok((s, t)) => (s, Some(t)),
        Err(e) => (format!("{label} MALFORMED ({e}) {}", hex(p)), None),
    }
}

fn type_name(ty: u8) -> String {
    let n = match ty {
        0x00 => "DECIMAL",
        0x01 => "TINY",
        0x02 => "SHORT",
        0x03 => "LONG",
        0x04 => "FLOAT",
        0x05 => "DOUBLE",
        0x06 => "NULL",
        0x07 => "TIMESTAMP",
        0x08 => "LONGLONG",
        0x09 => "INT24",
        0x0a => "DATE",
        0x0b => "TIME",
        0x0c => "DATETIME",
        0x0d => "YEAR",
        0x0e => "NEWDATE",
        0x0f => "VARCHAR",
        0x10 => "BIT",
        0xf5 => "JSON",
        0xf6 => "NEWDECIMAL",
        0xf7 => "ENUM",
        0xf8 => "SET",
        0xf9 => "TINY_BLOB",
        0xfa => "MEDIUM_BLOB",
        0xfb => "LONG_BLOB",
        0xfc => "BLOB",
        0xfd => "VAR_STRING",
        0xfe => "STRING",
        0xff => "GEOMETRY",
        _ => return format!("0x{ty:02x}"),
    };
    n.to_string()
}

/// A string field after normalization: quoted, escaped, GTID-looking values replaced.
fn string_value(norm: &mut Normalizer, b: &[u8]) -> String {
    match norm.gtid(b) {
        Some(g) => g,
        None => format!("'{}'", norm.statement_ids_in_text(&escape(b))),
    }
}

fn text_row(norm: &mut Normalizer, p: &[u8]) -> String {
    match text_fields(p) {
        Ok(fields) => {
            let vals: Vec<String> = fields
                .iter()
                .map(|f| match f {
                    None => "NULL".to_string(),
                    Some(b) => string_value(norm, b),
                })
                .collect();
            format!("ROW [{}]", vals.join(", "))
        }
        Err(e) => format!("ROW MALFORMED ({e}) {}", hex(p)),
    }
}

fn binary_value(
    norm: &mut Normalizer,
    r: &mut Reader<'_>,
    c: ColumnType,
) -> Result<String, CodecError> {
    let unsigned = c.flags & UNSIGNED_FLAG != 0;
    Ok(match c.ty {
        0x01 => {
            let v = r.u8("tiny")?;
            if unsigned {
                v.to_string()
            } else {
                (v as i8).to_string()
            }
        }
        0x02 | 0x0d => {
            let v = r.u16("short")?;
            if unsigned || c.ty == 0x0d {
                v.to_string()
            } else {
                (v as i16).to_string()
            }
        }
        0x03 | 0x09 => {
            let v = r.u32("long")?;
            if unsigned {
                v.to_string()
            } else {
                (v as i32).to_string()
            }
        }
        0x08 => {
            let v = r.u64("longlong")?;
            if unsigned {
                v.to_string()
            } else {
                (v as i64).to_string()
            }
        }
        0x04 => format!("{:?}f", f32::from_bits(r.u32("float")?)),
        0x05 => format!("{:?}d", f64::from_bits(r.u64("double")?)),
        0x06 => "NULL".into(),
        0x07 | 0x0a | 0x0c | 0x0e => {
            let n = r.u8("datetime length")?;
            let b = r.take(usize::from(n), "datetime")?;
            let mut s = String::from("{");
            if b.len() >= 4 {
                let _ = write!(
                    s,
                    "{:04}-{:02}-{:02}",
                    u16::from_le_bytes([b[0], b[1]]),
                    b[2],
                    b[3]
                );
            }
            if b.len() >= 7 {
                let _ = write!(s, " {:02}:{:02}:{:02}", b[4], b[5], b[6]);
            }
            if b.len() >= 11 {
                let _ = write!(s, ".{:06}", u32::from_le_bytes([b[7], b[8], b[9], b[10]]));
            }
            if !matches!(b.len(), 0 | 4 | 7 | 11) {
                let _ = write!(s, " raw={}", hex(b));
            }
            s.push('}');
            s
        }
        0x0b => {
            let n = r.u8("time length")?;
            let b = r.take(usize::from(n), "time")?;
            format!("{{time {}}}", hex(b))
        }
        _ => string_value(norm, r.lenenc_bytes("binary string value")?),
    })
}

fn binary_row(norm: &mut Normalizer, p: &[u8], cols: &[ColumnType]) -> String {
    let parse = |norm: &mut Normalizer| -> Result<String, CodecError> {
        let mut r = Reader::new(p);
        let header = r.u8("binary row header")?;
        let bitmap = r.take((cols.len() + 7 + 2) / 8, "NULL bitmap")?.to_vec();
        let mut vals = Vec::with_capacity(cols.len());
        for (i, c) in cols.iter().enumerate() {
            let bit = i + 2;
            if bitmap
                .get(bit / 8)
                .is_some_and(|b| b & (1 << (bit % 8)) != 0)
            {
                vals.push("NULL".to_string());
            } else {
                vals.push(binary_value(norm, &mut r, *c)?);
            }
        }
        let mut s = format!("ROW [{}]", vals.join(", "));
        if header != 0 {
            let _ = write!(s, " header=0x{header:02x}");
        }
        // Bits 0 and 1 of the bitmap are reserved (0); a set bit beyond the columns is a bug.
        let mut unused = bitmap.clone();
        if let Some(b0) = unused.first_mut() {
            *b0 &= 0b11;
        }
        for i in 0..cols.len() {
            let bit = i + 2;
            if let Some(b) = unused.get_mut(bit / 8) {
                *b &= !(1 << (bit % 8));
            }
        }
        if unused.iter().any(|&b| b != 0) {
            let _ = write!(s, " stray_null_bits={}", hex(&bitmap));
        }
        if !r.is_empty() {
            let _ = write!(s, " trailing={}", hex(r.rest()));
        }
        Ok(s)
    };
    match parse(norm) {
        Ok(s) => s,
        Err(e) => format!("ROW MALFORMED ({e}) {}", hex(p)),
    }
}

/// Renders an OK packet (header 0x00) or an OK-shaped terminator (0xFE under DEPRECATE_EOF).
fn ok_packet(label: &str, norm: &mut Normalizer, p: &[u8], caps: u32) -> String {
    let parse = |norm: &mut Normalizer| -> Result<String, CodecError> {
        let mut r = Reader::new(p);
        let _header = r.u8("OK header")?;
        let affected = r.lenenc_int("affected rows")?;
        let insert_id = r.lenenc_int("last insert id")?;
        let st = r.u16("status")?;
        let warnings = r.u16("warnings")?;
        let mut s = format!(
            "{label} affected={affected} insert_id={insert_id} status={} warnings={warnings}",
            status_text(st)
        );
        let (info, state) = if caps & cap::SESSION_TRACK != 0 {
            let info = if r.is_empty() {
                None
            } else {
                Some(r.lenenc_bytes("info")?)
            };
            let state = if st & status::SESSION_STATE_CHANGED != 0 && !r.is_empty() {
                Some(r.lenenc_bytes("session state")?)
            } else {
                None
            };
            (info, state)
        } else if r.is_empty() {
            (None, None)
        } else {
            // Servers write a length-encoded string here (see the codec's OkPacket::decode).
            let mut probe = r.clone();
            match probe.lenenc_bytes("info") {
                Ok(i) if probe.is_empty() => {
                    r = probe;
                    (Some(i), None)
                }
                _ => (Some(r.rest()), None),
            }
        };
        if let Some(i) = info {
            let _ = write!(s, " info='{}'", escape(i));
        }
        if let Some(b) = state {
            let _ = write!(s, " state={{{}}}", session_state(norm, b));
        }
        if !r.is_empty() {
            let _ = write!(s, " trailing={}", hex(r.rest()));
        }
        Ok(s)
    };
    match parse(norm) {
        Ok(s) => s,
        Err(e) => format!("{label} MALFORMED ({e}) {}", hex(p)),
    }
}

/// Renders a session-state change block entry by entry.
fn session_state(norm: &mut Normalizer, block: &[u8]) -> String {
    let mut r = Reader::new(block);
    let mut out = Vec::new();
    while !r.is_empty() {
        let entry = (|| -> Result<String, CodecError> {
            let ty = r.u8("state type")?;
            let data = r.lenenc_bytes("state data")?;
            let mut d = Reader::new(data);
            let s = match ty {
                0 => {
                    let name = d.lenenc_bytes("variable name")?;
                    let value = d.lenenc_bytes("variable value")?;
                    format!("var {}={}", escape(name), string_value(norm, value))
                }
                1 => format!("schema '{}'", escape(d.lenenc_bytes("schema")?)),
                2 => format!("state_change '{}'", escape(data)),
                4 => format!(
                    "trx_characteristics '{}'",
                    escape(d.lenenc_bytes("characteristics")?)
                ),
                5 => format!("trx_state '{}'", escape(d.lenenc_bytes("trx state")?)),
                // Type 3 (GTIDs) is opaque, like any type this recorder does not know.
                _ => {
                    return Ok(format!("type{ty} {}", hex(data)));
                }
            };
            if ty != 2 && !d.is_empty() {
                return Ok(format!("{s} trailing={}", hex(d.rest())));
            }
            Ok(s)
        })();
        match entry {
            Ok(s) => out.push(s),
            Err(e) => {
                out.push(format!("MALFORMED ({e}) {}", hex(r.rest())));
                break;
            }
        }
    }
    // Normalization rule 7: variables in name order, in the places variables took.
    let at: Vec<usize> = (0..out.len())
        .filter(|&i| out[i].starts_with("var "))
        .collect();
    let mut vars: Vec<String> = at.iter().map(|&i| out[i].clone()).collect();
    vars.sort();
    for (i, v) in at.into_iter().zip(vars) {
        out[i] = v;
    }
    out.join("; ")
}

fn err_packet(norm: &mut Normalizer, p: &[u8]) -> String {
    let mut parse = || -> Result<String, CodecError> {
        let mut r = Reader::new(p);
        r.u8("ERR header")?;
        let code = r.u16("ERR code")?;
        let state = if r.peek_u8() == Some(b'#') {
            r.skip(1, "marker")?;
            format!("#{}", escape(r.take(5, "SQLSTATE")?))
        } else {
            "(no SQLSTATE)".to_string()
        };
        let msg = norm.error_message(code, r.rest());
        Ok(format!("ERR {code} {state} {msg}"))
    };
    parse().unwrap_or_else(|e| format!("ERR MALFORMED ({e}) {}", hex(p)))
}

fn eof_packet(label: &str, p: &[u8], caps: u32) -> String {
    let parse = || -> Result<String, CodecError> {
        let mut r = Reader::new(p);
        r.u8("EOF header")?;
        let warnings = r.u16("EOF warnings")?;
        let mut st = r.u16("EOF status")?;
        if caps & cap::SESSION_TRACK == 0 {
            // Normalization rule 5.
            st &= !status::SESSION_STATE_CHANGED;
        }
        let mut s = format!("{label} warnings={warnings} status={}", status_text(st));
        if !r.is_empty() {
            let _ = write!(s, " trailing={}", hex(r.rest()));
        }
        Ok(s)
    };
    parse().unwrap_or_else(|e| format!("{label} MALFORMED ({e}) {}", hex(p)))
}

fn prepare_ok(norm: &mut Normalizer, p: &[u8]) -> (String, Option<(u32, u16)>) {
    let parse = |norm: &mut Normalizer| -> Result<(String, (u32, u16)), CodecError> {
        let mut r = Reader::new(p);
        r.u8("PREPARE_OK header")?;
        let id = r.u32("statement id")?;
        let columns = r.u16("columns")?;
        let params = r.u16("params")?;
        let mut s = format!(
            "PREPARE_OK stmt={} columns={columns} params={params}",
            norm.prepared(id)
        );
        if !r.is_empty() {
            let filler = r.u8("filler")?;
            let warnings = r.u16("warnings")?;
            let _ = write!(s, " warnings={warnings}");
            if filler != 0 {
                let _ = write!(s, " filler=0x{filler:02x}");
            }
        }
        if !r.is_empty() {
            let _ = write!(s, " trailing={}", hex(r.rest()));
        }
        Ok((s, (id, params)))
    };
    match parse(norm) {
        Ok((s, x)) => (s, Some(x)),
        Err(e) => (format!("PREPARE_OK MALFORMED ({e}) {}", hex(p)), None),
    }
}

/// What the recorder learned from a response that the runner needs for later commands.
#[derive(Debug, Clone, Default)]
pub struct Learned {
    /// PREPARE_OK: the target's statement id and its parameter count.
    pub prepared: Option<(u32, u16)>,
    /// The column types of the last result set's definitions (for a cursor's fetches).
    pub columns: Vec<ColumnType>,
    /// A cursor was opened (the response ended with CURSOR_EXISTS and no rows).
    pub cursor_opened: bool,
    /// The response ended in ERR.
    pub error: bool,
    /// The first field of the first row (for `SELECT CONNECTION_ID()`).
    pub first_value: Option<Vec<u8>>,
}

/// Renders every packet of a response. `binary`: rows are binary-protocol rows; `fetch_columns`:
/// for COM_STMT_FETCH, the column types of the cursor's result set.
pub fn render(
    norm: &mut Normalizer,
    caps: u32,
    packets: &[(PacketRole, RawPacket)],
    binary: bool,
    fetch_columns: &[ColumnType],
) -> (Vec<String>, Learned) {
    let mut lines = Vec::with_capacity(packets.len());
    let mut learned = Learned {
        columns: fetch_columns.to_vec(),
        ..Learned::default()
    };
    let mut building: Vec<ColumnType> = Vec::new();
    let mut prepare_params_left: u16 = 0;
    let mut in_prepare = false;
    let mut expected_seq: u8 = 1;
    for (i, (role, p)) in packets.iter().enumerate() {
        let frames = p.payload.len() / sluice::codec::frame::MAX_FRAME + 1;
        let first_seq = p.seq.wrapping_sub((frames - 1) as u8);
        if matches!(role, PacketRole::Tracked(_)) && first_seq != expected_seq {
            lines.push(format!(
                "SEQUENCE-ID packet {i}: expected {expected_seq}, got {first_seq}"
            ));
        }
        expected_seq = p.seq.wrapping_add(1);
        let pl = p.payload.as_slice();
        let line = match role {
            PacketRole::AuthSwitch => {
                // The switch names a plugin and carries a fresh random nonce; the nonce is
                // random by design and left out (the plugin name is kept).
                let plugin = pl
                    .get(1..)
                    .and_then(|b| b.split(|&c| c == 0).next())
                    .unwrap_or_default();
                format!("AUTH_SWITCH plugin='{}'", escape(plugin))
            }
            PacketRole::AuthMoreData => format!("AUTH_MORE_DATA {}", hex(pl)),
            PacketRole::AuthResult => {
                if pl.first() == Some(&0xFF) {
                    learned.error = true;
                    err_packet(norm, pl)
                } else {
                    ok_packet("OK", norm, pl, caps)
                }
            }
            PacketRole::Tracked(role) => match *role {
                // COM_SET_OPTION answers a classic client with an EOF packet.
                Role::Ok { .. } if pl.first() == Some(&0xFE) && caps & cap::DEPRECATE_EOF == 0 => {
                    eof_packet("EOF", pl, caps)
                }
                Role::Ok { .. } => ok_packet("OK", norm, pl, caps),
                Role::Err => {
                    learned.error = true;
                    err_packet(norm, pl)
                }
                Role::LocalInfile => format!("LOCAL_INFILE {}", escape(pl)),
                Role::ColumnCount(n) => {
                    building.clear();
                    let mut r = Reader::new(pl);
                    let _ = r.lenenc_int("column count");
                    if r.is_empty() {
                        format!("RESULT columns={n}")
                    } else {
                        format!("RESULT columns={n} trailing={}", hex(r.rest()))
                    }
                }
                Role::ColumnDef { .. } => {
                    if in_prepare && prepare_params_left > 0 {
                        prepare_params_left -= 1;
                        column_def("PARAM", pl).0
                    } else {
                        let (s, t) = column_def("COLUMN", pl);
                        if let Some(t) = t {
                            building.push(t);
                        }
                        if !in_prepare {
                            learned.columns = building.clone();
                        }
                        s
                    }
                }
                Role::DefsEof { .. } => eof_packet("EOF", pl, caps),
                Role::Row { .. } => {
                    if learned.first_value.is_none() {
                        learned.first_value = text_fields(pl)
                            .ok()
                            .and_then(|f| f.into_iter().next().flatten());
                    }
                    if binary {
                        binary_row(norm, pl, &learned.columns)
                    } else {
                        text_row(norm, pl)
                    }
                }
                Role::RowsEnd { .. } | Role::CursorOpened { .. } => {
                    if let Role::CursorOpened { .. } = role {
                        learned.cursor_opened = true;
                    }
                    let label = if matches!(role, Role::CursorOpened { .. }) {
                        "END(cursor)"
                    } else {
                        "END"
                    };
                    if caps & cap::DEPRECATE_EOF != 0 {
                        ok_packet(label, norm, pl, caps)
                    } else {
                        eof_packet(label, pl, caps)
                    }
                }
                Role::PrepareOk { params, .. } => {
                    in_prepare = true;
                    prepare_params_left = params;
                    let (s, x) = prepare_ok(norm, pl);
                    learned.prepared = x;
                    s
                }
                Role::Statistics => format!("STATISTICS {}", escape(pl)),
            },
        };
        lines.push(line);
    }
    if in_prepare {
        learned.columns = building;
    }
    // A classic EOF after the definitions of a cursor's result ends the execute response.
    if binary && !learned.cursor_opened {
        if let Some((PacketRole::Tracked(Role::DefsEof { status: st }), _)) = packets.last() {
            if st & status::CURSOR_EXISTS != 0 {
                learned.cursor_opened = true;
            }
        }
    }
    (lines, learned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pk(role: Role, payload: &[u8], seq: u8) -> (PacketRole, RawPacket) {
        (
            PacketRole::Tracked(role),
            RawPacket {
                seq,
                payload: payload.to_vec(),
            },
        )
    }

    #[test]
    fn ok_with_session_state_and_gtid_normalized() {
        // OK, status AUTOCOMMIT|SESSION_STATE_CHANGED, info "", state: last_gtid=0-1-42.
        let mut state = vec![0u8];
        let var = [&[9u8][..], b"last_gtid", &[6], b"0-1-42"].concat();
        state.push(var.len() as u8);
        state.extend_from_slice(&var);
        let mut p = vec![0, 1, 0, 0x02, 0x40, 0, 0, 0];
        p.push(state.len() as u8);
        p.extend_from_slice(&state);
        let mut n = Normalizer::default();
        let (lines, _) = render(
            &mut n,
            cap::SESSION_TRACK | cap::DEPRECATE_EOF,
            &[pk(
                Role::Ok {
                    status: 0x4002,
                    more: false,
                },
                &p,
                1,
            )],
            false,
            &[],
        );
        assert_eq!(
            lines,
            vec!["OK affected=1 insert_id=0 status=0x4002(AUTOCOMMIT|SESSION_STATE_CHANGED) warnings=0 info='' state={var last_gtid=<gtid#1>}"]
        );
    }

    #[test]
    fn binary_rows_decode_by_column_type_and_flag_trailing_bytes() {
        let cols = [
            ColumnType { ty: 0x08, flags: 0 },
            ColumnType { ty: 0xfd, flags: 0 },
            ColumnType { ty: 0x03, flags: 0 },
        ];
        // header, bitmap (bit 4 = column 2 NULL), -1 as LONGLONG, 'ab'.
        let mut p = vec![0, 0b1_0000];
        p.extend_from_slice(&(-1i64).to_le_bytes());
        p.extend_from_slice(&[2, b'a', b'b']);
        let mut n = Normalizer::default();
        assert_eq!(binary_row(&mut n, &p, &cols), "ROW [-1, 'ab', NULL]");
        p.push(9);
        assert!(binary_row(&mut n, &p, &cols).ends_with("trailing=09"));
        // Truncated rows do not panic.
        for cut in 0..p.len() {
            let _ = binary_row(&mut n, &p[..cut], &cols);
        }
    }

    #[test]
    fn sequence_gaps_are_recorded() {
        let mut n = Normalizer::default();
        let (lines, _) = render(
            &mut n,
            0,
            &[pk(
                Role::Ok {
                    status: 2,
                    more: false,
                },
                &[0, 0, 0, 2, 0, 0, 0],
                2,
            )],
            false,
            &[],
        );
        assert_eq!(lines[0], "SEQUENCE-ID packet 0: expected 1, got 2");
    }

    #[test]
    fn malformed_packets_render_without_panicking() {
        let mut n = Normalizer::default();
        for p in [&[][..], &[0xff], &[0x00, 0xfc], &[0x03, b'd']] {
            let _ = ok_packet("OK", &mut n, p, cap::SESSION_TRACK);
            let _ = err_packet(&mut n, p);
            let _ = eof_packet("EOF", p, 0);
            let _ = column_def("COLUMN", p);
            let _ = prepare_ok(&mut n, p);
            let _ = text_row(&mut n, p);
            let _ = session_state(&mut n, p);
        }
    }
}
