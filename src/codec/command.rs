//! Client commands: the first byte of every packet a client sends after the handshake, and the
//! few command bodies sluice must read (statement ids, schema names, KILL targets, COM_CHANGE_USER).

use super::caps::cap;
use super::wire::{put_lenenc_bytes, put_lenenc_int, put_nul_bytes, Reader};
use super::{CodecError, Result};
use bytes::BufMut;

pub mod com {
    pub const SLEEP: u8 = 0x00;
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const CREATE_DB: u8 = 0x05;
    pub const DROP_DB: u8 = 0x06;
    pub const REFRESH: u8 = 0x07;
    pub const SHUTDOWN: u8 = 0x08;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0a;
    pub const CONNECT: u8 = 0x0b;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const DEBUG: u8 = 0x0d;
    pub const PING: u8 = 0x0e;
    pub const TIME: u8 = 0x0f;
    pub const DELAYED_INSERT: u8 = 0x10;
    pub const CHANGE_USER: u8 = 0x11;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const TABLE_DUMP: u8 = 0x13;
    pub const CONNECT_OUT: u8 = 0x14;
    pub const REGISTER_SLAVE: u8 = 0x15;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const DAEMON: u8 = 0x1d;
    pub const BINLOG_DUMP_GTID: u8 = 0x1e;
    pub const RESET_CONNECTION: u8 = 0x1f;
    /// MySQL 8 clone plugin.
    pub const CLONE: u8 = 0x20;
    /// MariaDB bulk execution of a prepared statement.
    pub const STMT_BULK_EXECUTE: u8 = 0xfa;
}

/// The name MariaDB's processlist gives a thread running command `code` (its `Command`
/// column; sql_parse.cc's `command_name`).
pub fn thread_command(code: u8) -> &'static str {
    const NAMES: [&str; 32] = [
        "Sleep",
        "Quit",
        "Init DB",
        "Query",
        "Field List",
        "Create DB",
        "Drop DB",
        "Refresh",
        "Shutdown",
        "Statistics",
        "Processlist",
        "Connect",
        "Kill",
        "Debug",
        "Ping",
        "Time",
        "Delayed insert",
        "Change user",
        "Binlog Dump",
        "Table Dump",
        "Connect Out",
        "Register Slave",
        "Prepare",
        "Execute",
        "Long Data",
        "Close stmt",
        "Reset stmt",
        "Set option",
        "Fetch",
        "Daemon",
        "Unimpl get tid",
        "Reset connection",
    ];
    match code {
        com::STMT_BULK_EXECUTE => "Bulk_execute",
        _ => NAMES.get(usize::from(code)).copied().unwrap_or("Error"),
    }
}

/// A printable name for metrics, logs and error messages.
pub fn name(code: u8) -> &'static str {
    match code {
        com::SLEEP => "COM_SLEEP",
        com::QUIT => "COM_QUIT",
        com::INIT_DB => "COM_INIT_DB",
        com::QUERY => "COM_QUERY",
        com::FIELD_LIST => "COM_FIELD_LIST",
        com::CREATE_DB => "COM_CREATE_DB",
        com::DROP_DB => "COM_DROP_DB",
        com::REFRESH => "COM_REFRESH",
        com::SHUTDOWN => "COM_SHUTDOWN",
        com::STATISTICS => "COM_STATISTICS",
        com::PROCESS_INFO => "COM_PROCESS_INFO",
        com::CONNECT => "COM_CONNECT",
        com::PROCESS_KILL => "COM_PROCESS_KILL",
        com::DEBUG => "COM_DEBUG",
        com::PING => "COM_PING",
        com::TIME => "COM_TIME",
        com::DELAYED_INSERT => "COM_DELAYED_INSERT",
        com::CHANGE_USER => "COM_CHANGE_USER",
        com::BINLOG_DUMP => "COM_BINLOG_DUMP",
        com::TABLE_DUMP => "COM_TABLE_DUMP",
        com::CONNECT_OUT => "COM_CONNECT_OUT",
        com::REGISTER_SLAVE => "COM_REGISTER_SLAVE",
        com::STMT_PREPARE => "COM_STMT_PREPARE",
        com::STMT_EXECUTE => "COM_STMT_EXECUTE",
        com::STMT_SEND_LONG_DATA => "COM_STMT_SEND_LONG_DATA",
        com::STMT_CLOSE => "COM_STMT_CLOSE",
        com::STMT_RESET => "COM_STMT_RESET",
        com::SET_OPTION => "COM_SET_OPTION",
        com::STMT_FETCH => "COM_STMT_FETCH",
        com::DAEMON => "COM_DAEMON",
        com::BINLOG_DUMP_GTID => "COM_BINLOG_DUMP_GTID",
        com::RESET_CONNECTION => "COM_RESET_CONNECTION",
        com::CLONE => "COM_CLONE",
        com::STMT_BULK_EXECUTE => "COM_STMT_BULK_EXECUTE",
        _ => "COM_UNKNOWN",
    }
}

