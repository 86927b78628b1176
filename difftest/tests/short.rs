//! The seeded short differential run of the test suite: one fixed seed, 24 sessions × 60 steps at
//! concurrency 16, played against the suite's MariaDB (`SLUICE_TEST_MARIADB`, started by
//! `scripts/test.sh`) directly, directly again (the tester's own determinism), and through sluice
//! in each pool mode with a pool of 4. Any difference fails the test with its reproducers (the
//! first ones printed, all of them in `target/difftest/short-report.txt`).
//!
//! Bounded: sessions not started within 75 s are not played, every read has a 20 s timeout, and
//! each sluice is stopped (SIGTERM, then SIGKILL) when dropped.

use sluice_difftest::client::Credentials;
use sluice_difftest::runner::{replay_command, run, Options};
use sluice_difftest::script::{parse_listing, Profile};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SEED: u64 = 20_251_125;
const POOL_SIZE: usize = 4;

fn mariadb_addr() -> String {
    std::env::var("SLUICE_TEST_MARIADB").unwrap_or_else(|_| {
        panic!(
            "SLUICE_TEST_MARIADB is not set: run the suite with scripts/test.sh, which starts a \
             private MariaDB (or export SLUICE_TEST_MARIADB=127.0.0.1:PORT for one started with \
             scripts/mariadb.sh start)"
        )
    })
}

/// The workspace's target directory (`scripts/test.sh` builds the whole workspace first).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
    }
}

