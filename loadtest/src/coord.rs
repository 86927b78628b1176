//! The coordinator: prepares, forks the workers, walks them through the phases of a run over
//! their sockets, shows progress, samples resources, and aggregates the report.
//!
//! Phases: [baseline run] → open idle → settle → steady sample → hold (idle mode) or run
//! (select/trx/storm) → end sample → check and close idle → stop workers. SIGINT/SIGTERM once
//! winds the current phase down and skips to the end (results are still collected); twice aborts.

use crate::cli::{Config, Mode};
use crate::hist;
use crate::ipc::{self, IdleClosed, IdleOpened, Progress, RunResult, ToParent, ToWorker};
use crate::plan::{self, Role, WorkerSpec};
use crate::report::{self, IdleReport, Processes, Report, Resources, RunReport};
use crate::sample::{self, Sample};
use crate::syncconn::{self, SyncConn};
use crate::sys;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A worker that sends nothing (not even its 1 s heartbeat) for this long is killed.
const WATCHDOG: Duration = Duration::from_secs(30);

/// How long `wait_for` waits.
#[derive(Clone, Copy)]
enum Limit {
    At(Instant),
    /// Until nothing has progressed for this long.
    Stall(Duration),
}

struct Handle {
    spec: WorkerSpec,
    pid: libc::pid_t,
    fd: i32,
    reader: ipc::Reader,
    progress: Progress,
    alive: bool,
    stopping: bool,
    last_msg: Instant,
    inbox: VecDeque<ToParent>,
}

pub struct Coord<'a> {
    cfg: &'a Config,
    workers: Vec<Handle>,
    phase: &'static str,
    t0: Instant,
    sig_seen: u32,
    interrupted: bool,
    aborted: bool,
    tty: bool,
    next_display: Instant,
    prev: (Instant, u64, u64),
    shown: bool,
    warnings: Vec<String>,
    own_errors: BTreeMap<String, u64>,
    own_samples: BTreeMap<String, String>,
    lost: u64,
}

fn spawn(cfg: &Config, specs: Vec<WorkerSpec>) -> Result<Vec<Handle>, String> {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let parent = sys::getpid();
    let mut handles: Vec<Handle> = Vec::new();
    for spec in specs {
        let (a, b) =
            sys::socketpair().map_err(|e| format!("socketpair: {}", sys::errno_name(e)))?;
        match sys::fork() {
            Err(e) => {
                sys::close(a);
                sys::close(b);
                for h in &handles {
                    sys::kill(h.pid, libc::SIGKILL);
                }
                return Err(format!("fork: {}", sys::errno_name(e)));
            }
            Ok(sys::Fork::Child) => {
                for h in &handles {
                    sys::close(h.fd);
                }
                sys::close(a);
                sys::worker_process_setup(parent);
                // A panic must end this process, never unwind into the coordinator's code that
                // this forked child also contains.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    crate::worker::run(cfg, spec, b)
                }));
                let _ = r;
                sys::exit_now(101);
            }
            Ok(sys::Fork::Parent(pid)) => {
                sys::close(b);
                handles.push(Handle {
                    spec,
                    pid,
                    fd: a,
                    reader: ipc::Reader::default(),
                    progress: Progress::default(),
                    alive: true,
                    stopping: false,
                    last_msg: Instant::now(),
                    inbox: VecDeque::new(),
                });
            }
        }
    }
    Ok(handles)
}

