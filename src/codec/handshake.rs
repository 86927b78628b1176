//! The connection phase: the server's HandshakeV10 greeting, the client's HandshakeResponse41 and
//! its 32-byte SSLRequest prefix.

use super::caps::cap;
use super::wire::{put_lenenc_bytes, put_lenenc_int, put_nul_bytes, Reader};
use super::{CodecError, Result};
use bytes::BufMut;

/// HandshakeV10, the first packet a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// `string<NUL>` server version, e.g. "5.5.5-10.11.19-MariaDB".
    pub server_version: Vec<u8>,
    /// `int<4>` connection (thread) id.
    pub connection_id: u32,
    /// Auth plugin data: `string[8]` part 1 and part 2, without the trailing NUL.
    pub nonce: Vec<u8>,
    /// Lower and upper `int<2>` capability flags.
    pub capabilities: u32,
    /// `int<1>` default collation id.
    pub collation: u8,
    /// `int<2>` status flags.
    pub status: u16,
    /// MariaDB's `int<4>` extended capabilities (0 for MySQL servers).
    pub mariadb_capabilities: u32,
    /// `string<NUL>` auth plugin name.
    pub auth_plugin: Vec<u8>,
}

impl Handshake {
    pub fn decode(payload: &[u8]) -> Result<Handshake> {
        let mut r = Reader::new(payload);
        let protocol = r.u8("handshake protocol version")?;
        if protocol != 10 {
            return Err(CodecError::invalid("handshake protocol version"));
        }
        let server_version = r.nul_bytes("server version")?.to_vec();
        let connection_id = r.u32("connection id")?;
        let mut nonce = r.take(8, "auth plugin data part 1")?.to_vec();
        r.skip(1, "filler")?;
        let cap_lo = u32::from(r.u16("capability flags")?);
        // Pre-4.1 servers stop here; sluice needs a 4.1+ server.
        let collation = r.u8("character set")?;
        let status = r.u16("status flags")?;
        let cap_hi = u32::from(r.u16("capability flags (upper)")?);
        let capabilities = cap_lo | cap_hi << 16;
        let auth_data_len = r.u8("auth plugin data length")?;
        r.skip(6, "filler")?;
        let ext = r.u32("MariaDB extended capabilities")?;
        let mariadb_capabilities = if capabilities & cap::LONG_PASSWORD == 0 {
            ext
        } else {
            0
        };
        if capabilities & cap::SECURE_CONNECTION != 0 {
            let n = (usize::from(auth_data_len).saturating_sub(8)).max(13);
            let part2 = r.take(n, "auth plugin data part 2")?;
            // Part 2 is NUL-terminated; the scramble itself is 20 bytes for both password plugins.
            let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
            nonce.extend_from_slice(part2);
        }
        let auth_plugin = if capabilities & cap::PLUGIN_AUTH != 0 {
            // Some servers omit the final NUL.
            let rest = r.rest();
            rest.split(|&b| b == 0).next().unwrap_or_default().to_vec()
        } else {
            Vec::new()
        };
        Ok(Handshake {
            server_version,
            connection_id,
            nonce,
            capabilities,
            collation,
            status,
            mariadb_capabilities,
            auth_plugin,
        })
    }

    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(10);
        put_nul_bytes(out, &self.server_version);
        out.put_u32_le(self.connection_id);
        let (p1, p2) = self.nonce.split_at(self.nonce.len().min(8));
        out.put_slice(p1);
        out.put_bytes(0, 8 - p1.len());
        out.put_u8(0);
        out.put_u16_le(self.capabilities as u16);
        out.put_u8(self.collation);
        out.put_u16_le(self.status);
        out.put_u16_le((self.capabilities >> 16) as u16);
        out.put_u8(if self.capabilities & cap::PLUGIN_AUTH != 0 {
            // The auth data written: part 1 (8 bytes) and part 2 with its padding and NUL; one
            // byte cannot say more than 255 (sluice's own nonce is 20 bytes: 21).
            (8 + (p2.len() + 1).max(13)).min(255) as u8
        } else {
            0
        });
        out.put_bytes(0, 6);
        if self.capabilities & cap::LONG_PASSWORD == 0 {
            out.put_u32_le(self.mariadb_capabilities);
        } else {
            out.put_bytes(0, 4);
        }
        if self.capabilities & cap::SECURE_CONNECTION != 0 {
            out.put_slice(p2);
            // Part 2 is at least 13 bytes including its NUL.
            out.put_bytes(0, 13usize.saturating_sub(p2.len()).max(1));
        }
        if self.capabilities & cap::PLUGIN_AUTH != 0 {
            put_nul_bytes(out, &self.auth_plugin);
        }
    }
}

