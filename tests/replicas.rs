//! Reads on replicas with read-your-writes (`[routing]`), on a primary with two real GTID
//! replicas (`scripts/mariadb-cluster.sh`), one of them delayed.

mod common;

use common::servers::Cluster;
use common::{free_port, metric_sum, scrape, wait_for, Config, Sluice};
use mysql::prelude::Queryable;
use std::time::Duration;

const WRITES: usize = 400;

/// Writes a row and reads it back at once, `WRITES` times; the reads that did not see it.
fn stale_reads(c: &mut mysql::Conn, tag: &str) -> usize {
    let mut stale = 0;
    for i in 0..WRITES {
        c.query_drop(format!("INSERT INTO ryw (tag, n) VALUES ('{tag}', {i})"))
            .unwrap_or_else(|e| panic!("write {i} of {tag}: {e}"));
        let seen: Result<Option<u64>, _> = c.query_first(format!(
            "SELECT COUNT(*) FROM ryw WHERE tag = '{tag}' AND n = {i}"
        ));
        match seen {
            Ok(Some(1)) => {}
            Ok(_) => stale += 1,
            // A replica that has not created the table yet (eventual consistency only).
            Err(e) if common::server_error(&e).is_some_and(|(code, ..)| code == 1146) => stale += 1,
            Err(e) => panic!("read {i} of {tag}: {e}"),
        }
    }
    stale
}

/// A read that warns, its conditions read into user variables, a write, the variables read
/// again: each read's column types and row.
fn diagnostics_into_variables(c: &mut mysql::Conn) -> Vec<(String, String)> {
    // A write first: the session holds no replica when the read comes (counted as routed).
    c.query_drop("INSERT INTO ryw (tag, n) VALUES ('diag', 0)")
        .unwrap();
    c.query_drop("SELECT CAST('1x' AS SIGNED), CAST('2y' AS SIGNED)")
        .unwrap();
    c.query_drop("GET DIAGNOSTICS @n = NUMBER").unwrap();
    c.query_drop("GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT, @e = MYSQL_ERRNO")
        .unwrap();
    let mut out = Vec::new();
    let mut read = |c: &mut mysql::Conn| {
        let mut r = c.query_iter("SELECT @n, @m, @e, COLLATION(@m)").unwrap();
        let cols: Vec<String> = r
            .columns()
            .as_ref()
            .iter()
            .map(|c| {
                format!(
                    "{:?}/{:?}/{}",
                    c.column_type(),
                    c.flags(),
                    c.character_set()
                )
            })
            .collect();
        let rows: Vec<mysql::Row> = r.by_ref().collect::<Result<_, _>>().unwrap();
        let rows: Vec<String> = rows
            .into_iter()
            .flat_map(mysql::Row::unwrap)
            .map(|v| v.as_sql(false))
            .collect();
        out.push((cols.join(" "), rows.join(", ")));
    };
    read(c);
    c.query_drop("INSERT INTO ryw (tag, n) VALUES ('diag', 1)")
        .unwrap();
    read(c);
    out
}

/// Replicas `which` of `cl` apply everything two seconds late (their SQL threads wait).
fn delay(cl: &Cluster, which: &[usize]) {
    for &i in which {
        let mut r = cl.servers[i].root();
        r.query_drop("STOP SLAVE").unwrap();
        r.query_drop("CHANGE MASTER TO MASTER_DELAY = 2").unwrap();
        r.query_drop("START SLAVE").unwrap();
    }
}

/// A sluice routing reads to the two replicas of `cl` with session consistency, its metrics on
/// `mport`.
fn routed(cl: &Cluster, mport: u16) -> Config {
    let (a0, a1, a2) = (
        cl.servers[0].addr(),
        cl.servers[1].addr(),
        cl.servers[2].addr(),
    );
    Config::default()
        .top(&format!("metrics_listen = \"127.0.0.1:{mport}\""))
        .backends_toml(&format!(
            "[[backends]]\naddress = \"{a0}\"\nrole = \"primary\"\n\
             [[backends]]\naddress = \"{a1}\"\nrole = \"replica\"\n\
             [[backends]]\naddress = \"{a2}\"\nrole = \"replica\"\n"
        ))
        .tables(
            "[routing]\nreads = \"replicas\"\nconsistency = \"session\"\n\
             max_replication_lag_ms = 60000\ncausal_wait_ms = 50\n",
        )
}

