//! I/O on a client socket while its session is active: plain non-blocking `recv`/`send` on the
//! raw fd, readiness from the shard's poller (never glommio's ring), and buffers borrowed from
//! the shard's pool for exactly as long as the session is active.
//!
//! A command costs no allocation here: its payload is copied into a reused buffer (see
//! [`copy_payload`]), and the waits between commands reuse one readiness poll and one timer.

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
    /// Where command payloads are copied (see [`copy_payload`]); from the shard's pool.
    pkt: BytesMut,
    /// Readability of the socket, one poll reused from wait to wait.
    readable: glommio::net::Readiness,
    /// The linger's timer, reused from linger to linger.
    linger_timer: Option<glommio::timer::Timer>,
    shard: Rc<Shard>,
}

/// A command payload up to this size is copied into the session's payload buffer, which has this
/// size; a larger one gets an allocation of its own.
pub const PAYLOAD_BUF: usize = 1 << 10;

/// `payload` as `Bytes` the command can keep while the read buffer moves on (and goes back to the
/// shard's pool when the session parks: the payload cannot borrow it). It is copied into `pkt`,
/// whose buffer is reclaimed in place once the previous commands' payloads are gone (they do not
/// outlive their command), so a command allocates nothing; a buffer still shared is left to its
/// holders and a new one taken.
fn copy_payload(pkt: &mut BytesMut, payload: &[u8]) -> Bytes {
    if payload.len() > PAYLOAD_BUF {
        return Bytes::copy_from_slice(payload);
    }
    if !pkt.try_reclaim(payload.len()) {
        *pkt = BytesMut::with_capacity(PAYLOAD_BUF);
    }
    pkt.extend_from_slice(payload);
    pkt.split().freeze()
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
            pkt: shard.bufs.payload_buf(),
            readable: glommio::net::Readiness::readable(fd),
            linger_timer: None,
            shard,
        }
    }

    pub fn shard(&self) -> &Rc<Shard> {
        &self.shard
    }

    /// Waits (up to `timeout`) until the socket is ready for `interest` (or has an error), in
    /// the shard's ring, or until the session is interrupted (KILL CONNECTION, shutdown).
    pub async fn wait(
        &mut self,
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
    /// The timer is this session's own, reset for each linger and disarmed after it (a new
    /// glommio timer is an allocation).
    pub async fn linger(&mut self, grace: Duration) -> bool {
        let mut timer = match self.linger_timer.take() {
            Some(mut t) => {
                t.reset(grace);
                t
            }
            None => glommio::timer::Timer::new(grace),
        };
        // The socket first, then the timer (as `glommio::timer::timeout` polls them).
        let came = futures_lite::future::or(
            async {
                self.ready_or_interrupted(READABLE).await;
                true
            },
            async {
                (&mut timer).await;
                false
            },
        )
        .await;
        timer.disarm();
        self.linger_timer = Some(timer);
        came
    }

    fn ready_or_interrupted(
        &mut self,
        interest: u32,
    ) -> impl std::future::Future<Output = ()> + '_ {
        let fd = self.fd;
        let ctl = self.ctl.clone();
        let readable = &mut self.readable;
        futures_lite::future::or(
            async move {
                // An error (the socket broke) shows in the read or write that follows.
                let _ = if interest & WRITABLE != 0 {
                    glommio::net::writable(fd).await
                } else {
                    readable.wait().await
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
                        copy_payload(&mut self.pkt, &data[crate::codec::frame::HEADER_LEN..])
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
        self.shard.bufs.give_payload(std::mem::take(&mut self.pkt));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::os::fd::AsRawFd;

    #[test]
    fn payloads_reuse_their_buffer_once_dropped() {
        let mut pkt = BytesMut::new();
        let a = copy_payload(&mut pkt, b"\x03SELECT 1");
        let start = a.as_ptr();
        assert_eq!(&a[..], b"\x03SELECT 1");
        drop(a);
        // The next payloads fill the rest of the buffer, then it is reclaimed from its start.
        let mut n = 0;
        loop {
            let b = copy_payload(&mut pkt, &[7u8; 100]);
            assert_eq!(&b[..], &[7u8; 100][..]);
            if b.as_ptr() == start {
                break;
            }
            n += 1;
            assert!(n < 20, "the buffer was never reclaimed");
        }
        // A payload still held keeps its bytes: the next one goes to another buffer.
        let held = copy_payload(&mut pkt, &[1u8; 600]);
        let next = copy_payload(&mut pkt, &[2u8; 600]);
        assert_eq!(&held[..], &[1u8; 600][..]);
        assert_eq!(&next[..], &[2u8; 600][..]);
        // Larger than the buffer: a copy of its own.
        let big = vec![9u8; PAYLOAD_BUF + 1];
        assert_eq!(&copy_payload(&mut pkt, &big)[..], &big[..]);
        assert_eq!(&held[..], &[1u8; 600][..]);
    }

    /// Runs `f` on a small glommio executor of its own (io_uring, as a shard).
    fn on_executor<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        f: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 << 10)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    /// A connected pair of non-blocking stream sockets.
    fn pair() -> (
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Reads whatever `s` holds; the number of bytes (0 for nothing or EOF).
    fn drain(mut s: &std::os::unix::net::UnixStream) -> usize {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut n = 0;
        while let Ok(k) = s.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k;
        }
        n
    }

    /// The readiness poll a session reuses from wait to wait (`glommio::net::Readiness`):
    /// every arrival wakes its wait, whether the poll was re-armed after a completed wait or
    /// left pending by a wait given up (the linger's timer winning), and a re-armed poll does
    /// not complete for bytes already consumed.
    #[test]
    fn a_reused_readiness_poll_wakes_for_every_arrival() {
        on_executor(|| async {
            use std::io::Write;
            let (a, mut b) = pair();
            let mut r = glommio::net::Readiness::readable(a.as_raw_fd());
            let quiet = Duration::from_millis(20);
            for round in 0..50 {
                // Nothing to read: the wait is given up (its poll stays pending) ...
                let gave_up = glommio::timer::timeout(quiet, async {
                    r.wait().await.unwrap();
                    Ok(())
                })
                .await;
                assert!(gave_up.is_err(), "round {round}: woke with nothing to read");
                // ... and the next wait takes it over: a byte written by another task while
                // it waits wakes it.
                let writer = b.try_clone().unwrap();
                glommio::spawn_local(async move {
                    glommio::timer::sleep(Duration::from_millis(2)).await;
                    (&writer).write_all(b"x").unwrap();
                })
                .detach();
                glommio::timer::timeout(Duration::from_secs(5), async {
                    r.wait().await.unwrap();
                    Ok(())
                })
                .await
                .unwrap_or_else(|_| panic!("round {round}: a byte arrived and no wake-up"));
                assert_eq!(drain(&a), 1);
                // A completed poll is re-armed for the next wait: bytes already there complete
                // it at once.
                b.write_all(b"yz").unwrap();
                glommio::timer::timeout(Duration::from_secs(5), async {
                    r.wait().await.unwrap();
                    Ok(())
                })
                .await
                .unwrap_or_else(|_| panic!("round {round}: bytes waiting and no wake-up"));
                assert_eq!(drain(&a), 2);
            }
        });
    }

    /// A poll pending in the ring holds its socket open (io_uring keeps a reference to the
    /// file): closing the descriptor alone does not close the connection. Dropping the
    /// `Readiness` cancels its pending poll, and then the peer sees the close. (This is why a
    /// session's `ClientIo` is dropped before its socket.)
    #[test]
    fn a_dropped_readiness_leaves_no_poll_holding_the_socket() {
        on_executor(|| async {
            let peer_closed = |b: &std::os::unix::net::UnixStream| {
                use std::io::Read;
                match (&*b).read(&mut [0u8; 1]) {
                    Ok(0) => true,
                    Ok(_) => panic!("no bytes were written"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                    Err(e) => panic!("{e}"),
                }
            };
            let (a, b) = pair();
            let mut r = glommio::net::Readiness::readable(a.as_raw_fd());
            let gave_up = glommio::timer::timeout(Duration::from_millis(20), async {
                r.wait().await.unwrap();
                Ok(())
            })
            .await;
            assert!(gave_up.is_err());
            // The descriptor closed with the poll still pending: the connection stays open.
            drop(a);
            glommio::timer::sleep(Duration::from_millis(50)).await;
            assert!(!peer_closed(&b), "closed although a poll was pending");
            // The Readiness dropped: its poll is cancelled and the socket goes.
            drop(r);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !peer_closed(&b) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the peer never saw the close"
                );
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
        });
    }

    /// The linger's reused timer (`Timer::disarm`): a disarmed timer does not wake the task that
    /// polled it when its old deadline passes, and once reset it fires at its new deadline.
    #[test]
    fn a_disarmed_timer_stays_quiet_and_fires_again_once_reset() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use std::task::{Context, Wake, Waker};
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let (woken_disarmed, woken_armed, waited) = on_executor(|| async {
            let short = Duration::from_millis(10);
            let poll_once = |t: &mut glommio::timer::Timer, count: &Arc<Count>| {
                let waker = Waker::from(count.clone());
                let pending = std::pin::Pin::new(t)
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending();
                assert!(pending);
            };
            // Disarmed after its first poll: the old deadline passes without a wake-up.
            let disarmed = Arc::new(Count(AtomicUsize::new(0)));
            let mut t = glommio::timer::Timer::new(short);
            poll_once(&mut t, &disarmed);
            t.disarm();
            // Armed (the control): the same deadline wakes it.
            let armed = Arc::new(Count(AtomicUsize::new(0)));
            let mut control = glommio::timer::Timer::new(short);
            poll_once(&mut control, &armed);
            glommio::timer::sleep(short * 5).await;
            // Reset, the disarmed timer fires at its new deadline.
            let started = std::time::Instant::now();
            t.reset(short);
            (&mut t).await;
            (
                disarmed.0.load(Ordering::SeqCst),
                armed.0.load(Ordering::SeqCst),
                started.elapsed(),
            )
        });
        assert_eq!(woken_disarmed, 0, "a disarmed timer woke its task");
        assert_eq!(woken_armed, 1, "the armed control timer did not wake");
        assert!(waited >= Duration::from_millis(10), "{waited:?}");
    }
}
