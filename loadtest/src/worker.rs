//! One worker process: a single-threaded epoll loop.
//!
//! Connections being opened and active connections live in a small slab with their protocol
//! state and buffers. An idle connection, once logged in, leaves the slab and epoll entirely: it
//! is one file descriptor in `idle_fds` (4 bytes of user memory, no buffer, no epoll entry) until
//! it is checked (a non-blocking `MSG_PEEK` tells a live socket from one the server closed) and
//! closed. Timeouts are found by scanning the slab, which only holds in-flight connections.

use crate::cli::{Config, Mode};
use crate::hist;
use crate::ipc::{self, IdleClosed, IdleOpened, Progress, RunResult, ToParent, ToWorker};
use crate::pace::{self, Pacer};
use crate::plan::{AddrPlan, Role, WorkerSpec};
use crate::proto::{quit_packet, Event, Failure, LoginConfig, Phase, Proto};
use crate::sys::{self, Epoll};
use hdrhistogram::Histogram;
use sluice::codec::packets::{ErrPacket, ERR};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::time::{Duration, Instant};

const IPC_TOKEN: u64 = u64::MAX;
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
const SCAN_EVERY: Duration = Duration::from_millis(50);
/// Delay before an active connection that failed during a run is replaced.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);
/// Delay before a storm loop whose cycle failed starts again (no busy loop against a dead server).
const STORM_RETRY_DELAY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Idle,
    Active,
    Storm,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    None,
    /// A point select (or --query) in flight.
    Select {
        intended: Instant,
        sent: Instant,
    },
    /// A transaction step in flight: 0 BEGIN, 1 SELECT, 2 UPDATE, 3 COMMIT, 4 ROLLBACK after an
    /// error (not measured).
    Trx {
        intended: Instant,
        sent: Instant,
        step: u8,
        id: u32,
    },
    /// The storm cycle's query, in flight since the cycle began at `t0`.
    Storm {
        t0: Instant,
    },
}

struct Conn {
    fd: i32,
    purpose: Purpose,
    proto: Proto,
    rbuf: Vec<u8>,
    /// Bytes not yet accepted by the socket (EPOLLOUT is armed while non-empty).
    wbuf: Vec<u8>,
    t_connect: Instant,
    deadline: Instant,
    op: Op,
}

impl Conn {
    fn phase(&self) -> Phase {
        if !self.proto.is_ready() && matches!(self.op, Op::None) {
            Phase::Login
        } else if matches!(self.op, Op::None) {
            Phase::Idle
        } else {
            Phase::Query
        }
    }
}

/// Opens connections under a concurrency limit and an optional rate.
struct Opener {
    remaining: u64,
    inflight: u64,
    limit: u64,
    pacer: Pacer,
}

impl Opener {
    fn new(n: u64, limit: u64, rate: f64, now: Instant) -> Opener {
        Opener {
            remaining: n,
            inflight: 0,
            limit: limit.max(1),
            pacer: Pacer::new(now, rate),
        }
    }
}

struct IdleJob {
    target: u64,
    started: Instant,
    opener: Opener,
    established: u64,
    failed: u64,
    connect_us: Histogram<u64>,
    reported: bool,
}

#[derive(PartialEq, Eq)]
enum RunState {
    Preparing,
    Ready,
    Running,
    Draining,
}

struct RunJob {
    state: RunState,
    target: u64,
    opener: Opener,
    /// Setup outcome.
    established: u64,
    setup_failed: u64,
    /// Active connections ready for the next operation, least recently used first: operations
    /// go round-robin over the whole active set (each client stays a client with its own pace,
    /// rather than the few hottest connections doing all the work).
    ready: VecDeque<usize>,
    /// Operations in flight.
    busy: u64,
    pacer: Pacer,
    started: Instant,
    end: Instant,
    drain_deadline: Instant,
    latency: Histogram<u64>,
    service: Histogram<u64>,
    ok: u64,
    failed: u64,
    connects: u64,
    reconnects: u64,
    /// Storm loops / active connections to (re)start at these times.
    restart_at: Vec<Instant>,
    /// Storm loops in flight.
    loops: u64,
}

enum Job {
    None,
    Idle(IdleJob),
    Run(Box<RunJob>),
}

pub struct Worker<'a> {
    cfg: &'a Config,
    spec: WorkerSpec,
    plan: AddrPlan,
    login: LoginConfig,
    ep: Epoll,
    ipc: i32,
    ipc_in: ipc::Reader,
    conns: Vec<Option<Conn>>,
    gens: Vec<u32>,
    free: Vec<usize>,
    idle_fds: Vec<i32>,
    job: Job,
    rng: u64,
    errors: BTreeMap<String, u64>,
    samples: BTreeMap<String, String>,
    connects: u64,
    addr_retries: u64,
    plugins: BTreeMap<String, u64>,
    scratch: Vec<u8>,
    out: Vec<u8>,
    sql: Vec<u8>,
    next_progress: Instant,
    next_scan: Instant,
    exit: Option<i32>,
}