#[test]
fn session_consistency_reads_your_writes_and_eventual_does_not() {
    let cl = Cluster::start_replicated(3);
    // Replica 1 applies everything two seconds late (its SQL thread waits).
    delay(&cl, &[1]);
    let mport = free_port();
    let s = Sluice::with(
        routed(&cl, mport).users(
                "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
                 [[users]]\nname = \"ev\"\npassword = \"ev\"\nbackend_user = \"app\"\nbackend_password = \"app\"\nconsistency = \"eventual\"\n\
                 [[users]]\nname = \"gl\"\npassword = \"gl\"\nbackend_user = \"app\"\nbackend_password = \"app\"\nconsistency = \"global\"\n",
            ),
    );
    let mut c = s.conn();
    c.query_drop("CREATE TABLE ryw (tag VARCHAR(8), n INT, KEY (tag, n))")
        .unwrap();
    // Both replicas serve reads once the probes have seen them replicating (and the table).
    wait_for("reads served by replicas", Duration::from_secs(30), || {
        let _: Option<u64> = c.query_first("SELECT COUNT(*) FROM ryw").unwrap();
        (metric_sum(&scrape(mport), "sluice_reads_to_replicas_total", &[]) > 0.0).then_some(())
    });

    // Read-your-writes: not one stale read.
    assert_eq!(stale_reads(&mut c, "session"), 0);
    let m = scrape(mport);
    let on_replicas = metric_sum(&m, "sluice_reads_to_replicas_total", &[]);
    let behind = metric_sum(&m, "sluice_read_fallbacks_total", &["reason=\"behind\""]);
    eprintln!("session: {on_replicas} reads on replicas, {behind} to the primary (replica behind)");
    assert!(on_replicas > 0.0, "replicas served reads");
    // Reads go to the freshest replica (not the delayed one), which waits for the write.
    assert!(
        metric_sum(&m, "sluice_causal_waits_total", &[]) > 0.0,
        "reads waited for their replica to apply the session's write"
    );

    // One write, then many reads: the replica that waited once for the write is known to have
    // applied it, so the reads after it need no wait (and still see the row).
    c.query_drop("INSERT INTO ryw (tag, n) VALUES ('many', 0)")
        .unwrap();
    let m = scrape(mport);
    let (waits0, replicas0) = (
        metric_sum(&m, "sluice_causal_waits_total", &[]),
        metric_sum(&m, "sluice_reads_to_replicas_total", &[]),
    );
    for i in 0..20 {
        let n: Option<u64> = c
            .query_first("SELECT COUNT(*) FROM ryw WHERE tag = 'many'")
            .unwrap();
        assert_eq!(n, Some(1), "read {i} after the write");
    }
    let m = scrape(mport);
    let waits = metric_sum(&m, "sluice_causal_waits_total", &[]) - waits0;
    let served = metric_sum(&m, "sluice_reads_to_replicas_total", &[]) - replicas0;
    eprintln!("20 reads after one write: {served} on replicas, {waits} causal waits");
    assert!(served >= 10.0, "the reads went to replicas: {served}");
    // (At most one wait per replica: the delayed one may serve a read when the other is busy.)
    assert!(waits <= 2.0, "{waits} causal waits for one write");

    // Prepared statements are routed the same way (prepared on the replica when first run there).
    let before = metric_sum(&scrape(mport), "sluice_reads_to_replicas_total", &[]);
    let read = c
        .prep("SELECT COUNT(*) FROM ryw WHERE tag = ? AND n = ?")
        .unwrap();
    let mut stale = 0;
    for i in 0..WRITES {
        c.exec_drop(
            "INSERT INTO ryw (tag, n) VALUES (?, ?)",
            ("prepared", i as u64),
        )
        .unwrap_or_else(|e| panic!("prepared write {i}: {e}"));
        let seen: Option<u64> = c
            .exec_first(&read, ("prepared", i as u64))
            .unwrap_or_else(|e| panic!("prepared read {i}: {e}"));
        if seen != Some(1) {
            stale += 1;
        }
    }
    let routed = metric_sum(&scrape(mport), "sluice_reads_to_replicas_total", &[]) - before;
    eprintln!("prepared: {routed} reads on replicas, {stale} stale of {WRITES}");
    assert_eq!(stale, 0, "prepared reads after writes were stale");
    assert!(routed > 0.0, "prepared reads were served by replicas");

    // Eventual consistency: stale reads happen (the test can fail). Reads go to the freshest
    // replica first, so for this part both replicas apply two seconds late.
    let mut r2 = cl.servers[2].root();
    r2.query_drop("STOP SLAVE").unwrap();
    r2.query_drop("CHANGE MASTER TO MASTER_DELAY = 2").unwrap();
    r2.query_drop("START SLAVE").unwrap();
    let mut ev = s.conn_as("ev", "ev", Some("app"));
    let stale = stale_reads(&mut ev, "eventual");
    // With both replicas behind, `session` reads are still never stale: each read, sent with
    // its wait, is dropped when the wait runs out, and the primary answers it.
    let behind_before = metric_sum(
        &scrape(mport),
        "sluice_read_fallbacks_total",
        &["reason=\"behind\""],
    );
    assert_eq!(stale_reads(&mut c, "late"), 0);
    let behind = metric_sum(
        &scrape(mport),
        "sluice_read_fallbacks_total",
        &["reason=\"behind\""],
    ) - behind_before;
    assert!(
        behind >= (WRITES / 2) as f64,
        "reads whose replica was behind went to the primary: {behind}"
    );
    r2.query_drop("STOP SLAVE").unwrap();
    r2.query_drop("CHANGE MASTER TO MASTER_DELAY = 0").unwrap();
    r2.query_drop("START SLAVE").unwrap();
    eprintln!("eventual: {stale} stale reads of {WRITES}");
    assert!(
        stale > 0,
        "eventual consistency read a replica that had not caught up"
    );

    // Global consistency: another client's write, committed before the read starts, is seen.
    let mut gl = s.conn_as("gl", "gl", Some("app"));
    for i in 0..200 {
        c.query_drop(format!("INSERT INTO ryw (tag, n) VALUES ('global', {i})"))
            .unwrap();
        let seen: u64 = gl
            .query_first(format!(
                "SELECT COUNT(*) FROM ryw WHERE tag = 'global' AND n = {i}"
            ))
            .unwrap()
            .unwrap();
        assert_eq!(
            seen, 1,
            "global read {i} missed another client's committed write"
        );
    }
    let m = scrape(mport);
    eprintln!(
        "global: {} reads on replicas in all, {} global fallbacks",
        metric_sum(&m, "sluice_reads_to_replicas_total", &[]),
        metric_sum(&m, "sluice_read_fallbacks_total", &["reason=\"global\""])
    );

    // A routed read's warnings are the client's own, wherever it ran.
    for _ in 0..20 {
        let _: Vec<i64> = c
            .query("SELECT CAST(CONCAT(n, 'x') AS SIGNED) FROM ryw WHERE tag = 'session' AND n = 1")
            .unwrap();
        let w: Vec<(String, u32, String)> = c.query("SHOW WARNINGS").unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].1, 1292, "{w:?}");
    }

    // GET DIAGNOSTICS into user variables after a routed read that warned reads the replica's
    // conditions, and the variables go on with the session to the primary at its next write:
    // values and types as a direct session sees them.
    let mut direct = cl.servers[0].conn();
    let routed_before = metric_sum(&scrape(mport), "sluice_reads_to_replicas_total", &[]);
    let through = diagnostics_into_variables(&mut ev);
    let routed = metric_sum(&scrape(mport), "sluice_reads_to_replicas_total", &[]) - routed_before;
    assert!(
        routed >= 1.0,
        "the warning read was served by a replica: {:?}",
        scrape(mport)
            .lines()
            .filter(|l| l.contains("fallback") || l.contains("replica"))
            .collect::<Vec<_>>()
    );
    assert_eq!(through, diagnostics_into_variables(&mut direct));
    assert!(
        through.iter().any(|(_, row)| row.contains("1292")),
        "{through:?}"
    );
    // Variables sluice does not carry (a quoted name with a space) pin on the primary, never on
    // the replica: the write after them works.
    let mut odd = s.conn_as("ev", "ev", Some("app"));
    odd.query_drop("SELECT CAST('1x' AS SIGNED)").unwrap();
    odd.query_drop("GET DIAGNOSTICS @`a b` = NUMBER").unwrap();
    odd.query_drop("INSERT INTO ryw (tag, n) VALUES ('odd', 1)")
        .expect("a write after GET DIAGNOSTICS into an odd variable");

    // A table only the primary has (created outside the binary log): the replica's ERR 1146
    // is not the answer; the read runs again on the primary. An error the primary gives too
    // reaches the client as the primary gives it.
    let mut root0 = cl.servers[0].root();
    root0
        .query_drop("SET sql_log_bin = 0; CREATE TABLE app.only_primary (a INT); INSERT INTO app.only_primary VALUES (7); SET sql_log_bin = 1")
        .unwrap();
    let retried = |m: &str| {
        metric_sum(
            m,
            "sluice_read_fallbacks_total",
            &["reason=\"replica_error\""],
        )
    };
    // A fresh session: `ev` holds variables now, so its reads stay on the primary.
    let mut ev = s.conn_as("ev", "ev", Some("app"));
    let before = retried(&scrape(mport));
    for _ in 0..10 {
        let n: Option<u64> = ev.query_first("SELECT a FROM only_primary").unwrap();
        assert_eq!(n, Some(7));
    }
    let e = ev
        .query_drop("SELECT nosuch FROM only_primary")
        .expect_err("an unknown column");
    assert_eq!(
        common::server_error(&e).map(|(code, ..)| code),
        Some(1054),
        "{e}"
    );
    assert!(
        retried(&scrape(mport)) - before >= 10.0,
        "the replicas' errors were answered again by the primary"
    );
    // Prepared statements too: a replica lacking the table cannot prepare the statement there;
    // the primary prepares it and answers.
    let before = retried(&scrape(mport));
    for i in 0..10 {
        let n: Option<u64> = ev
            .exec_first("SELECT a FROM only_primary WHERE a = ?", (7,))
            .unwrap_or_else(|e| panic!("execute {i}: {e}"));
        assert_eq!(n, Some(7));
    }
    assert!(
        retried(&scrape(mport)) - before >= 10.0,
        "the replicas' refusals to prepare were answered by the primary"
    );

    // Writes, transactions and locking reads never go to a replica.
    c.query_drop("BEGIN").unwrap();
    c.query_drop("INSERT INTO ryw VALUES ('trx', 1)").unwrap();
    let n: u64 = c
        .query_first("SELECT COUNT(*) FROM ryw WHERE tag = 'trx'")
        .unwrap()
        .unwrap();
    assert_eq!(n, 1, "a read inside a transaction sees the transaction");
    c.query_drop("COMMIT").unwrap();
    let n: u64 = c
        .query_first("SELECT COUNT(*) FROM ryw WHERE tag = 'trx' FOR UPDATE")
        .unwrap()
        .unwrap();
    assert_eq!(n, 1);
}

