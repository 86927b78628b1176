//! The old process's side of an upgrade: start the successor (or, in a worker, take the
//! channel to the one the supervisor started), wait for its health check, then hand the
//! sessions over as they reach a safe point, and roll back when the successor fails.

use super::successor::{adopt_on_shard, OTHERS};
use super::*;

/// Starts an upgrade on a thread of its own (SIGUSR2, the console's UPGRADE). Refused while one
/// is under way, while stopping, and in a worker process (its supervisor upgrades workers one
/// at a time: see [`supervise`]).
pub fn start(shared: Arc<Shared>) -> Result<(), String> {
    if shared.supervisor.is_some() {
        return Err("a worker process is upgraded by its supervisor: signal the supervisor".into());
    }
    begin_thread(shared, None)
}

/// A worker's half of its supervisor's upgrade (the admin request `UPGRADE <rendezvous>`): meets
/// the supervisor at the abstract socket `rendezvous`, takes the handover channel to the
/// successor the supervisor starts, and hands over; tells the supervisor how it went.
pub fn start_for_supervisor(shared: Arc<Shared>, rendezvous: String) -> Result<(), String> {
    if shared.supervisor.is_none() {
        return Err("not a worker process".into());
    }
    begin_thread(shared, Some(rendezvous))
}

fn begin_thread(shared: Arc<Shared>, rendezvous: Option<String>) -> Result<(), String> {
    if crate::server::STOPPING.load(Ordering::Acquire) {
        return Err("sluice is stopping".into());
    }
    if UPGRADING.swap(true, Ordering::AcqRel) {
        return Err("an upgrade is already under way".into());
    }
    std::thread::Builder::new()
        .name("sluice-upgrade".into())
        .spawn(move || {
            let launch = match rendezvous {
                None => Ok(Launch::Here),
                Some(name) => meet_supervisor(&name),
            };
            let done = match launch {
                Ok(l) => run_old(&shared, l),
                Err(e) => {
                    error!(error = %e, "upgrade: not started");
                    false
                }
            };
            if done {
                // Whatever could not move ends as at a shutdown; the process exits.
                info!("upgrade: handed over; stopping this process");
                // SAFETY: sends a signal to this process.
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            } else {
                UPGRADING.store(false, Ordering::Release);
            }
        })
        .map(drop)
        .map_err(|e| {
            UPGRADING.store(false, Ordering::Release);
            format!("cannot start the upgrade thread: {e}")
        })
}

/// How the successor is started, and who hears how it went.
enum Launch {
    /// This process starts it (one process).
    Here,
    /// The supervisor started it: `channel` is the handover channel it passed, `control` the
    /// line to the supervisor (Ready / Failed go there).
    BySupervisor { control: Channel, channel: Channel },
}