/// Runs a worker until told to stop (or the parent goes away); never returns.
pub fn run(cfg: &Config, spec: WorkerSpec, ipc_fd: i32) -> ! {
    let ep = match Epoll::new() {
        Ok(ep) => ep,
        Err(e) => {
            let _ = ipc::send(
                ipc_fd,
                &ToParent::Fatal(format!("epoll_create: {}", sys::errno_name(e))),
            );
            sys::exit_now(3);
        }
    };
    if let Err(e) = ep.add(ipc_fd, sys::IN, IPC_TOKEN) {
        let _ = ipc::send(
            ipc_fd,
            &ToParent::Fatal(format!("epoll_ctl: {}", sys::errno_name(e))),
        );
        sys::exit_now(3);
    }
    let plan = AddrPlan::new(cfg.src_base, cfg.per_ip, cfg.src_port_lo, cfg.src_port_hi)
        .expect("address plan was validated by the coordinator");
    let now = Instant::now();
    let seed = (sys::getpid() as u64) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
        ^ spec.index as u64;
    let mut w = Worker {
        cfg,
        spec,
        plan,
        login: cfg.login(),
        ep,
        ipc: ipc_fd,
        ipc_in: ipc::Reader::default(),
        conns: Vec::new(),
        gens: Vec::new(),
        free: Vec::new(),
        idle_fds: Vec::new(),
        job: Job::None,
        rng: seed | 1,
        errors: BTreeMap::new(),
        samples: BTreeMap::new(),
        connects: 0,
        addr_retries: 0,
        plugins: BTreeMap::new(),
        scratch: vec![0; 64 * 1024],
        out: Vec::with_capacity(256),
        sql: Vec::with_capacity(128),
        next_progress: now,
        next_scan: now + SCAN_EVERY,
        exit: None,
    };
    let code = w.event_loop();
    sys::exit_now(code)
}

impl<'a> Worker<'a> {
    fn event_loop(&mut self) -> i32 {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
        loop {
            let now = Instant::now();
            let timeout = self.next_wakeup(now).saturating_duration_since(now);
            let n = self.ep.wait(&mut events, timeout);
            for ev in &events[..n] {
                let (token, bits) = (ev.u64, ev.events);
                if token == IPC_TOKEN {
                    self.on_ipc();
                } else {
                    self.on_conn_event(token, bits);
                }
                if let Some(code) = self.exit {
                    return code;
                }
            }
            self.tick(Instant::now());
            if let Some(code) = self.exit {
                return code;
            }
        }
    }

    fn next_wakeup(&self, now: Instant) -> Instant {
        let mut t = self.next_progress.min(now + Duration::from_secs(1));
        if self.conns.len() > self.free.len() {
            t = t.min(self.next_scan);
        }
        match &self.job {
            Job::Idle(j) => {
                if j.opener.remaining > 0 && j.opener.inflight < j.opener.limit {
                    if let Some(d) = j.opener.pacer.next_due() {
                        t = t.min(d);
                    } else {
                        t = now;
                    }
                }
            }
            Job::Run(r) => {
                if r.state == RunState::Preparing
                    && r.opener.remaining > 0
                    && r.opener.inflight < r.opener.limit
                {
                    t = t.min(r.opener.pacer.next_due().unwrap_or(now));
                }
                if r.state == RunState::Running {
                    t = t.min(r.end);
                    if !r.ready.is_empty() {
                        t = t.min(r.pacer.next_due().unwrap_or(now));
                    }
                }
                if r.state == RunState::Draining {
                    t = t.min(r.drain_deadline);
                }
                if let Some(&x) = r.restart_at.iter().min() {
                    t = t.min(x);
                }
            }
            Job::None => {}
        }
        t.max(now)
    }

    // ------------------------------------------------------------------ coordinator messages

    fn on_ipc(&mut self) {
        if let ipc::Fill::Eof = self.ipc_in.fill(self.ipc) {
            // The coordinator is gone: nobody will read our results.
            self.close_everything();
            self.exit = Some(3);
            return;
        }
        while let Some(msg) = self.ipc_in.next::<ToWorker>() {
            match msg {
                Ok(cmd) => self.on_command(cmd),
                Err(e) => {
                    self.report(ToParent::Fatal(format!("bad command: {e}")));
                    self.exit = Some(3);
                    return;
                }
            }
        }
    }