/// What a session sees through sluice and directly: a read that raises a condition (routed to
/// a replica through sluice), then a statement that must run on the primary and leaves the
/// diagnostics area as it is (a user variable set, a prepare), or one that empties it (a write
/// of rows), then the conditions. Each part on a new connection (`connect`): a session that has
/// not written reads on a replica at once.
fn conditions_after_leaving_a_replica(connect: impl Fn() -> mysql::Conn) -> Vec<String> {
    let mut out = Vec::new();
    let mut c = connect();
    c.query_drop("SELECT CAST('2020-02-30' AS DATE)").unwrap();
    c.query_drop("SET @a = 1").unwrap();
    let n: Option<u64> = c.query_first("SHOW COUNT(*) WARNINGS").unwrap();
    out.push(format!("after SET: {n:?}"));
    let w: Vec<(String, u32, String)> = c.query("SHOW WARNINGS").unwrap();
    out.push(format!("{w:?}"));
    c.query_drop("GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT, @e = MYSQL_ERRNO")
        .unwrap();
    let r: Option<(Option<String>, Option<u32>)> = c.query_first("SELECT @m, @e").unwrap();
    out.push(format!("{r:?}"));
    // An error (the data's answer, on any server), then a statement that leaves it there.
    let mut c = connect();
    let e = c
        .query_drop("SELECT 1 FROM DUAL WHERE (SELECT 1 UNION SELECT 2)")
        .expect_err("subquery returns more than one row");
    out.push(format!(
        "{:?}",
        common::server_error(&e).map(|(code, ..)| code)
    ));
    c.query_drop("SET @b = 2").unwrap();
    let w: Vec<(String, u32, String)> = c.query("SHOW ERRORS").unwrap();
    out.push(format!("{w:?}"));
    // A prepare (COM_STMT_PREPARE, on the primary) leaves them too.
    let mut c = connect();
    c.query_drop("SELECT 1/0").unwrap();
    let st = c.prep("SELECT ? + 1").unwrap();
    let n: Option<u64> = c.query_first("SHOW COUNT(*) WARNINGS").unwrap();
    out.push(format!("after a prepare: {n:?}"));
    c.close(st).unwrap();
    // A write of rows empties the area.
    let mut c = connect();
    c.query_drop("SELECT 1/0").unwrap();
    c.query_drop("INSERT INTO rr VALUES (-1)").unwrap();
    let n: Option<u64> = c.query_first("SHOW COUNT(*) WARNINGS").unwrap();
    out.push(format!("after a write: {n:?}"));
    out
}

