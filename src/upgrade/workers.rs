//! The supervisor's side of an upgrade (`workers = N`): one worker at a time.

use super::*;

/// What the supervisor's upgrade thread tells its main loop.
pub enum WorkerEvent {
    /// Worker `worker`'s successor is ready: it is that worker from now on; the old process
    /// hands its clients over and stops (it must not be restarted).
    Replaced {
        worker: usize,
        child: std::process::Child,
    },
    /// The upgrade is over: how many workers were upgraded, and why it stopped early if it did.
    Finished {
        upgraded: usize,
        failure: Option<String>,
    },
}

/// Makes `cmd` a successor: the handover channel's end `fd` is inherited under [`ENV_FD`].
pub fn as_successor(cmd: &mut std::process::Command, fd: RawFd) {
    use std::os::unix::process::CommandExt;
    cmd.env(ENV_FD, fd.to_string());
    // SAFETY: only fcntl (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The supervisor's upgrade of its `n` workers, one at a time, on the calling thread: for each,
/// meets the worker at an abstract socket, gives it one end of a handover channel, starts its
/// successor with `spawn(worker, other end)`, and waits until the successor is ready (then the
/// main loop hears [`WorkerEvent::Replaced`]) and the old worker has handed over (or until
/// `per_worker`). Stops at the first failure: the workers not upgraded yet keep running the old
/// binary, which the log says.
pub fn supervise(
    me: u32,
    n: usize,
    per_worker: Duration,
    spawn: impl Fn(usize, RawFd) -> std::io::Result<std::process::Child>,
    events: std::sync::mpsc::Sender<WorkerEvent>,
) {
    let mut upgraded = 0;
    let mut failure = None;
    for w in 0..n {
        match upgrade_worker(me, w, per_worker, &spawn, &events) {
            Ok(pid) => {
                info!(worker = w, pid, "supervisor: worker upgraded");
                upgraded += 1;
            }
            Err(e) => {
                error!(worker = w, error = %e, "supervisor: upgrade stopped; this worker and the ones after it keep running the old binary");
                failure = Some(format!("worker {w}: {e}"));
                break;
            }
        }
    }
    if failure.is_none() {
        info!(workers = n, "supervisor: every worker upgraded");
    }
    let _ = events.send(WorkerEvent::Finished { upgraded, failure });
}

fn upgrade_worker(
    me: u32,
    w: usize,
    per_worker: Duration,
    spawn: &impl Fn(usize, RawFd) -> std::io::Result<std::process::Child>,
    events: &std::sync::mpsc::Sender<WorkerEvent>,
) -> Result<u32, String> {
    let mut nonce = [0u8; 8];
    let _ = getrandom::getrandom(&mut nonce);
    let name = format!("sluice-upgrade/{me}/{w}/{:016x}", u64::from_le_bytes(nonce));
    let rendezvous = wire::Rendezvous::bind(&name).map_err(|e| format!("rendezvous: {e}"))?;
    let answer = crate::admin::request(me, w as u32, &format!("UPGRADE {name}"))
        .map_err(|e| format!("the worker did not answer: {e}"))?;
    if answer != "OK" {
        return Err(format!("the worker refused: {answer}"));
    }
    let control = rendezvous
        .accept(ANSWER_TIMEOUT)
        .map_err(|e| format!("the worker did not come to the rendezvous: {e}"))?;
    drop(rendezvous);
    let (old_end, new_end) = wire::pair().map_err(|e| format!("channel: {e}"))?;
    control
        .send(&Msg::Handover, &[old_end.as_raw_fd()])
        .map_err(|e| format!("cannot give the worker its channel: {e}"))?;
    drop(old_end);
    let mut child = spawn(w, new_end.as_raw_fd()).map_err(|e| format!("cannot start: {e}"))?;
    // Only the successor holds this end now: its exit is the old worker's EOF.
    drop(new_end);
    let outcome = match control.recv(READY_TIMEOUT + Duration::from_secs(5)) {
        Ok(Some((Msg::Ready { pid, .. }, _))) => Ok(pid),
        Ok(Some((Msg::Failed { why }, _))) => Err(format!("rolled back: {why}")),
        Ok(Some((m, _))) => Err(format!("the worker said {m:?}")),
        Ok(None) => Err("no word from the worker in time".into()),
        Err(e) => Err(format!("the worker's line: {e}")),
    };
    let pid = match outcome {
        Ok(pid) => pid,
        Err(e) => {
            // SAFETY: signals our own child, reaped right after.
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            return Err(e);
        }
    };
    let _ = events.send(WorkerEvent::Replaced { worker: w, child });
    // The old worker closes its line when its handover is over (then it stops).
    let until = Instant::now() + per_worker;
    loop {
        match control.recv(until.saturating_duration_since(Instant::now())) {
            Ok(Some(_)) => continue,
            Ok(None) => {
                warn!(
                    worker = w,
                    "supervisor: the old worker is still handing over; going on"
                );
                break;
            }
            Err(_) => break,
        }
    }
    Ok(pid)
}