fn meet_supervisor(name: &str) -> Result<Launch, String> {
    let control = wire::connect(name).map_err(|e| format!("cannot reach the supervisor: {e}"))?;
    match control.recv(ANSWER_TIMEOUT) {
        Ok(Some((Msg::Handover, fds))) if fds.len() == 1 => {
            let fd = fds.into_iter().next().ok_or("no channel")?;
            // SAFETY: a descriptor just received, ours alone.
            let channel = unsafe { Channel::from_raw(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
            Ok(Launch::BySupervisor { control, channel })
        }
        Ok(other) => Err(format!(
            "the supervisor sent {other:?} instead of a channel"
        )),
        Err(e) => Err(format!("the supervisor's channel: {e}")),
    }
}

fn mailboxes(shared: &Shared) -> Vec<crate::shard::poller::Mailbox<ShardMsg>> {
    shared.mailboxes.get().cloned().unwrap_or_default()
}

/// Asks every shard for (a duplicate of its listener, its id counter).
fn listeners(shared: &Shared) -> Result<Vec<(Option<OwnedFd>, u32)>, String> {
    mailboxes(shared)
        .iter()
        .enumerate()
        .map(|(i, mb)| {
            let (tx, rx) = std::sync::mpsc::channel();
            mb.post(ShardMsg::Upgrade(ShardRequest::Listener { reply: tx }));
            rx.recv_timeout(ANSWER_TIMEOUT)
                .map_err(|_| format!("shard {i} did not answer"))
        })
        .collect()
}

fn spawn_successor(child_end: &Channel) -> Result<std::process::Child, String> {
    let exe = EXE
        .get()
        .cloned()
        .flatten()
        .ok_or("the executable's path is unknown")?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let mut cmd = std::process::Command::new(&exe);
    cmd.args(&args);
    // The successor's end of the pair is the one descriptor it inherits beyond the standard
    // streams.
    as_successor(&mut cmd, child_end.as_raw_fd());
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

/// How far past its predecessor's counter a successor shard starts handing out connection ids
/// (less when the counter has fewer than 20 bits: a sixteenth of its space):
/// the predecessor goes on accepting until the successor is ready, and the ids it hands out
/// meanwhile (fewer than this many per shard) stay its own.
pub const ID_GAP: u32 = 1 << 16;

/// Where a successor shard starts counting, from its predecessor's last id `last` (within the
/// counter's bits, as `Shard::next_conn_id` wraps).
fn successor_counter(shared: &Shared, last: u32) -> u32 {
    let bits = crate::shared::IdLayout::new(shared.workers, shared.shards).local_bits();
    counter_after(last, bits)
}

fn counter_after(last: u32, bits: u32) -> u32 {
    let mask = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    // At most a sixteenth of the counter's space (a layout with very few counter bits).
    let gap = ID_GAP.min(1u32 << bits.saturating_sub(4).min(31));
    last.wrapping_add(gap) & mask
}

/// Waits for the successor's Ready; `Err` says why it is not coming.
fn await_ready(
    channel: &Channel,
    mut child: Option<&mut std::process::Child>,
) -> Result<(u32, bool, u8, bool), String> {
    let until = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(Ok(Some(st))) = child.as_mut().map(|c| c.try_wait()) {
            return Err(format!("the successor exited during its start ({st})"));
        }
        if Instant::now() >= until {
            return Err(format!(
                "the successor did not report ready within {} s",
                READY_TIMEOUT.as_secs()
            ));
        }
        match channel.recv(Duration::from_millis(100)) {
            Ok(None) => {}
            Ok(Some((
                Msg::Ready {
                    pid,
                    server_known,
                    records,
                    admin,
                },
                _,
            ))) => return Ok((pid, server_known, records, admin)),
            Ok(Some((Msg::Failed { why }, _))) => {
                return Err(format!("the successor failed: {why}"))
            }
            Ok(Some((m, _))) => return Err(format!("the successor said {m:?} instead of ready")),
            Err(e) => {
                // It closed its end: it exited (or is exiting); say how when we can.
                let st = child
                    .as_mut()
                    .and_then(|c| c.wait().ok())
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                return Err(format!("the successor went away during its start: {e}{st}"));
            }
        }
    }
}

/// The old process's upgrade. Returns `true` when the successor took over (this process should
/// stop), `false` when it rolled back (this process goes on as before).
fn run_old(shared: &Arc<Shared>, launch: Launch) -> bool {
    let started = Instant::now();
    let dups = match listeners(shared) {
        Ok(l) => l,
        Err(e) => {
            error!(error = %e, "upgrade: not started");
            return false;
        }
    };
    let (mine, mut child, control) = match launch {
        Launch::Here => {
            let (mine, theirs) = match wire::pair() {
                Ok(p) => p,
                Err(e) => {
                    error!(error = %e, "upgrade: cannot make the handover channel; not started");
                    return false;
                }
            };
            let child = match spawn_successor(&theirs) {
                Ok(c) => c,
                Err(e) => {
                    error!(error = %e, "upgrade: not started");
                    return false;
                }
            };
            drop(theirs);
            info!(pid = child.id(), "upgrade: successor started");
            (mine, Some(child), None)
        }
        Launch::BySupervisor { control, channel } => (channel, None, Some(control)),
    };
    let mut others = OTHERS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // The KILL line (see `peer`), last: KILLs reach the clients of either process from now on.
    let theirs = match peer::pair() {
        Ok((ours, theirs)) => {
            // Answering now (the successor's clients may KILL ours), asking once it is ready.
            peer::open(peer::Side::Predecessor, ours, false, false);
            peer::serve(shared.clone());
            others.push((Role::Peer, theirs.as_raw_fd()));
            Some(theirs)
        }
        Err(e) => {
            warn!(error = %e, "upgrade: cannot make the KILL line; during the handover a KILL reaches only the process that holds its client");
            None
        }
    };
    let hello = Msg::Hello {
        workers: shared.workers,
        shards: shared.shards as u32,
        next_ids: dups
            .iter()
            .map(|d| successor_counter(shared, d.1))
            .collect(),
        listeners: dups.iter().map(|d| d.0.is_some()).collect(),
        // (The KILL line answers admin requests too: a mark with no descriptor, last.)
        others: others
            .iter()
            .map(|(r, _)| *r as u8)
            .chain(theirs.as_ref().map(|_| Role::PeerAdmin as u8))
            .collect(),
    };
    let fds: Vec<RawFd> = dups
        .iter()
        .filter_map(|d| d.0.as_ref().map(AsRawFd::as_raw_fd))
        .chain(others.iter().map(|(_, fd)| *fd))
        .collect();
    let sent = mine.send(&hello, &fds);
    // The successor's end is its own now (ours closes, so our line ends when it exits).
    drop(theirs);
    let ready = sent
        .map_err(|e| format!("cannot send the hello: {e}"))
        .and_then(|()| await_ready(&mine, child.as_mut()))
        .and_then(|(pid, server_known, records, admin)| {
            // The health check: the successor listens, and knows the server if this process
            // does (one that reached no backend would present a default identity to clients
            // that logged in against the real one).
            if server_known || shared.server.is_fallback() {
                Ok((pid, records, admin))
            } else {
                Err("the successor reached no backend at its start (check the backends in the configuration file)".into())
            }
        });
    // Our duplicates of the listeners stay open until the end: if the successor dies during
    // the handover, this process accepts on them again.
    let dups: Vec<Option<OwnedFd>> = dups.into_iter().map(|d| d.0).collect();
    let (pid, records, admin) = match ready {
        Ok(r) => r,
        Err(why) => {
            if let Some(mut child) = child {
                // SAFETY: signals our own child (still ours to reap: no pid reuse before wait).
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                let _ = child.wait();
            }
            // Said before the supervisor hears of it (its own line follows this one).
            error!(why = %why, "upgrade rolled back: this process keeps its listeners and every client");
            if let Some(c) = &control {
                // The supervisor stops the successor it started.
                let _ = c.send(&Msg::Failed { why: why.clone() }, &[]);
            }
            peer::close();
            return false;
        }
    };
    // The successor answers KILL questions (and admin requests, if it says so) from now on.
    peer::start_asking(admin);
    if let Some(c) = &control {
        let ready = Msg::Ready {
            pid,
            server_known: true,
            records,
            admin,
        };
        if let Err(e) = c.send(&ready, &[]) {
            warn!(error = %e, "upgrade: cannot tell the supervisor the successor is ready");
        }
    }
    // Sessions move with their backend connection only to a successor that reads such records.
    let carry = records >= record::VERSION_BACKEND;
    info!(
        pid,
        carry_backends = carry,
        took_ms = started.elapsed().as_millis() as u64,
        "upgrade: successor ready; handing over"
    );
    crate::notify::hand_over(pid);
    HANDING_OVER.store(true, Ordering::Relaxed);
    // Reap the child when it exits, whenever that is (we exit first, normally).
    if let Some(mut child) = child.take() {
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
    let mbs = mailboxes(shared);
    for mb in &mbs {
        let (tx, _rx) = std::sync::mpsc::channel();
        mb.post(ShardMsg::StopAccepting { reply: tx });
    }
    // The successor opens pools of its own: this process gives its pooled connections up as
    // they are released (RECONNECT), so the server sees the two pools overlap only by what the
    // sessions still here hold.
    let retired = crate::admin::handle_here(shared, "RECONNECT");
    info!(retired = %retired, "upgrade: pooled connections retired");
    let deadline = Instant::now() + Duration::from_millis(shared.config.shutdown_timeout_ms);
    let (mut moved, mut kept) = (0u64, 0u64);
    let mut last_staying = String::new();
    'sweeps: loop {
        let mut left = 0;
        let mut full = false;
        let mut staying: Vec<(shard_side::Stay, usize)> = Vec::new();
        for (i, mb) in mbs.iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            mb.post(ShardMsg::Upgrade(ShardRequest::HandOver {
                max: WINDOW,
                carry,
                reply: tx,
            }));
            let Ok(sweep) = rx.recv_timeout(ANSWER_TIMEOUT) else {
                warn!(shard = i, "upgrade: shard did not answer a sweep");
                left += 1;
                continue;
            };
            let Sweep {
                moving,
                left: l,
                staying: s,
            } = sweep;
            left += l;
            for (why, n) in s {
                match staying.iter_mut().find(|(w, _)| *w == why) {
                    Some((_, m)) => *m += n,
                    None => staying.push((why, n)),
                }
            }
            let n = moving.len();
            match send_batch(&mine, shared, &mbs, moving) {
                Ok((m, k)) => {
                    moved += m;
                    kept += k;
                    left += k as usize;
                }
                Err(e) if control.is_some() => {
                    // The supervisor restarts the worker whose successor died, as any dead
                    // worker; this one stops (what it still has is told why, below).
                    error!(error = %e, moved, "upgrade: the successor stopped answering; this worker stops (its supervisor restarts the worker)");
                    break 'sweeps;
                }
                Err(e) => {
                    error!(error = %e, moved, "upgrade rolled back late: the successor stopped answering; this process keeps the sessions it still has and accepts again (sessions the successor had taken are lost with it)");
                    crate::notify::take_back();
                    HANDING_OVER.store(false, Ordering::Relaxed);
                    peer::close();
                    for (mb, l) in mbs.iter().zip(dups) {
                        mb.post(ShardMsg::Upgrade(ShardRequest::Resume { listener: l }));
                    }
                    return false;
                }
            }
            if n == WINDOW {
                // More may be waiting on this shard: sweep again at once.
                left += 1;
                full = true;
            }
        }
        staying.sort_by_key(|(w, _)| w.name());
        let summary: Vec<String> = staying
            .iter()
            .map(|(w, n)| format!("{}={n}", w.name()))
            .collect();
        let summary = summary.join(" ");
        if !summary.is_empty() && summary != last_staying {
            info!(staying = %summary, "upgrade: sessions that cannot move yet");
        }
        last_staying = summary;
        if left == 0 {
            info!(
                moved,
                took_ms = started.elapsed().as_millis() as u64,
                "upgrade: every session moved"
            );
            break;
        }
        if Instant::now() >= deadline {
            warn!(moved, kept, left, staying = %last_staying, "upgrade: deadline (shutdown_timeout_ms) passed; the sessions left end with this process");
            break;
        }
        if !full {
            std::thread::sleep(SWEEP_EVERY);
        }
    }
    let _ = mine.send(&Msg::Done, &[]);
    // What is left ends with this process: idle sessions are told why now; active ones end
    // after their command, as at a shutdown.
    let mut told = 0;
    for mb in &mbs {
        let (tx, rx) = std::sync::mpsc::channel();
        mb.post(ShardMsg::Upgrade(ShardRequest::Farewell { reply: tx }));
        told += rx.recv_timeout(ANSWER_TIMEOUT).unwrap_or(0);
    }
    if told > 0 {
        warn!(
            sessions = told,
            "upgrade: closed the idle sessions that could not move, each told why"
        );
    }
    true
}

/// Sends one sweep's sessions and reads their acknowledgements; a refused session is adopted
/// back here. Returns (moved, kept here); `Err` when the channel failed (the sessions not
/// acknowledged are adopted back first).
fn send_batch(
    channel: &Channel,
    shared: &Shared,
    mbs: &[crate::shard::poller::Mailbox<ShardMsg>],
    moving: Vec<shard_side::Moving>,
) -> Result<(u64, u64), String> {
    let ids = crate::shared::IdLayout::new(shared.workers, shared.shards);
    let mut pending: Vec<shard_side::Moving> = Vec::with_capacity(moving.len());
    let mut failure = None;
    let mut rest = moving.into_iter();
    for m in rest.by_ref() {
        let msg = Msg::Session {
            record: m.record.clone(),
        };
        let fds: Vec<RawFd> = std::iter::once(m.fd.as_raw_fd())
            .chain(m.backend_fd.as_ref().map(AsRawFd::as_raw_fd))
            .collect();
        let sent = channel.send(&msg, &fds);
        pending.push(m);
        if let Err(e) = sent {
            failure = Some(format!("sending a session: {e}"));
            break;
        }
    }
    // Not sent at all: back here.
    let mut unsent: Vec<shard_side::Moving> = rest.collect();
    let (mut moved, mut kept) = (0, 0);
    while failure.is_none() && !pending.is_empty() {
        match channel.recv(ANSWER_TIMEOUT) {
            Ok(Some((Msg::Adopted { conn_id, refused }, _))) => {
                // A successor answers in order. One that cannot decode a record (an older
                // sluice given a version-2 record) refuses it with id 0: the oldest one
                // waiting is that one.
                let i = match pending.iter().position(|m| m.conn_id == conn_id) {
                    Some(i) => i,
                    None if refused.is_some() && !pending.is_empty() => 0,
                    None => {
                        failure = Some(format!("acknowledgement for unknown session {conn_id}"));
                        break;
                    }
                };
                let m = pending.remove(i);
                match refused {
                    None => {
                        // Ours closes; the successor's copy keeps the connection. Its shard
                        // learns it arrived (a KILL waiting for it asks the successor now),
                        // and lets go a backend connection that went with it (kept there, in
                        // transit, until now).
                        moved += 1;
                        let (_, shard) = ids.locate(m.conn_id);
                        if let Some(mb) = mbs.get(shard as usize) {
                            mb.post(ShardMsg::Upgrade(ShardRequest::Gone { conn_id: m.conn_id }));
                        }
                        drop(m);
                    }
                    Some(why) => {
                        kept += 1;
                        take_back(&ids, mbs, m, &why);
                    }
                }
            }
            Ok(Some((other, _))) => failure = Some(format!("unexpected message {other:?}")),
            Ok(None) => failure = Some("no acknowledgement in time".into()),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    match failure {
        None => Ok((moved, kept)),
        Some(e) => {
            unsent.append(&mut pending);
            for m in unsent {
                take_back(&ids, mbs, m, "the successor did not acknowledge it");
            }
            Err(e)
        }
    }
}

/// Adopts a session back in this process (the successor refused it or did not answer).
fn take_back(
    ids: &crate::shared::IdLayout,
    mbs: &[crate::shard::poller::Mailbox<ShardMsg>],
    m: shard_side::Moving,
    why: &str,
) {
    let conn_id = m.conn_id;
    let r = match record::decode(&m.record) {
        Ok(r) => adopt_on_shard(ids, mbs, r, m.fd, m.backend_fd),
        Err(e) => Err(e.to_string()),
    };
    match r {
        Ok(()) => info!(conn = conn_id, why = %why, "upgrade: session kept here"),
        Err(e) => {
            error!(conn = conn_id, why = %why, error = %e, "upgrade: a session could be neither moved nor kept; its connection is closed");
            // No longer on its way (a KILL waiting for it answers now).
            let (_, shard) = ids.locate(conn_id);
            if let Some(mb) = mbs.get(shard as usize) {
                mb.post(ShardMsg::Upgrade(ShardRequest::Settled { conn_id }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_counters_leave_a_gap_and_wrap_within_their_bits() {
        let cases = [
            (0, 30, ID_GAP),
            (7, 30, 7 + ID_GAP),
            ((1 << 30) - 1, 30, ID_GAP - 1),
            (u32::MAX, 32, ID_GAP - 1),
            (5, 16, 5 + 4096),
            (65530, 16, (65530 + 4096) & 0xffff),
        ];
        for (last, bits, want) in cases {
            assert_eq!(counter_after(last, bits), want, "{last} {bits}");
        }
    }
}