/// Runs the whole thing; returns the exit status.
pub fn run(cfg: &Config) -> i32 {
    let (started_unix, started_at) = report::now_stamp();
    let t0 = Instant::now();
    let mut warnings = Vec::new();

    let specs = match plan::layout(
        cfg.idle,
        cfg.active,
        cfg.active_procs,
        cfg.per_process,
        u64::from(cfg.per_ip),
        if cfg.mode == Mode::Storm {
            cfg.storm_ips
        } else {
            1
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sluice-load: {e}");
            return 2;
        }
    };
    if cfg.source_bind {
        let addr_plan =
            plan::AddrPlan::new(cfg.src_base, cfg.per_ip, cfg.src_port_lo, cfg.src_port_hi)
                .expect("validated");
        if plan::slots_used(&specs) > addr_plan.capacity() {
            eprintln!(
                "sluice-load: not enough source addresses after --src-base {} for this run",
                cfg.src_base
            );
            return 2;
        }
    }

    let login = cfg.login();
    let mut table_rows_inserted = None;
    let mut prep_error: Option<crate::proto::Failure> = None;
    if cfg.prepare_table {
        let r = SyncConn::connect(
            SocketAddr::V4(cfg.target),
            &login,
            Duration::from_secs_f64(cfg.connect_timeout),
        )
        .and_then(|mut c| {
            let n = syncconn::prepare_table(&mut c, cfg.table_size);
            c.quit();
            n
        });
        match r {
            Ok(n) => table_rows_inserted = Some(n),
            Err(f) => {
                eprintln!("sluice-load: --prepare-table failed: {}", f.message());
                prep_error = Some(f);
            }
        }
    }

    let mut c = Coord {
        cfg,
        workers: Vec::new(),
        phase: "start",
        t0,
        sig_seen: 0,
        interrupted: false,
        aborted: false,
        tty: sys::stderr_is_tty(),
        next_display: t0,
        prev: (t0, 0, 0),
        shown: false,
        warnings: Vec::new(),
        own_errors: BTreeMap::new(),
        own_samples: BTreeMap::new(),
        lost: 0,
    };
    warnings.append(&mut c.warnings);
    if let Some(f) = &prep_error {
        c.own_error(&format!("prepare_{}", f.kind()), &f.message());
    }

    let mut samples: Vec<Sample> = Vec::new();
    samples.push(c.sample("before"));

    let (mut idle_rep, mut baseline, mut run_rep) = (None, None, None);
    let mut steady_idx = None;
    if prep_error.is_none() {
        match spawn(cfg, specs) {
            Ok(h) => c.workers = h,
            Err(e) => {
                eprintln!("sluice-load: {e}");
                c.own_error("spawn_failed", &e);
            }
        }
    }
    let generator_start: u64 = c.workers.iter().filter_map(|w| sample::rss_of(w.pid)).sum();
    let idle_idx: Vec<usize> = c.idx(Role::Idle);
    let active_idx: Vec<usize> = c.idx(Role::Active);

    if !c.workers.is_empty() {
        if cfg.baseline && !c.stop_requested() {
            baseline = c.run_active(&active_idx, "baseline");
        }
        let mut idle_up_at = None;
        if cfg.idle > 0 && !c.stop_requested() {
            let (rep, up) = c.open_idle(&idle_idx);
            let none_up = rep.established == 0;
            idle_rep = Some(rep);
            idle_up_at = Some(up);
            if none_up {
                c.warnings
                    .push("no idle connection could be established".into());
            }
            if !c.stop_requested() && cfg.settle > 0.0 && !none_up {
                c.phase = "settle";
                c.pump_until(
                    Instant::now() + Duration::from_secs_f64(cfg.settle),
                    &idle_idx,
                );
            }
            samples.push(c.sample("steady"));
            steady_idx = Some(samples.len() - 1);
        }
        let idle_none_up = idle_rep.as_ref().is_some_and(|r| r.established == 0);
        if cfg.mode == Mode::Idle {
            if !c.stop_requested() && !idle_none_up {
                c.phase = "hold";
                let until = if cfg.hold > 0.0 {
                    Instant::now() + Duration::from_secs_f64(cfg.hold)
                } else {
                    Instant::now() + Duration::from_secs(100 * 365 * 86_400)
                };
                c.pump_until(until, &idle_idx);
            }
        } else if !c.stop_requested() {
            let label = if cfg.baseline { "with_idle" } else { "run" };
            run_rep = c.run_active(&active_idx, label);
        }
        samples.push(c.sample("end"));
        if let (Some(rep), Some(up)) = (idle_rep.as_mut(), idle_up_at) {
            let rep: &mut IdleReport = rep;
            rep.held_seconds = up.elapsed().as_secs_f64();
            c.close_idle(&idle_idx, rep);
        }
        c.stop_all();
    }
    c.clear_line();

    // ------------------------------------------------------------------ the report
    let mut errors = c.own_errors.clone();
    let mut error_samples = c.own_samples.clone();
    for w in &c.workers {
        for (k, n) in &w.progress.errors {
            *errors.entry(k.clone()).or_insert(0) += n;
        }
        for (k, m) in &w.progress.samples {
            error_samples.entry(k.clone()).or_insert_with(|| m.clone());
        }
    }
    let errors_total: u64 = errors.values().sum();
    let mut resources = Resources {
        samples,
        generator_rss_start_bytes: generator_start,
        ..Resources::default()
    };
    if let (Some(si), Some(i)) = (steady_idx, &idle_rep) {
        let (b, s) = (&resources.samples[0], &resources.samples[si]);
        let n = i.established;
        if !s.pids.is_empty() {
            resources.rss_per_conn_bytes = sample::per_conn(b.rss_bytes, s.rss_bytes, n);
        }
        resources.slab_per_conn_bytes = sample::per_conn(b.slab_bytes, s.slab_bytes, n);
        resources.sunreclaim_per_conn_bytes =
            sample::per_conn(b.sunreclaim_bytes, s.sunreclaim_bytes, n);
        resources.generator_rss_per_conn_bytes =
            sample::per_conn(generator_start, s.generator_rss_bytes, n);
    }
    for s in &resources.samples {
        if !s.pids_missing.is_empty() {
            warnings.push(format!(
                "sample {}: could not read pids {:?}",
                s.label, s.pids_missing
            ));
        }
    }
    warnings.append(&mut c.warnings);
    let p99_ratio = match (&baseline, &run_rep) {
        (Some(b), Some(r)) if b.latency_us.p99 > 0 && r.latency_us.count > 0 => {
            Some(r.latency_us.p99 as f64 / b.latency_us.p99 as f64)
        }
        _ => None,
    };
    let status = if c.aborted {
        "aborted"
    } else if c.interrupted {
        "interrupted"
    } else {
        "completed"
    };
    let failed = errors_total > 0 || c.lost > 0 || c.aborted;
    let exit_status = i32::from(failed);
    let (finished_unix, finished_at) = report::now_stamp();
    let rep = Report {
        tool: "sluice-load",
        version: env!("CARGO_PKG_VERSION"),
        started_at,
        finished_at,
        started_unix,
        finished_unix,
        status: status.into(),
        exit_status,
        config: cfg.clone(),
        processes: Processes {
            idle: idle_idx.len() as u64,
            active: active_idx.len() as u64,
            per_process: cfg.per_process,
            pids: c.workers.iter().map(|w| w.pid).collect(),
            lost: c.lost,
        },
        table_rows_inserted,
        idle: idle_rep,
        baseline,
        run: run_rep,
        p99_ratio,
        errors_total,
        errors,
        error_samples,
        resources,
        warnings,
    };
    print!("{}", rep.summary());
    let _ = std::io::stdout().flush();
    if let Some(path) = &cfg.json {
        let body = serde_json::to_string_pretty(&rep).expect("report serialises");
        if let Err(e) = std::fs::write(path, body + "\n") {
            eprintln!("sluice-load: cannot write {}: {e}", path.display());
            return 1;
        }
    }
    exit_status
}

