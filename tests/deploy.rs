//! Running under systemd (`Type=notify`) without systemd: each test makes the notification socket
//! itself, starts sluice with `NOTIFY_SOCKET` naming it, and reads what sluice says, in order,
//! with the sender's pid (SCM_CREDENTIALS: systemd's default `NotifyAccess=main` only listens to
//! the main process, so no other process may speak).

mod common;

use common::{free_port, mariadb_cli, Config, Sluice};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// How long any one notification may take to come.
const LIMIT: Duration = Duration::from_secs(20);

/// The test's end of `NOTIFY_SOCKET`.
struct NotifySocket {
    sock: UnixDatagram,
    /// What `NOTIFY_SOCKET` says.
    value: String,
    /// Every datagram read so far: (text, sender pid).
    seen: Vec<(String, u32)>,
}

impl NotifySocket {
    /// A socket at a path in `dir`.
    fn at_path(dir: &std::path::Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind the notification socket");
        NotifySocket::ready(sock, path.display().to_string())
    }

    /// An abstract socket (`@name`), as systemd in a container may use.
    fn abstract_named() -> NotifySocket {
        let name = format!("sluice-test-notify/{}/{}", std::process::id(), free_port());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract notification socket");
        NotifySocket::ready(sock, format!("@{name}"))
    }

    fn ready(sock: UnixDatagram, value: String) -> NotifySocket {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on our own socket with an int option.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_PASSCRED: {}", std::io::Error::last_os_error());
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            sock,
            value,
            seen: Vec::new(),
        }
    }

    /// One datagram and its sender's pid, or None after the read timeout.
    fn recv(&self) -> Option<(String, u32)> {
        let mut buf = [0u8; 4096];
        // Room for one SCM_CREDENTIALS message (CMSG_SPACE of a ucred is 32 bytes), aligned.
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; every pointer set below outlives the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: recvmsg into the buffers above.
        let n = unsafe { libc::recvmsg(self.sock.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "recvmsg on the notification socket: {e}"
            );
            return None;
        }
        let mut pid = 0;
        // SAFETY: walking the control messages recvmsg filled in, within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                    let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    pid = cred.pid as u32;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Some((
            String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
            pid,
        ))
    }

    /// Reads datagrams until one has the line `want` (e.g. `READY=1`); returns it and its
    /// sender. A state change other than `want` coming first (READY, RELOADING, STOPPING out of
    /// order) fails the test; plain `STATUS=` updates in between are fine.
    fn expect(&mut self, want: &str, s: &Sluice) -> (String, u32) {
        let deadline = Instant::now() + LIMIT;
        loop {
            assert!(
                Instant::now() < deadline,
                "no {want} within {LIMIT:?}; seen so far: {:?}\n{}",
                self.seen,
                s.log_text()
            );
            let Some((text, pid)) = self.recv() else {
                continue;
            };
            self.seen.push((text.clone(), pid));
            let states: Vec<&str> = text
                .lines()
                .filter(|l| ["READY=1", "RELOADING=1", "STOPPING=1"].contains(l))
                .collect();
            if states.contains(&want) {
                return (text, pid);
            }
            assert!(
                states.is_empty(),
                "expected {want}, got {text:?} first; seen: {:?}",
                self.seen
            );
        }
    }
}

fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn console_config(workers: usize, console: u16) -> Config {
    Config::default()
        .top(&format!("workers = {workers}\nshards = 1"))
        .tables(&format!(
            "[admin]\nlisten = \"127.0.0.1:{console}\"\n[[admin.users]]\nname = \"admin\"\npassword = \"secret\"\n"
        ))
}

fn query_works(s: &Sluice) {
    let mut c = s.conn();
    let one: Option<u32> = mysql::prelude::Queryable::query_first(&mut c, "SELECT 1").unwrap();
    assert_eq!(one, Some(1));
}

fn signal(s: &Sluice, sig: i32) {
    // SAFETY: kill(2) on the sluice process this test started.
    assert_eq!(unsafe { libc::kill(s.pid() as i32, sig) }, 0);
}

#[test]
fn one_process_says_ready_reloading_ready_stopping_in_order() {
    let dir = tempdir("notify");
    let mut n = NotifySocket::at_path(&dir);
    let console = free_port();
    let mut s = Sluice::with_env(console_config(1, console), &[("NOTIFY_SOCKET", &n.value)]);
    let pid = s.pid();

    let (ready, from) = n.expect("READY=1", &s);
    assert_eq!(from, pid, "READY=1 from another process: {ready:?}");
    assert_eq!(value(&ready, "MAINPID"), Some(pid.to_string().as_str()));
    let status = value(&ready, "STATUS").unwrap_or_default();
    assert!(status.contains("clients, backends"), "{ready:?}");
    query_works(&s);

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 with the reload's report.
    signal(&s, libc::SIGHUP);
    let (reloading, from) = n.expect("RELOADING=1", &s);
    assert_eq!(from, pid);
    let usec: u64 = value(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(usec > 0);
    let (ready, _) = n.expect("READY=1", &s);
    assert!(
        value(&ready, "STATUS").is_some_and(|v| v.starts_with("reload: OK")),
        "{ready:?}"
    );

    // The console's RELOAD says the same.
    let (ok, _, err) = mariadb_cli(console, &["-uadmin", "-psecret"], "RELOAD");
    assert!(ok, "console RELOAD: {err}");
    n.expect("RELOADING=1", &s);
    n.expect("READY=1", &s);
    query_works(&s);

    // SIGTERM: STOPPING=1 as the drain starts, then the process exits.
    signal(&s, libc::SIGTERM);
    let (stopping, from) = n.expect("STOPPING=1", &s);
    assert_eq!(from, pid);
    assert!(value(&stopping, "STATUS").is_some(), "{stopping:?}");
    let st = s.wait_exit(Duration::from_secs(20));
    assert!(st.success(), "sluice exited with {st}");
    assert!(n.seen.iter().all(|(_, p)| *p == pid), "{:?}", n.seen);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn with_workers_only_the_supervisor_notifies() {
    let mut n = NotifySocket::abstract_named();
    let console = free_port();
    let mut s = Sluice::with_env(console_config(2, console), &[("NOTIFY_SOCKET", &n.value)]);
    let pid = s.pid();

    // READY=1 from the supervisor (systemd's main pid), once both workers are up.
    let (ready, from) = n.expect("READY=1", &s);
    assert_eq!(from, pid, "READY=1 from a worker: {ready:?}");
    assert_eq!(value(&ready, "MAINPID"), Some(pid.to_string().as_str()));
    assert!(
        value(&ready, "STATUS").is_some_and(|v| v.starts_with("workers 2/2 up")),
        "{ready:?}"
    );
    query_works(&s);

    signal(&s, libc::SIGHUP);
    n.expect("RELOADING=1", &s);
    let (ready, _) = n.expect("READY=1", &s);
    let status = value(&ready, "STATUS").unwrap_or_default();
    assert!(
        status.contains("worker 0: OK") && status.contains("worker 1: OK"),
        "{ready:?}"
    );

    signal(&s, libc::SIGTERM);
    n.expect("STOPPING=1", &s);
    let st = s.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "sluice exited with {st}");
    // Nothing from the workers, before or after.
    while let Some(d) = n.recv() {
        n.seen.push(d);
    }
    assert!(n.seen.iter().all(|(_, p)| *p == pid), "{:?}", n.seen);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "sluice-test-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