/// What a server sends back for a command, which decides how sluice tracks the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// No response at all (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT).
    None,
    /// OK or ERR (COM_PING, COM_INIT_DB, COM_STMT_RESET, COM_RESET_CONNECTION, …).
    OkErr,
    /// OK, ERR, a LOCAL INFILE request, or text result sets, possibly several (COM_QUERY).
    Query,
    /// PREPARE_OK with parameter and column definitions, or ERR.
    Prepare,
    /// OK, ERR or binary result sets, possibly several, possibly a cursor (COM_STMT_EXECUTE).
    Execute,
    /// Binary rows of an open cursor, then a terminator; or ERR (COM_STMT_FETCH).
    Fetch,
    /// Column definitions then a terminator, or ERR (COM_FIELD_LIST).
    FieldList,
    /// One string packet, or ERR (COM_STATISTICS).
    Statistics,
    /// EOF (or OK under DEPRECATE_EOF) or ERR (COM_SET_OPTION).
    SetOption,
}

/// How sluice treats a command before anything else looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Goes to a backend; the response is of this kind.
    Forward(ResponseKind),
    /// Replication, clone and other server-internal commands: refused with an error.
    Refuse,
    /// Commands sluice answers or handles itself (QUIT, PING, SET_OPTION, RESET_CONNECTION,
    /// CHANGE_USER, PROCESS_KILL, STATISTICS…); the frontend decides, with this fallback kind.
    Intercept(ResponseKind),
}

pub fn disposition(code: u8) -> Disposition {
    use Disposition::*;
    use ResponseKind as K;
    match code {
        com::QUERY => Forward(K::Query),
        com::INIT_DB | com::CREATE_DB | com::DROP_DB | com::REFRESH => Forward(K::OkErr),
        com::STMT_PREPARE => Forward(K::Prepare),
        com::STMT_EXECUTE => Forward(K::Execute),
        com::STMT_FETCH => Forward(K::Fetch),
        com::STMT_RESET => Forward(K::OkErr),
        com::STMT_CLOSE | com::STMT_SEND_LONG_DATA => Forward(K::None),
        com::FIELD_LIST => Forward(K::FieldList),
        com::QUIT => Intercept(K::None),
        com::PING | com::RESET_CONNECTION | com::CHANGE_USER | com::PROCESS_KILL => {
            Intercept(K::OkErr)
        }
        com::SET_OPTION => Intercept(K::SetOption),
        com::STATISTICS => Intercept(K::Statistics),
        com::PROCESS_INFO => Forward(K::Query),
        _ => Refuse,
    }
}

/// Reads the little-endian `int<4>` statement id that follows the command byte of
/// COM_STMT_EXECUTE/FETCH/CLOSE/RESET/SEND_LONG_DATA.
pub fn statement_id(payload: &[u8]) -> Result<u32> {
    let mut r = Reader::new(payload);
    r.skip(1, "command")?;
    r.u32("statement id")
}

/// Rewrites the statement id of a statement command in place (for mapping client ids to backend ids).
pub fn set_statement_id(payload: &mut [u8], id: u32) -> Result<()> {
    let slot = payload
        .get_mut(1..5)
        .ok_or(CodecError::truncated("statement id"))?;
    slot.copy_from_slice(&id.to_le_bytes());
    Ok(())
}

/// COM_STMT_EXECUTE `int<1>` flags: cursor type.
pub const CURSOR_TYPE_READ_ONLY: u8 = 1;

/// COM_STMT_EXECUTE: statement id and cursor flags.
pub fn execute_flags(payload: &[u8]) -> Result<(u32, u8)> {
    let mut r = Reader::new(payload);
    r.skip(1, "command")?;
    let id = r.u32("statement id")?;
    let flags = r.u8("execute flags")?;
    Ok((id, flags))
}

/// COM_PROCESS_KILL: `int<4>` connection id.
pub fn kill_target(payload: &[u8]) -> Result<u32> {
    let mut r = Reader::new(payload);
    r.skip(1, "command")?;
    r.u32("connection id")
}

/// COM_SET_OPTION: `int<2>` option.
pub mod set_option {
    pub const MULTI_STATEMENTS_ON: u16 = 0;
    pub const MULTI_STATEMENTS_OFF: u16 = 1;
}

pub fn set_option_value(payload: &[u8]) -> Result<u16> {
    let mut r = Reader::new(payload);
    r.skip(1, "command")?;
    r.u16("set option")
}

/// COM_CHANGE_USER.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeUser {
    /// `string<NUL>` user.
    pub username: Vec<u8>,
    /// `int<1>` length + auth response (with SECURE_CONNECTION), else `string<NUL>`.
    pub auth_response: Vec<u8>,
    /// `string<NUL>` schema.
    pub database: Vec<u8>,
    /// `int<2>` collation, when present.
    pub collation: Option<u16>,
    /// `string<NUL>` auth plugin, when PLUGIN_AUTH.
    pub auth_plugin: Option<Vec<u8>>,
    pub attributes: Vec<(Vec<u8>, Vec<u8>)>,
}

