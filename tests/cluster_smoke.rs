//! The test clusters themselves (`common::servers`, `scripts/mariadb-cluster.sh`): GTID replication
//! from the primary, read-only replicas, failover to a replica after the primary is killed, the
//! old primary restarted and rejoined; independent servers frozen and resumed. Needs no
//! SLUICE_TEST_MARIADB: every server here is the test's own.

mod common;

use common::servers::Cluster;
use common::{server_error, wait_for};
use mysql::prelude::Queryable;
use std::time::Duration;

fn rows(c: &mut mysql::Conn) -> Vec<(i32, String)> {
    c.query("SELECT id, v FROM smoke ORDER BY id").unwrap()
}

#[test]
fn replicated_pair_fails_over_to_the_replica() {
    let mut cluster = Cluster::start_replicated(2);
    assert_eq!(cluster.primary, Some(0));

    let mut primary = cluster.servers[0].conn();
    primary
        .query_drop("CREATE TABLE smoke (id INT PRIMARY KEY, v VARCHAR(20))")
        .unwrap();
    primary
        .query_drop("INSERT INTO smoke VALUES (1, 'on s0')")
        .unwrap();

    let mut replica = cluster.servers[1].conn();
    wait_for("the row on the replica", Duration::from_secs(30), || {
        replica
            .query_first::<String, _>("SELECT v FROM smoke WHERE id = 1")
            .ok()
            .flatten()
    });
    let e = replica
        .query_drop("INSERT INTO smoke VALUES (9, 'on the replica')")
        .unwrap_err();
    assert_eq!(server_error(&e).map(|e| e.0), Some(1290), "{e}");
    let status: mysql::Row = cluster.servers[1]
        .root()
        .query_first("SHOW SLAVE STATUS")
        .unwrap()
        .expect("s1 is a replica");
    assert_eq!(status.get::<String, _>("Slave_IO_Running").unwrap(), "Yes");
    assert_eq!(status.get::<String, _>("Slave_SQL_Running").unwrap(), "Yes");
    assert_eq!(status.get::<u32, _>("Last_SQL_Errno").unwrap(), 0);

    cluster.kill9(0);
    cluster.promote(1);
    assert_eq!(cluster.primary, Some(1));
    // The connection opened while s1 was a replica writes now.
    replica
        .query_drop("INSERT INTO smoke VALUES (2, 'on s1')")
        .unwrap();
    assert_eq!(
        rows(&mut replica),
        vec![(1, "on s0".to_string()), (2, "on s1".to_string())]
    );

    // The old primary comes back as it was (writable, replicating from nobody) until it rejoins.
    cluster.restart(0);
    assert_eq!(
        rows(&mut cluster.servers[0].conn()),
        vec![(1, "on s0".to_string())]
    );
    cluster.rejoin(0);
    cluster.wait_replicated(&[0]);
    let mut old = cluster.servers[0].conn();
    assert_eq!(rows(&mut old).len(), 2);
    let e = old
        .query_drop("INSERT INTO smoke VALUES (3, 'on s0')")
        .unwrap_err();
    assert_eq!(server_error(&e).map(|e| e.0), Some(1290), "{e}");
}

#[test]
fn independent_servers_freeze_and_restart() {
    let mut cluster = Cluster::start(2);
    assert_eq!(cluster.primary, None);
    let ids: Vec<u32> = cluster
        .servers
        .iter()
        .map(|s| s.conn().query_first("SELECT @@server_id").unwrap().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2]);

    cluster.sigstop(1);
    let frozen = cluster.servers[1]
        .opts()
        .read_timeout(Some(Duration::from_millis(500)));
    assert!(
        mysql::Conn::new(frozen).is_err(),
        "a frozen server answered"
    );
    cluster.sigcont(1);
    cluster.servers[1].conn().query_drop("DO 1").unwrap();

    cluster.kill9(1);
    let pid = cluster.servers[1].pid;
    cluster.restart(1);
    assert_ne!(cluster.servers[1].pid, pid);
    let id: Option<u32> = cluster.servers[1]
        .conn()
        .query_first("SELECT @@server_id")
        .unwrap();
    assert_eq!(id, Some(2), "the restarted server keeps its server_id");
}
