//! TLS with rustls: the server configuration clients upgrade to (SSLRequest), the client
//! configuration for backends, and a sans-I/O layer over a raw client socket.
//!
//! Client sockets are not glommio streams (see [`crate::shard::poller`]), so TLS runs as rustls'
//! state machine fed by the same non-blocking `recv`/`send` calls: ciphertext in, plaintext out,
//! and the connection state stays with the session when it parks (a TLS client costs its rustls
//! state, a few KiB, while idle; a plain one costs none).

use crate::config::{BackendTls, TlsConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig, ServerConnection};
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::sync::Arc;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(min: &str) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    if min == "1.3" {
        &ONLY13
    } else {
        &BOTH
    }
}

/// The server side: the configured certificate and key, or a self-signed certificate made now.
/// Returns the config and whether the certificate was generated.
pub fn server_config(cfg: &TlsConfig) -> Result<(Arc<ServerConfig>, bool), String> {
    let (certs, key, generated) = match (&cfg.cert, &cfg.key) {
        (Some(c), Some(k)) => {
            let certs = CertificateDer::pem_file_iter(c)
                .map_err(|e| format!("tls.cert {c}: {e}"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls.cert {c}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("tls.cert {c}: no certificate in the file"));
            }
            let key = PrivateKeyDer::from_pem_file(k).map_err(|e| format!("tls.key {k}: {e}"))?;
            (certs, key, false)
        }
        _ => {
            let names = vec![
                "localhost".to_string(),
                "sluice".to_string(),
                "127.0.0.1".to_string(),
            ];
            let ck = rcgen::generate_simple_self_signed(names)
                .map_err(|e| format!("self-signed certificate: {e}"))?;
            let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
            (vec![ck.cert.der().clone()], key, true)
        }
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(&cfg.min_version))
        .map_err(|e| format!("tls.min_version: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls certificate/key: {e}"))?;
    Ok((Arc::new(config), generated))
}

/// Accepts any server certificate (backends with `verify = false`, development only).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client side, for a backend with TLS on: CA verification from `ca`, or none with
/// `verify = false`.
pub fn backend_config(t: &BackendTls) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions("1.2"))
        .map_err(|e| format!("backend tls: {e}"))?;
    let config = if t.verify {
        let mut roots = rustls::RootCertStore::empty();
        let ca =
            t.ca.as_deref()
                .ok_or("backends[].tls.verify needs tls.ca (a PEM file of trusted CAs)")?;
        for c in
            CertificateDer::pem_file_iter(ca).map_err(|e| format!("backend tls ca {ca}: {e}"))?
        {
            let c = c.map_err(|e| format!("backend tls ca {ca}: {e}"))?;
            roots
                .add(c)
                .map_err(|e| format!("backend tls ca {ca}: {e}"))?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `io::Read`/`io::Write` over a raw non-blocking socket.
pub struct Fd(pub RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        crate::net::recv(self.0, buf)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        crate::net::send(self.0, buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a non-blocking TLS read produced.
pub enum TlsRead {
    /// Plaintext bytes were placed in the buffer.
    Data(usize),
    /// The peer closed (close_notify or EOF).
    Eof,
    /// Nothing more now; wait for the socket to be readable.
    WouldBlock,
}

/// Reads plaintext from a TLS connection over `fd` into `out`, feeding it ciphertext from the
/// socket as needed and sending whatever the TLS state machine wants to send (handshake
/// messages, alerts).
pub fn read(conn: &mut ServerConnection, fd: RawFd, out: &mut [u8]) -> io::Result<TlsRead> {
    loop {
        match conn.reader().read(out) {
            Ok(0) => return Ok(TlsRead::Eof),
            Ok(n) => return Ok(TlsRead::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        // Pending handshake output first: the peer may be waiting for it.
        write_pending(conn, fd)?;
        match conn.read_tls(&mut Fd(fd)) {
            Ok(0) => return Ok(TlsRead::Eof),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(TlsRead::WouldBlock),
            Err(e) => return Err(e),
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the peer why (the alert is queued), then fail.
            let _ = write_pending(conn, fd);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
}

/// Sends queued TLS records; `Ok(false)` if the socket is full (wait for writability).
pub fn write_pending(conn: &mut ServerConnection, fd: RawFd) -> io::Result<bool> {
    while conn.wants_write() {
        match conn.write_tls(&mut Fd(fd)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The name a backend's certificate must carry: `tls.server_name`, else the address's host
/// (validated with the configuration).
pub fn backend_server_name(b: &crate::config::BackendConfig) -> ServerName<'static> {
    let host = b
        .tls
        .as_ref()
        .and_then(|t| t.server_name.clone())
        .unwrap_or_else(|| {
            b.address
                .rsplit_once(':')
                .map(|(h, _)| h.trim_matches(['[', ']']).to_string())
                .unwrap_or_default()
        });
    ServerName::try_from(host).expect("server name checked at validation")
}

/// TLS for a blocking connection to backend `b` (start-up probe, user loading), if it has TLS.
pub fn blocking_tls(
    b: &crate::config::BackendConfig,
) -> Result<crate::bootstrap::BlockingTls, String> {
    match &b.tls {
        None => Ok(None),
        Some(t) => Ok(Some((backend_config(t)?, backend_server_name(b)))),
    }
}
