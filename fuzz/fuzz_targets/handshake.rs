//! The connection phase: `Handshake::decode`, `HandshakeResponse::decode`, `is_ssl_request` on
//! arbitrary bytes, with round trips.
//!
//! Round trips assert `decode(encode(x)) == x` for every decoded `x`, up to what the wire format
//! cannot carry (each exception is spelled out where it is normalised):
//! - HandshakeResponse: an absent trailing database / plugin name decodes as `None`, but `encode`
//!   always writes the field when its capability is set, so it comes back as `Some("")`.
//! - Handshake: part 2 of the nonce is padded to 12 bytes + NUL on the wire, and its length byte
//!   is only written under PLUGIN_AUTH; a part 2 shorter than 12 bytes comes back zero-padded and,
//!   without PLUGIN_AUTH, only exactly 12 bytes survive. A nonce of 255 bytes or more does not fit
//!   the `int<1>` length (see the report: `encode` wraps it).
//! A second round trip must then be exact (encode output is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::codec::caps::cap;
use sluice::codec::handshake::{is_ssl_request, Handshake, HandshakeResponse, SSL_REQUEST_LEN};

fn greeting_round_trips_exactly(h: &Handshake) -> bool {
    if h.capabilities & cap::SECURE_CONNECTION == 0 {
        return true;
    }
    let p2 = h.nonce.len().saturating_sub(8);
    if h.capabilities & cap::PLUGIN_AUTH != 0 {
        p2 >= 12 && h.nonce.len() <= 254
    } else {
        p2 == 12
    }
}

fn check_greeting(data: &[u8]) {
    let Ok(h) = Handshake::decode(data) else {
        return;
    };
    // The decoder's own bounds.
    assert!(h.nonce.len() >= 8);
    assert!(!h.server_version.contains(&0));
    assert!(!h.auth_plugin.contains(&0));
    if h.capabilities & cap::LONG_PASSWORD != 0 {
        assert_eq!(h.mariadb_capabilities, 0);
    }
    let mut wire = Vec::new();
    h.encode(&mut wire);
    let back = Handshake::decode(&wire);
    if greeting_round_trips_exactly(&h) {
        assert_eq!(back.as_ref(), Ok(&h), "greeting round trip");
    }
    // Whatever came back is stable from then on, when the nonce fits its length byte.
    if let Ok(back) = back {
        if back.nonce.len() <= 254 {
            let mut wire2 = Vec::new();
            back.encode(&mut wire2);
            let again = Handshake::decode(&wire2).expect("re-decode of an encoded greeting");
            if greeting_round_trips_exactly(&back) {
                assert_eq!(again, back, "second greeting round trip");
            }
        }
    }
}

fn normalise(mut r: HandshakeResponse) -> HandshakeResponse {
    if r.capabilities & cap::CONNECT_WITH_DB != 0 && r.database.is_none() {
        r.database = Some(Vec::new());
    }
    if r.capabilities & cap::PLUGIN_AUTH != 0 && r.auth_plugin.is_none() {
        r.auth_plugin = Some(Vec::new());
    }
    r
}

fn check_response(data: &[u8]) {
    let ssl = is_ssl_request(data);
    if ssl {
        assert_eq!(data.len(), SSL_REQUEST_LEN);
    }
    let Ok(r) = HandshakeResponse::decode(data) else {
        return;
    };
    assert!(r.capabilities & cap::PROTOCOL_41 != 0);
    assert!(!r.username.contains(&0));
    // SSLRequest is exactly the 32-byte prefix: a full response decoded from it has an empty name
    // only if the prefix was followed by more bytes.
    let mut wire = Vec::new();
    r.encode(&mut wire);
    let back = HandshakeResponse::decode(&wire).expect("re-decode of an encoded response");
    assert_eq!(back, normalise(r), "handshake response round trip");
    let mut wire2 = Vec::new();
    back.encode(&mut wire2);
    assert_eq!(wire2, wire, "response encoding is not canonical");
}

fuzz_target!(|data: &[u8]| {
    check_greeting(data);
    check_response(data);
    // The greeting decoder must also survive every prefix of its input (servers' packets can be
    // cut anywhere by a hostile peer); cheap because greetings are short.
    if data.len() <= 256 {
        for cut in 0..data.len() {
            let _ = Handshake::decode(&data[..cut]);
            let _ = HandshakeResponse::decode(&data[..cut]);
        }
    }
});
