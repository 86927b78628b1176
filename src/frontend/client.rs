//! I/O on a client socket while its session is active: plain non-blocking `recv`/`send` on the
//! raw fd, readiness from the shard's poller (never glommio's ring), and buffers borrowed from
//! the shard's pool for exactly as long as the session is active.

use crate::buf::ReadBuf;
use crate::codec::frame::{encode_packet, scan_packet, take_packet, Scan};
use crate::error::{Error, Result};
use crate::net;
use crate::shard::poller::{READABLE, WRITABLE};
use crate::shard::table::{ActiveCtl, Token};
use crate::shard::Shard;
use crate::tls::TlsRead;
use bytes::{Bytes, BytesMut};
use std::future::poll_fn;
use std::io;
use std::io::Write as _;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

pub struct ClientIo {
    pub fd: RawFd,
    pub token: Token,
    pub ctl: Rc<ActiveCtl>,
    pub rbuf: ReadBuf,
    pub wbuf: Vec<u8>,
    /// The TLS state, when the client upgraded (moved in from and back to its session).
    pub tls: Option<Box<rustls::ServerConnection>>,
    shard: Rc<Shard>,
}

/// What reading the next command found.
pub enum Next {
    /// A whole packet: its sequence id and payload.
    Packet(u8, Bytes),
    /// No bytes at all are waiting: the session can park.
    Idle,
    /// The client closed the connection cleanly between commands.
    Closed,
}

impl ClientIo {
    pub fn new(shard: Rc<Shard>, fd: RawFd, token: Token, ctl: Rc<ActiveCtl>) -> ClientIo {
        ClientIo {
            fd,
            token,
            ctl,
            rbuf: shard.bufs.read_buf(),
            wbuf: shard.bufs.write_buf(),
            tls: None,
            shard,
        }
    }

    pub fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// Waits (up to `timeout`) until the socket is ready for `interest` (or has an error), in
    /// the shard's ring, or until the session is interrupted (KILL CONNECTION, shutdown).
    pub async fn wait(
        &self,
        interest: u32,
        timeout: Option<Duration>,
        what: &'static str,
    ) -> Result<()> {
        let ready = self.ready_or_interrupted(interest);
        match timeout {
            None => ready.await,
            Some(t) => glommio::timer::timeout(t, async {
                ready.await;
                Ok(())
            })
            .await
            .map_err(|_| Error::ClientTimeout { what })?,
        }
        self.ctl.check()
    }

    /// Keeps the session hot between commands: waits up to `grace` for the client's next bytes
    /// in the shard's ring. `true`: they came (or the session was interrupted, which the caller
    /// checks); `false`: the client stayed quiet, and the session should park.
    pub async fn linger(&self, grace: Duration) -> bool {
        glommio::timer::timeout(grace, async {
            self.ready_or_interrupted(READABLE).await;
            Ok(())
        })
        .await
        .is_ok()
    }

    fn ready_or_interrupted(&self, interest: u32) -> impl std::future::Future<Output = ()> {
        let fd = self.fd;
        let ctl = self.ctl.clone();
        futures_lite::future::or(
            async move {
                // An error (the socket broke) shows in the read or write that follows.
                let _ = if interest & WRITABLE != 0 {
                    glommio::net::writable(fd).await
                } else {
                    glommio::net::readable(fd).await
                };
            },
            poll_fn(move |cx| {
                if ctl.interrupted() {
                    return Poll::Ready(());
                }
                ctl.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }),
        )
    }

    /// Non-blocking read of whatever is available. `Ok(None)`: nothing now; `Ok(Some(0))`: EOF.
    pub fn try_fill(&mut self) -> Result<Option<usize>> {
        let spare = self.rbuf.spare(4096);
        let got = match self.tls.as_deref_mut() {
            None => net::recv(self.fd, spare),
            Some(conn) => match crate::tls::read(conn, self.fd, spare) {
                Ok(TlsRead::Data(n)) => Ok(n),
                Ok(TlsRead::Eof) => Ok(0),
                Ok(TlsRead::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
                Err(e) => Err(e),
            },
        };
        match got {
            Ok(n) => {
                self.rbuf.commit(n);
                let s = &self.shard.stats.client_bytes_in;
                s.set(s.get() + n as u64);
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(Error::ClientGone(e)),
        }
    }

    /// Reads at least one more byte, waiting up to `timeout`. EOF is an error here (the client
    /// left in the middle of something).
    pub async fn fill(&mut self, timeout: Option<Duration>, what: &'static str) -> Result<()> {
        loop {
            match self.try_fill()? {
                Some(0) => {
                    return Err(Error::ClientGone(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed the connection",
                    )))
                }
                Some(_) => return Ok(()),
                None => self.wait(READABLE, timeout, what).await?,
            }
        }
    }

    /// The next whole packet, reading without waiting when nothing has arrived yet.
    /// `max` bounds the payload: larger packets are refused from their headers.
    pub async fn next_packet(&mut self, max: usize, timeout: Option<Duration>) -> Result<Next> {
        loop {
            match scan_packet(self.rbuf.data(), max) {
                Err(e) if e.kind == crate::codec::CodecErrorKind::TooLarge => {
                    return Err(Error::PacketTooLarge { limit: max })
                }
                Err(e) => return Err(Error::ClientProtocol(e)),
                Ok(Scan::Complete(span)) => {
                    let data = &self.rbuf.data()[..span.wire_len];
                    let payload = if span.frames == 1 {
                        // One copy, one allocation (the read buffer goes back to the shard's
                        // pool when the session parks, so the payload cannot borrow it).
                        Bytes::copy_from_slice(&data[crate::codec::frame::HEADER_LEN..])
                    } else {
                        take_packet(&mut BytesMut::from(data), span)
                    };
                    self.rbuf.consume(span.wire_len);
                    return Ok(Next::Packet(span.last_seq, payload));
                }
                Ok(Scan::Incomplete { .. }) => {}
            }
            let had = self.rbuf.len();
            match self.try_fill()? {
                Some(0) if had == 0 => return Ok(Next::Closed),
                Some(0) => {
                    return Err(Error::ClientGone(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed the connection in the middle of a packet",
                    )))
                }
                Some(_) => {}
                None if had == 0 => return Ok(Next::Idle),
                None => {
                    self.wait(READABLE, timeout, "reading communication packets")
                        .await?
                }
            }
        }
    }

