//! Client authentication at sluice: the credentials users are configured with (password hashes,
//! not passwords) and the checks of what clients send.
//!
//! Two hash forms, both double hashes a client's scramble can be checked against without knowing
//! the password:
//! - `*` + 40 hex digits: `SHA1(SHA1(password))`, MySQL's `PASSWORD()` / `mysql.user` format, for
//!   `mysql_native_password`;
//! - `sha2:` + 64 hex digits: `SHA256(SHA256(password))`, for the `caching_sha2_password` fast path.
//!
//! A plaintext password (development) yields both.

pub mod crypt;

use crate::codec::auth::{
    constant_time_eq, native_stage2, native_verify, sha2_stage2, sha2_verify,
    CACHING_SHA2_PASSWORD, NATIVE_PASSWORD,
};

/// The two password plugins sluice authenticates clients with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    Native,
    CachingSha2,
}

impl Plugin {
    pub fn name(self) -> &'static [u8] {
        match self {
            Plugin::Native => NATIVE_PASSWORD,
            Plugin::CachingSha2 => CACHING_SHA2_PASSWORD,
        }
    }

    pub fn from_name(name: &[u8]) -> Option<Plugin> {
        match name {
            NATIVE_PASSWORD => Some(Plugin::Native),
            CACHING_SHA2_PASSWORD => Some(Plugin::CachingSha2),
            _ => None,
        }
    }
}

/// What sluice knows about a user's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The plugin clients are switched to.
    pub plugin: Plugin,
    pub native: Option<[u8; 20]>,
    pub sha2: Option<[u8; 32]>,
    /// A MySQL-style `$A$005$…` hash: checks a password sent in full (over TLS), not a scramble.
    pub crypt: Option<crypt::Sha2Crypt>,
    /// Configured in plaintext (a warning is logged at start).
    pub plaintext: bool,
    /// The password is empty: clients send an empty response, and only that is accepted.
    pub empty: bool,
}

pub fn looks_like_hash(s: &str) -> bool {
    s.starts_with('*') || s.starts_with("sha2:") || s.starts_with("$A$")
}

fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

pub fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

impl Credential {
    /// Parses a configured password (hash or plaintext) and the optional plugin choice.
    pub fn parse(password: &str, plugin: Option<&str>) -> Result<Credential, String> {
        let mut c = if password.starts_with("$A$") {
            let crypt = crypt::Sha2Crypt::parse(password).ok_or(
                "a \"$A$\" hash must be MySQL's caching_sha2_password form: $A$005$, a 20-byte salt, 43 characters",
            )?;
            Credential {
                plugin: Plugin::CachingSha2,
                native: None,
                sha2: None,
                crypt: Some(crypt),
                plaintext: false,
                empty: false,
            }
        } else if let Some(h) = password.strip_prefix('*') {
            let native = parse_hex::<20>(h)
                .ok_or("a \"*\" hash must be followed by 40 hex digits (SHA1(SHA1(password)))")?;
            Credential {
                plugin: Plugin::Native,
                native: Some(native),
                sha2: None,
                crypt: None,
                plaintext: false,
                empty: false,
            }
        } else if let Some(h) = password.strip_prefix("sha2:") {
            let sha2 = parse_hex::<32>(h).ok_or(
                "a \"sha2:\" hash must be followed by 64 hex digits (SHA256(SHA256(password)))",
            )?;
            Credential {
                plugin: Plugin::CachingSha2,
                native: None,
                sha2: Some(sha2),
                crypt: None,
                plaintext: false,
                empty: false,
            }
        } else {
            let p = password.as_bytes();
            Credential {
                plugin: Plugin::Native,
                native: Some(native_stage2(p)),
                sha2: Some(sha2_stage2(p)),
                crypt: None,
                plaintext: true,
                empty: p.is_empty(),
            }
        };
        match plugin {
            None => {}
            Some("mysql_native_password") => {
                if c.native.is_none() {
                    return Err("auth_plugin mysql_native_password needs a \"*\" hash or a plaintext password".into());
                }
                c.plugin = Plugin::Native;
            }
            Some("caching_sha2_password") => {
                if c.sha2.is_none() && c.crypt.is_none() {
                    return Err("auth_plugin caching_sha2_password needs a \"sha2:\" hash or a plaintext password".into());
                }
                c.plugin = Plugin::CachingSha2;
            }
            Some(other) => {
                return Err(format!(
                    "auth_plugin {other:?} is not supported (mysql_native_password or caching_sha2_password)"
                ))
            }
        }
        Ok(c)
    }