#[test]
fn a_session_leaving_its_replica_keeps_its_writes_and_conditions() {
    let cl = Cluster::start_replicated(3);
    // Both replicas apply everything two seconds late: a read that does not wait for the
    // session's write on a replica is stale.
    delay(&cl, &[1, 2]);
    let mport = free_port();
    let s = Sluice::with(routed(&cl, mport));
    let mut c = s.conn();
    c.query_drop("CREATE TABLE rr (n INT)").unwrap();
    wait_for("reads served by replicas", Duration::from_secs(30), || {
        let _: Option<u64> = c.query_first("SELECT COUNT(*) FROM rr").unwrap();
        (metric_sum(&scrape(mport), "sluice_reads_to_replicas_total", &[]) > 0.0).then_some(())
    });

    // COM_RESET_CONNECTION and COM_CHANGE_USER empty @@last_gtid, not what the client wrote: a
    // direct connection reads its writes after them, and so must a read through sluice.
    let behind = |m: &str| metric_sum(m, "sluice_read_fallbacks_total", &["reason=\"behind\""]);
    let before = behind(&scrape(mport));
    for i in 0..10 {
        c.query_drop(format!("INSERT INTO rr VALUES ({i})"))
            .unwrap();
        if i % 2 == 0 {
            c.reset().unwrap();
        } else {
            c.change_user(mysql::ChangeUserOpts::DEFAULT).unwrap();
        }
        let last: Option<String> = c.query_first("SELECT @@last_gtid").unwrap();
        assert_eq!(last.as_deref(), Some(""), "@@last_gtid after the reset");
        let n: Option<u64> = c
            .query_first(format!("SELECT COUNT(*) FROM rr WHERE n = {i}"))
            .unwrap();
        assert_eq!(n, Some(1), "read {i} after a write and a reset");
    }
    // (Each read waited on a replica, which was behind, and the primary answered.)
    assert!(behind(&scrape(mport)) - before >= 10.0);

    // Conditions a routed read raised on a replica, left there when the session goes on to the
    // primary: the client reads them as it would directly. The read runs again there, except
    // before the write, which empties the area anyway.
    let m = scrape(mport);
    let routed = |m: &str| metric_sum(m, "sluice_reads_to_replicas_total", &[]);
    let rerun = |m: &str| metric_sum(m, "sluice_replica_conditions_rerun_total", &[]);
    let (routed_before, rerun_before) = (routed(&m), rerun(&m));
    let through = conditions_after_leaving_a_replica(|| s.conn());
    let m = scrape(mport);
    assert_eq!(
        routed(&m) - routed_before,
        4.0,
        "the four reads that raised conditions were served by replicas"
    );
    assert_eq!(
        rerun(&m) - rerun_before,
        3.0,
        "run again before SET, SET and the prepare"
    );
    let direct = conditions_after_leaving_a_replica(|| cl.servers[0].conn());
    assert_eq!(through, direct);
    assert!(
        direct[0] == "after SET: Some(1)"
            && direct[1].contains("1292")
            && direct[4].contains("1242")
            && direct[5] == "after a prepare: Some(1)"
            && direct[6] == "after a write: Some(0)",
        "{direct:?}"
    );
}

