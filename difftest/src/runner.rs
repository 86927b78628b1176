//! The run: generate the sessions from the seed, play them all against the direct server (C at a
//! time), then against each proxy in turn (fixtures recreated before each run, so every run
//! starts from the same data), compare each session's transcript with the direct one entry by
//! entry, print a reproducer for the first difference per session and mode, and summarize.

use crate::client::Credentials;
use crate::compare::{all_differences, first_difference, side_by_side, Difference};
use crate::gen::generate;
use crate::script::Script;
use crate::session::{play, PlayConfig, Transcript};
use crate::setup;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The MariaDB server, host:port.
    pub direct: String,
    /// Proxies to compare, as (mode name, host:port).
    pub proxies: Vec<(String, String)>,
    /// Replicas of `direct` to wait for after each setup (see `setup::settle`).
    pub replicas: Vec<String>,
    pub creds: Credentials,
    pub seed: u64,
    pub sessions: usize,
    pub steps: usize,
    pub concurrency: usize,
    /// Schema name prefix: session k uses `<prefix>_k` and `<prefix>_k_b`.
    pub prefix: String,
    /// Also run the direct server a second time and compare it with itself (a tester that is
    /// not deterministic shows up here, not as a proxy difference).
    pub self_check: bool,
    /// Play only this session, sequentially, and print every step of it.
    pub replay: Option<usize>,
    /// Play these hand-written scripts (instead of generated ones), `concurrency` at a time;
    /// every step is printed when there is only one.
    pub script: Option<Vec<Script>>,
    /// Bounds every read and write of a session.
    pub timeout: Duration,
    /// How long a KILL QUERY sidecar waits to see its statement running.
    pub kill_wait: Duration,
    /// Print progress lines (runs started, sessions done).
    pub verbose: bool,
    /// Report every differing step of a session, not only the first (later ones may follow
    /// from the first).
    pub every_difference: bool,
    /// Sessions that have not started by then are not played (their transcript says so): with
    /// the per-read timeout, this bounds a whole run.
    pub deadline: Option<Instant>,
    /// Write every direct-run transcript here (JSON lines: session, script, entries).
    pub transcripts: Option<std::path::PathBuf>,
}

/// The machine-readable result (also what `--json` writes).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub sessions: usize,
    pub steps_per_session: usize,
    pub concurrency: usize,
    /// Compared targets, in the order they ran ("self-check" is the direct server again).
    pub modes: Vec<String>,
    /// Steps played per target (the direct run included).
    pub statements: BTreeMap<String, usize>,
    /// Sessions with a difference, per compared target.
    pub differences: BTreeMap<String, usize>,
    /// Differing steps reported, per compared target (the first per session, or every one with
    /// `every_difference`).
    pub differing_steps: BTreeMap<String, usize>,
    /// Direct-run sessions the client had to stop (timeouts, closed connections): a tester or
    /// server problem, counted as a failure.
    pub direct_stopped: usize,
    /// Sessions the client had to stop early (timeouts, closed connections, protocol errors),
    /// per target.
    pub stopped: BTreeMap<String, usize>,
    /// Seconds each target's run took (fixtures excluded).
    pub run_secs: BTreeMap<String, f64>,
    pub duration_secs: f64,
    pub details: Vec<Difference>,
}

impl Summary {
    /// Distinct kinds of difference (see [`Difference::signature`]), most frequent first, each
    /// with its count per mode and the first difference of that kind.
    pub fn distinct(&self) -> Vec<(String, BTreeMap<String, usize>, &Difference)> {
        let mut v: Vec<(String, BTreeMap<String, usize>, &Difference)> = Vec::new();
        for d in &self.details {
            let sig = d.kind.clone();
            match v.iter_mut().find(|(s, _, _)| *s == sig) {
                Some((_, counts, _)) => *counts.entry(d.mode.clone()).or_default() += 1,
                None => v.push((sig, BTreeMap::from([(d.mode.clone(), 1)]), d)),
            }
        }
        v.sort_by_key(|(_, c, _)| std::cmp::Reverse(c.values().sum::<usize>()));
        v
    }

