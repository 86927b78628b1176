//! End-to-end runs of the `sluice-load` binary against the MariaDB that `scripts/test.sh` starts
//! (`SLUICE_TEST_MARIADB=host:port`, user app/app, database app); they fail without it. Each test
//! uses its own source addresses so they can run in parallel; all stay small (the test server
//! allows 400 connections, shared with other suites).

use serde_json::Value;
use std::process::Command;

fn target() -> Option<String> {
    Some(std::env::var("SLUICE_TEST_MARIADB").unwrap_or_else(|_| {
        panic!("SLUICE_TEST_MARIADB is not set: run the suite with scripts/test.sh, which starts a private MariaDB")
    }))
}

/// Runs the generator with `args` (plus target, quiet, a JSON report); returns exit status and
/// the report.
fn run(name: &str, src_base: &str, args: &[&str]) -> Option<(i32, Value)> {
    let target = target()?;
    let json = std::env::temp_dir().join(format!(
        "sluice-load-e2e-{name}-{}.json",
        std::process::id()
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_sluice-load"))
        .args(["-t", &target, "-q", "--src-base", src_base, "--json"])
        .arg(&json)
        .args(args)
        .output()
        .expect("run sluice-load");
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap_or_else(|e| {
        panic!(
            "no report ({e}); stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }))
    .expect("report is JSON");
    let _ = std::fs::remove_file(&json);
    Some((out.status.code().unwrap_or(-1), report))
}

#[test]
fn idle_connections_over_several_workers() {
    let Some((code, r)) = run(
        "idle",
        "127.61.0.1",
        &[
            "-n",
            "120",
            "--per-process",
            "40",
            "--hold",
            "0.5",
            "--settle",
            "0",
        ],
    ) else {
        return;
    };
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["processes"]["idle"], 3);
    assert_eq!(r["idle"]["established"], 120);
    assert_eq!(r["idle"]["alive_at_end"], 120);
    assert_eq!(r["errors_total"], 0);
    assert!(r["idle"]["connect_latency_us"]["p99"].as_u64().unwrap() > 0);
    assert_eq!(r["resources"]["samples"].as_array().unwrap().len(), 3);
}

#[test]
fn select_at_a_fixed_rate_then_transactions() {
    let Some((code, r)) = run(
        "select",
        "127.62.0.1",
        &[
            "-m",
            "select",
            "--prepare-table",
            "--table-size",
            "500",
            "--active",
            "8",
            "--rate",
            "200",
            "--duration",
            "1",
        ],
    ) else {
        return;
    };
    assert_eq!(code, 0, "{r:#}");
    let ok = r["run"]["ok"].as_u64().unwrap();
    assert!((190..=201).contains(&ok), "{ok} queries at 200/s for 1 s");
    assert_eq!(r["run"]["connections"], 8);
    assert!(r["run"]["latency_us"]["p50"].as_u64().unwrap() > 0);

    let (code, r) = run(
        "trx",
        "127.62.0.1",
        &[
            "-m",
            "trx",
            "--prepare-table",
            "--table-size",
            "500",
            "--active",
            "4",
            "--duration",
            "1",
        ],
    )
    .unwrap();
    assert_eq!(code, 0, "{r:#}");
    assert!(r["run"]["ok"].as_u64().unwrap() > 0);
    assert_eq!(r["run"]["failed"], 0);
}

#[test]
fn connect_storm() {
    let Some((code, r)) = run(
        "storm",
        "127.63.0.1",
        &[
            "-m",
            "storm",
            "-w",
            "4",
            "--duration",
            "1",
            "--query",
            "SELECT 1",
        ],
    ) else {
        return;
    };
    assert_eq!(code, 0, "{r:#}");
    assert!(r["run"]["ok"].as_u64().unwrap() > 10, "{r:#}");
    assert_eq!(r["run"]["connections"], 4);
}

#[test]
fn errors_are_classified_and_fail_the_run() {
    let Some((code, r)) = run(
        "badpw",
        "127.64.0.1",
        &["-n", "5", "-p", "not-the-password", "--hold", "0.1"],
    ) else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(r["errors"]["auth_error_1045"], 5);
    assert_eq!(r["idle"]["failed"], 5);
}