/// The position follower (`shard::follow`): once causal reads are served, a causal user's write
/// is followed on each replica, so the reads after it that come once the replicas applied it
/// need no `MASTER_GTID_WAIT` of their own; before any causal read, writes cost no follower
/// wait at all. The probe looks once a minute here: only the follower (or a read's own wait)
/// can have told sluice that a replica applied a write.
#[test]
fn the_follower_spares_causal_reads_their_wait_once_replicas_applied() {
    let cl = Cluster::start_replicated(3);
    let mport = free_port();
    let s = Sluice::with(
        routed(&cl, mport)
            .health("user = \"app\"\npassword = \"app\"\ninterval_ms = 60000\n")
            .users(
                "[[users]]\nname = \"app\"\npassword = \"app\"\nbackend_user = \"app\"\nbackend_password = \"app\"\n\
                 [[users]]\nname = \"ev\"\npassword = \"ev\"\nbackend_user = \"app\"\nbackend_password = \"app\"\nconsistency = \"eventual\"\n",
            ),
    );
    let m = |name: &str| metric_sum(&scrape(mport), name, &[]);
    let mut c = s.conn();
    let mut ev = s.conn_as("ev", "ev", Some("app"));
    let mut primary = cl.servers[0].root();
    let mut replicas = [cl.servers[1].root(), cl.servers[2].root()];
    // Waits (bounded) until both replicas have applied everything the primary has committed.
    let mut settle = |primary: &mut mysql::Conn| {
        let pos: String = primary
            .query_first("SELECT @@global.gtid_binlog_pos")
            .unwrap()
            .unwrap();
        for r in replicas.iter_mut() {
            let applied: i64 = r
                .query_first(format!("SELECT MASTER_GTID_WAIT('{pos}', 30)"))
                .unwrap()
                .unwrap();
            assert_eq!(applied, 0, "a replica did not apply {pos} within 30 s");
        }
    };

    // Writes of a causal user with no causal read (another user reads, `eventual`): no
    // follower, no wait.
    c.query_drop("CREATE TABLE fl (n INT)").unwrap();
    for i in 0..20 {
        c.query_drop(format!("INSERT INTO fl VALUES ({i})"))
            .unwrap();
    }
    settle(&mut primary);
    wait_for(
        "eventual reads served by replicas",
        Duration::from_secs(30),
        || {
            let _: Option<u64> = ev.query_first("SELECT COUNT(*) FROM fl").unwrap();
            (m("sluice_reads_to_replicas_total") > 0.0).then_some(())
        },
    );
    assert_eq!(
        m("sluice_follow_waits_total"),
        0.0,
        "no causal read, no follower"
    );

    // A causal read turns following on; then each write is followed on both replicas.
    let n: Option<u64> = c.query_first("SELECT COUNT(*) FROM fl").unwrap();
    assert_eq!(n, Some(20));
    for round in 0..3u64 {
        let applied0 = m("sluice_follow_applied_total");
        c.query_drop(format!("INSERT INTO fl VALUES ({})", 100 + round))
            .unwrap();
        settle(&mut primary);
        // Both replicas' followers answered "applied" for this write, and none is waiting.
        wait_for(
            "the followers to learn the write",
            Duration::from_secs(30),
            || {
                let scraped = scrape(mport);
                let f = |name: &str| metric_sum(&scraped, name, &[]);
                let (sent, applied) = (
                    f("sluice_follow_waits_total"),
                    f("sluice_follow_applied_total"),
                );
                assert_eq!(f("sluice_follow_errors_total"), 0.0);
                (applied >= applied0 + 2.0 && sent == applied + f("sluice_follow_timeouts_total"))
                    .then_some(())
            },
        );
        let (waits0, served0) = (
            m("sluice_causal_waits_total"),
            m("sluice_reads_to_replicas_total"),
        );
        for i in 0..20 {
            let n: Option<u64> = c
                .query_first(format!("SELECT COUNT(*) FROM fl WHERE n = {}", 100 + round))
                .unwrap();
            assert_eq!(n, Some(1), "round {round}, read {i} after the write");
        }
        let waits = m("sluice_causal_waits_total") - waits0;
        let served = m("sluice_reads_to_replicas_total") - served0;
        eprintln!("round {round}: 20 causal reads, {served} on replicas, {waits} causal waits");
        assert_eq!(served, 20.0, "the causal reads went to replicas");
        assert_eq!(waits, 0.0, "causal reads waited although the follower knew");
    }
    eprintln!(
        "follower: {} waits, {} applied, {} timed out",
        m("sluice_follow_waits_total"),
        m("sluice_follow_applied_total"),
        m("sluice_follow_timeouts_total")
    );
}
