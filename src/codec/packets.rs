//! Generic response packets: OK (`0x00`, or `0xFE` when it ends a result set under
//! `CLIENT_DEPRECATE_EOF`), ERR (`0xFF`) and the classic EOF (`0xFE`, 5 bytes), with the session
//! state changes an OK carries under `CLIENT_SESSION_TRACK`.

use super::caps::{cap, status};
use super::wire::{lenenc_int_len, put_lenenc_bytes, put_lenenc_int, Reader};
use super::{CodecError, Result};
use bytes::BufMut;

pub const OK: u8 = 0x00;
pub const EOF: u8 = 0xFE;
pub const ERR: u8 = 0xFF;
pub const LOCAL_INFILE: u8 = 0xFB;

/// An OK packet (or the OK that ends a result set).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkPacket<'a> {
    /// `int<lenenc>` affected rows.
    pub affected_rows: u64,
    /// `int<lenenc>` last insert id.
    pub last_insert_id: u64,
    /// `int<2>` status flags.
    pub status: u16,
    /// `int<2>` warning count.
    pub warnings: u16,
    /// Human-readable info ("Rows matched: 1  Changed: 1  Warnings: 0").
    pub info: &'a [u8],
    /// The raw session state change block (a `string<lenenc>` of entries), when
    /// `SERVER_SESSION_STATE_CHANGED` is set.
    pub session_state: &'a [u8],
}

impl<'a> OkPacket<'a> {
    /// Decodes an OK packet; `caps` are the capabilities negotiated on the connection it came from.
    pub fn decode(payload: &'a [u8], caps: u32) -> Result<OkPacket<'a>> {
        let mut r = Reader::new(payload);
        let header = r.u8("OK header")?;
        if header != OK && header != EOF {
            return Err(CodecError::invalid("OK header"));
        }
        let affected_rows = r.lenenc_int("OK affected rows")?;
        let last_insert_id = r.lenenc_int("OK last insert id")?;
        let status = r.u16("OK status flags")?;
        let warnings = r.u16("OK warnings")?;
        let mut ok = OkPacket {
            affected_rows,
            last_insert_id,
            status,
            warnings,
            ..OkPacket::default()
        };
        if caps & cap::SESSION_TRACK != 0 {
            if !r.is_empty() {
                ok.info = r.lenenc_bytes("OK info")?;
            }
            if status & status::SESSION_STATE_CHANGED != 0 && !r.is_empty() {
                ok.session_state = r.lenenc_bytes("OK session state")?;
            }
        } else if !r.is_empty() {
            // The protocol documentation says string<EOF>, but MariaDB and MySQL servers write a
            // length-encoded string here too, and libmariadb and other drivers read it so. Accept
            // both: a length prefix that spans exactly the rest, else the raw rest.
            let rest = r.clone().rest();
            ok.info = match r.lenenc_bytes("OK info") {
                Ok(s) if r.is_empty() => s,
                _ => rest,
            };
        }
        Ok(ok)
    }

    /// Encodes for a CLIENT_SESSION_TRACK connection with SESSION_STATE_CHANGED set and an
    /// empty state block, as MariaDB sends it when a tracker fired that reports nothing at the
    /// client's level (`SET TRANSACTION READ ONLY` under `session_track_transaction_info =
    /// STATE`).
    pub fn encode_flag_only(&self, out: &mut impl BufMut, header: u8) {
        out.put_u8(header);
        put_lenenc_int(out, self.affected_rows);
        put_lenenc_int(out, self.last_insert_id);
        out.put_u16_le(self.status | status::SESSION_STATE_CHANGED);
        out.put_u16_le(self.warnings);
        put_lenenc_bytes(out, self.info);
        put_lenenc_bytes(out, &[]);
    }

    /// Encodes for a connection with capabilities `caps`. Without `CLIENT_SESSION_TRACK` the
    /// session state is dropped and its status flag cleared, so such clients never see it.
    pub fn encode(&self, out: &mut impl BufMut, header: u8, caps: u32) {
        out.put_u8(header);
        put_lenenc_int(out, self.affected_rows);
        put_lenenc_int(out, self.last_insert_id);
        if caps & cap::SESSION_TRACK != 0 {
            let has_state = !self.session_state.is_empty();
            let st = if has_state {
                self.status | status::SESSION_STATE_CHANGED
            } else {
                self.status & !status::SESSION_STATE_CHANGED
            };
            out.put_u16_le(st);
            out.put_u16_le(self.warnings);
            if has_state || !self.info.is_empty() {
                put_lenenc_bytes(out, self.info);
            }
            if has_state {
                put_lenenc_bytes(out, self.session_state);
            }
        } else {
            out.put_u16_le(self.status & !status::SESSION_STATE_CHANGED);
            out.put_u16_le(self.warnings);
            // Length-encoded, as servers send it (see `decode`).
            if !self.info.is_empty() {
                put_lenenc_bytes(out, self.info);
            }
        }
    }

    pub fn encoded_len(&self, caps: u32) -> usize {
        let mut v = Vec::with_capacity(
            16 + self.info.len() + self.session_state.len() + lenenc_int_len(self.affected_rows),
        );
        self.encode(&mut v, OK, caps);
        v.len()
    }

    pub fn session_changes(&self) -> SessionChanges<'a> {
        SessionChanges {
            r: Reader::new(self.session_state),
        }
    }
}

