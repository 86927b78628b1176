//! The Debian package, installed for real: `cargo deb` packages the build this test belongs to
//! (no release build: `--no-build --profile` of the binaries already built), `dpkg -i` installs
//! it into this system, the installed `/usr/bin/sluice` proxies a query to the suite's MariaDB,
//! and the package is purged at the end, whatever happened.
//!
//! Skipped only when cargo-deb could not be installed: `scripts/test.sh` installs it (as it
//! installs nextest) and, when that fails, says why in `SLUICE_CARGO_DEB_UNAVAILABLE`. Without
//! cargo-deb and without that reason the test fails: run it through `scripts/test.sh`.

mod common;

use common::{wait_output, Config, Sluice};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PACKAGE: &str = "sluice";

/// Runs a command to completion (bounded); its output, or a panic saying what failed.
fn run(what: &str, cmd: &mut Command, limit: Duration) -> String {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let out = wait_output(child, limit);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A cargo command for the workspace at `root` building into `target`, in the environment a
/// shell would give it: the `CARGO_*` variables cargo and nextest set for this test process
/// (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`…) are removed, since build scripts that watch them
/// (ring's) would otherwise rebuild half the tree, and the suite's next build again.
fn cargo(root: &Path, target: &Path) -> Command {
    let exe = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut cmd = Command::new(exe);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" {
            cmd.env_remove(&*k);
        }
    }
    cmd.current_dir(root).env("CARGO_TARGET_DIR", target);
    cmd
}

/// Purges the package when dropped (the test passed, failed or panicked).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let out = Command::new("dpkg")
            .args(["--purge", PACKAGE])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "dpkg --purge {PACKAGE}: {}\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("dpkg --purge {PACKAGE}: {e}"),
        }
    }
}

#[test]
fn the_debian_package_installs_and_its_sluice_proxies() {
    let root = common::repo_root();
    let have_deb = cargo(&root, Path::new("target"))
        .args(["deb", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_deb {
        match std::env::var("SLUICE_CARGO_DEB_UNAVAILABLE") {
            Ok(why) => {
                eprintln!("SKIPPED: cargo-deb cannot be installed here: {why}");
                return;
            }
            Err(_) => panic!(
                "cargo-deb is not installed: run the suite with scripts/test.sh, which installs it \
                 (cargo install --locked cargo-deb)"
            ),
        }
    }
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "dpkg -i needs root (the suite runs as root)"
    );

    // The build this test binary belongs to: <target>/<profile dir>/sluice.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_sluice"));
    let profile_dir = exe.parent().expect("the binary's directory");
    let target = profile_dir.parent().expect("the target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("{} has no profile directory", exe.display()),
    };
    // The load generator is packaged too; scripts/test.sh built it already (then this is a
    // no-op), a lone `cargo nextest run` may not have.
    run(
        "cargo build -p sluice-load",
        cargo(&root, target)
            .args([
                "build",
                "--quiet",
                "-p",
                "sluice-load",
                "--bin",
                "sluice-load",
            ])
            .args(["--profile", profile]),
        // Generous: a no-op after scripts/test.sh, but it waits for the target directory's
        // lock while other tests' cargo runs hold it (it ran past 120 s once in CI).
        Duration::from_secs(300),
    );
    let out_dir = target.join("debian-test");
    let _ = std::fs::remove_dir_all(&out_dir);
    std::fs::create_dir_all(&out_dir).unwrap();
    let deb = run(
        "cargo deb",
        cargo(&root, target)
            .args([
                "deb",
                "-p",
                PACKAGE,
                "--no-build",
                "--fast",
                "--profile",
                profile,
            ])
            .arg("--output")
            .arg(&out_dir),
        Duration::from_secs(300),
    );
    let deb = PathBuf::from(deb.lines().last().unwrap_or_default().trim());
    assert!(deb.is_file(), "cargo deb made no package: {deb:?}");

    let _installed = Installed;
    run(
        "dpkg -i",
        Command::new("dpkg").arg("-i").arg(&deb),
        Duration::from_secs(120),
    );
    for f in [
        "/usr/bin/sluice",
        "/usr/bin/sluice-load",
        "/lib/systemd/system/sluice.service",
        "/etc/sluice/sluice.toml",
        "/usr/share/doc/sluice/sluice.example.toml",
    ] {
        assert!(Path::new(f).exists(), "{f} not installed");
    }
    let unit = std::fs::read_to_string("/lib/systemd/system/sluice.service").unwrap();
    assert!(unit.contains("\nType=notify\n"), "{unit}");
    // systemd's own check of the unit (it needs the installed binary, so here, not before);
    // systemd-analyze works without a running systemd.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        run(
            "systemd-analyze verify",
            Command::new("systemd-analyze").args([
                "verify",
                "--man=no",
                "/lib/systemd/system/sluice.service",
            ]),
            Duration::from_secs(60),
        );
    } else {
        eprintln!("no systemd-analyze here: the unit's syntax is not checked by systemd");
    }
    let conffiles = run(
        "dpkg-query",
        Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]),
        Duration::from_secs(30),
    );
    assert!(
        conffiles.contains("/etc/sluice/sluice.toml"),
        "not a conffile: {conffiles:?}"
    );
    // The configuration holds passwords: root:sluice, 0640 (postinst).
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/etc/sluice/sluice.toml").unwrap();
        assert_eq!(m.mode() & 0o777, 0o640);
        let group = run(
            "stat",
            Command::new("stat").args(["-c", "%U:%G", "/etc/sluice/sluice.toml"]),
            Duration::from_secs(10),
        );
        assert_eq!(group.trim(), "root:sluice");
    }
    // The default configuration is valid as installed.
    run(
        "sluice check-config",
        Command::new("/usr/bin/sluice").args(["check-config", "/etc/sluice/sluice.toml"]),
        Duration::from_secs(30),
    );
    run(
        "sluice-load --version",
        Command::new("/usr/bin/sluice-load").arg("--version"),
        Duration::from_secs(30),
    );

    // The installed binary proxies the suite's MariaDB (a config of the test's own).
    let mut s = Sluice::with_binary(
        Config::default().top("shards = 1"),
        Path::new("/usr/bin/sluice"),
    );
    let mut c = s.conn();
    let v: Option<String> =
        mysql::prelude::Queryable::query_first(&mut c, "SELECT CONCAT('through ', 'sluice')")
            .unwrap();
    assert_eq!(v.as_deref(), Some("through sluice"));
    drop(c);
    assert!(s.terminate().success());
    drop(s);

    drop(_installed);
    assert!(
        !Path::new("/usr/bin/sluice").exists(),
        "dpkg --purge left /usr/bin/sluice"
    );
    assert!(
        !Path::new("/etc/sluice/sluice.toml").exists(),
        "dpkg --purge left the conffile"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
