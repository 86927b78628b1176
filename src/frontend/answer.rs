//! Result sets sluice makes itself, for the statements it answers without a backend
//! (`SELECT LAST_INSERT_ID()`, `SELECT CONNECTION_ID()`, …): one BIGINT column, one row, in the
//! framing the client negotiated (classic EOF or CLIENT_DEPRECATE_EOF).

use crate::codec::caps::cap;
use crate::codec::packets::{EofPacket, OkPacket, EOF};
use crate::codec::wire::{put_lenenc_bytes, put_lenenc_int};
use bytes::BufMut;

/// MYSQL_TYPE_LONGLONG.
const TYPE_LONGLONG: u8 = 0x08;
/// binary collation.
const BINARY: u16 = 63;
const NOT_NULL_FLAG: u16 = 1;
const UNSIGNED_FLAG: u16 = 32;
const BINARY_FLAG: u16 = 128;

/// A ColumnDefinition41 for a BIGINT column called `name`.
pub fn bigint_column(name: &[u8], unsigned: bool) -> Vec<u8> {
    let mut c = Vec::with_capacity(32 + name.len());
    put_lenenc_bytes(&mut c, b"def");
    put_lenenc_bytes(&mut c, b"");
    put_lenenc_bytes(&mut c, b"");
    put_lenenc_bytes(&mut c, b"");
    put_lenenc_bytes(&mut c, name);
    put_lenenc_bytes(&mut c, b"");
    put_lenenc_int(&mut c, 0x0c);
    c.put_u16_le(BINARY);
    c.put_u32_le(21);
    c.put_u8(TYPE_LONGLONG);
    c.put_u16_le(NOT_NULL_FLAG | BINARY_FLAG | if unsigned { UNSIGNED_FLAG } else { 0 });
    c.put_u8(0);
    c.put_u16_le(0);
    c
}

/// The packets (payloads) of a one-column, one-row result set whose value is `value`.
pub fn single_value(
    name: &[u8],
    value: &str,
    unsigned: bool,
    status: u16,
    caps: u32,
) -> Vec<Vec<u8>> {
    let mut packets = vec![vec![1u8], bigint_column(name, unsigned)];
    let classic = caps & cap::DEPRECATE_EOF == 0;
    if classic {
        let mut e = Vec::with_capacity(5);
        EofPacket {
            warnings: 0,
            status,
        }
        .encode(&mut e);
        packets.push(e);
    }
    let mut row = Vec::with_capacity(value.len() + 1);
    put_lenenc_bytes(&mut row, value.as_bytes());
    packets.push(row);
    let mut end = Vec::with_capacity(8);
    if classic {
        EofPacket {
            warnings: 0,
            status,
        }
        .encode(&mut end);
    } else {
        OkPacket {
            status,
            ..OkPacket::default()
        }
        .encode(&mut end, EOF, caps);
    }
    packets.push(end);
    packets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::command::ResponseKind;
    use crate::codec::response::{ResponseTracker, Role};

    #[test]
    fn a_made_up_result_set_is_well_formed_in_both_framings() {
        for (caps, deprecate) in [
            (cap::PROTOCOL_41, false),
            (cap::PROTOCOL_41 | cap::DEPRECATE_EOF, true),
        ] {
            let packets = single_value(b"LAST_INSERT_ID()", "42", true, 2, caps);
            let mut t = ResponseTracker::new(ResponseKind::Query, deprecate);
            let mut rows = 0;
            for p in &packets {
                if let Role::Row { .. } = t.on_packet(p.len(), p).unwrap() {
                    rows += 1;
                    assert_eq!(p, &[2, b'4', b'2']);
                }
            }
            assert!(t.is_done());
            assert_eq!(rows, 1);
        }
    }
}
