//! systemd's readiness protocol (`sd_notify(3)`, `Type=notify`) without libsystemd: a datagram of
//! `KEY=VALUE` lines sent to the Unix socket named by `NOTIFY_SOCKET` (a path, or an abstract
//! socket written `@name`).
//!
//! What sluice says, and when:
//! - `READY=1` with `MAINPID=` once every shard listens (and the console, admin socket and metrics
//!   endpoint are up); with `workers = N`, the supervisor says it once every worker answers on its
//!   admin socket (which a worker opens only after all its shards listen);
//! - `RELOADING=1` with `MONOTONIC_USEC=` (what systemd ≥ 253 wants to tell this reload from an
//!   older one) when a reload starts (SIGHUP, the console's `RELOAD`), then `READY=1` with a
//!   `STATUS=` saying what the reload did (a reload asked for on the admin socket, `sluice ctl
//!   --pid P RELOAD`, is not announced: that socket is the workers' link, not an operator's);
//! - `STOPPING=1` when sluice starts draining for exit;
//! - `STATUS=` every [`STATUS_EVERY`]: clients, backends up (and workers up), what `systemctl
//!   status` shows.
//!
//! Only the process systemd started (the main pid) speaks: the unit keeps the default
//! `NotifyAccess=main`, so the supervisor removes `NOTIFY_SOCKET` from its workers' environment
//! and speaks for them. An upgrade that replaces the main process must hand the socket on
//! ([`socket_env`]) and have the successor send `MAINPID=` with its own pid.
//!
//! Turned down: linking libsystemd (a C dependency for one `sendmsg`), and the `sd-notify` crate
//! (it would do the same dozen lines; the message formatting stays here, pure and tested).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tracing::{debug, warn};

/// The environment variable systemd sets for `Type=notify` services.
pub const ENV: &str = "NOTIFY_SOCKET";

/// How often the `STATUS=` line is refreshed while sluice runs.
pub const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Longest `STATUS=` text sent (systemd shows one line; a reload's report can be long).
const STATUS_MAX: usize = 400;

/// One line of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Ready,
    Reloading,
    Stopping,
    /// `CLOCK_MONOTONIC` in µs, sent with `RELOADING=1`.
    MonotonicUsec(u64),
    MainPid(u32),
    Status(String),
}

