//! The million-connection benchmark script at a small N (20,000: two sluice worker processes
//! here), as a smoke test. It checks what must hold at any scale — every client established,
//! no errors, upstream connections within the pool — not the performance targets, which are
//! measured by the full run (see the README's benchmark section).

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn bench_million_script_at_twenty_thousand_clients() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::env::temp_dir().join(format!("sluice-bench-smoke-{}.json", std::process::id()));
    let mut child = Command::new("bash")
        .arg(format!("{root}/scripts/bench-million.sh"))
        .arg("20000")
        .env("HOLD", "1")
        .env("B2_SECONDS", "3")
        .env("B5_SECONDS", "3")
        .env("POOL", "16")
        .env("OUT", &out)
        // The suite's own debug binaries (scripts/test.sh builds the whole workspace first).
        .env(
            "BIN_DIR",
            std::path::Path::new(env!("CARGO_BIN_EXE_sluice"))
                .parent()
                .unwrap(),
        )
        // Its own process group: on the deadline the script and everything it started (sluice,
        // MariaDB, the load generator) are stopped together.
        .process_group(0)
        .spawn()
        .expect("run scripts/bench-million.sh");
    let group = child.id() as i32;
    // Under nextest's own limit for this binary (10 minutes), so the script is stopped by us,
    // with its cleanup, rather than killed with the test.
    let limit = Duration::from_secs(480);
    let deadline = Instant::now() + limit;
    // Polls for the script's exit (bounded by the deadline).
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            // SIGTERM first: the script's trap stops sluice and deletes its MariaDB; SIGKILL for
            // whatever is left after 60 s.
            unsafe { libc::kill(-group, libc::SIGTERM) };
            let grace = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(200));
            }
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            panic!("bench-million.sh 20000 did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "bench-million.sh failed: {status}");
    let text = std::fs::read_to_string(&out).expect("the JSON summary");
    // The script's summary and picture sit next to its JSON.
    for f in [
        out.clone(),
        out.with_extension("txt"),
        out.with_extension("svg"),
    ] {
        let _ = std::fs::remove_file(f);
    }
    let find = |path: &[&str]| -> String {
        // A tiny JSON walk: the summary is flat enough for string searches per key.
        let mut rest = text.as_str();
        for key in path {
            let at = rest
                .find(&format!("\"{key}\""))
                .unwrap_or_else(|| panic!("no {key} in {text}"));
            rest = &rest[at + key.len() + 2..];
        }
        rest.trim_start_matches([':', ' '])
            .split([',', '\n', '}'])
            .next()
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(find(&["b1", "established"]), "20000", "{text}");
    assert_eq!(find(&["b1", "errors"]), "0", "{text}");
    let upstream: u64 = find(&["b1", "upstream_connections_open"]).parse().unwrap();
    assert!(
        upstream <= 16,
        "upstream {upstream} with a pool of 16: {text}"
    );
    assert_eq!(find(&["b5", "sluice_errors"]), "0", "{text}");
    assert_ne!(find(&["b2", "p99_ratio"]), "null", "{text}");
}
