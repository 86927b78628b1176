//! Authentication exchange packets (AuthSwitchRequest, AuthMoreData) and the two password
//! scrambles: `mysql_native_password` (SHA-1) and `caching_sha2_password` (SHA-256).
//!
//! Both scrambles let a verifier that stores only a double hash of the password check a response
//! without ever seeing the password: `stage1 = H(password)`, `stage2 = H(stage1)`, and the client
//! sends `stage1 XOR H(salted stage2)`. The verifier recovers `stage1` and checks `H(stage1) ==
//! stage2`.

use super::wire::{put_nul_bytes, Reader};
use super::{CodecError, Result};
use bytes::BufMut;
use sha1::Sha1;
use sha2::{Digest, Sha256};

pub const NATIVE_PASSWORD: &[u8] = b"mysql_native_password";
pub const CACHING_SHA2_PASSWORD: &[u8] = b"caching_sha2_password";
pub const CLEAR_PASSWORD: &[u8] = b"mysql_clear_password";

/// First byte of an AuthSwitchRequest (shared with EOF).
pub const AUTH_SWITCH: u8 = 0xFE;
/// First byte of an AuthMoreData packet.
pub const AUTH_MORE_DATA: u8 = 0x01;
/// caching_sha2_password: AuthMoreData payloads after the scramble.
pub const SHA2_FAST_AUTH_OK: u8 = 3;
pub const SHA2_PERFORM_FULL_AUTH: u8 = 4;
/// caching_sha2_password: the client asks for the server's RSA public key.
pub const SHA2_REQUEST_PUBLIC_KEY: u8 = 2;

/// AuthSwitchRequest: `0xFE`, `string<NUL>` plugin name, `string<EOF>` plugin data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitch {
    pub plugin: Vec<u8>,
    /// The new nonce, without the trailing NUL MySQL servers append.
    pub data: Vec<u8>,
}

impl AuthSwitch {
    pub fn decode(payload: &[u8]) -> Result<AuthSwitch> {
        let mut r = Reader::new(payload);
        if r.u8("auth switch header")? != AUTH_SWITCH {
            return Err(CodecError::invalid("auth switch header"));
        }
        let plugin = r.nul_bytes("auth switch plugin name")?.to_vec();
        let data = r.rest();
        let data = data.strip_suffix(&[0]).unwrap_or(data).to_vec();
        Ok(AuthSwitch { plugin, data })
    }

    pub fn encode(&self, out: &mut impl BufMut) {
        out.put_u8(AUTH_SWITCH);
        put_nul_bytes(out, &self.plugin);
        put_nul_bytes(out, &self.data);
    }
}

fn xor(a: &mut [u8], b: &[u8]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x ^= y;
    }
}

/// `SHA1(SHA1(password))`: what a verifier stores for mysql_native_password.
pub fn native_stage2(password: &[u8]) -> [u8; 20] {
    Sha1::digest(Sha1::digest(password)).into()
}

/// The mysql_native_password response for `password` and the server's 20-byte `nonce`.
/// An empty password gives an empty response.
pub fn native_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1: [u8; 20] = Sha1::digest(password).into();
    let stage2: [u8; 20] = Sha1::digest(stage1).into();
    let mut h = Sha1::new();
    h.update(&nonce[..nonce.len().min(20)]);
    h.update(stage2);
    let mut out = stage1.to_vec();
    xor(&mut out, &h.finalize());
    out
}

/// Checks a mysql_native_password response against the stored `SHA1(SHA1(password))`.
pub fn native_verify(stage2: &[u8; 20], nonce: &[u8], response: &[u8]) -> bool {
    if response.len() != 20 {
        return false;
    }
    let mut h = Sha1::new();
    h.update(&nonce[..nonce.len().min(20)]);
    h.update(stage2);
    let mut stage1 = response.to_vec();
    xor(&mut stage1, &h.finalize());
    constant_time_eq(&Sha1::digest(&stage1), stage2)
}

/// `SHA256(SHA256(password))`: what a verifier needs for the caching_sha2_password fast path.
pub fn sha2_stage2(password: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(password)).into()
}

/// The caching_sha2_password scramble: `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) || nonce)`.
pub fn sha2_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1: [u8; 32] = Sha256::digest(password).into();
    let stage2: [u8; 32] = Sha256::digest(stage1).into();
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(&nonce[..nonce.len().min(20)]);
    let mut out = stage1.to_vec();
    xor(&mut out, &h.finalize());
    out
}

/// Checks a caching_sha2_password fast-path scramble against the stored `SHA256(SHA256(pw))`.
pub fn sha2_verify(stage2: &[u8; 32], nonce: &[u8], response: &[u8]) -> bool {
    if response.len() != 32 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(&nonce[..nonce.len().min(20)]);
    let mut stage1 = response.to_vec();
    xor(&mut stage1, &h.finalize());
    constant_time_eq(&Sha256::digest(&stage1), stage2)
}

/// Comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hash_matches_mysql_password_function() {
        // MariaDB: SELECT PASSWORD('app') = '*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3'.
        let hex: String = native_stage2(b"app")
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(hex, "5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3");
    }

    #[test]
    fn native_scramble_verifies_only_with_the_right_password() {
        let nonce = b"0123456789abcdefghij";
        let stage2 = native_stage2(b"secret");
        assert!(native_verify(
            &stage2,
            nonce,
            &native_scramble(b"secret", nonce)
        ));
        assert!(!native_verify(
            &stage2,
            nonce,
            &native_scramble(b"Secret", nonce)
        ));
        assert!(!native_verify(
            &stage2,
            b"other nonce 01234567",
            &native_scramble(b"secret", nonce)
        ));
        assert!(!native_verify(&stage2, nonce, b""));
        assert!(!native_verify(&stage2, nonce, &[0; 21]));
    }

    #[test]
    fn sha2_scramble_verifies_only_with_the_right_password() {
        let nonce = b"0123456789abcdefghij";
        let stage2 = sha2_stage2(b"secret");
        assert!(sha2_verify(
            &stage2,
            nonce,
            &sha2_scramble(b"secret", nonce)
        ));
        assert!(!sha2_verify(
            &stage2,
            nonce,
            &sha2_scramble(b"secreT", nonce)
        ));
        assert!(!sha2_verify(&stage2, nonce, &[1; 32]));
    }

    #[test]
    fn auth_switch_round_trip_and_captured_bytes() {
        // MariaDB's switch to mysql_native_password, captured on loopback.
        let captured = b"\xfemysql_native_password\x00Yn>'IxC$*Fa7.~R_ghSH\x00";
        let s = AuthSwitch::decode(captured).unwrap();
        assert_eq!(s.plugin, NATIVE_PASSWORD);
        assert_eq!(s.data.len(), 20);
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(&out[..], &captured[..]);
        assert!(AuthSwitch::decode(b"\xfemysql").is_err());
        assert!(AuthSwitch::decode(b"").is_err());
    }
}