/// The datagram for `fields`: one `KEY=VALUE` line each, newline-terminated. A status is made
/// one line (newlines become spaces) and cut to [`STATUS_MAX`] bytes on a character boundary.
pub fn message(fields: &[Field]) -> String {
    let mut out = String::new();
    for f in fields {
        match f {
            Field::Ready => out.push_str("READY=1\n"),
            Field::Reloading => out.push_str("RELOADING=1\n"),
            Field::Stopping => out.push_str("STOPPING=1\n"),
            Field::MonotonicUsec(us) => out.push_str(&format!("MONOTONIC_USEC={us}\n")),
            Field::MainPid(pid) => out.push_str(&format!("MAINPID={pid}\n")),
            Field::Status(s) => {
                let mut line: String = s
                    .chars()
                    .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
                    .collect();
                if line.len() > STATUS_MAX {
                    let mut cut = STATUS_MAX;
                    while !line.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    line.truncate(cut);
                }
                out.push_str("STATUS=");
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

/// The socket address `NOTIFY_SOCKET` names: `/path` or `@abstract`. Anything else (systemd
/// also knows `vsock:`, for virtual machines) is refused with the reason.
pub fn parse_address(value: &str) -> Result<SocketAddr, String> {
    if let Some(name) = value.strip_prefix('@') {
        SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| format!("{ENV}={value}: abstract socket name: {e}"))
    } else if value.starts_with('/') {
        SocketAddr::from_pathname(value).map_err(|e| format!("{ENV}={value}: {e}"))
    } else {
        Err(format!(
            "{ENV}={value}: not a socket path or an @abstract name (vsock is not supported)"
        ))
    }
}

/// One line summing up the instance for `STATUS=`: workers up (with workers), clients, and
/// backends up among those not removed (`(state, health)` pairs as the metrics name them).
pub fn status_line(
    workers: Option<(usize, usize)>,
    clients: u64,
    backends: &[(&str, &str)],
) -> String {
    let listed: Vec<_> = backends.iter().filter(|(s, _)| *s != "removed").collect();
    let up = listed.iter().filter(|(_, h)| *h == "up").count();
    let mut s = String::new();
    if let Some((up, n)) = workers {
        s.push_str(&format!("workers {up}/{n} up, "));
    }
    s.push_str(&format!(
        "{clients} client{}, backends {up}/{} up",
        if clients == 1 { "" } else { "s" },
        listed.len()
    ));
    s
}

struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// The variable's value, for a successor process.
    value: String,
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
/// Set once an upgrade made another process the main one: this one says nothing more.
static HANDED_OVER: AtomicBool = AtomicBool::new(false);
/// Set once `STOPPING=1` went out: the status refresher says nothing more.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// Reads `NOTIFY_SOCKET` once (later calls change nothing). Without it every function here does
/// nothing. A value that cannot be used is logged, not fatal: sluice runs, systemd will time out.
pub fn init() {
    NOTIFIER.get_or_init(|| {
        let value = std::env::var(ENV).ok().filter(|v| !v.is_empty())?;
        let addr = parse_address(&value)
            .map_err(|e| warn!(error = %e, "systemd notification socket unusable"))
            .ok()?;
        let socket = UnixDatagram::unbound()
            .map_err(|e| warn!(error = %e, "systemd notification: cannot make a socket"))
            .ok()?;
        Some(Notifier {
            socket,
            addr,
            value,
        })
    });
}

/// Is a notification socket configured?
pub fn enabled() -> bool {
    matches!(NOTIFIER.get(), Some(Some(_)))
}

/// The `NOTIFY_SOCKET` value, for a process that takes over as the main one (an upgrade).
pub fn socket_env() -> Option<String> {
    match NOTIFIER.get() {
        Some(Some(n)) => Some(n.value.clone()),
        _ => None,
    }
}

/// Sends `fields` (nothing when no socket is configured). A failed send is logged and otherwise
/// ignored: systemd's view is never a reason to stop serving.
pub fn send(fields: &[Field]) {
    let Some(Some(n)) = NOTIFIER.get() else {
        return;
    };
    if HANDED_OVER.load(Ordering::Acquire) {
        return;
    }
    let text = message(fields);
    match n.socket.send_to_addr(text.as_bytes(), &n.addr) {
        Ok(_) => debug!(message = %text.trim_end().replace('\n', " "), "systemd notified"),
        Err(e) => warn!(socket = %n.value, error = %e, "systemd notification not sent"),
    }
}

/// `CLOCK_MONOTONIC` now, in µs (the clock systemd compares `MONOTONIC_USEC` with).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// `READY=1`, `MAINPID=` and a status.
pub fn ready(status: &str) {
    send(&[
        Field::Ready,
        Field::MainPid(std::process::id()),
        Field::Status(status.to_string()),
    ]);
}

/// Runs `reload` between `RELOADING=1` and `READY=1`; the ready message's status is what
/// `reload` returned (its report). Returns that report.
pub fn reloading(reload: impl FnOnce() -> String) -> String {
    send(&[
        Field::Reloading,
        Field::MonotonicUsec(monotonic_usec()),
        Field::Status("reloading the configuration".into()),
    ]);
    let report = reload();
    send(&[Field::Ready, Field::Status(format!("reload: {report}"))]);
    report
}

/// An upgrade's successor `pid` is ready: it becomes the unit's main process (`MAINPID=`, which
/// systemd takes from the current main process under `NotifyAccess=main`), and this process
/// says nothing more (see `crate::upgrade`).
pub fn hand_over(pid: u32) {
    send(&[
        Field::MainPid(pid),
        Field::Ready,
        Field::Status(format!("upgrade: process {pid} takes over")),
    ]);
    HANDED_OVER.store(true, Ordering::Release);
}

/// The successor died during the handover: this process is the main one again.
pub fn take_back() {
    HANDED_OVER.store(false, Ordering::Release);
    send(&[
        Field::MainPid(std::process::id()),
        Field::Ready,
        Field::Status("upgrade rolled back".into()),
    ]);
}

/// `STOPPING=1` and a status; the status refresher stops.
pub fn stopping(status: &str) {
    STOPPING.store(true, Ordering::Release);
    send(&[Field::Stopping, Field::Status(status.to_string())]);
}

/// Sends `STATUS=` with what `status` says every [`STATUS_EVERY`] until sluice stops (a thread;
/// none when no socket is configured).
pub fn spawn_status(status: impl Fn() -> String + Send + 'static) {
    if !enabled() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-notify".into())
        .spawn(move || loop {
            std::thread::sleep(STATUS_EVERY);
            if STOPPING.load(Ordering::Acquire) {
                return;
            }
            let line = status();
            if STOPPING.load(Ordering::Acquire) {
                return;
            }
            send(&[Field::Status(line)]);
        });
    if let Err(e) = spawned {
        warn!(error = %e, "systemd notification: cannot start the status thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let long = "é".repeat(300);
        let cases: Vec<(Vec<Field>, String)> = vec![
            (vec![], String::new()),
            (
                vec![Field::Ready, Field::MainPid(42), Field::Status("ok".into())],
                "READY=1\nMAINPID=42\nSTATUS=ok\n".into(),
            ),
            (
                vec![Field::Reloading, Field::MonotonicUsec(1_234_567)],
                "RELOADING=1\nMONOTONIC_USEC=1234567\n".into(),
            ),
            (
                vec![Field::Stopping, Field::Status("draining".into())],
                "STOPPING=1\nSTATUS=draining\n".into(),
            ),
            (
                vec![Field::Status("two\nlines\r\n".into())],
                "STATUS=two lines  \n".into(),
            ),
            (
                // 600 bytes of two-byte characters: cut at 400 bytes, on a boundary.
                vec![Field::Status(long.clone())],
                format!("STATUS={}\n", "é".repeat(200)),
            ),
        ];
        for (fields, want) in cases {
            assert_eq!(message(&fields), want, "{fields:?}");
        }
    }

    #[test]
    fn addresses() {
        let path = parse_address("/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abs = parse_address("@sluice/notify").unwrap();
        assert_eq!(abs.as_abstract_name(), Some(&b"sluice/notify"[..]));
        for bad in ["", "relative/path", "vsock:2:1234"] {
            assert!(parse_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_lines() {
        /// (workers up of N, clients, (state, health) per backend, the line).
        type Case = (
            Option<(usize, usize)>,
            u64,
            Vec<(&'static str, &'static str)>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (None, 0, vec![], "0 clients, backends 0/0 up"),
            (None, 1, vec![("up", "up")], "1 client, backends 1/1 up"),
            (
                None,
                7,
                vec![("up", "up"), ("down", "down"), ("removed", "up")],
                "7 clients, backends 1/2 up",
            ),
            (
                Some((2, 2)),
                3,
                vec![("draining", "up"), ("suspect", "suspect")],
                "workers 2/2 up, 3 clients, backends 1/2 up",
            ),
        ];
        for (workers, clients, backends, want) in cases {
            assert_eq!(status_line(workers, clients, &backends), want);
        }
    }
}