    pub fn total_differences(&self) -> usize {
        self.differences.values().sum()
    }

    pub fn ok(&self) -> bool {
        self.total_differences() == 0 && self.direct_stopped == 0
    }
}

/// A tag unique to one run of one invocation (lock names, KILL markers); never part of a result.
fn run_tag(label: &str, seed: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = (u64::from(nanos) ^ (u64::from(std::process::id()) << 20) ^ seed.rotate_left(17))
        & 0xFFFF_FFFF;
    let initial = label.chars().next().unwrap_or('x');
    format!("{initial}{mix:08x}")
}

/// Plays every script against `addr`, `concurrency` at a time.
fn play_all(
    scripts: &[Script],
    addr: &str,
    cfg: &PlayConfig,
    concurrency: usize,
    verbose: bool,
    label: &str,
    deadline: Option<Instant>,
) -> Vec<Transcript> {
    let results: Mutex<Vec<Option<Transcript>>> = Mutex::new(vec![None; scripts.len()]);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, scripts.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(script) = scripts.get(i) else { break };
                let t = if deadline.is_some_and(|d| Instant::now() > d) {
                    Transcript {
                        entries: vec![vec!["NOT PLAYED: the run's deadline had passed".into()]],
                        stopped: Some((0, "the run's deadline had passed".into())),
                    }
                } else {
                    play(script, addr, cfg)
                };
                if let Some((step, why)) = &t.stopped {
                    if verbose {
                        eprintln!(
                            "difftest: [{label}] session {} stopped at step {step}: {why}",
                            script.index
                        );
                    }
                }
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(t);
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if verbose && (d % 8 == 0 || d == scripts.len()) {
                    eprintln!("difftest: [{label}] {d}/{} sessions done", scripts.len());
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect()
}

/// The command line that replays one session.
pub fn replay_command(o: &Options, session: usize) -> String {
    let mut s = format!("sluice-difftest --direct {}", o.direct);
    for (m, a) in &o.proxies {
        s.push_str(&format!(" --proxy {m}={a}"));
    }
    s.push_str(&format!(
        " --user {} --password {} --schema-prefix {}",
        o.creds.user, o.creds.password, o.prefix
    ));
    match o.script.as_ref().and_then(|v| v.first()) {
        Some(sc) => s.push_str(&format!(
            " --script FILE --session {session} --profile {}   (FILE: the script below)",
            sc.profile.name()
        )),
        None => s.push_str(&format!(
            " --steps {} --replay {}:{session}",
            o.steps, o.seed
        )),
    }
    s
}

/// Runs the whole comparison, writing reproducers and the summary to `out`.
pub fn run(o: &Options, out: &mut dyn Write) -> Result<Summary, String> {
    let started = Instant::now();
    let single = o.replay.is_some() || o.script.as_ref().is_some_and(|v| v.len() == 1);
    let (indices, scripts): (Vec<usize>, Vec<Script>) = match (&o.script, o.replay) {
        (Some(v), _) => (v.iter().map(|s| s.index).collect(), v.clone()),
        (None, Some(k)) => (vec![k], vec![generate(o.seed, k, o.steps, &o.prefix)]),
        (None, None) => (
            (0..o.sessions).collect(),
            (0..o.sessions)
                .map(|k| generate(o.seed, k, o.steps, &o.prefix))
                .collect(),
        ),
    };
    let concurrency = if o.replay.is_some() { 1 } else { o.concurrency };
    let setup_concurrency = concurrency.min(8);
    let cfg_for = |label: &str| PlayConfig {
        creds: o.creds.clone(),
        direct: o.direct.clone(),
        run_tag: run_tag(label, o.seed),
        timeout: o.timeout,
        kill_wait: o.kill_wait,
    };
    let mut targets: Vec<(String, String)> = Vec::new();
    if o.self_check {
        targets.push(("self-check".to_string(), o.direct.clone()));
    }
    targets.extend(o.proxies.iter().cloned());

    let mut summary = Summary {
        seed: o.seed,
        sessions: scripts.len(),
        steps_per_session: o.steps,
        concurrency,
        modes: targets.iter().map(|(m, _)| m.clone()).collect(),
        statements: BTreeMap::new(),
        differences: BTreeMap::new(),
        differing_steps: BTreeMap::new(),
        direct_stopped: 0,
        stopped: BTreeMap::new(),
        run_secs: BTreeMap::new(),
        duration_secs: 0.0,
        details: Vec::new(),
    };

    if o.verbose {
        eprintln!(
            "difftest: seed {} — {} sessions × {} steps, concurrency {concurrency}; direct {}",
            o.seed,
            scripts.len(),
            o.steps,
            o.direct
        );
    }
    setup::create(&o.direct, &o.creds, &o.prefix, &indices, setup_concurrency)
        .map_err(|e| format!("setup before the direct run: {e}"))?;
    let t0 = Instant::now();
    let direct = play_all(
        &scripts,
        &o.direct,
        &cfg_for("direct"),
        concurrency,
        o.verbose,
        "direct",
        o.deadline,
    );
    summary
        .run_secs
        .insert("direct".into(), t0.elapsed().as_secs_f64());
    summary.stopped.insert(
        "direct".into(),
        direct.iter().filter(|t| t.stopped.is_some()).count(),
    );
    summary.statements.insert(
        "direct".into(),
        direct.iter().map(|t| t.entries.len()).sum(),
    );
    if let Some(path) = &o.transcripts {
        write_transcripts(path, &scripts, &direct)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    for (script, t) in scripts.iter().zip(&direct) {
        if let Some((step, why)) = &t.stopped {
            summary.direct_stopped += 1;
            let _ = writeln!(
                out,
                "==== DIRECT RUN STOPPED  seed={} session={} step={}: {why} ====\nscript:\n{}",
                o.seed,
                script.index,
                step,
                script.listing(*step)
            );
        }
    }

    for (mode, addr) in &targets {
        // Through the proxy under test, as an application deploys its schema: a proxy learns
        // of stored functions created through it at once (ones created behind its back, only
        // at its next routine refresh).
        setup::create(addr, &o.creds, &o.prefix, &indices, setup_concurrency)
            .map_err(|e| format!("setup before the {mode} run: {e}"))?;
        setup::settle(&o.direct, &o.replicas, &o.creds)
            .map_err(|e| format!("replicas after the setup of the {mode} run: {e}"))?;
        let t0 = Instant::now();
        let other = play_all(
            &scripts,
            addr,
            &cfg_for(mode),
            concurrency,
            o.verbose,
            mode,
            o.deadline,
        );
        summary
            .run_secs
            .insert(mode.clone(), t0.elapsed().as_secs_f64());
        summary
            .statements
            .insert(mode.clone(), other.iter().map(|t| t.entries.len()).sum());
        summary.stopped.insert(
            mode.clone(),
            other.iter().filter(|t| t.stopped.is_some()).count(),
        );
        let (mut sessions_differing, mut steps_differing) = (0, 0);
        for ((script, d), t) in scripts.iter().zip(&direct).zip(&other) {
            if single {
                print_full(out, script, mode, d, t);
            }
            let steps = if o.every_difference {
                all_differences(d, t)
            } else {
                first_difference(d, t).into_iter().collect()
            };
            if !steps.is_empty() {
                sessions_differing += 1;
            }
            for step in steps {
                steps_differing += 1;
                let diff = Difference::new(mode, o.seed, script, step, d, t);
                let _ = writeln!(out, "{}", diff.render(&replay_command(o, script.index)));
                summary.details.push(diff);
            }
        }
        summary.differences.insert(mode.clone(), sessions_differing);
        summary
            .differing_steps
            .insert(mode.clone(), steps_differing);
    }
    setup::drop_all(&o.direct, &o.creds, &o.prefix, &indices, setup_concurrency)
        .map_err(|e| format!("dropping the fixtures: {e}"))?;
    summary.duration_secs = started.elapsed().as_secs_f64();
    let _ = write!(out, "{}", render_summary(&summary));
    Ok(summary)
}

/// The direct run's transcripts as JSON lines, for looking at what the corpus provokes.
fn write_transcripts(
    path: &std::path::Path,
    scripts: &[Script],
    transcripts: &[Transcript],
) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (s, t) in scripts.iter().zip(transcripts) {
        let steps: Vec<String> = s.steps.iter().map(|x| x.to_string()).collect();
        let v = serde_json::json!({
            "session": s.index,
            "profile": s.profile.name(),
            "steps": steps,
            "entries": t.entries,
            "stopped": t.stopped,
        });
        writeln!(f, "{v}")?;
    }
    f.flush()
}

/// Every step of a replayed session, both sides.
fn print_full(out: &mut dyn Write, script: &Script, mode: &str, d: &Transcript, t: &Transcript) {
    let _ = writeln!(
        out,
        "==== REPLAY  session={} profile={} — direct vs {mode} ====",
        script.index,
        script.profile.name()
    );
    let n = d.entries.len().max(t.entries.len());
    let none = vec!["(no entry)".to_string()];
    for i in 0..n {
        let (a, b) = (
            d.entries.get(i).unwrap_or(&none),
            t.entries.get(i).unwrap_or(&none),
        );
        let mark = if a == b { "" } else { "   <-- DIFFERS" };
        let cmd = script
            .steps
            .get(i)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let _ = writeln!(out, "#{i} {cmd}{mark}");
        let _ = write!(out, "{}", side_by_side("direct", a, mode, b));
    }
}

/// The human summary printed at the end.
pub fn render_summary(s: &Summary) -> String {
    let mut r = format!(
        "==== SUMMARY seed={} sessions={} steps/session={} concurrency={} duration={:.1}s ====\n",
        s.seed, s.sessions, s.steps_per_session, s.concurrency, s.duration_secs
    );
    for (m, n) in &s.statements {
        let diffs = match (s.differences.get(m), s.differing_steps.get(m)) {
            (Some(d), Some(st)) => {
                format!(", {d} session(s) differ ({st} differing step(s) reported)")
            }
            _ => String::new(),
        };
        let secs = s.run_secs.get(m).copied().unwrap_or(0.0);
        let stopped = match s.stopped.get(m) {
            Some(&k) if k > 0 => format!(", {k} session(s) stopped early"),
            _ => String::new(),
        };
        r.push_str(&format!(
            "  {m:<12} {n} steps played in {secs:.1}s{diffs}{stopped}\n"
        ));
    }
    let distinct = s.distinct();
    if !distinct.is_empty() {
        r.push_str(&format!(
            "  {} distinct kind(s) of difference (by the first lines that differ):\n",
            distinct.len()
        ));
        for (sig, counts, d) in distinct.iter().take(40) {
            let c: Vec<String> = counts.iter().map(|(m, n)| format!("{m} {n}")).collect();
            r.push_str(&format!(
                "  - [{}] e.g. session {} step {} ({}):\n      {sig}\n",
                c.join(", "),
                d.session,
                d.step,
                d.command.chars().take(80).collect::<String>()
            ));
        }
    }
    if s.direct_stopped > 0 {
        r.push_str(&format!(
            "  direct run: {} session(s) stopped early (see above)\n",
            s.direct_stopped
        ));
    }
    r.push_str(if s.ok() {
        "  result: no differences\n"
    } else {
        "  result: DIFFERENCES FOUND\n"
    });
    r
}