/// HandshakeResponse41, the client's answer to the greeting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// `int<4>` client capability flags.
    pub capabilities: u32,
    /// `int<4>` max packet size the client accepts.
    pub max_packet_size: u32,
    /// `int<1>` collation id.
    pub collation: u8,
    /// MariaDB `int<4>` extended capabilities (only when the client clears `LONG_PASSWORD`).
    pub mariadb_capabilities: u32,
    /// `string<NUL>` user name.
    pub username: Vec<u8>,
    /// Auth response (lenenc, 1-byte length or NUL-terminated depending on capabilities).
    pub auth_response: Vec<u8>,
    /// `string<NUL>` initial schema, when `CONNECT_WITH_DB`.
    pub database: Option<Vec<u8>>,
    /// `string<NUL>` auth plugin the response was computed with, when `PLUGIN_AUTH`.
    pub auth_plugin: Option<Vec<u8>>,
    /// Connection attributes, when `CONNECT_ATTRS`.
    pub attributes: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Length of an SSLRequest: the fixed part of a HandshakeResponse41.
pub const SSL_REQUEST_LEN: usize = 32;

/// The fixed 32-byte prefix shared by SSLRequest and HandshakeResponse41.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponsePrefix {
    pub capabilities: u32,
    pub max_packet_size: u32,
    pub collation: u8,
    pub mariadb_capabilities: u32,
}

impl ResponsePrefix {
    pub fn decode(r: &mut Reader<'_>) -> Result<ResponsePrefix> {
        let capabilities = r.u32("client capability flags")?;
        if capabilities & cap::PROTOCOL_41 == 0 {
            return Err(CodecError::invalid(
                "client capabilities (protocol 4.1 required)",
            ));
        }
        let max_packet_size = r.u32("max packet size")?;
        let collation = r.u8("character set")?;
        r.skip(19, "filler")?;
        let ext = r.u32("MariaDB extended capabilities")?;
        let mariadb_capabilities = if capabilities & cap::LONG_PASSWORD == 0 {
            ext
        } else {
            0
        };
        Ok(ResponsePrefix {
            capabilities,
            max_packet_size,
            collation,
            mariadb_capabilities,
        })
    }

    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u32_le(self.capabilities);
        out.put_u32_le(self.max_packet_size);
        out.put_u8(self.collation);
        out.put_bytes(0, 19);
        if self.capabilities & cap::LONG_PASSWORD == 0 {
            out.put_u32_le(self.mariadb_capabilities);
        } else {
            out.put_bytes(0, 4);
        }
    }
}

/// Is this client packet an SSLRequest (the prefix alone, with `CLIENT_SSL`)?
pub fn is_ssl_request(payload: &[u8]) -> bool {
    payload.len() == SSL_REQUEST_LEN
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & cap::SSL != 0
}