    fn on_command(&mut self, cmd: ToWorker) {
        let now = Instant::now();
        match cmd {
            ToWorker::OpenIdle => {
                let limit = self.cfg.connect_concurrency / self.idle_procs().max(1);
                let rate = pace::share(self.cfg.connect_rate, self.idle_procs() as usize);
                self.job = Job::Idle(IdleJob {
                    target: self.spec.idle,
                    started: now,
                    opener: Opener::new(self.spec.idle, limit, rate, now),
                    established: 0,
                    failed: 0,
                    connect_us: hist::new(),
                    reported: false,
                });
            }
            ToWorker::PrepareActive => {
                let procs = self.active_procs().max(1);
                let storm = self.cfg.mode == Mode::Storm;
                let n = if storm { 0 } else { self.spec.active };
                let limit = self.cfg.connect_concurrency / procs;
                let rate = pace::share(self.cfg.connect_rate, procs as usize);
                let op_rate = pace::share(self.cfg.rate, procs as usize);
                self.job = Job::Run(Box::new(RunJob {
                    state: RunState::Preparing,
                    target: n,
                    opener: Opener::new(n, limit, rate, now),
                    established: 0,
                    setup_failed: 0,
                    ready: VecDeque::new(),
                    busy: 0,
                    pacer: Pacer::new(now, op_rate),
                    started: now,
                    end: now,
                    drain_deadline: now,
                    latency: hist::new(),
                    service: hist::new(),
                    ok: 0,
                    failed: 0,
                    connects: 0,
                    reconnects: 0,
                    restart_at: Vec::new(),
                    loops: 0,
                }));
            }
            ToWorker::Go => {
                let storm = self.cfg.mode == Mode::Storm;
                let duration = Duration::from_secs_f64(self.cfg.duration);
                let loops = self.spec.active;
                let rate = pace::share(self.cfg.rate, self.active_procs() as usize);
                if let Job::Run(r) = &mut self.job {
                    if r.state == RunState::Ready || r.state == RunState::Preparing {
                        r.state = RunState::Running;
                        r.started = now;
                        r.end = now + duration;
                        r.pacer = Pacer::new(now, rate);
                        if storm {
                            r.restart_at = vec![now; loops as usize];
                        }
                    }
                }
            }
            ToWorker::EndRun => match &mut self.job {
                Job::Idle(j) if !j.reported => {
                    j.opener.remaining = 0;
                    j.target = j.established + j.failed + j.opener.inflight;
                }
                Job::Run(r) => match r.state {
                    RunState::Preparing => {
                        r.opener.remaining = 0;
                        r.target = r.established + r.setup_failed + r.opener.inflight;
                    }
                    RunState::Running => r.end = now,
                    _ => {}
                },
                _ => {}
            },
            ToWorker::CheckIdle => {
                let t0 = Instant::now();
                let (alive, dead) = self.check_idle();
                let seconds = t0.elapsed().as_secs_f64();
                self.send_progress();
                self.report(ToParent::IdleChecked(IdleClosed {
                    alive,
                    dead,
                    seconds,
                }));
            }
            ToWorker::CloseIdle => {
                let t0 = Instant::now();
                let (alive, dead) = self.check_idle();
                let quit = quit_packet();
                for fd in self.idle_fds.drain(..) {
                    let _ = sys::send(fd, &quit);
                    sys::close(fd);
                }
                let seconds = t0.elapsed().as_secs_f64();
                self.send_progress();
                self.report(ToParent::IdleClosed(IdleClosed {
                    alive,
                    dead,
                    seconds,
                }));
            }
            ToWorker::Stop => {
                self.close_everything();
                self.send_progress();
                self.exit = Some(0);
            }
        }
    }

    fn idle_procs(&self) -> u64 {
        let n = self.cfg.idle.div_ceil(self.cfg.per_process);
        n.max(1)
    }

    fn active_procs(&self) -> u64 {
        self.cfg.active_procs.clamp(1, self.cfg.active.max(1))
    }

    fn report(&mut self, msg: ToParent) {
        if ipc::send(self.ipc, &msg).is_err() {
            self.close_everything();
            self.exit = Some(3);
        }
    }

    fn send_progress(&mut self) {
        let (connecting, ops, p99) = match &self.job {
            Job::Idle(j) => (j.opener.inflight, 0, 0),
            Job::Run(r) => (
                r.opener.inflight,
                r.ok + r.failed,
                if r.latency.is_empty() {
                    0
                } else {
                    r.latency.value_at_quantile(0.99)
                },
            ),
            Job::None => (0, 0, 0),
        };
        let p = Progress {
            idle_held: self.idle_fds.len() as u64,
            connecting,
            connects: self.connects,
            ops,
            p99_us: p99,
            errors: self.errors.clone(),
            samples: self.samples.clone(),
        };
        self.report(ToParent::Progress(p));
    }

    fn error(&mut self, f: &Failure) {
        let kind = f.kind();
        if !self.samples.contains_key(&kind) {
            self.samples.insert(kind.clone(), f.message());
        }
        *self.errors.entry(kind).or_insert(0) += 1;
    }

    // ------------------------------------------------------------------ periodic work

    fn tick(&mut self, now: Instant) {
        if now >= self.next_scan {
            self.next_scan = now + SCAN_EVERY;
            self.scan_deadlines(now);
        }
        self.drive_opens(now);
        self.drive_run(now);
        self.check_done(now);
        if now >= self.next_progress {
            self.next_progress = now + PROGRESS_EVERY;
            self.send_progress();
        }
    }

