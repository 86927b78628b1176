//! The floor relay (`sluice-floor`) against small echo servers of its own: bytes arrive intact
//! and in order through partial writes and backpressure (tiny buffers, a client that stops
//! reading), over TCP and Unix upstreams; end of stream is passed on as a half-close; an
//! unreachable upstream closes the client; every pair is closed in the end (the relay's
//! descriptors go back to their count at start). No MariaDB needed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

struct Floor {
    child: Child,
    stderr: BufReader<ChildStderr>,
    port: u16,
}

impl Floor {
    /// SIGTERM; returns what the relay printed (its counters).
    fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut err = String::new();
        self.stderr.read_to_string(&mut err).unwrap();
        let _ = self.child.wait();
        err
    }
}

/// The number before `what` in the relay's closing line.
fn counter(stderr: &str, what: &str) -> u64 {
    let at = stderr
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {stderr}"));
    stderr[..at]
        .trim_end()
        .rsplit([' ', ':'])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn floor(upstream: &str, buffer: usize) -> Floor {
    floor_with(upstream, buffer, &[])
}

fn floor_with(upstream: &str, buffer: usize, extra: &[&str]) -> Floor {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice-floor"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            upstream,
        ])
        .args([
            "--threads",
            "2",
            "--no-pin",
            "--buffer",
            &buffer.to_string(),
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice-floor");
    // The banner comes once every thread's listener is bound (EOF if it failed to start).
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut banner = String::new();
    stderr.read_line(&mut banner).unwrap();
    assert!(
        banner.contains("listening on"),
        "sluice-floor did not start: {banner}"
    );
    Floor {
        child,
        stderr,
        port,
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Waits (bounded) until the relay holds no more descriptors than `want`.
fn settles_to(f: &Floor, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = open_fds(f.child.id());
        if n <= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sluice-floor still holds {n} descriptors, {want} at start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Echoes every connection (one thread each) and half-closes after the client's EOF.
fn echo<S: Read + Write + Send + 'static>(mut s: S, shutdown: impl FnOnce(&S) + Send + 'static) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 3000];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        shutdown(&s);
    });
}

fn tcp_echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            echo(s, |s| {
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    port
}

fn unix_echo_server(name: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "sluice-floor-test-{name}-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            echo(s, |s| {
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    path.display().to_string()
}

/// Sends `len` patterned bytes through the relay while reading them back, the reader pausing
/// first so that every buffer on the way fills up; then half-closes and expects the echo's EOF.
fn round_trip(port: u16, len: usize) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::with_capacity(len);
    c.read_to_end(&mut got)
        .expect("read until the relay passes the echo's EOF on");
    writer.join().unwrap();
    assert_eq!(got.len(), data.len(), "bytes echoed");
    assert!(got == data, "bytes differ");
}

#[test]
fn relays_through_backpressure_over_tcp() {
    let up = tcp_echo_server();
    let f = floor(&format!("127.0.0.1:{up}"), 1024);
    let base = open_fds(f.child.id());
    round_trip(f.port, 64 << 20);
    // Several at once, over both threads.
    let t: Vec<_> = (0..16)
        .map(|_| {
            let port = f.port;
            std::thread::spawn(move || round_trip(port, 256 << 10))
        })
        .collect();
    for t in t {
        t.join().unwrap();
    }
    settles_to(&f, base);
    let out = f.stop();
    assert_eq!(counter(&out, "connections accepted"), 17, "{out}");
    assert_eq!(counter(&out, "closed"), 17, "{out}");
    assert!(
        counter(&out, "sends waited") > 0,
        "no partial write happened: {out}"
    );
}

#[test]
fn relays_to_a_unix_socket() {
    let path = unix_echo_server("epoll");
    let f = floor(&format!("unix:{path}"), 4096);
    let base = open_fds(f.child.id());
    round_trip(f.port, 64 << 20);
    settles_to(&f, base);
    let _ = std::fs::remove_file(&path);
    let out = f.stop();
    assert!(
        counter(&out, "sends waited") > 0,
        "no partial write happened: {out}"
    );
}

#[test]
fn server_speaks_first_and_closes() {
    server_speaks_first(&[]);
}

#[test]
fn glommio_variant_relays_the_same() {
    // TCP with backpressure and half-close, a Unix upstream, and the server closing first.
    let up = tcp_echo_server();
    let f = floor_with(&format!("127.0.0.1:{up}"), 1024, &["--glommio"]);
    let base = open_fds(f.child.id());
    round_trip(f.port, 16 << 20);
    let t: Vec<_> = (0..8)
        .map(|_| {
            let port = f.port;
            std::thread::spawn(move || round_trip(port, 256 << 10))
        })
        .collect();
    for t in t {
        t.join().unwrap();
    }
    settles_to(&f, base);
    let out = f.stop();
    assert_eq!(counter(&out, "closed"), 9, "{out}");

    let path = unix_echo_server("glommio");
    let f = floor_with(&format!("unix:{path}"), 4096, &["--glommio"]);
    round_trip(f.port, 4 << 20);
    drop(f);
    let _ = std::fs::remove_file(&path);

    server_speaks_first(&["--glommio"]);
}

fn server_speaks_first(extra: &[&str]) {
    // Like a MySQL server: a greeting before the client says anything, then an answer and a
    // close from the server's side.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut b = [0u8; 4];
                let _ = s
                    .write_all(b"hello")
                    .and_then(|_| s.read_exact(&mut b))
                    .and_then(|_| s.write_all(&b));
                // Dropped: the server closes first.
            });
        }
    });
    let f = floor_with(&format!("127.0.0.1:{up}"), 16384, extra);
    let base = open_fds(f.child.id());
    for _ in 0..20 {
        let mut c = TcpStream::connect(("127.0.0.1", f.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut g = [0u8; 5];
        c.read_exact(&mut g).unwrap();
        assert_eq!(&g, b"hello");
        c.write_all(b"ping").unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"ping", "the answer, then the server's EOF passed on");
        // The client closes its side when it sees EOF, as MySQL clients do.
    }
    settles_to(&f, base);
    let out = f.stop();
    assert_eq!(counter(&out, "closed"), 20, "{out}");
}

#[test]
fn unreachable_upstream_closes_the_client() {
    let up = free_port(); // nothing listens there
    let f = floor(&format!("127.0.0.1:{up}"), 16384);
    let base = open_fds(f.child.id());
    let mut c = TcpStream::connect(("127.0.0.1", f.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 1];
    match c.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the relay to close the client, got {other:?}"),
    }
    settles_to(&f, base);
    let out = f.stop();
    assert_eq!(counter(&out, "upstream connects failed"), 1, "{out}");
}