    /// Like [`next_packet`](Self::next_packet) but waits for the packet (handshake phase).
    pub async fn read_packet(
        &mut self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<(u8, Bytes)> {
        loop {
            match self.next_packet(max, timeout).await? {
                Next::Packet(seq, p) => return Ok((seq, p)),
                Next::Closed => {
                    return Err(Error::ClientGone(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed the connection",
                    )))
                }
                Next::Idle => {
                    self.wait(READABLE, timeout, "reading communication packets")
                        .await?
                }
            }
        }
    }

    /// Queues a packet (split into frames as needed); returns the next sequence id.
    pub fn queue(&mut self, seq: u8, payload: &[u8]) -> u8 {
        encode_packet(&mut self.wbuf, seq, payload)
    }

    /// Writes everything queued, waiting for the socket to drain up to `timeout` per stall.
    pub async fn flush(&mut self, timeout: Option<Duration>) -> Result<()> {
        if self.tls.is_some() {
            return self.flush_tls(timeout).await;
        }
        let mut off = 0;
        while off < self.wbuf.len() {
            match net::send(self.fd, &self.wbuf[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wait(WRITABLE, timeout, "writing communication packets")
                        .await?
                }
                Err(e) => {
                    self.wbuf.clear();
                    return Err(Error::ClientGone(e));
                }
            }
        }
        let s = &self.shard.stats.client_bytes_out;
        s.set(s.get() + self.wbuf.len() as u64);
        self.wbuf.clear();
        Ok(())
    }
}

impl ClientIo {
    /// Upgrades the connection to TLS (after an SSLRequest). Bytes already read past the
    /// SSLRequest are the start of the TLS handshake and go to rustls first.
    pub fn start_tls(&mut self, config: std::sync::Arc<rustls::ServerConfig>) -> Result<()> {
        let mut conn = rustls::ServerConnection::new(config)
            .map_err(|e| Error::ClientGone(io::Error::other(e)))?;
        while !self.rbuf.is_empty() {
            let n = conn
                .read_tls(&mut self.rbuf.data())
                .map_err(Error::ClientGone)?;
            self.rbuf.consume(n);
            conn.process_new_packets()
                .map_err(|e| Error::ClientGone(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        }
        self.tls = Some(Box::new(conn));
        Ok(())
    }

    /// Encrypts everything queued and sends it, waiting for the socket as needed.
    async fn flush_tls(&mut self, timeout: Option<Duration>) -> Result<()> {
        let mut conn = self.tls.take().expect("checked by the caller");
        let mut off = 0;
        let r = loop {
            if off < self.wbuf.len() {
                match conn.writer().write(&self.wbuf[off..]) {
                    Ok(n) => off += n,
                    Err(e) => break Err(Error::ClientGone(e)),
                }
            }
            match crate::tls::write_pending(&mut conn, self.fd) {
                Ok(true) if off >= self.wbuf.len() => break Ok(()),
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = self
                        .wait(WRITABLE, timeout, "writing communication packets")
                        .await
                    {
                        break Err(e);
                    }
                }
                Err(e) => break Err(Error::ClientGone(e)),
            }
        };
        self.tls = Some(conn);
        let s = &self.shard.stats.client_bytes_out;
        s.set(s.get() + self.wbuf.len() as u64);
        self.wbuf.clear();
        r
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

impl Drop for ClientIo {
    fn drop(&mut self) {
        let r = std::mem::take(&mut self.rbuf);
        let w = std::mem::take(&mut self.wbuf);
        if r.capacity() > 0 {
            self.shard.bufs.give_read(r);
        }
        if w.capacity() > 0 {
            self.shard.bufs.give_write(w);
        }
    }
}