    fn scan_deadlines(&mut self, now: Instant) {
        for slot in 0..self.conns.len() {
            let expired = matches!(&self.conns[slot], Some(c) if c.deadline <= now);
            if !expired {
                continue;
            }
            let c = self.conns[slot].as_ref().expect("checked above");
            let f = match c.phase() {
                Phase::Login | Phase::Connect => {
                    if sys::is_connected(c.fd) {
                        Failure::LoginTimeout
                    } else {
                        Failure::ConnectTimeout
                    }
                }
                _ => Failure::QueryTimeout,
            };
            self.fail(slot, f, now);
        }
    }

    fn drive_opens(&mut self, now: Instant) {
        loop {
            let purpose = match &mut self.job {
                Job::Idle(j) => {
                    let o = &mut j.opener;
                    if o.remaining == 0 || o.inflight >= o.limit || o.pacer.take(now).is_none() {
                        return;
                    }
                    o.remaining -= 1;
                    o.inflight += 1;
                    Purpose::Idle
                }
                Job::Run(r) if r.state == RunState::Preparing => {
                    let o = &mut r.opener;
                    if o.remaining == 0 || o.inflight >= o.limit || o.pacer.take(now).is_none() {
                        return;
                    }
                    o.remaining -= 1;
                    o.inflight += 1;
                    Purpose::Active
                }
                _ => return,
            };
            if let Err(f) = self.open(purpose, now) {
                self.error(&f);
                self.open_failed(purpose);
            }
        }
    }

    /// Bookkeeping for a connection that failed before logging in.
    fn open_failed(&mut self, purpose: Purpose) {
        match (&mut self.job, purpose) {
            (Job::Idle(j), Purpose::Idle) => {
                j.opener.inflight -= 1;
                j.failed += 1;
            }
            (Job::Run(r), Purpose::Active) => {
                if r.state == RunState::Preparing {
                    r.opener.inflight -= 1;
                    r.setup_failed += 1;
                } else {
                    r.opener.inflight = r.opener.inflight.saturating_sub(1);
                    if r.state == RunState::Running {
                        r.restart_at.push(Instant::now() + RECONNECT_DELAY);
                    }
                }
            }
            (Job::Run(r), Purpose::Storm) => {
                r.loops -= 1;
                r.failed += 1;
                if r.state == RunState::Running {
                    r.restart_at.push(Instant::now() + STORM_RETRY_DELAY);
                }
            }
            _ => {}
        }
    }

    fn drive_run(&mut self, now: Instant) {
        let storm = self.cfg.mode == Mode::Storm;
        let Job::Run(r) = &mut self.job else {
            return;
        };
        match r.state {
            RunState::Running => {
                // Restarts (storm loops, replacement connections).
                let mut due = 0;
                r.restart_at.retain(|&t| {
                    if t <= now {
                        due += 1;
                        false
                    } else {
                        true
                    }
                });
                if now >= r.end {
                    r.state = RunState::Draining;
                    let grace = Duration::from_secs_f64(if storm {
                        self.cfg.connect_timeout + self.cfg.query_timeout
                    } else {
                        self.cfg.query_timeout
                    });
                    r.drain_deadline = now + grace;
                    r.restart_at.clear();
                    // Nothing in flight: finish now rather than at the next wake-up.
                    return self.drive_run(now);
                }
                for _ in 0..due {
                    let purpose = if storm {
                        Purpose::Storm
                    } else {
                        Purpose::Active
                    };
                    if let Job::Run(r) = &mut self.job {
                        if storm {
                            r.loops += 1;
                        } else {
                            r.opener.inflight += 1;
                            r.reconnects += 1;
                        }
                    }
                    if let Err(f) = self.open(purpose, now) {
                        self.error(&f);
                        self.open_failed(purpose);
                    }
                }
                if !storm {
                    self.dispatch(now);
                }
            }
            RunState::Draining => {
                let done = if storm { r.loops == 0 } else { r.busy == 0 };
                if done || now >= r.drain_deadline {
                    self.finish_run(now);
                }
            }
            _ => {}
        }
    }

    /// Starts due operations on ready connections.
    fn dispatch(&mut self, now: Instant) {
        loop {
            let (slot, intended) = {
                let Job::Run(r) = &mut self.job else { return };
                if r.state != RunState::Running {
                    return;
                }
                // Skip entries whose connection is gone (defensive: failures remove them).
                while r.ready.front().is_some_and(|&s| self.conns[s].is_none()) {
                    r.ready.pop_front();
                }
                let Some(&slot) = r.ready.front() else {
                    return;
                };
                let Some(intended) = r.pacer.take(now) else {
                    return;
                };
                r.ready.pop_front();
                r.busy += 1;
                (slot, intended)
            };
            let mut c = self.conns[slot].take().expect("checked above");
            let id = self.random_id();
            c.op = if self.cfg.mode == Mode::Trx {
                Op::Trx {
                    intended,
                    sent: now,
                    step: 0,
                    id,
                }
            } else {
                Op::Select {
                    intended,
                    sent: now,
                }
            };
            self.build_statement(&c.op);
            c.deadline = now + Duration::from_secs_f64(self.cfg.query_timeout);
            self.send_statement(slot, c, now);
        }
    }