/// A simple OK with only the status flags set: what sluice sends for commands it answers itself.
pub fn encode_ok(out: &mut impl BufMut, status: u16, caps: u32) {
    OkPacket {
        status,
        ..OkPacket::default()
    }
    .encode(out, OK, caps);
}

/// The OK a server sends after a login or COM_CHANGE_USER: for a client with
/// CLIENT_SESSION_TRACK whose schema tracker is on, it reports the schema the session starts in.
pub fn encode_login_ok(out: &mut impl BufMut, status: u16, caps: u32, schema: Option<&[u8]>) {
    let mut state = Vec::new();
    if let Some(db) = schema.filter(|_| caps & cap::SESSION_TRACK != 0) {
        let mut data = Vec::with_capacity(db.len() + 2);
        put_lenenc_bytes(&mut data, db);
        state.push(session_track::SCHEMA);
        put_lenenc_bytes(&mut state, &data);
    }
    OkPacket {
        status,
        session_state: &state,
        ..OkPacket::default()
    }
    .encode(out, OK, caps);
}

/// One entry of the session state change block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange<'a> {
    /// Type 0: a system variable's new value.
    SystemVariable { name: &'a [u8], value: &'a [u8] },
    /// Type 1: the current schema.
    Schema(&'a [u8]),
    /// Type 2: "state changed" without detail (user variables, temporary tables, PREPARE, …).
    StateChange(bool),
    /// Type 3: GTIDs (opaque).
    Gtids(&'a [u8]),
    /// Type 4: SQL that reproduces the next transaction's characteristics ("" when none).
    TransactionCharacteristics(&'a [u8]),
    /// Type 5: the 8-character transaction state ("T_______", "________L", …).
    TransactionState(&'a [u8]),
    /// A type this codec does not know (carried, not interpreted).
    Other(u8),
}

pub mod session_track {
    pub const SYSTEM_VARIABLES: u8 = 0;
    pub const SCHEMA: u8 = 1;
    pub const STATE_CHANGE: u8 = 2;
    pub const GTIDS: u8 = 3;
    pub const TRANSACTION_CHARACTERISTICS: u8 = 4;
    pub const TRANSACTION_STATE: u8 = 5;
}

/// Iterator over the entries of a session state change block. Yields an error (and then stops)
/// on a malformed entry.
pub struct SessionChanges<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for SessionChanges<'a> {
    type Item = Result<SessionChange<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.r.is_empty() {
            return None;
        }
        let item = (|| {
            let ty = self.r.u8("session state type")?;
            let data = self.r.lenenc_bytes("session state data")?;
            let mut d = Reader::new(data);
            Ok(match ty {
                session_track::SYSTEM_VARIABLES => SessionChange::SystemVariable {
                    name: d.lenenc_bytes("tracked variable name")?,
                    value: d.lenenc_bytes("tracked variable value")?,
                },
                session_track::SCHEMA => SessionChange::Schema(d.lenenc_bytes("tracked schema")?),
                // The flag is the entry's data itself, not a nested string.
                session_track::STATE_CHANGE => SessionChange::StateChange(data == b"1"),
                session_track::GTIDS => SessionChange::Gtids(data),
                session_track::TRANSACTION_CHARACTERISTICS => {
                    SessionChange::TransactionCharacteristics(
                        d.lenenc_bytes("trx characteristics")?,
                    )
                }
                session_track::TRANSACTION_STATE => {
                    SessionChange::TransactionState(d.lenenc_bytes("trx state")?)
                }
                other => SessionChange::Other(other),
            })
        })();
        if item.is_err() {
            // Stop after the first malformed entry.
            self.r.rest();
        }
        Some(item)
    }
}

/// An ERR packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket<'a> {
    /// `int<2>` error code.
    pub code: u16,
    /// `string[5]` SQLSTATE (after the `#` marker).
    pub sql_state: [u8; 5],
    /// `string<EOF>` message.
    pub message: &'a [u8],
}

