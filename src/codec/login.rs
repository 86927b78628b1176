//! The client side of the connection phase as a pure state machine: greeting in, handshake
//! response out, then auth switches and caching_sha2 round trips until OK or ERR. Used by sluice's
//! backend connections and by the load generator.

use super::auth::{
    native_scramble, sha2_scramble, AuthSwitch, AUTH_MORE_DATA, AUTH_SWITCH, CACHING_SHA2_PASSWORD,
    CLEAR_PASSWORD, NATIVE_PASSWORD, SHA2_FAST_AUTH_OK, SHA2_PERFORM_FULL_AUTH,
};
use super::caps::cap;
use super::handshake::{Handshake, HandshakeResponse};
use super::packets::{ErrPacket, OkPacket, ERR, OK};
use super::CodecError;
use std::fmt;

/// What the client logs in with.
#[derive(Debug, Clone, Default)]
pub struct LoginParams {
    pub user: Vec<u8>,
    pub password: Vec<u8>,
    pub database: Option<Vec<u8>>,
    pub collation: u8,
    /// Capabilities the client wants; the negotiated set is these AND the server's.
    pub capabilities: u32,
    pub mariadb_capabilities: u32,
    pub attributes: Vec<(Vec<u8>, Vec<u8>)>,
    /// The connection is encrypted: the password may be sent in clear for full authentication.
    pub secure_transport: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginError {
    /// The server refused the login.
    Server {
        code: u16,
        sql_state: [u8; 5],
        message: String,
    },
    /// The server sent something this client cannot parse.
    Protocol(CodecError),
    /// The server asks for something this client does not do (an unknown plugin, full
    /// authentication without a secure transport).
    Unsupported(String),
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::Server {
                code,
                sql_state,
                message,
            } => write!(
                f,
                "server refused login: ERROR {code} ({}): {message}",
                String::from_utf8_lossy(sql_state)
            ),
            LoginError::Protocol(e) => write!(f, "protocol error during login: {e}"),
            LoginError::Unsupported(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for LoginError {}

impl From<CodecError> for LoginError {
    fn from(e: CodecError) -> Self {
        LoginError::Protocol(e)
    }
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Send this payload (the next sequence id is the caller's to track).
    Send(Vec<u8>),
    /// Logged in; the OK's status flags.
    Done { status: u16 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Greeting,
    /// Waiting for the answer to a scramble sent with `plugin`.
    Authenticating,
    /// caching_sha2: fast auth succeeded, the OK follows.
    AwaitOk,
    Done,
}

pub struct Login {
    params: LoginParams,
    state: State,
    plugin: Vec<u8>,
    nonce: Vec<u8>,
    negotiated: u32,
}

/// Capabilities every sluice client connection asks for (when the server has them).
pub const BASE_CAPABILITIES: u32 = cap::LONG_PASSWORD
    | cap::LONG_FLAG
    | cap::PROTOCOL_41
    | cap::TRANSACTIONS
    | cap::SECURE_CONNECTION
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::PLUGIN_AUTH
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | cap::CONNECT_ATTRS;

impl Login {
    pub fn new(params: LoginParams) -> Login {
        Login {
            params,
            state: State::Greeting,
            plugin: Vec::new(),
            nonce: Vec::new(),
            negotiated: 0,
        }
    }

    /// Re-authentication on an established connection (COM_CHANGE_USER): the scramble uses the
    /// connection's original nonce and `plugin`; returns the machine and the auth response.
    pub fn change_user(
        params: LoginParams,
        capabilities: u32,
        plugin: &[u8],
        nonce: Vec<u8>,
    ) -> Result<(Login, Vec<u8>), LoginError> {
        let l = Login {
            params,
            state: State::Authenticating,
            plugin: plugin.to_vec(),
            nonce,
            negotiated: capabilities,
        };
        let scramble = l.scramble()?;
        Ok((l, scramble))
    }

    /// Capabilities in force on the connection (after [`Login::respond`]).
    pub fn capabilities(&self) -> u32 {
        self.negotiated
    }

    /// Builds the HandshakeResponse41 for the server's greeting.
    pub fn respond(&mut self, greeting: &Handshake) -> Result<Vec<u8>, LoginError> {
        if self.state != State::Greeting {
            return Err(LoginError::Protocol(CodecError::invalid("second greeting")));
        }
        let required = cap::PROTOCOL_41 | cap::SECURE_CONNECTION | cap::PLUGIN_AUTH;
        if greeting.capabilities & required != required {
            return Err(LoginError::Unsupported(
                "server lacks protocol 4.1 with plugin authentication".into(),
            ));
        }
        let mut caps = self.params.capabilities & greeting.capabilities;
        if self.params.database.is_some() {
            caps |= cap::CONNECT_WITH_DB & greeting.capabilities;
        } else {
            caps &= !cap::CONNECT_WITH_DB;
        }
        // Our own LONG_PASSWORD bit mirrors the server's: MariaDB servers clear it to exchange
        // extended capabilities.
        caps = (caps & !cap::LONG_PASSWORD) | (greeting.capabilities & cap::LONG_PASSWORD);
        self.negotiated = caps;
        self.nonce = greeting.nonce.clone();
        self.plugin = match greeting.auth_plugin.as_slice() {
            CACHING_SHA2_PASSWORD => CACHING_SHA2_PASSWORD.to_vec(),
            _ => NATIVE_PASSWORD.to_vec(),
        };
        let auth_response = self.scramble()?;
        let resp = HandshakeResponse {
            capabilities: caps,
            max_packet_size: 1 << 30,
            collation: self.params.collation,
            mariadb_capabilities: self.params.mariadb_capabilities & greeting.mariadb_capabilities,
            username: self.params.user.clone(),
            auth_response,
            database: self.params.database.clone(),
            auth_plugin: Some(self.plugin.clone()),
            attributes: self.params.attributes.clone(),
        };
        let mut out = Vec::with_capacity(128);
        resp.encode(&mut out);
        self.state = State::Authenticating;
        Ok(out)
    }

    fn scramble(&self) -> Result<Vec<u8>, LoginError> {
        let pw = &self.params.password;
        match self.plugin.as_slice() {
            NATIVE_PASSWORD => Ok(native_scramble(pw, &self.nonce)),
            CACHING_SHA2_PASSWORD => Ok(sha2_scramble(pw, &self.nonce)),
            CLEAR_PASSWORD if self.params.secure_transport => {
                let mut v = pw.clone();
                v.push(0);
                Ok(v)
            }
            other => Err(LoginError::Unsupported(format!(
                "server asks for auth plugin {:?}, which sluice does not speak{}",
                String::from_utf8_lossy(other),
                if other == CLEAR_PASSWORD {
                    " without TLS"
                } else {
                    ""
                }
            ))),
        }
    }

    /// Handles one server packet after the handshake response.
    pub fn on_packet(&mut self, payload: &[u8]) -> Result<LoginStep, LoginError> {
        let first = *payload
            .first()
            .ok_or(CodecError::truncated("login response"))?;
        if first == ERR {
            let e = ErrPacket::decode(payload)?;
            self.state = State::Done;
            return Err(LoginError::Server {
                code: e.code,
                sql_state: e.sql_state,
                message: String::from_utf8_lossy(e.message).into_owned(),
            });
        }
        match (self.state, first) {
            (State::Authenticating | State::AwaitOk, OK) => {
                let ok = OkPacket::decode(payload, self.negotiated)?;
                self.state = State::Done;
                Ok(LoginStep::Done { status: ok.status })
            }
            (State::Authenticating, AUTH_SWITCH) => {
                let sw = AuthSwitch::decode(payload)?;
                self.plugin = sw.plugin;
                if !sw.data.is_empty() {
                    self.nonce = sw.data;
                }
                Ok(LoginStep::Send(self.scramble()?))
            }
            (State::Authenticating, AUTH_MORE_DATA) if self.plugin == CACHING_SHA2_PASSWORD => {
                match payload.get(1) {
                    Some(&SHA2_FAST_AUTH_OK) => {
                        self.state = State::AwaitOk;
                        // Nothing to send: the OK follows.
                        Ok(LoginStep::Send(Vec::new()))
                    }
                    Some(&SHA2_PERFORM_FULL_AUTH) if self.params.secure_transport => {
                        let mut v = self.params.password.clone();
                        v.push(0);
                        Ok(LoginStep::Send(v))
                    }
                    Some(&SHA2_PERFORM_FULL_AUTH) => Err(LoginError::Unsupported(
                        "caching_sha2_password full authentication needs TLS to the backend \
                         (the server has no cached credential for this user yet)"
                            .into(),
                    )),
                    _ => Err(LoginError::Protocol(CodecError::invalid(
                        "caching_sha2 auth data",
                    ))),
                }
            }
            _ => Err(LoginError::Protocol(CodecError::invalid("login response"))),
        }
    }

    /// The plugin the exchange is using (after any switch).
    pub fn plugin(&self) -> &[u8] {
        &self.plugin
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::auth::sha2_verify;

    fn greeting(plugin: &[u8]) -> Handshake {
        Handshake {
            server_version: b"8.0.36".to_vec(),
            connection_id: 9,
            nonce: b"abcdefghijklmnopqrst".to_vec(),
            capabilities: 0xffff_f7ff,
            collation: 255,
            status: 2,
            mariadb_capabilities: 0,
            auth_plugin: plugin.to_vec(),
        }
    }

    fn params(secure: bool) -> LoginParams {
        LoginParams {
            user: b"app".to_vec(),
            password: b"pw".to_vec(),
            collation: 45,
            capabilities: BASE_CAPABILITIES,
            secure_transport: secure,
            ..LoginParams::default()
        }
    }

    #[test]
    fn mysql8_caching_sha2_fast_path() {
        let mut l = Login::new(params(false));
        let g = greeting(CACHING_SHA2_PASSWORD);
        let resp = HandshakeResponse::decode(&l.respond(&g).unwrap()).unwrap();
        assert_eq!(resp.auth_plugin.as_deref(), Some(CACHING_SHA2_PASSWORD));
        assert!(sha2_verify(
            &crate::codec::auth::sha2_stage2(b"pw"),
            &g.nonce,
            &resp.auth_response
        ));
        assert_eq!(
            l.on_packet(&[AUTH_MORE_DATA, SHA2_FAST_AUTH_OK]).unwrap(),
            LoginStep::Send(vec![])
        );
        assert_eq!(
            l.on_packet(&[0, 0, 0, 2, 0, 0, 0]).unwrap(),
            LoginStep::Done { status: 2 }
        );
        assert!(l.is_done());
    }

    #[test]
    fn mysql8_full_auth_needs_tls() {
        let mut l = Login::new(params(false));
        l.respond(&greeting(CACHING_SHA2_PASSWORD)).unwrap();
        let e = l
            .on_packet(&[AUTH_MORE_DATA, SHA2_PERFORM_FULL_AUTH])
            .unwrap_err();
        assert!(e.to_string().contains("needs TLS"), "{e}");
        let mut l = Login::new(params(true));
        l.respond(&greeting(CACHING_SHA2_PASSWORD)).unwrap();
        assert_eq!(
            l.on_packet(&[AUTH_MORE_DATA, SHA2_PERFORM_FULL_AUTH])
                .unwrap(),
            LoginStep::Send(b"pw\0".to_vec())
        );
    }

    #[test]
    fn switch_from_sha2_to_native_uses_the_new_nonce() {
        let mut l = Login::new(params(false));
        l.respond(&greeting(CACHING_SHA2_PASSWORD)).unwrap();
        let mut sw = Vec::new();
        AuthSwitch {
            plugin: NATIVE_PASSWORD.to_vec(),
            data: b"01234567890123456789".to_vec(),
        }
        .encode(&mut sw);
        let LoginStep::Send(scr) = l.on_packet(&sw).unwrap() else {
            panic!()
        };
        assert!(crate::codec::auth::native_verify(
            &crate::codec::auth::native_stage2(b"pw"),
            b"01234567890123456789",
            &scr
        ));
    }

    #[test]
    fn server_errors_and_unknown_plugins_are_reported() {
        let mut l = Login::new(params(false));
        l.respond(&greeting(NATIVE_PASSWORD)).unwrap();
        let mut err = Vec::new();
        ErrPacket {
            code: 1045,
            sql_state: *b"28000",
            message: b"Access denied",
        }
        .encode(&mut err);
        assert!(matches!(
            l.on_packet(&err),
            Err(LoginError::Server { code: 1045, .. })
        ));
        let mut l = Login::new(params(false));
        l.respond(&greeting(NATIVE_PASSWORD)).unwrap();
        let mut sw = Vec::new();
        AuthSwitch {
            plugin: b"dialog".to_vec(),
            data: vec![],
        }
        .encode(&mut sw);
        assert!(matches!(l.on_packet(&sw), Err(LoginError::Unsupported(_))));
        assert!(l.on_packet(&[]).is_err());
    }
}