impl HandshakeResponse {
    pub fn decode(payload: &[u8]) -> Result<HandshakeResponse> {
        let mut r = Reader::new(payload);
        let p = ResponsePrefix::decode(&mut r)?;
        let caps = p.capabilities;
        let username = r.nul_bytes("user name")?.to_vec();
        let auth_response = if caps & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes("auth response")?
        } else if caps & cap::SECURE_CONNECTION != 0 {
            let n = r.u8("auth response length")?;
            r.take(usize::from(n), "auth response")?
        } else {
            r.nul_bytes("auth response")?
        }
        .to_vec();
        let database = if caps & cap::CONNECT_WITH_DB != 0 && !r.is_empty() {
            Some(r.nul_bytes("database")?.to_vec())
        } else {
            None
        };
        let auth_plugin = if caps & cap::PLUGIN_AUTH != 0 && !r.is_empty() {
            Some(r.nul_bytes("auth plugin name")?.to_vec())
        } else {
            None
        };
        let mut attributes = Vec::new();
        if caps & cap::CONNECT_ATTRS != 0 && !r.is_empty() {
            let block = r.lenenc_bytes("connection attributes")?;
            let mut a = Reader::new(block);
            while !a.is_empty() {
                let k = a.lenenc_bytes("attribute name")?.to_vec();
                let v = a.lenenc_bytes("attribute value")?.to_vec();
                attributes.push((k, v));
            }
        }
        Ok(HandshakeResponse {
            capabilities: caps,
            max_packet_size: p.max_packet_size,
            collation: p.collation,
            mariadb_capabilities: p.mariadb_capabilities,
            username,
            auth_response,
            database,
            auth_plugin,
            attributes,
        })
    }

    pub fn encode(&self, out: &mut impl BufMut) {
        let caps = self.capabilities;
        ResponsePrefix {
            capabilities: caps,
            max_packet_size: self.max_packet_size,
            collation: self.collation,
            mariadb_capabilities: self.mariadb_capabilities,
        }
        .encode(out);
        put_nul_bytes(out, &self.username);
        if caps & cap::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            put_lenenc_bytes(out, &self.auth_response);
        } else if caps & cap::SECURE_CONNECTION != 0 {
            let n = self.auth_response.len().min(255);
            out.put_u8(n as u8);
            out.put_slice(&self.auth_response[..n]);
        } else {
            put_nul_bytes(out, &self.auth_response);
        }
        if caps & cap::CONNECT_WITH_DB != 0 {
            put_nul_bytes(out, self.database.as_deref().unwrap_or_default());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// MariaDB 10.11.19's greeting, captured on loopback.
    const MARIADB_GREETING: &str = "0a352e352e352d31302e31312e31392d4d6172696144422d302b6465623132753100050000002f46524a5a66733100fef7080200ff81150000000000001d000000375d52627547404b38776e42006d7973716c5f6e61746976655f70617373776f726400";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn decodes_and_reencodes_a_real_mariadb_greeting() {
        let bytes = hex(MARIADB_GREETING);
        let h = Handshake::decode(&bytes).unwrap();
        assert_eq!(h.server_version, b"5.5.5-10.11.19-MariaDB-0+deb12u1");
        assert_eq!(h.connection_id, 5);
        assert_eq!(h.nonce.len(), 20);
        assert_eq!(h.capabilities, 0x81ff_f7fe);
        assert_eq!(h.collation, 8);
        assert_eq!(h.status, 2);
        assert_eq!(h.mariadb_capabilities, 0x1d);
        assert_eq!(h.auth_plugin, b"mysql_native_password");
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(out, bytes);
    }

    #[test]
    fn every_truncation_of_the_greeting_is_an_error_not_a_panic() {
        let bytes = hex(MARIADB_GREETING);
        for cut in 0..bytes.len() - 22 {
            assert!(Handshake::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn response_round_trips_with_every_optional_part() {
        let resp = HandshakeResponse {
            capabilities: cap::PROTOCOL_41
                | cap::SECURE_CONNECTION
                | cap::PLUGIN_AUTH
                | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | cap::CONNECT_WITH_DB
                | cap::CONNECT_ATTRS,
            max_packet_size: 1 << 24,
            collation: 45,
            mariadb_capabilities: 0x4,
            username: b"app".to_vec(),
            auth_response: vec![7; 20],
            database: Some(b"app".to_vec()),
            auth_plugin: Some(b"mysql_native_password".to_vec()),
            attributes: vec![(b"_client_name".to_vec(), b"sluice".to_vec())],
        };
        let mut out = Vec::new();
        resp.encode(&mut out);
        assert_eq!(HandshakeResponse::decode(&out).unwrap(), resp);
        for cut in SSL_REQUEST_LEN..out.len() {
            // Truncations either fail or decode fewer optional parts; never panic.
            let _ = HandshakeResponse::decode(&out[..cut]);
        }
        assert!(!is_ssl_request(&out));
    }

    #[test]
    fn ssl_request_is_recognised_by_length_and_flag() {
        let mut out = Vec::new();
        ResponsePrefix {
            capabilities: cap::PROTOCOL_41 | cap::SSL,
            max_packet_size: 0,
            collation: 45,
            mariadb_capabilities: 0,
        }
        .encode(&mut out);
        assert_eq!(out.len(), SSL_REQUEST_LEN);
        assert!(is_ssl_request(&out));
    }

    #[test]
    fn pre_41_clients_are_refused() {
        let mut out = vec![0u8; 40];
        out[0] = 0x01;
        assert!(HandshakeResponse::decode(&out).is_err());
    }
}