    fn random_id(&mut self) -> u32 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        1 + (r % self.cfg.table_size) as u32
    }

    /// Writes the SQL for the operation's current step into `self.sql`.
    fn build_statement(&mut self, op: &Op) {
        self.sql.clear();
        let select = |sql: &mut Vec<u8>, id: u32, q: &Option<String>| match q {
            Some(q) => sql.extend_from_slice(q.as_bytes()),
            None => {
                let _ = write!(sql, "SELECT v FROM sluice_load WHERE id = {id}");
            }
        };
        match *op {
            Op::Select { .. } | Op::Storm { .. } => {
                let id = self.random_id();
                select(&mut self.sql, id, &self.cfg.query);
            }
            Op::Trx { step, id, .. } => match step {
                0 => self.sql.extend_from_slice(b"BEGIN"),
                1 => select(&mut self.sql, id, &None),
                2 => {
                    let v = self.rng >> 40;
                    let _ = write!(
                        self.sql,
                        "UPDATE sluice_load SET v = 'u{v:x}' WHERE id = {id}"
                    );
                }
                3 => self.sql.extend_from_slice(b"COMMIT"),
                _ => self.sql.extend_from_slice(b"ROLLBACK"),
            },
            Op::None => {}
        }
    }

    /// Encodes `self.sql` as COM_QUERY on `c` and sends it; puts `c` back (or fails it).
    fn send_statement(&mut self, slot: usize, mut c: Conn, now: Instant) {
        self.out.clear();
        c.proto.query(&self.sql, &mut self.out);
        let out = std::mem::take(&mut self.out);
        let r = self.send_on(slot, &mut c, &out);
        self.out = out;
        self.conns[slot] = Some(c);
        if let Err(f) = r {
            self.fail(slot, f, now);
        }
    }

    fn send_on(&mut self, slot: usize, c: &mut Conn, bytes: &[u8]) -> Result<(), Failure> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !c.wbuf.is_empty() {
            c.wbuf.extend_from_slice(bytes);
            return Ok(());
        }
        let n = match sys::send(c.fd, bytes) {
            Ok(n) => n,
            Err(libc::EAGAIN) => 0,
            Err(e) => {
                return Err(Failure::Io {
                    errno: e,
                    phase: c.phase(),
                })
            }
        };
        if n < bytes.len() {
            c.wbuf.extend_from_slice(&bytes[n..]);
            let _ = self.ep.modify(c.fd, sys::IN | sys::OUT, self.token(slot));
        }
        Ok(())
    }

    fn token(&self, slot: usize) -> u64 {
        (u64::from(self.gens[slot]) << 32) | slot as u64
    }

    // ------------------------------------------------------------------ connections

    /// Creates a socket, binds the next free source slot, starts connecting and registers it.
    fn open(&mut self, purpose: Purpose, now: Instant) -> Result<(), Failure> {
        let max_attempts = self.spec.slots.len.clamp(1, 50_000);
        let mut last = 0;
        for _ in 0..max_attempts {
            let fd = sys::tcp_socket().map_err(|e| Failure::Io {
                errno: e,
                phase: Phase::Connect,
            })?;
            if self.cfg.source_bind {
                let slot = self.spec.slots.take();
                let Some(src) = self.plan.addr(slot) else {
                    sys::close(fd);
                    return Err(Failure::NoSourceAddress(libc::EADDRNOTAVAIL));
                };
                match sys::bind_v4(fd, src) {
                    Ok(()) => {}
                    Err(e @ (libc::EADDRINUSE | libc::EADDRNOTAVAIL)) => {
                        sys::close(fd);
                        self.addr_retries += 1;
                        last = e;
                        continue;
                    }
                    Err(e) => {
                        sys::close(fd);
                        return Err(Failure::Io {
                            errno: e,
                            phase: Phase::Connect,
                        });
                    }
                }
            }
            match sys::connect_v4(fd, self.cfg.target) {
                Ok(()) => {}
                Err(libc::EADDRNOTAVAIL) if self.cfg.source_bind => {
                    // This (source, destination) 4-tuple is still in use: next slot.
                    sys::close(fd);
                    self.addr_retries += 1;
                    last = libc::EADDRNOTAVAIL;
                    continue;
                }
                Err(libc::ECONNREFUSED) => {
                    sys::close(fd);
                    return Err(Failure::Refused);
                }
                Err(e) => {
                    sys::close(fd);
                    return Err(Failure::Io {
                        errno: e,
                        phase: Phase::Connect,
                    });
                }
            }
            let slot = self.alloc_slot();
            let token = self.token(slot);
            if let Err(e) = self.ep.add(fd, sys::IN, token) {
                sys::close(fd);
                self.free.push(slot);
                return Err(Failure::Io {
                    errno: e,
                    phase: Phase::Connect,
                });
            }
            self.conns[slot] = Some(Conn {
                fd,
                purpose,
                proto: Proto::new(),
                rbuf: Vec::new(),
                wbuf: Vec::new(),
                t_connect: now,
                deadline: now + Duration::from_secs_f64(self.cfg.connect_timeout),
                op: Op::None,
            });
            return Ok(());
        }
        Err(Failure::NoSourceAddress(last))
    }

    fn alloc_slot(&mut self) -> usize {
        if let Some(s) = self.free.pop() {
            s
        } else {
            self.conns.push(None);
            self.gens.push(0);
            self.conns.len() - 1
        }
    }

    fn release_slot(&mut self, slot: usize) {
        self.conns[slot] = None;
        self.gens[slot] = self.gens[slot].wrapping_add(1);
        self.free.push(slot);
    }

    fn on_conn_event(&mut self, token: u64, bits: u32) {
        let slot = (token & 0xffff_ffff) as usize;
        if slot >= self.conns.len() || u64::from(self.gens[slot]) != token >> 32 {
            return; // stale event for a closed connection
        }
        let Some(mut c) = self.conns[slot].take() else {
            return;
        };
        let now = Instant::now();
        if bits & sys::OUT != 0 && !c.wbuf.is_empty() {
            match sys::send(c.fd, &c.wbuf) {
                Ok(n) => {
                    c.wbuf.drain(..n);
                    if c.wbuf.is_empty() {
                        let _ = self.ep.modify(c.fd, sys::IN, token);
                    }
                }
                Err(libc::EAGAIN) => {}
                Err(e) => {
                    let f = Failure::Io {
                        errno: e,
                        phase: c.phase(),
                    };
                    self.conns[slot] = Some(c);
                    self.fail(slot, f, now);
                    return;
                }
            }
        }
        if bits & (sys::IN | sys::ERR | sys::HUP) == 0 {
            self.conns[slot] = Some(c);
            return;
        }
        if bits & sys::ERR != 0 {
            let e = sys::so_error(c.fd);
            if e != 0 {
                let f = classify_errno(e, &c);
                self.conns[slot] = Some(c);
                self.fail(slot, f, now);
                return;
            }
        }
        // Read what is there.
        loop {
            match sys::recv(c.fd, &mut self.scratch) {
                Ok(0) => {
                    let f = Failure::Closed { phase: c.phase() };
                    self.conns[slot] = Some(c);
                    self.fail(slot, f, now);
                    return;
                }
                Ok(n) => {
                    c.rbuf.extend_from_slice(&self.scratch[..n]);
                    if n < self.scratch.len() {
                        break;
                    }
                }
                Err(libc::EINTR) => continue,
                Err(libc::EAGAIN) => break,
                Err(e) => {
                    let f = classify_errno(e, &c);
                    self.conns[slot] = Some(c);
                    self.fail(slot, f, now);
                    return;
                }
            }
        }
        if c.rbuf.is_empty() {
            self.conns[slot] = Some(c);
            return;
        }
        self.out.clear();
        let mut out = std::mem::take(&mut self.out);
        let r = c.proto.on_data(&mut c.rbuf, &self.login, &mut out);
        let sent = match &r {
            Ok(_) => self.send_on(slot, &mut c, &out),
            Err(_) => Ok(()),
        };
        out.clear();
        self.out = out;
        if c.rbuf.is_empty() && c.rbuf.capacity() > 0 && c.purpose != Purpose::Active {
            c.rbuf = Vec::new();
        }
        self.conns[slot] = Some(c);
        if let Err(f) = sent {
            self.fail(slot, f, now);
            return;
        }
        match r {
            Err(f) => self.fail(slot, f, now),
            Ok(Event::Pending) => {}
            Ok(Event::LoggedIn) => self.on_logged_in(slot, now),
            Ok(Event::Response(res)) => self.on_response(slot, res, now),
        }
    }

    fn on_logged_in(&mut self, slot: usize, now: Instant) {
        let c = self.conns[slot].as_mut().expect("caller put it back");
        let purpose = c.purpose;
        let us = now.duration_since(c.t_connect).as_micros() as u64;
        *self
            .plugins
            .entry(c.proto.plugin().to_string())
            .or_insert(0) += 1;
        self.connects += 1;
        match purpose {
            Purpose::Idle => {
                // Park: out of epoll and the slab; only the descriptor remains.
                let fd = c.fd;
                let _ = self.ep.del(fd);
                self.idle_fds.push(fd);
                self.release_slot(slot);
                if let Job::Idle(j) = &mut self.job {
                    j.opener.inflight -= 1;
                    j.established += 1;
                    hist::record(&mut j.connect_us, us);
                }
            }
            Purpose::Active => {
                c.rbuf = Vec::with_capacity(512);
                c.deadline = far_future(now);
                if let Job::Run(r) = &mut self.job {
                    r.opener.inflight = r.opener.inflight.saturating_sub(1);
                    r.ready.push_back(slot);
                    if r.state == RunState::Preparing {
                        r.established += 1;
                    } else {
                        r.connects += 1;
                    }
                } else {
                    // No run any more: close it.
                    self.close_conn(slot, true);
                }
            }
            Purpose::Storm => {
                let mut c = self.conns[slot].take().expect("present");
                c.op = Op::Storm { t0: c.t_connect };
                c.deadline = now + Duration::from_secs_f64(self.cfg.query_timeout);
                if let Job::Run(r) = &mut self.job {
                    r.connects += 1;
                }
                self.build_statement(&c.op);
                self.send_statement(slot, c, now);
            }
        }
    }

    fn on_response(&mut self, slot: usize, res: Result<(), Failure>, now: Instant) {
        let op = self.conns[slot].as_ref().map(|c| c.op).unwrap_or(Op::None);
        if let Err(f) = &res {
            self.error(f);
        }
        match op {
            Op::Select { intended, sent } => {
                self.op_done(slot, res.is_ok(), intended, sent, now);
            }
            Op::Trx {
                intended,
                sent,
                step,
                id,
            } => {
                let next = match (step, res.is_ok()) {
                    (0..=2, true) => Some(step + 1),
                    (3, true) => None,
                    (1 | 2, false) => Some(4), // roll back, then count the failure
                    _ => None,
                };
                let failed_before = step == 4;
                match next {
                    Some(next_step) => {
                        if next_step == 4 {
                            self.count_op(false, intended, sent, now);
                        }
                        let mut c = self.conns[slot].take().expect("present");
                        c.op = Op::Trx {
                            intended,
                            sent,
                            step: next_step,
                            id,
                        };
                        self.build_statement(&c.op);
                        self.send_statement(slot, c, now);
                    }
                    None if failed_before => self.op_done_uncounted(slot),
                    None => self.op_done(slot, res.is_ok(), intended, sent, now),
                }
            }
            Op::Storm { t0 } => {
                let ok = res.is_ok();
                if let Job::Run(r) = &mut self.job {
                    if ok {
                        r.ok += 1;
                        hist::record(&mut r.latency, now.duration_since(t0).as_micros() as u64);
                    } else {
                        r.failed += 1;
                    }
                    r.loops -= 1;
                    if r.state == RunState::Running {
                        r.restart_at
                            .push(if ok { now } else { now + STORM_RETRY_DELAY });
                    }
                }
                self.close_conn(slot, true);
            }
            Op::None => {
                // A response without a statement cannot happen (Proto refuses it); be safe.
                self.close_conn(slot, false);
            }
        }
    }

    fn count_op(&mut self, ok: bool, intended: Instant, sent: Instant, now: Instant) {
        if let Job::Run(r) = &mut self.job {
            if ok {
                r.ok += 1;
                hist::record(
                    &mut r.latency,
                    now.duration_since(intended).as_micros() as u64,
                );
                hist::record(&mut r.service, now.duration_since(sent).as_micros() as u64);
            } else {
                r.failed += 1;
            }
        }
    }

    fn op_done(&mut self, slot: usize, ok: bool, intended: Instant, sent: Instant, now: Instant) {
        self.count_op(ok, intended, sent, now);
        self.op_done_uncounted(slot);
    }

    fn op_done_uncounted(&mut self, slot: usize) {
        let far = far_future(Instant::now());
        if let Some(c) = self.conns[slot].as_mut() {
            c.op = Op::None;
            c.deadline = far;
        }
        if let Job::Run(r) = &mut self.job {
            r.busy = r.busy.saturating_sub(1);
            r.ready.push_back(slot);
        }
    }

    /// A connection failed: count it, close it, and do the bookkeeping of what it was doing.
    fn fail(&mut self, slot: usize, f: Failure, _now: Instant) {
        self.error(&f);
        let Some(c) = self.conns[slot].as_ref() else {
            return;
        };
        let purpose = c.purpose;
        let op = c.op;
        let logged_in = c.proto.is_ready() || !matches!(op, Op::None);
        self.close_conn(slot, false);
        if !logged_in {
            self.open_failed(purpose);
            return;
        }
        let Job::Run(r) = &mut self.job else {
            return;
        };
        r.ready.retain(|&s| s != slot);
        match (purpose, op) {
            (Purpose::Storm, _) => {
                r.loops -= 1;
                r.failed += 1;
                if r.state == RunState::Running {
                    r.restart_at.push(Instant::now() + STORM_RETRY_DELAY);
                }
            }
            (Purpose::Active, op) => {
                if let Op::Select { .. } | Op::Trx { .. } = op {
                    r.busy = r.busy.saturating_sub(1);
                    if !matches!(op, Op::Trx { step: 4, .. }) {
                        r.failed += 1;
                    }
                }
                match r.state {
                    RunState::Running => r.restart_at.push(Instant::now() + RECONNECT_DELAY),
                    RunState::Preparing | RunState::Ready => {
                        r.established = r.established.saturating_sub(1);
                        r.setup_failed += 1;
                    }
                    RunState::Draining => {}
                }
            }
            (Purpose::Idle, _) => {}
        }
    }

    fn close_conn(&mut self, slot: usize, polite: bool) {
        if let Some(c) = self.conns[slot].as_ref() {
            if polite {
                let _ = sys::send(c.fd, &quit_packet());
            }
            sys::close(c.fd);
        }
        self.release_slot(slot);
    }

    fn check_done(&mut self, now: Instant) {
        match &mut self.job {
            Job::Idle(j) => {
                if !j.reported && j.established + j.failed >= j.target {
                    j.reported = true;
                    let msg = IdleOpened {
                        target: j.target,
                        established: j.established,
                        failed: j.failed,
                        seconds: now.duration_since(j.started).as_secs_f64(),
                        addr_retries: self.addr_retries,
                        connect_us: hist::to_data(&j.connect_us),
                        plugins: self.plugins.clone(),
                    };
                    self.send_progress();
                    self.report(ToParent::IdleOpened(msg));
                }
            }
            Job::Run(r) => {
                if r.state == RunState::Preparing && r.established + r.setup_failed >= r.target {
                    r.state = RunState::Ready;
                    let (established, failed) = (r.established, r.setup_failed);
                    self.send_progress();
                    self.report(ToParent::ActiveReady {
                        established,
                        failed,
                    });
                }
            }
            Job::None => {}
        }
    }

    fn finish_run(&mut self, now: Instant) {
        // Close the active set. An operation still in flight here outlived the drain deadline:
        // that is a timeout. Connections still logging in (replacements, storm cycles) are
        // abandoned without counting.
        let mut timed_out = 0;
        for slot in 0..self.conns.len() {
            let Some(c) = self.conns[slot].as_ref() else {
                continue;
            };
            let in_flight = !matches!(c.op, Op::None | Op::Trx { step: 4, .. });
            let ready = c.proto.is_ready();
            if in_flight {
                timed_out += 1;
                self.error(&Failure::QueryTimeout);
            }
            self.close_conn(slot, ready);
        }
        let Job::Run(r) = std::mem::replace(&mut self.job, Job::None) else {
            return;
        };
        let connections = if self.cfg.mode == Mode::Storm {
            self.spec.active
        } else {
            r.established
        };
        let res = RunResult {
            connections,
            ok: r.ok,
            failed: r.failed + timed_out,
            seconds: now.duration_since(r.started).as_secs_f64(),
            missed: r.pacer.missed(r.end),
            latency_us: hist::to_data(&r.latency),
            service_us: hist::to_data(&r.service),
            connects: r.connects,
            reconnects: r.reconnects,
            addr_retries: self.addr_retries,
            plugins: self.plugins.clone(),
        };
        self.send_progress();
        self.report(ToParent::RunDone(res));
    }

    /// Peeks at every idle connection: a live one has nothing to read (EAGAIN). Dead ones are
    /// counted, closed and dropped. Returns (alive, dead).
    fn check_idle(&mut self) -> (u64, u64) {
        let mut buf = [0u8; 64];
        let mut dead = 0;
        let mut i = 0;
        while i < self.idle_fds.len() {
            let fd = self.idle_fds[i];
            let failure = match sys::peek(fd, &mut buf) {
                Err(libc::EAGAIN) => None,
                Ok(0) => Some(Failure::Closed { phase: Phase::Idle }),
                Ok(n) => Some(idle_data_failure(&buf[..n])),
                Err(e) => Some(Failure::Io {
                    errno: e,
                    phase: Phase::Idle,
                }),
            };
            match failure {
                None => i += 1,
                Some(f) => {
                    self.error(&f);
                    sys::close(fd);
                    self.idle_fds.swap_remove(i);
                    dead += 1;
                }
            }
        }
        (self.idle_fds.len() as u64, dead)
    }

    fn close_everything(&mut self) {
        for fd in self.idle_fds.drain(..) {
            sys::close(fd);
        }
        for slot in 0..self.conns.len() {
            if let Some(c) = self.conns[slot].take() {
                sys::close(c.fd);
            }
        }
        self.job = Job::None;
    }
}

fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365)
}

fn classify_errno(e: i32, c: &Conn) -> Failure {
    match (e, c.phase()) {
        (libc::ECONNREFUSED, _) => Failure::Refused,
        (libc::ETIMEDOUT, Phase::Login) if !sys::is_connected(c.fd) => Failure::ConnectTimeout,
        (_, Phase::Login) if !sys::is_connected(c.fd) => Failure::Io {
            errno: e,
            phase: Phase::Connect,
        },
        (_, phase) => Failure::Io { errno: e, phase },
    }
}

/// The server sent something to an idle connection: MySQL 8 sends ERR 4031 before closing an
/// idle session; anything else is unsolicited.
fn idle_data_failure(b: &[u8]) -> Failure {
    if b.len() > 4 && b[4] == ERR {
        if let Ok(e) = ErrPacket::decode(&b[4..]) {
            return Failure::IdleError {
                code: e.code,
                message: String::from_utf8_lossy(e.message).into_owned(),
            };
        }
    }
    Failure::Protocol {
        phase: Phase::Idle,
        what: format!("{} unsolicited bytes", b.len()),
    }
}

/// Which role's processes a worker index belongs to (for logs).
pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Idle => "idle",
        Role::Active => "active",
    }
}