fn sluice_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let p = target_dir().join("debug/sluice");
    assert!(
        p.exists(),
        "{} does not exist: build the workspace first (cargo build --workspace), or set SLUICE_BIN",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A sluice process in one pool mode; stopped when dropped.
struct Sluice {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Sluice {
    fn start(mode: &str, backend: &str) -> Sluice {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "sluice-difftest-{mode}-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("sluice.toml");
        // A pool much smaller than the client count; pinned sessions wait for a slot rather than
        // being refused (ERR 9003 would be a configured refusal, not a transparency bug).
        std::fs::write(
            &conf,
            format!(
                "listen = \"127.0.0.1:{port}\"\nshards = 2\nauth_failure_delay_ms = 100\n\
                 shutdown_timeout_ms = 3000\n\n[pool]\nmode = \"{mode}\"\nsize = {POOL_SIZE}\n\
                 queue_timeout_ms = 60000\npin_budget = {POOL_SIZE}\npin_overflow = \"wait\"\n\n\
                 [[backends]]\naddress = \"{backend}\"\n\n[[users]]\nname = \"app\"\n\
                 password = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n"
            ),
        )
        .expect("write the config");
        let log = std::fs::File::create(dir.join("sluice.log")).expect("log file");
        let child = Command::new(sluice_bin())
            .arg("--config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sluice");
        let mut s = Sluice {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return s;
            }
            let exited = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "sluice ({mode}) did not start listening: {}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("sluice.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on our own child's pid, which we have not reaped.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(8);
                while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A sluice in each pool mode in front of `direct`.
fn sluices(direct: &str) -> Vec<(String, Sluice)> {
    ["session", "transaction", "statement"]
        .iter()
        .map(|m| (m.to_string(), Sluice::start(m, direct)))
        .collect()
}

/// A run against `direct` and every sluice of `sluices`, with the suite's credentials and
/// timeouts (the caller sets what it plays).
fn options(direct: &str, sluices: &[(String, Sluice)], deadline: Duration) -> Options {
    Options {
        direct: direct.to_string(),
        replicas: Vec::new(),
        proxies: sluices
            .iter()
            .map(|(m, s)| (m.clone(), format!("127.0.0.1:{}", s.port)))
            .collect(),
        creds: Credentials {
            user: "app".into(),
            password: "app".into(),
        },
        seed: SEED,
        sessions: 24,
        steps: 60,
        concurrency: 16,
        prefix: "dtshort".into(),
        self_check: false,
        replay: None,
        script: None,
        timeout: Duration::from_secs(20),
        kill_wait: Duration::from_secs(15),
        verbose: false,
        every_difference: false,
        deadline: Some(Instant::now() + deadline),
        transcripts: None,
    }
}

#[test]
fn seeded_short_run_direct_and_through_sluice_in_every_mode() {
    let direct = mariadb_addr();
    let mut sluices = sluices(&direct);
    let opts = Options {
        self_check: true,
        ..options(&direct, &sluices, Duration::from_secs(75))
    };
    let mut report = Vec::new();
    let summary = run(&opts, &mut report).unwrap_or_else(|e| panic!("the run failed: {e}"));
    let report = String::from_utf8_lossy(&report).into_owned();
    let crashed: Vec<String> = sluices
        .iter_mut()
        .filter_map(|(m, s)| (!s.alive()).then(|| format!("sluice ({m}) exited:\n{}", s.log())))
        .collect();
    let path = target_dir().join("difftest/short-report.txt");
    let saved = std::fs::create_dir_all(target_dir().join("difftest"))
        .and_then(|_| std::fs::write(&path, &report))
        .map(|_| format!("full report: {}", path.display()))
        .unwrap_or_else(|e| format!("(could not save the full report: {e})"));
    assert!(crashed.is_empty(), "{}", crashed.join("\n"));
    if !summary.ok() {
        // One full reproducer per distinct kind of difference, then the summary (which lists
        // every kind); every reproducer is in the saved report.
        let mut shown = String::new();
        for (_, _, d) in summary.distinct().iter().take(12) {
            shown.push_str(&d.render(&replay_command(&opts, d.session)));
            shown.push('\n');
        }
        let tail = report
            .find("==== SUMMARY")
            .map(|i| &report[i..])
            .unwrap_or_default();
        panic!("{shown}{tail}\n{saved}");
    }
}

/// Every reproducer in `difftest/repro/` (each a difference found once and fixed) plays the same
/// directly and through sluice in every mode, with the profile and the number of copies its
/// header names (`--profile P`, `--copies N`).
#[test]
fn every_reproducer_plays_the_same_directly_and_through_sluice() {
    let direct = mariadb_addr();
    let sluices = sluices(&direct);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("repro");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("difftest/repro")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "only {} reproducers found", files.len());
    let flag = |text: &str, name: &str| -> Option<String> {
        let at = text.find(name)? + name.len();
        Some(
            text[at..]
                .trim_start()
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()?
                .to_string(),
        )
    };
    let mut failed = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let text = std::fs::read_to_string(file).expect("read the reproducer");
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with("//"))
            .collect::<Vec<_>>()
            .join(" ");
        let profile = flag(&header, "--profile").unwrap_or_else(|| "modern".into());
        let profile = Profile::from_name(&profile).expect("a known profile");
        let copies: usize = flag(&header, "--copies").map_or(1, |n| n.parse().expect("copies"));
        let prefix = format!("dtrepro{i}");
        let scripts = (0..copies)
            .map(|k| {
                let (a, b) = sluice_difftest::gen::schemas(&prefix, k);
                let t = text.replace("{SCHEMA_B}", &b).replace("{SCHEMA}", &a);
                parse_listing(&t, k, profile, &a)
                    .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            })
            .collect();
        let opts = Options {
            seed: 1,
            sessions: copies,
            steps: 0,
            concurrency: copies,
            prefix,
            script: Some(scripts),
            ..options(&direct, &sluices, Duration::from_secs(60))
        };
        let mut report = Vec::new();
        let summary = run(&opts, &mut report)
            .unwrap_or_else(|e| panic!("{}: the run failed: {e}", file.display()));
        if !summary.ok() {
            failed.push(format!(
                "{}:\n{}",
                file.display(),
                String::from_utf8_lossy(&report)
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