impl<'a> ErrPacket<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<ErrPacket<'a>> {
        let mut r = Reader::new(payload);
        if r.u8("ERR header")? != ERR {
            return Err(CodecError::invalid("ERR header"));
        }
        let code = r.u16("ERR code")?;
        let mut sql_state = *b"HY000";
        if r.peek_u8() == Some(b'#') {
            r.skip(1, "ERR sqlstate marker")?;
            sql_state.copy_from_slice(r.take(5, "ERR sqlstate")?);
        }
        Ok(ErrPacket {
            code,
            sql_state,
            message: r.rest(),
        })
    }

    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(ERR);
        out.put_u16_le(self.code);
        out.put_u8(b'#');
        out.put_slice(&self.sql_state);
        out.put_slice(self.message);
    }
}

/// MariaDB sends progress reports as ERR packets with code 0xFFFF (only to clients that asked).
pub const PROGRESS_REPORT_CODE: u16 = 0xFFFF;

/// The classic EOF packet: `0xFE`, `int<2>` warnings, `int<2>` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EofPacket {
    pub warnings: u16,
    pub status: u16,
}

impl EofPacket {
    pub fn decode(payload: &[u8]) -> Result<EofPacket> {
        let mut r = Reader::new(payload);
        if r.u8("EOF header")? != EOF {
            return Err(CodecError::invalid("EOF header"));
        }
        // Pre-4.1 EOFs are a single byte.
        if r.is_empty() {
            return Ok(EofPacket {
                warnings: 0,
                status: 0,
            });
        }
        Ok(EofPacket {
            warnings: r.u16("EOF warnings")?,
            status: r.u16("EOF status")?,
        })
    }

    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(EOF);
        out.put_u16_le(self.warnings);
        out.put_u16_le(self.status);
    }
}

/// The fixed-length part of a column definition: what follows its six names (catalog, schema,
/// table, org_table, name, org_name) and, with MariaDB's extended metadata negotiated
/// (`extended`), its metadata block. `None` when the packet is too short for them.
pub fn column_fixed_part(def: &[u8], extended: bool) -> Option<&[u8]> {
    let mut r = Reader::new(def);
    for what in [
        "catalog",
        "schema",
        "table",
        "org_table",
        "name",
        "org_name",
    ] {
        r.lenenc_bytes(what).ok()?;
    }
    if extended {
        r.lenenc_bytes("extended metadata").ok()?;
    }
    Some(r.rest())
}

