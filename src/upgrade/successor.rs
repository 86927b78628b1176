//! The successor's side of an upgrade: the predecessor's hello (listeners, id counters), the
//! listeners it passed on (shards', console's, metrics', a worker's admin socket), then adopting
//! the sessions it sends.

use super::*;

/// A listening socket besides the shards', which a successor takes over as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The SQL admin console (`[admin] listen`).
    Console = 1,
    /// The metrics endpoint (`metrics_listen`).
    Metrics = 2,
    /// A worker's admin socket (abstract, named after its supervisor and its index).
    Admin = 3,
    /// Not a listener: the successor's end of the KILL line ([`super::peer`]), passed last (a
    /// successor that predates it skips the role and closes the descriptor).
    Peer = 4,
    /// Not a descriptor: a mark after [`Role::Peer`] saying the old process answers admin
    /// requests on that line too (`wire::Msg::Admin`). A successor that predates it skips it,
    /// and no descriptor goes with it, so the others stay in step.
    PeerAdmin = 5,
}

impl Role {
    fn from_byte(b: u8) -> Option<Role> {
        match b {
            1 => Some(Role::Console),
            2 => Some(Role::Metrics),
            3 => Some(Role::Admin),
            4 => Some(Role::Peer),
            5 => Some(Role::PeerAdmin),
            _ => None,
        }
    }
}

/// This process's console and metrics listeners (their threads hold them until the process
/// exits, so the descriptors stay valid), to pass on at an upgrade.
pub(super) static OTHERS: Mutex<Vec<(Role, RawFd)>> = Mutex::new(Vec::new());

/// A TCP listener for `role` on `addr`: the predecessor's, when this is a successor and it had
/// one on that address (binding again would fail: it still listens); otherwise a new one.
pub fn tcp_listener(addr: &str, role: Role) -> std::io::Result<std::net::TcpListener> {
    use std::net::ToSocketAddrs;
    let wanted: Vec<std::net::SocketAddr> = addr.to_socket_addrs()?.collect();
    let taken = take_other(role, |fd| {
        socket2::SockRef::from(fd)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .is_some_and(|a| wanted.contains(&a))
    });
    let listener = match taken {
        Some(l) => std::net::TcpListener::from(l),
        None => std::net::TcpListener::bind(addr)?,
    };
    note_other(role, listener.as_raw_fd());
    Ok(listener)
}

/// A worker's admin listener at the abstract address `addr`: its predecessor's when it is a
/// successor (the name is taken while the predecessor lives), otherwise a new one.
pub fn admin_listener(
    addr: &std::os::unix::net::SocketAddr,
) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let wanted = addr.as_abstract_name();
    // The same name only: a single process's admin socket is named after its own pid, so a
    // successor binds a new one (the predecessor's goes away with it).
    let same = |fd: &OwnedFd| {
        fd.try_clone()
            .ok()
            .map(std::os::unix::net::UnixListener::from)
            .and_then(|l| l.local_addr().ok())
            .is_some_and(|a| a.as_abstract_name().is_some() && a.as_abstract_name() == wanted)
    };
    let listener = match take_other(Role::Admin, same) {
        Some(l) => std::os::unix::net::UnixListener::from(l),
        None => std::os::unix::net::UnixListener::bind_addr(addr)?,
    };
    note_other(Role::Admin, listener.as_raw_fd());
    Ok(listener)
}

fn take_other(role: Role, fits: impl Fn(&OwnedFd) -> bool) -> Option<OwnedFd> {
    inherited(|i| {
        let at = i.others.iter().position(|(r, l)| *r == role && fits(l))?;
        Some(i.others.remove(at).1)
    })
    .flatten()
}

fn note_other(role: Role, fd: RawFd) {
    OTHERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((role, fd));
}

struct Inherited {
    channel: Option<Channel>,
    listeners: Vec<Option<OwnedFd>>,
    next_ids: Vec<u32>,
    others: Vec<(Role, OwnedFd)>,
}

static INHERITED: Mutex<Option<Inherited>> = Mutex::new(None);

fn inherited<T>(f: impl FnOnce(&mut Inherited) -> T) -> Option<T> {
    INHERITED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_mut()
        .map(f)
}

/// Is this process a successor that has not finished its start yet?
pub fn is_successor() -> bool {
    inherited(|i| i.channel.is_some()).unwrap_or(false)
}