impl<'a> Coord<'a> {
    fn idx(&self, role: Role) -> Vec<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.spec.role == role)
            .map(|(i, _)| i)
            .collect()
    }

    fn stop_requested(&self) -> bool {
        self.interrupted || self.aborted
    }

    fn own_error(&mut self, kind: &str, msg: &str) {
        *self.own_errors.entry(kind.to_string()).or_insert(0) += 1;
        self.own_samples
            .entry(kind.to_string())
            .or_insert_with(|| msg.to_string());
    }

    fn sample(&mut self, label: &str) -> Sample {
        let pids =
            sample::pids_to_sample(&self.cfg.sample_pids, self.cfg.sample_pids_from.as_deref());
        let gen: Vec<i32> = self
            .workers
            .iter()
            .filter(|w| w.alive)
            .map(|w| w.pid)
            .collect();
        let mut s = sample::take(label, &pids, &gen);
        if let Some(b) = &self.cfg.sample_backend {
            let login = crate::proto::LoginConfig::new(
                &self.cfg.backend_user,
                &self.cfg.backend_password,
                None,
                None,
                true,
            );
            match crate::cli::resolve_v4(b)
                .map_err(|e| e.to_string())
                .and_then(|a| {
                    syncconn::threads_connected(SocketAddr::V4(a), &login).map_err(|f| f.message())
                }) {
                Ok(n) => s.backend_threads_connected = Some(n),
                Err(e) => self
                    .warnings
                    .push(format!("sample {label}: backend Threads_connected: {e}")),
            }
        }
        s
    }

    /// CPU seconds so far of the sampled processes (`None` without --sample-pid) and of the
    /// workers `idx`.
    fn cpu(&self, idx: &[usize]) -> (Option<f64>, f64) {
        let pids =
            sample::pids_to_sample(&self.cfg.sample_pids, self.cfg.sample_pids_from.as_deref());
        let sampled = (!pids.is_empty()).then(|| sample::cpu_sum(&pids));
        let gen: Vec<i32> = idx.iter().map(|&i| self.workers[i].pid).collect();
        (sampled, sample::cpu_sum(&gen))
    }

    fn send(&mut self, idx: &[usize], cmd: &ToWorker) {
        for &i in idx {
            let w = &mut self.workers[i];
            if w.alive && ipc::send(w.fd, cmd).is_err() {
                self.worker_lost(i, "its socket failed");
            }
        }
    }

    fn worker_lost(&mut self, i: usize, why: &str) {
        let w = &mut self.workers[i];
        if !w.alive {
            return;
        }
        w.alive = false;
        // What it was doing, for the post-mortem: scheduler state and kernel wait channel.
        let state = crate::sample::proc_state(w.pid);
        sys::kill(w.pid, libc::SIGKILL);
        let _ = sys::try_wait(w.pid);
        let held = w.progress.idle_held;
        let msg = format!(
            "worker {} (pid {}, {}) lost in phase {}: {why}; it held {held} idle connections; \
             it was {state}",
            w.spec.index,
            w.pid,
            crate::worker::role_name(w.spec.role),
            self.phase
        );
        self.lost += 1;
        self.own_error("worker_lost", &msg);
        self.warnings.push(msg);
    }

    /// Reads worker messages for at most `timeout`, updates progress, handles signals and dead
    /// or silent workers, refreshes the progress line.
    fn pump(&mut self, timeout: Duration) {
        let live: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].alive)
            .collect();
        let fds: Vec<i32> = live.iter().map(|&i| self.workers[i].fd).collect();
        let ready = if fds.is_empty() {
            std::thread::sleep(timeout.min(Duration::from_millis(200)));
            Vec::new()
        } else {
            sys::poll_readable(&fds, timeout)
        };
        let now = Instant::now();
        for k in ready {
            let i = live[k];
            let fd = self.workers[i].fd;
            let eof = matches!(self.workers[i].reader.fill(fd), ipc::Fill::Eof);
            self.workers[i].last_msg = now;
            loop {
                let m = self.workers[i].reader.next::<ToParent>();
                match m {
                    None => break,
                    Some(Ok(ToParent::Progress(p))) => self.workers[i].progress = p,
                    Some(Ok(ToParent::Fatal(e))) => {
                        let msg = format!("worker {}: {e}", self.workers[i].spec.index);
                        self.warnings.push(msg);
                    }
                    Some(Ok(m)) => self.workers[i].inbox.push_back(m),
                    Some(Err(e)) => {
                        self.worker_lost(i, &format!("bad message: {e}"));
                        break;
                    }
                }
            }
            if eof && self.workers[i].alive {
                if self.workers[i].stopping {
                    self.workers[i].alive = false;
                } else {
                    self.worker_lost(i, "it exited");
                }
            }
        }
        for i in 0..self.workers.len() {
            let w = &self.workers[i];
            if w.alive && !w.stopping && now.duration_since(w.last_msg) > WATCHDOG {
                self.worker_lost(i, "no message for 30 s");
            }
        }
        let n = sys::signals();
        if n > self.sig_seen {
            self.sig_seen = n;
            if !self.interrupted {
                self.interrupted = true;
                self.clear_line();
                eprintln!("sluice-load: interrupted: winding down (again to abort)");
                let all: Vec<usize> = (0..self.workers.len()).collect();
                self.send(&all, &ToWorker::EndRun);
            } else if n >= 2 {
                self.aborted = true;
            }
        }
        self.display(now);
    }

    fn pump_until(&mut self, until: Instant, check_idx: &[usize]) {
        let mut next_check = (self.cfg.idle_check > 0.0)
            .then(|| Instant::now() + Duration::from_secs_f64(self.cfg.idle_check));
        loop {
            let now = Instant::now();
            if now >= until || self.stop_requested() {
                return;
            }
            if let Some(t) = next_check {
                if now >= t {
                    self.send(check_idx, &ToWorker::CheckIdle);
                    next_check = Some(now + Duration::from_secs_f64(self.cfg.idle_check));
                }
            }
            self.pump((until - now).min(Duration::from_millis(200)));
            // Periodic checks only feed the error counts; drop their answers.
            for &i in check_idx {
                self.workers[i]
                    .inbox
                    .retain(|m| !matches!(m, ToParent::IdleChecked(_)));
            }
        }
    }

    /// Waits until each worker of `idx` has sent a message `pick` accepts (or died, or the
    /// deadline passed, or the run was aborted).
    fn wait_for<T>(
        &mut self,
        idx: &[usize],
        limit: Limit,
        pick: impl Fn(&ToParent) -> Option<T>,
    ) -> Vec<Option<T>> {
        let mut got: Vec<Option<T>> = idx.iter().map(|_| None).collect();
        let mut last_sig = u64::MAX;
        let mut deadline = match limit {
            Limit::At(t) => t,
            Limit::Stall(d) => Instant::now() + d,
        };
        loop {
            for (k, &i) in idx.iter().enumerate() {
                if got[k].is_some() {
                    continue;
                }
                let inbox = &mut self.workers[i].inbox;
                if let Some(pos) = inbox.iter().position(|m| pick(m).is_some()) {
                    let m = inbox.remove(pos).expect("position is valid");
                    got[k] = pick(&m);
                }
            }
            let pending = idx
                .iter()
                .zip(&got)
                .any(|(&i, g)| g.is_none() && self.workers[i].alive);
            if !pending || self.aborted {
                return got;
            }
            if let Limit::Stall(d) = limit {
                // Any connection settled or operation done by a pending worker is progress.
                let sig: u64 = idx
                    .iter()
                    .zip(&got)
                    .filter(|(_, g)| g.is_none())
                    .map(|(&i, _)| {
                        let p = &self.workers[i].progress;
                        p.connects + p.ops + p.errors.values().sum::<u64>()
                    })
                    .sum();
                if sig != last_sig {
                    last_sig = sig;
                    deadline = Instant::now() + d;
                }
            }
            if Instant::now() >= deadline {
                for (k, &i) in idx.iter().enumerate() {
                    if got[k].is_none() && self.workers[i].alive {
                        self.worker_lost(
                            i,
                            &format!("no answer by the deadline of phase {}", self.phase),
                        );
                    }
                }
                return got;
            }
            self.pump(Duration::from_millis(200));
        }
    }

    /// How long a connect phase may go without any connection settling: every connection
    /// settles within --connect-timeout, so a longer silence means a stuck worker.
    fn stall_limit(&self, procs: usize) -> Limit {
        let mut secs = self.cfg.connect_timeout + 30.0;
        if self.cfg.connect_rate > 0.0 {
            secs += procs as f64 / self.cfg.connect_rate;
        }
        Limit::Stall(Duration::from_secs_f64(secs))
    }

    fn open_idle(&mut self, idx: &[usize]) -> (IdleReport, Instant) {
        self.phase = "open-idle";
        let (cpu0, gen0) = self.cpu(idx);
        let t = Instant::now();
        self.send(idx, &ToWorker::OpenIdle);
        let stall = self.stall_limit(idx.len());
        let got = self.wait_for(idx, stall, |m| match m {
            ToParent::IdleOpened(o) => Some(o.clone()),
            _ => None,
        });
        let secs = t.elapsed().as_secs_f64();
        let (cpu1, gen1) = self.cpu(idx);
        let mut h = hist::new();
        let mut rep = IdleReport {
            target: self.cfg.idle,
            connect_seconds: secs,
            ..IdleReport::default()
        };
        let mut settled = 0;
        for o in got.iter().flatten() {
            let o: &IdleOpened = o;
            rep.established += o.established;
            rep.failed += o.failed;
            rep.addr_retries += o.addr_retries;
            settled += o.established + o.failed;
            hist::merge(&mut h, &o.connect_us);
            for (k, v) in &o.plugins {
                *rep.auth_plugins.entry(k.clone()).or_insert(0) += v;
            }
        }
        // Connections of lost workers, or never attempted because of an interrupt.
        let unaccounted = self.cfg.idle.saturating_sub(settled);
        if unaccounted > 0 && !self.interrupted {
            rep.failed += unaccounted;
        }
        rep.connect_latency_us = hist::summary(&h);
        rep.generator_cpu_seconds = gen1 - gen0;
        if let (Some(a), Some(b)) = (cpu0, cpu1) {
            rep.sampled_cpu_seconds = Some(b - a);
            rep.sampled_cpu_us_per_conn =
                (rep.established > 0).then(|| (b - a) * 1e6 / rep.established as f64);
        }
        rep.connect_rate = if secs > 0.0 {
            rep.established as f64 / secs
        } else {
            0.0
        };
        (rep, Instant::now())
    }

    fn run_active(&mut self, idx: &[usize], label: &str) -> Option<RunReport> {
        if idx.is_empty() {
            return None;
        }
        self.phase = "connect-active";
        self.send(idx, &ToWorker::PrepareActive);
        let stall = self.stall_limit(idx.len());
        let ready = self.wait_for(idx, stall, |m| match m {
            ToParent::ActiveReady {
                established,
                failed,
            } => Some((*established, *failed)),
            _ => None,
        });
        let (established, setup_failed) = ready
            .iter()
            .flatten()
            .fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
        if self.stop_requested() {
            return None;
        }
        self.phase = if label == "baseline" {
            "baseline"
        } else {
            "run"
        };
        let (cpu0, gen0) = self.cpu(idx);
        self.send(idx, &ToWorker::Go);
        let grace = self.cfg.connect_timeout + self.cfg.query_timeout + 60.0;
        let deadline = Instant::now() + Duration::from_secs_f64(self.cfg.duration + grace);
        let got = self.wait_for(idx, Limit::At(deadline), |m| match m {
            ToParent::RunDone(r) => Some(r.clone()),
            _ => None,
        });
        let (cpu1, gen1) = self.cpu(idx);
        let mut lat = hist::new();
        let mut svc = hist::new();
        let mode = self.cfg.mode.name();
        let mut rep = RunReport {
            label: label.to_string(),
            mode: mode.to_string(),
            connections: if self.cfg.mode == Mode::Storm {
                0
            } else {
                established
            },
            connections_failed: setup_failed,
            target_rate: self.cfg.rate,
            ..RunReport::default()
        };
        let mut secs: f64 = 0.0;
        for r in got.iter().flatten() {
            let r: &RunResult = r;
            if self.cfg.mode == Mode::Storm {
                rep.connections += r.connections;
            }
            rep.ok += r.ok;
            rep.failed += r.failed;
            rep.missed += r.missed;
            rep.connects += r.connects;
            rep.reconnects += r.reconnects;
            secs = secs.max(r.seconds);
            hist::merge(&mut lat, &r.latency_us);
            hist::merge(&mut svc, &r.service_us);
            for (k, v) in &r.plugins {
                *rep.auth_plugins.entry(k.clone()).or_insert(0) += v;
            }
        }
        if self.cfg.mode == Mode::Storm {
            rep.target_rate = 0.0;
        }
        rep.seconds = secs;
        rep.throughput = if secs > 0.0 {
            rep.ok as f64 / secs
        } else {
            0.0
        };
        rep.latency_us = hist::summary(&lat);
        rep.service_us = hist::summary(&svc);
        rep.generator_cpu_seconds = gen1 - gen0;
        if let (Some(a), Some(b)) = (cpu0, cpu1) {
            rep.sampled_cpu_seconds = Some(b - a);
            rep.sampled_cpu_us_per_op = (rep.ok > 0).then(|| (b - a) * 1e6 / rep.ok as f64);
        }
        Some(rep)
    }

    fn close_idle(&mut self, idx: &[usize], rep: &mut IdleReport) {
        if self.aborted {
            return;
        }
        self.phase = "close-idle";
        let t = Instant::now();
        self.send(idx, &ToWorker::CloseIdle);
        let got = self.wait_for(idx, Limit::At(t + Duration::from_secs(120)), |m| match m {
            ToParent::IdleClosed(c) => Some(c.clone()),
            _ => None,
        });
        for c in got.iter().flatten() {
            let c: &IdleClosed = c;
            rep.alive_at_end += c.alive;
            rep.closed_while_idle += c.dead;
        }
        rep.close_seconds = t.elapsed().as_secs_f64();
    }

    fn stop_all(&mut self) {
        self.phase = "stop";
        let all: Vec<usize> = (0..self.workers.len()).collect();
        for &i in &all {
            self.workers[i].stopping = true;
        }
        self.send(&all, &ToWorker::Stop);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for w in &mut self.workers {
                if w.pid > 0 && sys::try_wait(w.pid).is_some() {
                    w.alive = false;
                    w.pid = -w.pid; // reaped
                }
            }
            if self.workers.iter().all(|w| w.pid < 0) {
                break;
            }
            if Instant::now() >= deadline {
                for w in &mut self.workers {
                    if w.pid > 0 {
                        sys::kill(w.pid, libc::SIGKILL);
                        let _ = sys::try_wait(w.pid);
                        w.pid = -w.pid;
                    }
                }
                break;
            }
            // Drain final progress messages while waiting.
            self.pump(Duration::from_millis(50));
        }
        for w in &mut self.workers {
            // Last messages (final progress) may still be buffered.
            let _ = w.reader.fill(w.fd);
            while let Some(m) = w.reader.next::<ToParent>() {
                if let Ok(ToParent::Progress(p)) = m {
                    w.progress = p;
                }
            }
            sys::close(w.fd);
            w.pid = w.pid.abs();
        }
    }

    fn display(&mut self, now: Instant) {
        if self.cfg.quiet || now < self.next_display {
            return;
        }
        self.next_display = now
            + if self.tty {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            };
        let mut idle = 0;
        let mut connecting = 0;
        let mut connects = 0;
        let mut ops = 0;
        let mut p99 = 0;
        let mut errors: u64 = self.own_errors.values().sum();
        for w in &self.workers {
            let p = &w.progress;
            idle += p.idle_held;
            connecting += p.connecting;
            connects += p.connects;
            ops += p.ops;
            p99 = p99.max(p.p99_us);
            errors += p.errors.values().sum::<u64>();
        }
        let dt = now.duration_since(self.prev.0).as_secs_f64().max(1e-3);
        let connect_rate = connects.saturating_sub(self.prev.1) as f64 / dt;
        // Operation counters restart with each run.
        let op_rate = if ops >= self.prev.2 {
            (ops - self.prev.2) as f64 / dt
        } else {
            ops as f64 / dt
        };
        self.prev = (now, connects, ops);
        let mut line = format!(
            "[{:>7.1}s] {:<14} idle {idle} | connects {connects} ({}) in flight {connecting} | errors {errors}",
            now.duration_since(self.t0).as_secs_f64(),
            self.phase,
            report::fmt_rate(connect_rate),
        );
        if matches!(self.phase, "run" | "baseline") || ops > 0 {
            line.push_str(&format!(
                " | ops {ops} ({}) p99 {}",
                report::fmt_rate(op_rate),
                if p99 > 0 {
                    report::fmt_us(p99)
                } else {
                    "-".into()
                }
            ));
        }
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.shown = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    fn clear_line(&mut self) {
        if self.tty && self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}
