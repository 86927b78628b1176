//! Result sets sluice makes itself, for the statements it answers without a backend
//! (`SELECT LAST_INSERT_ID()`, `SELECT ROW_COUNT() AS n, @@warning_count`, …): one row, each
//! column with the definition the server itself sends for that value (captured at start, see
//! [`crate::bootstrap::ColumnTemplate`]), in the framing the client negotiated (classic EOF or
//! CLIENT_DEPRECATE_EOF, MariaDB's extended metadata).

use crate::bootstrap::ColumnTemplate;
use crate::codec::caps::cap;
use crate::codec::packets::{EofPacket, OkPacket, EOF};
use crate::codec::wire::{put_lenenc_bytes, put_lenenc_int};

/// One column of a made-up result.
pub struct Column<'a> {
    /// The column's name (the alias, or the item as the client wrote it).
    pub name: &'a [u8],
    pub template: &'a ColumnTemplate,
    /// For string columns: the collation id the server would put there (the default collation
    /// of the session's `character_set_results`); `None` keeps the template's.
    pub charset: Option<u16>,
    /// The text value (`None`: SQL NULL).
    pub value: Option<&'a [u8]>,
}

/// TYPE codes of string columns (whose charset follows `character_set_results`).
fn is_string_type(t: u8) -> bool {
    matches!(t, 0x0f | 0xfd | 0xfe | 0xf9..=0xfc)
}

/// A ColumnDefinition41 (catalog "def", empty schema and table names, as the server sends for an
/// expression). `extended`: MariaDB's extended metadata was negotiated (an empty block follows).
pub fn column(c: &Column<'_>, extended: bool) -> Vec<u8> {
    let mut d = Vec::with_capacity(32 + c.name.len());
    put_lenenc_bytes(&mut d, b"def");
    put_lenenc_bytes(&mut d, b"");
    put_lenenc_bytes(&mut d, b"");
    put_lenenc_bytes(&mut d, b"");
    put_lenenc_bytes(&mut d, c.name);
    put_lenenc_bytes(&mut d, b"");
    if extended {
        put_lenenc_int(&mut d, 0);
    }
    let mut t = *c.template;
    if let Some(cs) = c.charset.filter(|_| is_string_type(t[7])) {
        t[1..3].copy_from_slice(&cs.to_le_bytes());
    }
    d.extend_from_slice(&t);
    d
}

/// The packets (payloads) of a one-row result set with `columns`.
pub fn one_row(columns: &[Column<'_>], status: u16, caps: u32, extended: bool) -> Vec<Vec<u8>> {
    let defs = columns.iter().map(|c| column(c, extended)).collect();
    let row = text_row(columns.iter().map(|c| c.value));
    result_set(defs, vec![row], status, caps)
}

/// A text-protocol row of `values` (`None`: SQL NULL).
pub fn text_row<'a>(values: impl IntoIterator<Item = Option<&'a [u8]>>) -> Vec<u8> {
    let mut row = Vec::new();
    for v in values {
        match v {
            Some(v) => put_lenenc_bytes(&mut row, v),
            None => row.push(0xFB),
        }
    }
    row
}

/// The packets (payloads) of a result set: the column count, the definitions `defs`, the EOF a
/// classic client expects after them, the `rows`, and the terminator (EOF, or an OK with the EOF
/// header under CLIENT_DEPRECATE_EOF), each terminator carrying `status`.
pub fn result_set(defs: Vec<Vec<u8>>, rows: Vec<Vec<u8>>, status: u16, caps: u32) -> Vec<Vec<u8>> {
    let mut n = Vec::with_capacity(2);
    put_lenenc_int(&mut n, defs.len() as u64);
    let mut packets = Vec::with_capacity(defs.len() + rows.len() + 3);
    packets.push(n);
    packets.extend(defs);
    let classic = caps & cap::DEPRECATE_EOF == 0;
    let eof = || {
        let mut e = Vec::with_capacity(5);
        EofPacket {
            warnings: 0,
            status,
        }
        .encode(&mut e);
        e
    };
    if classic {
        packets.push(eof());
    }
    packets.extend(rows);
    if classic {
        packets.push(eof());
    } else {
        let mut end = Vec::with_capacity(8);
        OkPacket {
            status,
            ..OkPacket::default()
        }
        .encode(&mut end, EOF, caps);
        packets.push(end);
    }
    packets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::command::ResponseKind;
    use crate::codec::response::{ResponseTracker, Role};

    const LID: ColumnTemplate = [0x0c, 63, 0, 21, 0, 0, 0, 0x08, 0xa1, 0, 0, 0, 0];
    const GTID: ColumnTemplate = [0x0c, 45, 0, 0, 0, 0, 0, 0xfd, 0, 0, 0x27, 0, 0];

    #[test]
    fn a_made_up_result_set_is_well_formed_in_both_framings() {
        for (caps, deprecate) in [
            (cap::PROTOCOL_41, false),
            (cap::PROTOCOL_41 | cap::DEPRECATE_EOF, true),
        ] {
            let cols = [
                Column {
                    name: b"LAST_INSERT_ID()",
                    template: &LID,
                    charset: None,
                    value: Some(b"42"),
                },
                Column {
                    name: b"g",
                    template: &GTID,
                    charset: Some(8),
                    value: Some(b""),
                },
            ];
            let packets = one_row(&cols, 2, caps, false);
            let mut t = ResponseTracker::new(ResponseKind::Query, deprecate);
            let mut rows = 0;
            for p in &packets {
                if let Role::Row { .. } = t.on_packet(p.len(), p).unwrap() {
                    rows += 1;
                    assert_eq!(p, &[2, b'4', b'2', 0]);
                }
            }
            assert!(t.is_done());
            assert_eq!(rows, 1);
        }
    }

    #[test]
    fn columns_carry_the_servers_definition() {
        // What MariaDB 10.11 sends for `SELECT LAST_INSERT_ID()`.
        let c = Column {
            name: b"LAST_INSERT_ID()",
            template: &LID,
            charset: Some(8),
            value: None,
        };
        let mut want = vec![3, b'd', b'e', b'f', 0, 0, 0, 16];
        want.extend_from_slice(b"LAST_INSERT_ID()");
        want.push(0);
        want.extend_from_slice(&LID);
        assert_eq!(column(&c, false), want, "numbers keep the binary charset");
        let g = Column {
            name: b"@@last_gtid",
            template: &GTID,
            charset: Some(8),
            value: None,
        };
        let d = column(&g, true);
        // Extended metadata: an empty block before the fixed part; the string column is in the
        // session's result charset.
        assert_eq!(d[d.len() - 14], 0);
        assert_eq!(&d[d.len() - 12..d.len() - 10], &[8, 0]);
    }
}