impl ChangeUser {
    /// `caps` are the client's capabilities from its handshake.
    pub fn decode(payload: &[u8], caps: u32) -> Result<ChangeUser> {
        let mut r = Reader::new(payload);
        if r.u8("command")? != com::CHANGE_USER {
            return Err(CodecError::invalid("COM_CHANGE_USER header"));
        }
        let username = r.nul_bytes("change user name")?.to_vec();
        let auth_response = if caps & cap::SECURE_CONNECTION != 0 {
            let n = r.u8("change user auth length")?;
            r.take(usize::from(n), "change user auth response")?
                .to_vec()
        } else {
            r.nul_bytes("change user auth response")?.to_vec()
        };
        let database = r.nul_bytes("change user schema")?.to_vec();
        let mut cu = ChangeUser {
            username,
            auth_response,
            database,
            ..ChangeUser::default()
        };
        if r.remaining() >= 2 {
            cu.collation = Some(r.u16("change user collation")?);
        }
        if caps & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
            cu.auth_plugin = Some(r.nul_bytes("change user auth plugin")?.to_vec());
        }
        if caps & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
            let block = r.lenenc_bytes("change user attributes")?;
            let mut a = Reader::new(block);
            while !a.is_empty() {
                let k = a.lenenc_bytes("attribute name")?.to_vec();
                let v = a.lenenc_bytes("attribute value")?.to_vec();
                cu.attributes.push((k, v));
            }
        }
        Ok(cu)
    }

    pub fn encode(&self, out: &mut impl BufMut, caps: u32) {
        out.put_u8(com::CHANGE_USER);
        put_nul_bytes(out, &self.username);
        if caps & cap::SECURE_CONNECTION != 0 {
            let n = self.auth_response.len().min(255);
            out.put_u8(n as u8);
            out.put_slice(&self.auth_response[..n]);
        } else {
            put_nul_bytes(out, &self.auth_response);
        }
        put_nul_bytes(out, &self.database);
        out.put_u16_le(self.collation.unwrap_or(0));
        if caps & cap::PLUGIN_AUTH != 0 {
            put_nul_bytes(out, self.auth_plugin.as_deref().unwrap_or_default());
        }
        if caps & cap::CONNECT_ATTRS != 0 {
            let mut block = Vec::new();
            for (k, v) in &self.attributes {
                put_lenenc_bytes(&mut block, k);
                put_lenenc_bytes(&mut block, v);
            }
            put_lenenc_int(out, block.len() as u64);
            out.put_slice(&block);
        }
    }
}

/// A COM_QUERY packet for `sql`.
pub fn encode_query(out: &mut Vec<u8>, sql: &[u8]) {
    out.push(com::QUERY);
    out.extend_from_slice(sql);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_byte_has_a_disposition_and_replication_is_refused() {
        for code in 0..=255u8 {
            let _ = disposition(code);
            let _ = name(code);
        }
        for code in [
            com::BINLOG_DUMP,
            com::BINLOG_DUMP_GTID,
            com::REGISTER_SLAVE,
            com::TABLE_DUMP,
            com::SHUTDOWN,
            com::DEBUG,
            com::CLONE,
            com::CONNECT,
            com::DAEMON,
        ] {
            assert_eq!(disposition(code), Disposition::Refuse, "{}", name(code));
        }
        assert_eq!(
            disposition(com::QUERY),
            Disposition::Forward(ResponseKind::Query)
        );
    }

    #[test]
    fn statement_ids_read_and_rewrite() {
        let mut p = vec![com::STMT_EXECUTE, 5, 0, 0, 0, 1, 1, 0, 0, 0];
        assert_eq!(statement_id(&p).unwrap(), 5);
        assert_eq!(execute_flags(&p).unwrap(), (5, CURSOR_TYPE_READ_ONLY));
        set_statement_id(&mut p, 0x0102_0304).unwrap();
        assert_eq!(statement_id(&p).unwrap(), 0x0102_0304);
        assert!(statement_id(&[com::STMT_CLOSE, 1]).is_err());
        assert!(set_statement_id(&mut [com::STMT_CLOSE], 1).is_err());
    }

    #[test]
    fn change_user_round_trip() {
        let caps =
            cap::PROTOCOL_41 | cap::SECURE_CONNECTION | cap::PLUGIN_AUTH | cap::CONNECT_ATTRS;
        let cu = ChangeUser {
            username: b"app".to_vec(),
            auth_response: vec![1; 20],
            database: b"db".to_vec(),
            collation: Some(45),
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            attributes: vec![(b"k".to_vec(), b"v".to_vec())],
        };
        let mut out = Vec::new();
        cu.encode(&mut out, caps);
        assert_eq!(ChangeUser::decode(&out, caps).unwrap(), cu);
        for cut in 0..out.len() {
            let _ = ChangeUser::decode(&out[..cut], caps);
        }
    }
}