/// In a process started by an upgrade (`SLUICE_UPGRADE_FD` set): reads the predecessor's hello
/// (listeners, id counters) and checks the connection-id layout is the same. Returns whether
/// this is a successor. Called before the shards start.
pub fn successor_init(workers: u32, shards: usize) -> Result<bool, String> {
    let Some(v) = std::env::var_os(ENV_FD) else {
        return Ok(false);
    };
    // Not for this process's own children.
    std::env::remove_var(ENV_FD);
    let fd: RawFd = v
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|&fd| fd > 2)
        .ok_or_else(|| format!("{ENV_FD}={v:?}: not a descriptor"))?;
    // SAFETY: the predecessor passed this descriptor for us alone; nothing else owns it. It is
    // made close-on-exec again at once.
    let channel = unsafe { Channel::from_raw(fd) };
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let (msg, fds) = channel
        .recv(ANSWER_TIMEOUT)
        .map_err(|e| format!("upgrade: reading the predecessor's hello: {e}"))?
        .ok_or("upgrade: the predecessor sent no hello")?;
    let Msg::Hello {
        workers: w,
        shards: s,
        next_ids,
        listeners,
        others,
    } = msg
    else {
        return Err(format!("upgrade: expected a hello, got {msg:?}"));
    };
    if w != workers || s as usize != shards {
        let why = format!(
            "the connection-id layout changed (predecessor: {w} worker(s) × {s} shard(s), here {workers} × {shards}): moved clients' ids would be wrong; restart instead"
        );
        let _ = channel.send(&Msg::Failed { why: why.clone() }, &[]);
        return Err(format!("upgrade: {why}"));
    }
    let mut fds = fds.into_iter();
    let listeners = listeners
        .iter()
        .map(|&has| if has { fds.next() } else { None })
        .collect();
    let peer_admin = others.contains(&(Role::PeerAdmin as u8));
    let mut others: Vec<(Role, OwnedFd)> = others
        .iter()
        .filter_map(|&b| {
            let role = Role::from_byte(b).filter(|r| *r != Role::PeerAdmin)?;
            Some((role, fds.next()?))
        })
        .collect();
    // The KILL line: a KILL here for a client the predecessor holds asks it from now on (this
    // process's shards accept before the predecessor hears it is ready).
    if let Some(at) = others.iter().position(|(r, _)| *r == Role::Peer) {
        let fd = others.remove(at).1;
        // SAFETY: a descriptor the predecessor passed, ours alone.
        let line = unsafe { Channel::from_raw(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
        super::peer::open(super::peer::Side::Successor, line, true, peer_admin);
    }
    // No upgrade of this process before its own handover is over.
    UPGRADING.store(true, Ordering::Release);
    *INHERITED.lock().unwrap_or_else(|p| p.into_inner()) = Some(Inherited {
        channel: Some(channel),
        listeners,
        next_ids,
        others,
    });
    info!("upgrade: taking over from the predecessor");
    Ok(true)
}

/// The listener shard `id` inherits, if any.
pub fn inherited_listener(id: usize) -> Option<OwnedFd> {
    inherited(|i| i.listeners.get_mut(id).and_then(Option::take)).flatten()
}

/// The connection-id counter shard `id` goes on from, if it has a predecessor.
pub fn inherited_next_id(id: usize) -> Option<u32> {
    inherited(|i| i.next_ids.get(id).copied()).flatten()
}

/// Tells the predecessor every shard listens, and adopts the sessions it sends, on a thread of
/// its own; `READY=1` goes to systemd once the predecessor is done (it sent `MAINPID=` first).
pub fn successor_ready(
    shared: Arc<Shared>,
    mailboxes: Vec<crate::shard::poller::Mailbox<ShardMsg>>,
    status: impl Fn() -> String + Send + 'static,
) {
    // What the predecessor passed and this process does not use (fewer shards, a listen
    // address changed) is closed now.
    let Some(channel) = inherited(|i| {
        i.listeners.clear();
        i.others.clear();
        i.channel.take()
    })
    .flatten() else {
        return;
    };
    // The predecessor's KILL questions are answered from now on (asked before this, they
    // waited in the line).
    super::peer::serve(shared.clone());
    if let Err(e) = channel.send(
        &Msg::Ready {
            pid: std::process::id(),
            server_known: !shared.server.is_fallback(),
            records: super::record::VERSION_BACKEND,
            admin: true,
        },
        &[],
    ) {
        error!(error = %e, "upgrade: cannot tell the predecessor we are ready; it keeps its clients");
        UPGRADING.store(false, Ordering::Release);
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("sluice-adopt".into())
        .spawn(move || {
            let (adopted, refused) = adopt_loop(&shared, &mailboxes, &channel);
            info!(adopted, refused, "upgrade: handover over");
            UPGRADING.store(false, Ordering::Release);
            crate::notify::ready(&status());
        });
    if let Err(e) = spawned {
        error!(error = %e, "upgrade: cannot start the adopting thread");
        UPGRADING.store(false, Ordering::Release);
    }
}

fn adopt_loop(
    shared: &Shared,
    mailboxes: &[crate::shard::poller::Mailbox<ShardMsg>],
    channel: &Channel,
) -> (u64, u64) {
    let ids = crate::shared::IdLayout::new(shared.workers, shared.shards);
    let (mut adopted, mut refused) = (0u64, 0u64);
    loop {
        // The predecessor sends at least every sweep while it hands over; it may wait for its
        // deadline with nothing to send, so no timeout ends this loop: the channel closing does.
        let (msg, fds) = match channel.recv(Duration::from_secs(3600)) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                warn!(error = %e, "upgrade: the handover channel ended");
                return (adopted, refused);
            }
        };
        let mut fds = fds.into_iter();
        let (conn_id, result) = match (msg, fds.next()) {
            (Msg::Done, _) => return (adopted, refused),
            (Msg::Session { record }, Some(fd)) => {
                adopt_one(&ids, mailboxes, &record, fd, fds.next())
            }
            (Msg::Session { .. }, None) => (0, Err("a session without its socket".to_string())),
            (other, _) => {
                warn!(message = ?other, "upgrade: unexpected message from the predecessor");
                continue;
            }
        };
        match &result {
            Ok(()) => adopted += 1,
            Err(why) => {
                refused += 1;
                warn!(conn = conn_id, why = %why, "upgrade: refused a session (the predecessor keeps it)");
            }
        }
        let ack = Msg::Adopted {
            conn_id,
            refused: result.err(),
        };
        if let Err(e) = channel.send(&ack, &[]) {
            warn!(error = %e, "upgrade: the handover channel ended");
            return (adopted, refused);
        }
        if let Some(path) = fault_hold_after(adopted) {
            hold(&path);
        }
        if fault_exit_after() == Some(adopted) {
            error!(
                adopted,
                "upgrade: {FAULT_ENV} says to exit now (a test of the late rollback)"
            );
            std::process::exit(3);
        }
    }
}