    /// Checks a client's scramble, computed with `plugin` over `nonce`.
    pub fn verify(&self, plugin: Plugin, nonce: &[u8], response: &[u8]) -> bool {
        if self.empty || response.is_empty() {
            return self.empty && response.is_empty();
        }
        match plugin {
            Plugin::Native => self
                .native
                .is_some_and(|s| native_verify(&s, nonce, response)),
            Plugin::CachingSha2 => self.sha2.is_some_and(|s| sha2_verify(&s, nonce, response)),
        }
    }
}

/// The lines `sluice hash-password` prints for `password`.
pub fn hash_lines(password: &[u8]) -> String {
    format!(
        "mysql_native_password: *{}\ncaching_sha2_password: sha2:{}\ncaching_sha2_password (full authentication over TLS first): {}\n",
        hex_upper(&native_stage2(password)),
        hex_upper(&sha2_stage2(password)).to_lowercase(),
        crypt::Sha2Crypt::generate(password)
    )
}

impl Credential {
    /// Checks a password sent in full (caching_sha2_password's full authentication, over TLS).
    pub fn verify_clear(&self, password: &[u8]) -> bool {
        if self.empty || password.is_empty() {
            return self.empty && password.is_empty();
        }
        if let Some(c) = &self.crypt {
            return c.verify(password);
        }
        if let Some(s) = &self.sha2 {
            return constant_time_eq(&sha2_stage2(password), s);
        }
        self.native
            .is_some_and(|n| constant_time_eq(&native_stage2(password), &n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::auth::{native_scramble, sha2_scramble};

    #[test]
    fn hashes_from_hash_password_parse_back_and_verify() {
        let lines = hash_lines(b"s3cret");
        let native = lines.lines().next().unwrap().split(' ').nth(1).unwrap();
        let sha2 = lines.lines().nth(1).unwrap().split(' ').nth(1).unwrap();
        let nonce = [7u8; 20];
        let n = Credential::parse(native, None).unwrap();
        assert_eq!(n.plugin, Plugin::Native);
        assert!(n.verify(Plugin::Native, &nonce, &native_scramble(b"s3cret", &nonce)));
        assert!(!n.verify(Plugin::Native, &nonce, &native_scramble(b"wrong", &nonce)));
        assert!(!n.verify(
            Plugin::CachingSha2,
            &nonce,
            &sha2_scramble(b"s3cret", &nonce)
        ));
        let s = Credential::parse(sha2, None).unwrap();
        assert_eq!(s.plugin, Plugin::CachingSha2);
        assert!(s.verify(
            Plugin::CachingSha2,
            &nonce,
            &sha2_scramble(b"s3cret", &nonce)
        ));
        assert!(!s.plaintext);
    }

    #[test]
    fn plaintext_allows_both_plugins() {
        let c = Credential::parse("app", Some("caching_sha2_password")).unwrap();
        assert!(c.plaintext);
        assert_eq!(c.plugin, Plugin::CachingSha2);
        let nonce = [1u8; 20];
        assert!(c.verify(Plugin::Native, &nonce, &native_scramble(b"app", &nonce)));
        assert!(c.verify(Plugin::CachingSha2, &nonce, &sha2_scramble(b"app", &nonce)));
    }

    #[test]
    fn bad_hashes_and_plugins_are_explained() {
        assert!(Credential::parse("*12", None)
            .unwrap_err()
            .contains("40 hex digits"));
        assert!(Credential::parse("sha2:zz", None)
            .unwrap_err()
            .contains("64 hex digits"));
        let e = Credential::parse(
            "*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3",
            Some("caching_sha2_password"),
        )
        .unwrap_err();
        assert!(e.contains("auth_plugin"), "{e}");
        assert!(Credential::parse("x", Some("dialog"))
            .unwrap_err()
            .contains("not supported"));
    }

    #[test]
    fn empty_password_accepts_only_an_empty_response() {
        let c = Credential::parse("", None).unwrap();
        let nonce = [3u8; 20];
        assert!(c.verify(Plugin::Native, &nonce, b""));
        assert!(c.verify(Plugin::CachingSha2, &nonce, b""));
        assert!(!c.verify(Plugin::Native, &nonce, &[0; 20]));
        // And a user with a password never accepts an empty response.
        let c = Credential::parse("app", None).unwrap();
        assert!(!c.verify(Plugin::Native, &nonce, b""));
    }
}