/// Is `payload` (of a packet whose frame length is `len`) an EOF/OK terminator rather than a row?
/// A row can start with 0xFE only when its first field is longer than 2^24 bytes, which makes the
/// packet at least 0xFFFFFF long; classic EOFs are shorter than 9 bytes.
pub fn is_terminator(first: u8, len: usize, deprecate_eof: bool) -> bool {
    first == EOF
        && if deprecate_eof {
            len < super::frame::MAX_FRAME
        } else {
            len < 9
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const TRACK: u32 = cap::PROTOCOL_41 | cap::SESSION_TRACK;

    #[test]
    fn decodes_captured_set_names_ok() {
        // MariaDB 10.11 answering SET NAMES latin1 with every tracker on.
        let p = hex("000000024000000062001d156368617261637465725f7365745f726573756c7473066c6174696e31001c146368617261637465725f7365745f636c69656e74066c6174696e310020186368617261637465725f7365745f636f6e6e656374696f6e066c6174696e31020131");
        let ok = OkPacket::decode(&p, TRACK).unwrap();
        assert_eq!(
            ok.status,
            status::AUTOCOMMIT | status::SESSION_STATE_CHANGED
        );
        let changes: Vec<_> = ok.session_changes().collect::<Result<_>>().unwrap();
        assert_eq!(
            changes,
            vec![
                SessionChange::SystemVariable {
                    name: b"character_set_results",
                    value: b"latin1"
                },
                SessionChange::SystemVariable {
                    name: b"character_set_client",
                    value: b"latin1"
                },
                SessionChange::SystemVariable {
                    name: b"character_set_connection",
                    value: b"latin1"
                },
                SessionChange::StateChange(true),
            ]
        );
    }

    #[test]
    fn decodes_captured_schema_and_trx_state() {
        let p = hex("00000002400000000b0106056d7973716c020131");
        let ok = OkPacket::decode(&p, TRACK).unwrap();
        let c: Vec<_> = ok.session_changes().map(|c| c.unwrap()).collect();
        assert_eq!(
            c,
            vec![
                SessionChange::Schema(b"mysql"),
                SessionChange::StateChange(true)
            ]
        );
        let p = hex("00000003400000004e050908545f5f5f5f5f5f5f044140534554205452414e53414354494f4e2049534f4c4154494f4e204c4556454c2053455249414c495a41424c453b205354415254205452414e53414354494f4e3b");
        let ok = OkPacket::decode(&p, TRACK).unwrap();
        assert_eq!(ok.status & status::IN_TRANS, status::IN_TRANS);
        let c: Vec<_> = ok.session_changes().map(|c| c.unwrap()).collect();
        assert_eq!(c[0], SessionChange::TransactionState(b"T_______"));
        assert_eq!(
            c[1],
            SessionChange::TransactionCharacteristics(
                b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE; START TRANSACTION;"
            )
        );
    }

    #[test]
    fn stripping_session_state_for_a_client_without_tracking() {
        let p = hex("00000002400000000b0106056d7973716c020131");
        let ok = OkPacket::decode(&p, TRACK).unwrap();
        let mut out = Vec::new();
        ok.encode(&mut out, OK, cap::PROTOCOL_41);
        assert_eq!(out, [0, 0, 0, 2, 0, 0, 0]);
        let back = OkPacket::decode(&out, cap::PROTOCOL_41).unwrap();
        assert_eq!(back.status, status::AUTOCOMMIT);
        // And re-encoding for a tracking client reproduces the original.
        let mut again = Vec::new();
        ok.encode(&mut again, OK, TRACK);
        assert_eq!(again, p);
    }

    #[test]
    fn info_without_session_tracking_is_length_encoded_as_servers_send_it() {
        // MariaDB 10.11 answering an UPDATE to a client without CLIENT_SESSION_TRACK.
        let p = hex("0000000200000028526f7773206d6174636865643a203020204368616e6765643a203020205761726e696e67733a2030");
        let ok = OkPacket::decode(&p, cap::PROTOCOL_41).unwrap();
        assert_eq!(ok.info, b"Rows matched: 0  Changed: 0  Warnings: 0");
        let mut out = Vec::new();
        ok.encode(&mut out, OK, cap::PROTOCOL_41);
        assert_eq!(out, p);
        // A bare string<EOF> (as the documentation describes) is still understood.
        let mut doc = vec![0, 0, 0, 2, 0, 0, 0];
        doc.extend_from_slice(b"Rows matched: 1");
        assert_eq!(
            OkPacket::decode(&doc, cap::PROTOCOL_41).unwrap().info,
            b"Rows matched: 1"
        );
    }

    #[test]
    fn ok_with_info_for_both_kinds_of_client() {
        // INSERT of 3 rows: "Records: 3  Duplicates: 0  Warnings: 0" as lenenc info.
        let p = hex("00030002000000265265636f7264733a203320204475706c6963617465733a203020205761726e696e67733a2030");
        let ok = OkPacket::decode(&p, TRACK).unwrap();
        assert_eq!(ok.affected_rows, 3);
        assert_eq!(ok.info, b"Records: 3  Duplicates: 0  Warnings: 0");
        let mut out = Vec::new();
        ok.encode(&mut out, OK, cap::PROTOCOL_41);
        let plain = OkPacket::decode(&out, cap::PROTOCOL_41).unwrap();
        assert_eq!(plain.info, ok.info);
    }

    #[test]
    fn err_packet_round_trip_and_captured() {
        let p = hex(
            "ff7a042334325330325461626c6520276170702e6e6f737563682720646f65736e2774206578697374",
        );
        let e = ErrPacket::decode(&p).unwrap();
        assert_eq!(e.code, 1146);
        assert_eq!(&e.sql_state, b"42S02");
        assert_eq!(e.message, b"Table 'app.nosuch' doesn't exist");
        let mut out = Vec::new();
        e.encode(&mut out);
        assert_eq!(out, p);
    }

    #[test]
    fn malformed_session_state_is_an_error() {
        let ok = OkPacket {
            status: status::SESSION_STATE_CHANGED,
            session_state: &[0, 0x10, 1],
            ..OkPacket::default()
        };
        assert!(ok.session_changes().next().unwrap().is_err());
        assert!(ok.session_changes().nth(1).is_none() || ok.session_changes().count() == 1);
    }

    #[test]
    fn terminator_rule() {
        assert!(is_terminator(0xFE, 7, true));
        assert!(is_terminator(0xFE, 5, false));
        assert!(!is_terminator(0xFE, 9, false));
        assert!(!is_terminator(0xFE, super::super::frame::MAX_FRAME, true));
        assert!(!is_terminator(0x00, 7, true));
    }
}