/// For tests only (the old process is started with it and passes it on; nothing else reads
/// it): `SLUICE_UPGRADE_FAULT=exit-after:N` makes a successor exit right after acknowledging
/// its N-th session (the late rollback); `hold-after:N:PATH` makes it stop reading the
/// predecessor's sessions after acknowledging its N-th, while the file PATH exists (at most
/// [`HOLD_AT_MOST`]; the predecessor gives up after `ANSWER_TIMEOUT`), so a test finds
/// sessions in both processes and on their way.
const FAULT_ENV: &str = "SLUICE_UPGRADE_FAULT";
/// The longest a `hold-after` hold lasts.
const HOLD_AT_MOST: Duration = Duration::from_secs(8);

fn fault_exit_after() -> Option<u64> {
    std::env::var(FAULT_ENV)
        .ok()?
        .strip_prefix("exit-after:")?
        .parse()
        .ok()
}

/// The file a `hold-after:N:PATH` hold waits on, when `adopted` is its N.
fn fault_hold_after(adopted: u64) -> Option<PathBuf> {
    let v = std::env::var(FAULT_ENV).ok()?;
    let (n, path) = v.strip_prefix("hold-after:")?.split_once(':')?;
    (n.parse::<u64>().ok()? == adopted).then(|| PathBuf::from(path))
}

fn hold(path: &std::path::Path) {
    warn!(path = %path.display(), "upgrade: {FAULT_ENV} holds the handover while this file exists");
    let until = Instant::now() + HOLD_AT_MOST;
    while path.exists() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    warn!("upgrade: the handover goes on");
}

fn adopt_one(
    ids: &crate::shared::IdLayout,
    mailboxes: &[crate::shard::poller::Mailbox<ShardMsg>],
    bytes: &[u8],
    fd: OwnedFd,
    backend_fd: Option<OwnedFd>,
) -> (u32, Result<(), String>) {
    let r = match record::decode(bytes) {
        Ok(r) => r,
        Err(e) => return (0, Err(e.to_string())),
    };
    let conn_id = r.conn_id;
    (conn_id, adopt_on_shard(ids, mailboxes, r, fd, backend_fd))
}

/// Adopts `r` on the shard its connection id names.
pub(super) fn adopt_on_shard(
    ids: &crate::shared::IdLayout,
    mailboxes: &[crate::shard::poller::Mailbox<ShardMsg>],
    r: record::Record,
    fd: OwnedFd,
    backend_fd: Option<OwnedFd>,
) -> Result<(), String> {
    let (_, shard) = ids.locate(r.conn_id);
    let mb = mailboxes
        .get(shard as usize)
        .ok_or_else(|| format!("connection id {} names shard {shard}", r.conn_id))?;
    let (tx, rx) = std::sync::mpsc::channel();
    mb.post(ShardMsg::Upgrade(ShardRequest::Adopt {
        record: Box::new(r),
        fd,
        backend_fd,
        reply: tx,
    }));
    rx.recv_timeout(ANSWER_TIMEOUT)
        .map_err(|_| format!("shard {shard} did not answer"))?
}
