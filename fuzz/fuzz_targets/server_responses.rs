//! Server packets: `OkPacket::decode` (with and without CLIENT_SESSION_TRACK) and its session
//! changes, re-encoded for both kinds of client and decoded again; `ErrPacket`, `EofPacket`,
//! `AuthSwitch` decode and round trips; and the client-side `Login` state machine fed the same
//! packets after a fixed greeting.
//!
//! Input: `[options][frames…]`, frames as on the wire (length clamped to what is left), see
//! `sluice_fuzz::packets`. Options: bit 0 secure transport, bit 1 greeting offers
//! caching_sha2_password, bit 2 empty password, bit 3 ask for a database, bit 4 MariaDB greeting
//! (LONG_PASSWORD clear), bit 5 the client asks for SESSION_TRACK + DEPRECATE_EOF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::codec::auth::{AuthSwitch, CACHING_SHA2_PASSWORD, NATIVE_PASSWORD};
use sluice::codec::caps::{cap, status};
use sluice::codec::handshake::{Handshake, HandshakeResponse};
use sluice::codec::login::{Login, LoginError, LoginParams, LoginStep, BASE_CAPABILITIES};
use sluice::codec::packets::{EofPacket, ErrPacket, OkPacket, SessionChange, EOF, OK};

const TRACK: u32 = cap::PROTOCOL_41 | cap::SESSION_TRACK;
const PLAIN: u32 = cap::PROTOCOL_41;

fn check_ok(payload: &[u8]) {
    for caps in [TRACK, PLAIN] {
        let Ok(ok) = OkPacket::decode(payload, caps) else {
            continue;
        };
        if caps == PLAIN {
            assert!(ok.session_state.is_empty());
        }
        // Iterate the changes: at most one error, and it is the last item.
        let mut n = 0;
        let mut failed = false;
        for c in ok.session_changes() {
            assert!(!failed, "item after an error");
            n += 1;
            match c {
                Ok(SessionChange::StateChange(_)) | Ok(SessionChange::Other(_)) => {}
                Ok(_) => {}
                Err(_) => failed = true,
            }
            assert!(n <= ok.session_state.len(), "more changes than bytes");
        }
        for header in [OK, EOF] {
            // For a tracking client: everything comes back, the state-changed flag follows the
            // presence of a state block.
            let mut w = Vec::new();
            ok.encode(&mut w, header, TRACK);
            assert_eq!(w[0], header);
            let back = OkPacket::decode(&w, TRACK).expect("re-decode (tracking client)");
            let mut want = ok.clone();
            want.status = if ok.session_state.is_empty() {
                ok.status & !status::SESSION_STATE_CHANGED
            } else {
                ok.status | status::SESSION_STATE_CHANGED
            };
            assert_eq!(back, want, "OK round trip for a tracking client");
            // For a client without tracking: the state block and its flag are dropped.
            let mut w = Vec::new();
            ok.encode(&mut w, header, PLAIN);
            assert_eq!(w.len(), ok.encoded_len(PLAIN));
            let back = OkPacket::decode(&w, PLAIN).expect("re-decode (plain client)");
            let want = OkPacket {
                status: ok.status & !status::SESSION_STATE_CHANGED,
                session_state: &[],
                ..ok.clone()
            };
            assert_eq!(back, want, "OK round trip for a plain client");
            // What a plain client gets is also what a tracking client would read.
            let as_tracking = OkPacket::decode(&w, TRACK).expect("plain OK read with tracking");
            assert_eq!(as_tracking, want);
        }
    }
}

fn check_err_eof_switch(payload: &[u8]) {
    if let Ok(e) = ErrPacket::decode(payload) {
        let mut w = Vec::new();
        e.encode(&mut w);
        assert_eq!(ErrPacket::decode(&w), Ok(e.clone()), "ERR round trip");
    }
    if let Ok(e) = EofPacket::decode(payload) {
        let mut w = Vec::new();
        e.encode(&mut w);
        assert_eq!(w.len(), 5);
        assert_eq!(EofPacket::decode(&w), Ok(e), "EOF round trip");
    }
    if let Ok(s) = AuthSwitch::decode(payload) {
        assert!(!s.plugin.contains(&0));
        let mut w = Vec::new();
        s.encode(&mut w);
        assert_eq!(AuthSwitch::decode(&w), Ok(s), "auth switch round trip");
    }
}

fn greeting(opts: u8) -> Handshake {
    let mut caps = 0xffff_f7ffu32;
    if opts & 16 != 0 {
        caps &= !cap::LONG_PASSWORD;
    }
    Handshake {
        server_version: b"5.5.5-10.11.19-MariaDB".to_vec(),
        connection_id: 9,
        nonce: b"abcdefghijklmnopqrst".to_vec(),
        capabilities: caps,
        collation: 45,
        status: 2,
        mariadb_capabilities: if opts & 16 != 0 { 0x1d } else { 0 },
        auth_plugin: if opts & 2 != 0 {
            CACHING_SHA2_PASSWORD
        } else {
            NATIVE_PASSWORD
        }
        .to_vec(),
    }
}

fn run_login(opts: u8, packets: &[(u8, &[u8])]) {
    let mut capabilities = BASE_CAPABILITIES;
    if opts & 32 != 0 {
        capabilities |= cap::SESSION_TRACK | cap::DEPRECATE_EOF;
    }
    let params = LoginParams {
        user: b"app".to_vec(),
        password: if opts & 4 != 0 {
            Vec::new()
        } else {
            b"app".to_vec()
        },
        database: (opts & 8 != 0).then(|| b"app".to_vec()),
        collation: 45,
        capabilities,
        mariadb_capabilities: 0x1d,
        attributes: vec![(b"_client_name".to_vec(), b"sluice".to_vec())],
        secure_transport: opts & 1 != 0,
    };
    let mut login = Login::new(params);
    let g = greeting(opts);
    let resp = login
        .respond(&g)
        .expect("respond to a well-formed greeting");
    let decoded = HandshakeResponse::decode(&resp).expect("our own handshake response decodes");
    assert_eq!(decoded.capabilities, login.capabilities());
    assert!(login.respond(&g).is_err(), "a second greeting is refused");
    for (_, p) in packets {
        if login.is_done() {
            // Nothing may move a finished login again.
            let _ = login.on_packet(p);
            break;
        }
        match login.on_packet(p) {
            Ok(LoginStep::Done { .. }) => assert!(login.is_done()),
            Ok(LoginStep::Send(_)) => assert!(!login.is_done()),
            Err(LoginError::Server { .. }) => {
                assert!(login.is_done());
                break;
            }
            Err(_) => break,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else {
        return;
    };
    let packets = sluice_fuzz::packets(rest);
    for (_, p) in &packets {
        check_ok(p);
        check_err_eof_switch(p);
    }
    run_login(opts, &packets);
});
