//! The session generator: random but meaningful scripts from a weighted corpus of statement
//! families, with a small per-session model (current schema, open transaction, prepared handles
//! and their cursors, SQL-level prepared names, temporary tables, locks) so that most steps make
//! sense where they are: EXECUTE after PREPARE, FETCH on an open cursor, RELEASE_LOCK after
//! GET_LOCK. Some steps are wrong on purpose (unknown tables, syntax errors, stale handles):
//! errors are compared too.
//!
//! Determinism: every statement's result depends only on the session's own schemas
//! (`<prefix>_<k>`, `<prefix>_<k>_b`, created fresh before each run by [`crate::setup`]) and on
//! the session's own earlier statements. The corpus has no NOW()/RAND()/UUID()/SYSDATE(), no
//! performance_schema or PROCESSLIST contents, no connection ids in results (see
//! [`crate::normalize`]), no timing; `wait_timeout` is only ever set to values far above a run's
//! length.

use crate::rng::Rng;
use crate::script::{Param, Profile, Script, Step};

/// The sessions' schema names.
pub fn schemas(prefix: &str, k: usize) -> (String, String) {
    (format!("{prefix}_{k}"), format!("{prefix}_{k}_b"))
}

/// What a binary-protocol template takes and gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Int,
    Str,
    Double,
    Date,
    DateTime,
    Any,
}

struct Template {
    /// The statement; `{A}` stands for the session's first schema (where the routines live).
    sql: &'static str,
    params: &'static [Ty],
    /// Returns rows (a cursor makes sense).
    rows: bool,
    /// Index of a parameter that may be sent as long data.
    long_data: Option<u16>,
}

const TEMPLATES: &[Template] = &[
    Template {
        sql: "SELECT id, v, n FROM t1 WHERE id > ? ORDER BY id",
        params: &[Ty::Int],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SELECT id, d, x, s, b FROM t2 WHERE id >= ? ORDER BY id",
        params: &[Ty::Int],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "INSERT INTO t2 (d, x, s) VALUES (?, ?, ?)",
        params: &[Ty::Date, Ty::Double, Ty::Str],
        rows: false,
        long_data: Some(2),
    },
    Template {
        sql: "INSERT INTO t1 (v, n) VALUES (?, ?)",
        params: &[Ty::Str, Ty::Int],
        rows: false,
        long_data: None,
    },
    Template {
        sql: "UPDATE t1 SET n = n + ? WHERE id <= ?",
        params: &[Ty::Int, Ty::Int],
        rows: false,
        long_data: None,
    },
    Template {
        sql: "SELECT CAST(? AS INT) AS c, ? + 1 AS p",
        params: &[Ty::Str, Ty::Int],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SELECT LAST_INSERT_ID(), ROW_COUNT(), FOUND_ROWS()",
        params: &[],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "CALL {A}.p_inout(?)",
        params: &[Ty::Int],
        rows: false,
        long_data: None,
    },
    Template {
        sql: "CALL {A}.p_multi()",
        params: &[],
        rows: false,
        long_data: None,
    },
    Template {
        sql: "SELECT ? AS a, ? AS b, ? AS c",
        params: &[Ty::Any, Ty::Double, Ty::DateTime],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "INSERT INTO t2 (s, b) VALUES (?, ?)",
        params: &[Ty::Str, Ty::Str],
        rows: false,
        long_data: Some(1),
    },
    Template {
        sql: "SELECT @@sql_mode, @@time_zone, @@character_set_results, @@div_precision_increment",
        params: &[],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SELECT v, LENGTH(v), 'é' AS e FROM t1 WHERE v >= ? ORDER BY v",
        params: &[Ty::Str],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SHOW WARNINGS",
        params: &[],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SELECT 1 / ? AS q, 7 / 3 AS r",
        params: &[Ty::Int],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SELECT NEXTVAL(s1) AS nv, LASTVAL(s1) AS lv",
        params: &[],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SELECT {A}.f_ins(?) AS fid, LAST_INSERT_ID() AS lid",
        params: &[Ty::Str],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SELECT id FROM t1 ORDER BY id",
        params: &[],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SELECT k, c, tiny, dec1 FROM t3 WHERE k <= ? ORDER BY k",
        params: &[Ty::Int],
        rows: true,
        long_data: None,
    },
    Template {
        sql: "SELECT ts, FROM_UNIXTIME(?) AS fu FROM t4 ORDER BY id",
        params: &[Ty::Int],
        rows: true,
        long_data: None,
    },
];

#[derive(Debug, Clone)]
struct Handle {
    template: usize,
    /// The server still has it (not closed, not dropped by a reset).
    valid: bool,
    cursor_open: bool,
}

#[derive(Debug, Default)]
struct Model {
    db_a: String,
    db_b: String,
    cur_db: Option<String>,
    multi: bool,
    in_txn: bool,
    autocommit_off: bool,
    lock_tables: bool,
    handles: Vec<Handle>,
    sql_prepared: Vec<String>,
    temp_tables: Vec<String>,
    /// A SAVEPOINT was set in the open transaction.
    savepoint: bool,
    locks: u32,
    /// Counter for unique values (t1.v is UNIQUE).
    uniq: u32,
    k: usize,
}

/// Generates session `index` of the run seeded `seed`: a prologue and `steps` commands.
pub fn generate(seed: u64, index: usize, steps: usize, prefix: &str) -> Script {
    let mut rng = Rng::for_session(seed, index);
    let profile = match rng.weighted(&[40, 30, 30]) {
        0 => Profile::Modern,
        1 => Profile::Classic,
        _ => Profile::Tracking,
    };
    let (db_a, db_b) = schemas(prefix, index);
    let mut g = Gen {
        rng,
        m: Model {
            db_a: db_a.clone(),
            db_b,
            cur_db: Some(db_a.clone()),
            multi: true,
            k: index,
            ..Model::default()
        },
        out: vec![Step::Connect],
    };
    // Bounded: every family adds at least one step.
    while g.out.len() < steps + 1 {
        g.one();
    }
    g.out.truncate(steps + 1);
    Script {
        index,
        profile,
        schema: db_a,
        steps: g.out,
    }
}

struct Gen {
    rng: Rng,
    m: Model,
    out: Vec<Step>,
}

/// Statement families and their weights.
/// A statement family: adds one or more steps to the script.
type Family = fn(&mut Gen);

const FAMILIES: &[(u32, Family)] = &[
    (12, Gen::settings),
    (7, Gen::read_settings),
    (6, Gen::setting_effects),
    (5, Gen::schema),
    (14, Gen::insert_id),
    (6, Gen::row_count_found_rows),
    (4, Gen::sequences),
    (12, Gen::warnings_errors),
    (5, Gen::temp_tables),
    (5, Gen::user_vars),
    (6, Gen::sql_prepare),
    (4, Gen::named_locks),
    (3, Gen::lock_tables),
    (3, Gen::exec_comments),
    (34, Gen::binary),
    (10, Gen::transactions),
    (5, Gen::multi_statements),
    (6, Gen::protocol_commands),
    (5, Gen::procedures),
    (2, Gen::kill_query),
    (5, Gen::reads),
    (6, Gen::dml),
    (3, Gen::gtid),
    (2, Gen::trackers),
];

impl Gen {
    fn one(&mut self) {
        // State that should not linger: a LOCK TABLES or an open transaction is closed soon.
        if self.m.lock_tables && self.rng.chance(40) {
            self.q("UNLOCK TABLES");
            self.m.lock_tables = false;
            return;
        }
        if self.m.in_txn && self.rng.chance(15) {
            let end = *self
                .rng
                .pick(&["COMMIT", "ROLLBACK", "COMMIT", "COMMIT WORK"]);
            self.q(end);
            self.m.in_txn = false;
            self.end_of_transaction();
            return;
        }
        let weights: Vec<u32> = FAMILIES.iter().map(|(w, _)| *w).collect();
        let i = self.rng.weighted(&weights);
        (FAMILIES[i].1)(self);
    }

    fn q(&mut self, sql: impl Into<String>) {
        self.out.push(Step::Query(sql.into()));
    }

    fn pick(&mut self, items: &[&'static str]) -> &'static str {
        let chosen: &&'static str = self.rng.pick(items);
        chosen
    }

    fn uniq(&mut self) -> u32 {
        self.m.uniq += 1;
        self.m.uniq
    }

    /// A value for t1.v: mostly fresh, sometimes an existing one (a duplicate key).
    fn t1_value(&mut self) -> String {
        if self.rng.chance(20) {
            format!("a{}", self.rng.range(1, 10))
        } else {
            let u = self.uniq();
            format!("u{u}")
        }
    }

    fn settings(&mut self) {
        let sql = match self.rng.below(16) {
            0 => format!(
                "SET time_zone = '{}'",
                self.pick(&["+00:00", "+05:30", "-08:00", "SYSTEM", "+01:00"])
            ),
            1 => format!(
                "SET sql_mode = '{}'",
                self.pick(&[
                    "ANSI_QUOTES",
                    "NO_BACKSLASH_ESCAPES",
                    "",
                    "TRADITIONAL",
                    "STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO",
                    "ANSI_QUOTES,NO_BACKSLASH_ESCAPES,STRICT_TRANS_TABLES",
                    "PIPES_AS_CONCAT",
                    "NO_ZERO_DATE,ONLY_FULL_GROUP_BY",
                ])
            ),
            2 => format!(
                "SET NAMES {}",
                self.pick(&[
                    "utf8mb4",
                    "latin1",
                    "utf8mb4 COLLATE utf8mb4_bin",
                    "utf8mb3"
                ])
            ),
            3 => format!(
                "SET character_set_results = {}",
                self.pick(&["latin1", "NULL", "utf8mb4", "binary"])
            ),
            4 => {
                let off = self.rng.chance(50);
                self.m.autocommit_off = off;
                if !off {
                    self.m.in_txn = false;
                }
                format!("SET autocommit = {}", if off { 0 } else { 1 })
            }
            5 => format!(
                "SET SESSION TRANSACTION ISOLATION LEVEL {}",
                self.pick(&[
                    "READ COMMITTED",
                    "REPEATABLE READ",
                    "SERIALIZABLE",
                    "READ UNCOMMITTED"
                ])
            ),
            6 => {
                // One-shot characteristics for the next transaction, then that transaction (an
                // autocommit statement is one) and what the server says about it.
                let set = self.pick(&[
                    "SET TRANSACTION READ ONLY",
                    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                    "SET TRANSACTION READ ONLY",
                ]);
                self.q(set);
                let next = self.pick(&[
                    "INSERT INTO t2 (s) VALUES ('one-shot')",
                    "SELECT @@tx_read_only, @@tx_isolation",
                    "START TRANSACTION",
                    "SELECT COUNT(*) FROM t1",
                ]);
                if next == "START TRANSACTION" {
                    self.m.in_txn = true;
                }
                next.to_string()
            }
            7 => format!("SET div_precision_increment = {}", self.rng.range(0, 12)),
            8 => format!(
                "SET group_concat_max_len = {}",
                self.pick(&["4", "10", "1024", "DEFAULT"])
            ),
            9 => format!(
                "SET sql_select_limit = {}",
                self.pick(&["2", "5", "DEFAULT", "18446744073709551615"])
            ),
            10 => format!(
                "SET wait_timeout = {}",
                self.pick(&["3600", "28800", "7200"])
            ),
            11 => format!(
                "SET SESSION {} = DEFAULT",
                self.pick(&[
                    "sql_mode",
                    "time_zone",
                    "div_precision_increment",
                    "character_set_results",
                    "autocommit"
                ])
            ),
            12 => format!(
                "SET @@session.time_zone = '{}', @@session.div_precision_increment = {}",
                self.pick(&["+02:00", "-03:30"]),
                self.rng.range(1, 8)
            ),
            13 => "SET NAMES latin1 COLLATE latin1_german1_ci".to_string(),
            14 => "SET SESSION sql_mode = CONCAT(@@sql_mode, ',ANSI_QUOTES')".to_string(),
            _ => format!(
                "SET max_join_size = {}, sql_big_selects = 1",
                self.pick(&["1000000", "DEFAULT"])
            ),
        };
        self.q(sql);
        if self.rng.chance(40) {
            self.read_settings();
        }
    }

    fn read_settings(&mut self) {
        let sql = match self.rng.below(10) {
            0 => "SELECT @@time_zone, @@sql_mode",
            1 => "SELECT @@character_set_client, @@character_set_connection, @@character_set_results, @@collation_connection",
            2 => "SELECT @@autocommit, @@in_transaction, @@tx_isolation, @@tx_read_only",
            3 => "SELECT @@div_precision_increment, @@group_concat_max_len",
            4 => "SELECT @@sql_select_limit, @@wait_timeout",
            5 => "SELECT DATABASE()",
            6 => "SELECT @@session.sql_mode AS m, DATABASE() AS db",
            7 => "SHOW VARIABLES LIKE 'character_set_c%'",
            8 => "SELECT @@max_join_size, @@sql_big_selects",
            _ => "SHOW SESSION VARIABLES WHERE Variable_name IN ('time_zone', 'autocommit', 'sql_mode')",
        };
        self.q(sql);
    }

    fn setting_effects(&mut self) {
        let sql = match self.rng.below(10) {
            0 => "SELECT 1/3, 10/7",
            1 => "SELECT GROUP_CONCAT(v ORDER BY id) AS g FROM t1",
            2 => "SELECT id, v FROM t1 ORDER BY id",
            3 => {
                "SELECT FROM_UNIXTIME(86400 * 365) AS t, UNIX_TIMESTAMP('2001-02-03 04:05:06') AS u"
            }
            4 => "SELECT 'a' || 'b' AS c",
            5 => "SELECT \"x\" AS q",
            6 => "SELECT 'a\\nb' AS s, LENGTH('a\\nb') AS l",
            7 => "SELECT 'é' AS e, HEX('é') AS h, LENGTH('é') AS l, CHARSET('é') AS cs",
            8 => "SELECT id, ts FROM t4 ORDER BY id",
            _ => "SELECT CAST('2020-02-30' AS DATE) AS d",
        };
        self.q(sql);
    }

    fn schema(&mut self) {
        let (a, b) = (self.m.db_a.clone(), self.m.db_b.clone());
        match self.rng.below(6) {
            0 | 1 => {
                let db = if self.rng.chance(50) { &a } else { &b };
                self.q(format!("USE {db}"));
                self.m.cur_db = Some(db.clone());
            }
            2 | 3 => {
                let db = if self.rng.chance(50) { &a } else { &b };
                self.out.push(Step::InitDb(db.clone()));
                self.m.cur_db = Some(db.clone());
            }
            4 => {
                if self.rng.chance(50) {
                    self.out.push(Step::InitDb(format!("{a}_nosuch")));
                } else {
                    self.q(format!("USE {a}_nosuch"));
                }
            }
            _ => {}
        }
        self.q("SELECT DATABASE()");
    }

    fn insert_id(&mut self) {
        // A write that sets (or keeps) the last insert id.
        let v = self.t1_value();
        let w = match self.rng.below(10) {
            0 => "INSERT INTO t2 (s) VALUES ('x')".to_string(),
            1 => "INSERT INTO t2 (s) VALUES ('a'), ('b'), ('c')".to_string(),
            2 => format!(
                "INSERT INTO t2 (id, s) VALUES ({}, 'explicit')",
                1000 + self.rng.range(0, 30)
            ),
            3 => "INSERT IGNORE INTO t1 (v, n) VALUES ('a1', 0)".to_string(),
            4 => format!("INSERT INTO t1 (v, n) VALUES ('{v}', 1) ON DUPLICATE KEY UPDATE n = n + 1"),
            5 => format!("INSERT INTO t1 (v, n) VALUES ('{v}', 2)"),
            6 => format!("INSERT IGNORE INTO t1 (v, n) VALUES ('{v}', 3), ('a2', 3)"),
            7 => "UPDATE t1 SET n = n + 1 WHERE id = 1".to_string(),
            8 => format!(
                "INSERT INTO t1 (v, n) VALUES ('{v}', 4) ON DUPLICATE KEY UPDATE id = LAST_INSERT_ID(id)"
            ),
            _ => "INSERT INTO t2 (s) SELECT v FROM t1 WHERE id <= 2".to_string(),
        };
        self.q(w);
        let n = 1 + self.rng.below(3);
        for _ in 0..n {
            let r = match self.rng.below(16) {
                0 => "SELECT LAST_INSERT_ID()".to_string(),
                1 => "SELECT LAST_INSERT_ID() AS lid".to_string(),
                2 => "SELECT LAST_INSERT_ID() + 1".to_string(),
                3 => "SELECT 'x', LAST_INSERT_ID(), 2 * LAST_INSERT_ID() AS twice".to_string(),
                4 => "INSERT INTO t2 (x) VALUES (LAST_INSERT_ID())".to_string(),
                5 => {
                    self.q("SET @x = LAST_INSERT_ID()");
                    "SELECT @x".to_string()
                }
                6 => "SELECT f_lii()".to_string(),
                7 => format!("CALL p_ins('{}')", self.t1_value()),
                8 => "SELECT LAST_INSERT_ID(42)".to_string(),
                9 => "SELECT @@identity".to_string(),
                10 => "SELECT @@last_insert_id".to_string(),
                11 => "SELECT @@insert_id".to_string(),
                12 => "select last_insert_id()".to_string(),
                13 => "SELECT /* lid */ LAST_INSERT_ID() FROM dual".to_string(),
                14 => "SELECT f_ins('f') AS fid, LAST_INSERT_ID()".to_string(),
                _ => {
                    self.q("SET insert_id = 5000");
                    "INSERT INTO t2 (s) VALUES ('insert_id')".to_string()
                }
            };
            self.q(r);
        }
    }

    fn row_count_found_rows(&mut self) {
        let first = match self.rng.below(8) {
            0 => "SELECT SQL_CALC_FOUND_ROWS id FROM t1 ORDER BY id LIMIT 2".to_string(),
            1 => "SELECT id FROM t1 WHERE id < 4".to_string(),
            2 => "UPDATE t1 SET n = n + 1 WHERE id <= 3".to_string(),
            3 => "DELETE FROM t2 WHERE id = 1".to_string(),
            4 => format!("INSERT INTO t1 (v, n) VALUES ('{}', 0)", self.t1_value()),
            5 => "SET @z = 1".to_string(),
            6 => "SELECT SQL_CALC_FOUND_ROWS * FROM t3 WHERE k > 1 LIMIT 1 OFFSET 1".to_string(),
            _ => "UPDATE t1 SET n = n WHERE id = 1".to_string(),
        };
        self.q(first);
        let n = 1 + self.rng.below(2);
        for _ in 0..n {
            let r = *self.rng.pick(&[
                "SELECT ROW_COUNT()",
                "SELECT ROW_COUNT() AS rc",
                "SELECT FOUND_ROWS()",
                "SELECT FOUND_ROWS() AS fr, ROW_COUNT() AS rc",
                "SET @r = ROW_COUNT()",
                "SELECT @r",
                "SELECT found_rows()",
            ]);
            self.q(r);
        }
    }

    fn sequences(&mut self) {
        let n = 1 + self.rng.below(3);
        for _ in 0..n {
            let s = *self.rng.pick(&[
                "SELECT NEXTVAL(s1)",
                "SELECT NEXT VALUE FOR s1",
                "SELECT LASTVAL(s1)",
                "SELECT PREVIOUS VALUE FOR s1",
                "SELECT NEXTVAL(s1), LASTVAL(s1)",
                "SELECT SETVAL(s1, 500)",
                "INSERT INTO t1 (v, n) VALUES (CONCAT('q', NEXTVAL(s1)), 0)",
                "DO NEXTVAL(s1)",
            ]);
            self.q(s);
        }
    }

    fn warnings_errors(&mut self) {
        let k = self.rng.range(1, 40);
        let w = match self.rng.below(16) {
            0 => "SELECT CAST('1x' AS INT)".to_string(),
            1 => "SELECT 1/0".to_string(),
            2 => "INSERT IGNORE INTO t1 (v, n) VALUES ('a3', 0)".to_string(),
            3 => format!("INSERT INTO t3 (k, c) VALUES ({}, 'toolongvalue')", 100 + k),
            4 => format!("INSERT INTO t3 (k, tiny) VALUES ({}, 1000)", 200 + k),
            5 => "UPDATE t3 SET dec1 = 12345.678 WHERE k = 1".to_string(),
            6 => "SELECT * FROM nosuch_table".to_string(),
            7 => "SELEC 1".to_string(),
            8 => "INSERT INTO t1 (id, v, n) VALUES (1, 'dup', 0)".to_string(),
            9 => "DROP TABLE nosuch_table".to_string(),
            10 => "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'boom'".to_string(),
            11 => {
                "SELECT CAST('abc' AS DATE), CAST('9999999999999999999999' AS SIGNED)".to_string()
            }
            12 => "INSERT INTO t2 (d) VALUES ('2021-13-45')".to_string(),
            13 => "SELECT 1 + 'a', 'b' + 2".to_string(),
            14 => "DROP TABLE IF EXISTS nosuch_table".to_string(),
            _ => "SELECT nosuch_column FROM t1".to_string(),
        };
        self.q(w);
        let n = 1 + self.rng.below(3);
        for _ in 0..n {
            match self.rng.below(9) {
                0 | 1 => self.q("SHOW WARNINGS"),
                2 => self.q("SHOW ERRORS"),
                3 => self.q("SHOW COUNT(*) WARNINGS"),
                4 => self.q("SHOW COUNT(*) ERRORS"),
                5 => self.q("SELECT @@warning_count, @@error_count"),
                6 => {
                    self.q("GET DIAGNOSTICS @n = NUMBER");
                    self.q("SELECT @n");
                }
                7 => {
                    self.q("GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT, @e = MYSQL_ERRNO");
                    self.q("SELECT @m, @e");
                }
                _ => {
                    self.q("GET DIAGNOSTICS @n = NUMBER, @rc = ROW_COUNT");
                    self.q("GET DIAGNOSTICS CONDITION 1 @m = MESSAGE_TEXT");
                    self.q("SELECT @n, @rc, @m");
                }
            }
        }
    }

    fn temp_tables(&mut self) {
        let (a, b) = (self.m.db_a.clone(), self.m.db_b.clone());
        match self.rng.below(6) {
            0 => {
                // Qualified names: the table lives in the schema it names.
                self.q(format!("CREATE TEMPORARY TABLE {b}.tt (a INT)"));
                self.q(format!("DROP TABLE {a}.tt"));
                self.q(format!("INSERT INTO {b}.tt VALUES (1), (2)"));
                self.q(format!("SELECT * FROM {b}.tt"));
                self.q(format!("DROP TABLE {b}.tt"));
            }
            1 => {
                let n = self.uniq();
                let name = format!("tmp{n}");
                self.q(format!(
                    "CREATE TEMPORARY TABLE {name} (a INT AUTO_INCREMENT PRIMARY KEY, b VARCHAR(10))"
                ));
                self.m.temp_tables.push(name.clone());
                self.q(format!("INSERT INTO {name} (b) VALUES ('x'), ('y')"));
                self.q("SELECT LAST_INSERT_ID()");
            }
            2 => {
                if let Some(t) = self.m.temp_tables.last().cloned() {
                    self.q(format!("SELECT * FROM {t} ORDER BY a"));
                } else {
                    self.q("SELECT * FROM tmp_missing");
                }
            }
            3 => {
                if let Some(t) = self.m.temp_tables.pop() {
                    let kw = if self.rng.chance(50) {
                        "TEMPORARY "
                    } else {
                        ""
                    };
                    self.q(format!("DROP {kw}TABLE {t}"));
                } else {
                    self.q("DROP TEMPORARY TABLE IF EXISTS tmp_missing");
                }
            }
            4 => {
                // A temporary table shadowing a base table of the same name.
                self.q("CREATE TEMPORARY TABLE t3 (k INT)");
                self.q("INSERT INTO t3 VALUES (77)");
                self.q("SELECT * FROM t3");
                self.q("DROP TEMPORARY TABLE t3");
                self.q("SELECT COUNT(*) FROM t3");
            }
            _ => self.q(
                "CREATE TEMPORARY TABLE IF NOT EXISTS tmp_x AS SELECT id, v FROM t1 WHERE id <= 3",
            ),
        }
    }

    fn user_vars(&mut self) {
        let sql = match self.rng.below(7) {
            0 => format!("SET @a = {}", self.rng.range(-5, 100)),
            1 => "SELECT @a := COALESCE(@a, 0) + 1".to_string(),
            2 => "SELECT v INTO @v FROM t1 WHERE id = 2".to_string(),
            3 => "SELECT @a, @v, @undefined_var".to_string(),
            4 => "SET @s = 'SELECT v FROM t1 WHERE id = ?', @p = 3".to_string(),
            5 => {
                "SELECT @a AS a, @@session.sql_mode = @@global.sql_mode AS default_mode".to_string()
            }
            _ => "SELECT id, @rn := COALESCE(@rn, 0) + 1 AS rn FROM t1 ORDER BY id LIMIT 3"
                .to_string(),
        };
        self.q(sql);
    }

    fn sql_prepare(&mut self) {
        match self.rng.below(7) {
            0 => {
                let name = format!("sp{}", self.uniq());
                self.q(format!(
                    "PREPARE {name} FROM 'SELECT ? + 1 AS p, LAST_INSERT_ID() AS l'"
                ));
                self.m.sql_prepared.push(name);
            }
            1 => {
                let name = format!("sp{}", self.uniq());
                self.q("SET @s = 'SELECT v FROM t1 WHERE id = ?', @p = 3");
                self.q(format!("PREPARE {name} FROM @s"));
                self.m.sql_prepared.push(name);
            }
            2 => {
                if let Some(n) = self.m.sql_prepared.last().cloned() {
                    if self.rng.chance(50) {
                        self.q("SET @a = 5, @p = 2");
                        self.q(format!("EXECUTE {n} USING @a"));
                    } else {
                        self.q(format!("EXECUTE {n} USING 7"));
                    }
                } else {
                    self.q("EXECUTE never_prepared");
                }
            }
            3 => self.q("EXECUTE IMMEDIATE 'SELECT 1 AS one, DATABASE() AS db'"),
            4 => self.q("EXECUTE IMMEDIATE 'INSERT INTO t2 (s) VALUES (?)' USING 'ei'"),
            5 => {
                if let Some(n) = self.m.sql_prepared.pop() {
                    let kw = if self.rng.chance(50) {
                        "DEALLOCATE"
                    } else {
                        "DROP"
                    };
                    self.q(format!("{kw} PREPARE {n}"));
                } else {
                    self.q("DEALLOCATE PREPARE never_prepared");
                }
            }
            _ => {
                let name = format!("sp{}", self.uniq());
                self.q(format!(
                    "PREPARE {name} FROM 'INSERT INTO t2 (s) VALUES (?)'"
                ));
                self.q(format!("EXECUTE {name} USING 'sqlps'"));
                self.q("SELECT LAST_INSERT_ID(), ROW_COUNT()");
                self.m.sql_prepared.push(name);
            }
        }
    }

    fn named_locks(&mut self) {
        let k = self.m.k;
        let lock = |s: &str| format!("'dt_{{RUN}}_{k}_{s}'");
        // Held locks are mostly released again (a lock held to the end tests the reset too).
        let release_first = self.m.locks > 0 && self.rng.chance(50);
        let choice = if release_first { 2 } else { self.rng.below(6) };
        let sql = match choice {
            0 | 1 => {
                self.m.locks += 1;
                format!("SELECT GET_LOCK({}, 0) AS l", lock(self.pick(&["a", "b"])))
            }
            2 => {
                self.m.locks = self.m.locks.saturating_sub(1);
                format!("SELECT RELEASE_LOCK({}) AS r", lock(self.pick(&["a", "b"])))
            }
            3 => format!("SELECT IS_FREE_LOCK({}) AS f", lock("a")),
            4 => {
                self.m.locks = 0;
                "SELECT RELEASE_ALL_LOCKS() AS n".to_string()
            }
            _ => format!("DO GET_LOCK({}, 0)", lock("c")),
        };
        self.q(sql);
    }

    fn lock_tables(&mut self) {
        if self.m.lock_tables {
            self.q("UNLOCK TABLES");
            self.m.lock_tables = false;
            return;
        }
        let l = *self.rng.pick(&[
            "t1 READ",
            "t1 WRITE, t2 READ",
            "t2 WRITE",
            "t1 READ, t3 WRITE",
        ]);
        self.q(format!("LOCK TABLES {l}"));
        self.m.lock_tables = true;
        self.m.in_txn = false;
        let s = *self.rng.pick(&[
            "SELECT COUNT(*) FROM t1",
            "INSERT INTO t2 (s) VALUES ('locked')",
            "SELECT COUNT(*) FROM t3",
        ]);
        self.q(s);
    }

    fn exec_comments(&mut self) {
        let s = *self.rng.pick(&[
            "/*!40101 SET @x = 1 */",
            "/*M!100000 SET SESSION div_precision_increment = 6 */",
            "/*!40101 SET NAMES latin1 */",
            "/*!99999 SET @y = 2 */",
            "SELECT 1 /*!, 2 */ /*M!999999 , 3 */",
            "/*!40014 SET @OLD_UNIQUE_CHECKS = @@UNIQUE_CHECKS, UNIQUE_CHECKS = 0 */",
            "/*!40101 SET @saved_cs_client = @@character_set_client */",
            "SELECT @x, @y, @saved_cs_client",
        ]);
        self.q(s);
    }

    fn random_param(&mut self, ty: Ty) -> Param {
        if self.rng.chance(6) {
            return Param::Null;
        }
        match ty {
            Ty::Int => Param::Int(self.rng.range(-2, 12)),
            Ty::Str => {
                let u = self.uniq();
                Param::Str(
                    self.pick(&["1x", "abc", "é", "12", ""])
                        .to_string()
                        .replace("abc", &format!("p{u}")),
                )
            }
            Ty::Double => Param::Double(self.rng.range(-1000, 1000) as f64 / 8.0),
            Ty::Date => Param::Date(
                2000 + self.rng.range(0, 30) as u16,
                self.rng.range(1, 12) as u8,
                self.rng.range(1, 28) as u8,
            ),
            Ty::DateTime => Param::DateTime(
                2020,
                self.rng.range(1, 12) as u8,
                self.rng.range(1, 28) as u8,
                self.rng.range(0, 23) as u8,
                self.rng.range(0, 59) as u8,
                self.rng.range(0, 59) as u8,
            ),
            Ty::Any => match self.rng.below(4) {
                0 => self.random_param(Ty::Int),
                1 => self.random_param(Ty::Str),
                2 => self.random_param(Ty::Double),
                _ => Param::Null,
            },
        }
    }

    fn params_for(&mut self, t: usize) -> Vec<Param> {
        let tys = TEMPLATES[t].params;
        // Usually the template's types; sometimes another type (the client rebinds).
        tys.iter()
            .map(|&ty| {
                if self.rng.chance(8) {
                    self.random_param(Ty::Any)
                } else {
                    self.random_param(ty)
                }
            })
            .collect()
    }

    fn prepare_new(&mut self) -> usize {
        let t = self.rng.below(TEMPLATES.len() as u64) as usize;
        let h = self.m.handles.len();
        let sql = self.template_sql(t);
        self.out.push(Step::Prepare { h, sql });
        self.m.handles.push(Handle {
            template: t,
            valid: true,
            cursor_open: false,
        });
        h
    }

    fn template_sql(&self, t: usize) -> String {
        TEMPLATES[t].sql.replace("{A}", &self.m.db_a)
    }

    fn execute(&mut self, h: usize) {
        let t = self.m.handles[h].template;
        let cursor = TEMPLATES[t].rows && self.rng.chance(45);
        let params = self.params_for(t);
        self.out.push(Step::Execute { h, params, cursor });
        let hd = &mut self.m.handles[h];
        hd.cursor_open = cursor && hd.valid;
        // Warnings and diagnostics after a binary execute, as after text statements.
        if self.rng.chance(20) {
            let r = self.pick(&[
                "SHOW WARNINGS",
                "SELECT @@warning_count, @@error_count",
                "SHOW COUNT(*) WARNINGS",
                "GET DIAGNOSTICS @n = NUMBER",
                "SELECT ROW_COUNT(), LAST_INSERT_ID()",
            ]);
            self.q(r);
        }
    }

    fn binary(&mut self) {
        let valid: Vec<usize> = (0..self.m.handles.len())
            .filter(|&h| self.m.handles[h].valid)
            .collect();
        let cursors: Vec<usize> = valid
            .iter()
            .copied()
            .filter(|&h| self.m.handles[h].cursor_open)
            .collect();
        let choice = if valid.is_empty() {
            0
        } else {
            self.rng.weighted(&[
                if valid.len() < 6 { 3 } else { 0 },
                8,
                if cursors.is_empty() { 0 } else { 12 },
                2,
                2,
                2,
                1,
                2,
                3,
            ])
        };
        match choice {
            0 => {
                let h = self.prepare_new();
                if self.rng.chance(70) {
                    self.execute(h);
                }
            }
            1 => {
                let h = *self.rng.pick(&valid);
                self.execute(h);
            }
            2 => {
                let h = *self.rng.pick(&cursors);
                let rows = *self.rng.pick(&[1u32, 2, 3, 5, 100]);
                self.out.push(Step::Fetch { h, rows });
                if rows >= 100 {
                    self.m.handles[h].cursor_open = false;
                }
            }
            3 => {
                // Long data, then the execute that uses it.
                let with_ld: Vec<usize> = valid
                    .iter()
                    .copied()
                    .filter(|&h| TEMPLATES[self.m.handles[h].template].long_data.is_some())
                    .collect();
                let h = if with_ld.is_empty() {
                    let t = if self.rng.chance(50) { 2 } else { 10 };
                    let h = self.m.handles.len();
                    let sql = self.template_sql(t);
                    self.out.push(Step::Prepare { h, sql });
                    self.m.handles.push(Handle {
                        template: t,
                        valid: true,
                        cursor_open: false,
                    });
                    h
                } else {
                    *self.rng.pick(&with_ld)
                };
                let t = self.m.handles[h].template;
                let param = TEMPLATES[t].long_data.unwrap_or(0);
                let chunks = 1 + self.rng.below(2);
                for c in 0..chunks {
                    self.out.push(Step::LongData {
                        h,
                        param,
                        data: format!("long-{c}-{}", "z".repeat(self.rng.range(1, 40) as usize)),
                    });
                }
                let mut params = self.params_for(t);
                if let Some(p) = params.get_mut(usize::from(param)) {
                    *p = Param::LongData;
                }
                self.out.push(Step::Execute {
                    h,
                    params,
                    cursor: false,
                });
                self.m.handles[h].cursor_open = false;
            }
            4 => {
                let h = *self.rng.pick(&valid);
                self.out.push(Step::StmtReset { h });
                self.m.handles[h].cursor_open = false;
            }
            5 => {
                let h = *self.rng.pick(&valid);
                self.out.push(Step::StmtClose { h });
                self.m.handles[h].valid = false;
                self.m.handles[h].cursor_open = false;
            }
            6 => {
                // A stale handle (closed or dropped by a reset): the server says so.
                let h = self.rng.below(self.m.handles.len() as u64) as usize;
                if self.rng.chance(50) {
                    self.out.push(Step::Fetch { h, rows: 1 });
                } else {
                    self.execute(h);
                }
            }
            8 => {
                // Several cursors open at once, fetched in turns.
                let row_templates: Vec<usize> = (0..TEMPLATES.len())
                    .filter(|&t| TEMPLATES[t].rows)
                    .collect();
                let n = 2 + self.rng.below(2) as usize;
                let mut open = Vec::new();
                for _ in 0..n {
                    let t = *self.rng.pick(&row_templates);
                    let h = self.m.handles.len();
                    let sql = self.template_sql(t);
                    self.out.push(Step::Prepare { h, sql });
                    self.m.handles.push(Handle {
                        template: t,
                        valid: true,
                        cursor_open: true,
                    });
                    let params = self.params_for(t);
                    self.out.push(Step::Execute {
                        h,
                        params,
                        cursor: true,
                    });
                    open.push(h);
                }
                for _ in 0..2 + self.rng.below(4) {
                    let h = *self.rng.pick(&open);
                    let rows = *self.rng.pick(&[1u32, 2, 3]);
                    self.out.push(Step::Fetch { h, rows });
                }
            }
            _ => {
                // Re-execute after the settings changed.
                let h = *self.rng.pick(&valid);
                self.execute(h);
                let s = *self.rng.pick(&[
                    "SET NAMES latin1",
                    "SET sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'",
                    "SET time_zone = '+09:00'",
                    "SET div_precision_increment = 2",
                    "SET character_set_results = NULL",
                ]);
                self.q(s);
                self.execute(h);
            }
        }
    }

    fn transactions(&mut self) {
        let begin = *self.rng.pick(&[
            "BEGIN",
            "START TRANSACTION",
            "BEGIN",
            "START TRANSACTION READ ONLY",
            "START TRANSACTION READ WRITE",
            "SET autocommit = 0",
        ]);
        self.q(begin);
        if begin == "SET autocommit = 0" {
            self.m.autocommit_off = true;
        }
        self.m.in_txn = true;
        self.m.savepoint = false;
        let n = 1 + self.rng.below(4);
        for _ in 0..n {
            match self.rng.below(7) {
                0 => self.q("INSERT INTO t2 (s) VALUES ('in-txn')"),
                1 => {
                    let v = self.t1_value();
                    self.q(format!("INSERT INTO t1 (v, n) VALUES ('{v}', 9)"))
                }
                2 => self.q("UPDATE t1 SET n = n * 2 WHERE id <= 2"),
                3 => {
                    self.q("SAVEPOINT sp1");
                    self.m.savepoint = true;
                }
                // Mostly after a SAVEPOINT; now and then without one (ERR 1305).
                4 if self.m.savepoint || self.rng.chance(10) => {
                    self.q("ROLLBACK TO SAVEPOINT sp1");
                    self.q("SELECT COUNT(*) FROM t2");
                }
                5 if self.m.savepoint || self.rng.chance(10) => {
                    self.q("RELEASE SAVEPOINT sp1");
                    self.m.savepoint = false;
                }
                _ => self.q("SELECT COUNT(*), MAX(id) FROM t2"),
            }
        }
        if self.rng.chance(30) {
            self.q("SELECT @@in_transaction, LAST_INSERT_ID()");
        }
        let end = *self.rng.pick(&[
            "COMMIT",
            "ROLLBACK",
            "COMMIT",
            "ROLLBACK AND CHAIN",
            "COMMIT",
        ]);
        self.q(end);
        self.end_of_transaction();
        self.m.in_txn = end.contains("CHAIN") || self.m.autocommit_off;
        if self.m.autocommit_off && self.rng.chance(50) {
            self.q("SET autocommit = 1");
            self.m.autocommit_off = false;
            self.m.in_txn = false;
        }
    }

    fn multi_statements(&mut self) {
        let v = self.t1_value();
        let s = match self.rng.below(7) {
            0 => "INSERT INTO t2 (s) VALUES ('m'); SELECT LAST_INSERT_ID(); SHOW WARNINGS".to_string(),
            1 => "SELECT 1; SELECT 2 AS two".to_string(),
            2 => "SET @a = 1; SELECT @a".to_string(),
            3 => "SELECT 1; SELEC 2; SELECT 3".to_string(),
            4 => format!("BEGIN; INSERT INTO t1 (v, n) VALUES ('{v}', 5); COMMIT; SELECT ROW_COUNT()"),
            5 => "CALL p_multi(); SELECT 1 AS after_call".to_string(),
            _ => "INSERT IGNORE INTO t1 (v, n) VALUES ('a4', 0); SHOW COUNT(*) WARNINGS; SELECT @@warning_count".to_string(),
        };
        self.q(s);
        if !self.m.multi && self.rng.chance(50) {
            self.out.push(Step::SetOption(true));
            self.m.multi = true;
        }
    }

    fn protocol_commands(&mut self) {
        match self.rng.below(8) {
            0 | 1 => {
                let on = !self.m.multi || self.rng.chance(30);
                self.out.push(Step::SetOption(on));
                self.m.multi = on;
            }
            2 | 3 => self.out.push(Step::Ping),
            4 | 5 => {
                self.out.push(Step::ResetConnection);
                self.after_reset();
            }
            _ => {
                let schema = if self.rng.chance(80) {
                    Some(self.m.db_a.clone())
                } else {
                    None
                };
                self.m.cur_db = schema.clone();
                self.out.push(Step::ChangeUser { schema });
                self.after_reset();
                if self.m.cur_db.is_none() {
                    self.q("SELECT DATABASE()");
                    let a = self.m.db_a.clone();
                    self.q(format!("USE {a}"));
                    self.m.cur_db = Some(a);
                }
            }
        }
    }

    /// The server closes a statement's cursor when its transaction ends.
    fn end_of_transaction(&mut self) {
        for h in &mut self.m.handles {
            h.cursor_open = false;
        }
        self.m.savepoint = false;
    }

    fn after_reset(&mut self) {
        for h in &mut self.m.handles {
            h.valid = false;
            h.cursor_open = false;
        }
        self.m.sql_prepared.clear();
        self.m.temp_tables.clear();
        self.m.in_txn = false;
        self.m.autocommit_off = false;
        self.m.lock_tables = false;
        self.m.locks = 0;
    }

    fn procedures(&mut self) {
        let a = self.m.db_a.clone();
        match self.rng.below(7) {
            0 => self.q(format!("CALL {a}.p_multi()")),
            1 => {
                let x = self.rng.range(0, 9);
                self.q(format!("CALL {a}.p_out({x}, @o)"));
                self.q("SELECT @o");
            }
            2 => {
                self.q(format!("CALL {a}.p_setvar()"));
                self.q("SELECT @@div_precision_increment, 1/7");
            }
            3 => {
                self.q(format!("CALL {a}.p_tmp()"));
                self.q("SELECT * FROM tmp_p");
            }
            4 => {
                self.q(format!("SELECT {a}.f_ins('fn') AS fid"));
                self.q("SELECT LAST_INSERT_ID()");
            }
            5 => {
                let v = self.t1_value();
                self.q(format!("CALL {a}.p_ins('{v}')"));
            }
            _ => {
                // OUT/INOUT parameters through the binary protocol.
                let h = self.m.handles.len();
                let sql = if self.rng.chance(50) {
                    format!("CALL {a}.p_inout(?)")
                } else {
                    format!("CALL {a}.p_out(?, ?)")
                };
                let nparams = if sql.contains("p_out") { 2 } else { 1 };
                self.out.push(Step::Prepare { h, sql });
                // Template 7 (CALL p_inout) stands in for both in the model: no cursor.
                self.m.handles.push(Handle {
                    template: 7,
                    valid: true,
                    cursor_open: false,
                });
                let mut params = vec![Param::Int(self.rng.range(1, 20))];
                if nparams == 2 {
                    params.push(Param::Null);
                }
                self.out.push(Step::Execute {
                    h,
                    params,
                    cursor: false,
                });
            }
        }
    }

    fn kill_query(&mut self) {
        self.out.push(Step::KillQuery);
        if self.rng.chance(50) {
            self.q("SELECT 1 AS after_kill");
        }
    }

    fn reads(&mut self) {
        let s = *self.rng.pick(&[
            "SELECT * FROM t1 ORDER BY id",
            "SELECT COUNT(*), SUM(n) FROM t1",
            "SELECT id, d, x, s, HEX(b) FROM t2 ORDER BY id",
            "SELECT * FROM t3 ORDER BY k",
            "SELECT 1, 'a', NULL, 1.5, -2, 1e3, X'41'",
            "SHOW TABLES",
            "SHOW CREATE TABLE t1",
            "SELECT * FROM t1 WHERE id = 999",
            "SELECT v FROM t1 ORDER BY v DESC LIMIT 3",
        ]);
        self.q(s);
    }

    fn dml(&mut self) {
        let k = self.rng.range(1, 12);
        let s = match self.rng.below(6) {
            0 => format!("UPDATE t1 SET n = n + 1 WHERE id <= {k}"),
            1 => format!("DELETE FROM t2 WHERE id = {k}"),
            2 => format!(
                "INSERT INTO t3 (k, c, tiny, dec1) VALUES ({}, 'c', 1, 1.5)",
                300 + k
            ),
            3 => format!("REPLACE INTO t1 (id, v, n) VALUES ({k}, 'r{k}', 0)"),
            4 => format!("UPDATE t3 SET c = 'zz' WHERE k = {k}"),
            _ => "INSERT INTO t4 (ts) VALUES ('2010-06-01 12:00:00')".to_string(),
        };
        self.q(s);
    }

    fn gtid(&mut self) {
        if self.rng.chance(50) {
            self.q("INSERT INTO t2 (s) VALUES ('gtid')");
        }
        // Cast to a fixed width: a bare @@last_gtid column's length is the value's length, which
        // follows the server's global GTID counter (see crate::normalize, rule 2).
        self.q("SELECT CAST(@@last_gtid AS CHAR(64)) AS last_gtid, @@last_gtid = '' AS no_gtid");
    }

    fn trackers(&mut self) {
        let s = *self.rng.pick(&[
            "SET session_track_system_variables = '*'",
            "SET session_track_system_variables = 'last_gtid,autocommit,sql_mode'",
            "SET session_track_system_variables = DEFAULT",
            "SET session_track_state_change = ON",
            "SET session_track_transaction_info = 'CHARACTERISTICS'",
            "SET session_track_transaction_info = 'STATE'",
            "SET session_track_schema = OFF",
        ]);
        self.q(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_script_and_lengths_hold() {
        for k in 0..20 {
            let a = generate(11, k, 60, "dt");
            let b = generate(11, k, 60, "dt");
            assert_eq!(a.steps, b.steps);
            assert_eq!(a.steps.len(), 61);
            assert_eq!(a.steps[0], Step::Connect);
            assert_eq!(a.schema, format!("dt_{k}"));
        }
        assert_ne!(
            generate(11, 0, 60, "dt").steps,
            generate(12, 0, 60, "dt").steps
        );
    }

    #[test]
    fn the_corpus_is_free_of_nondeterministic_functions() {
        for k in 0..50 {
            for st in generate(5, k, 200, "dt").steps {
                let text = st.to_string().to_uppercase();
                for bad in [
                    "NOW(",
                    "RAND(",
                    "UUID(",
                    "SYSDATE(",
                    "PERFORMANCE_SCHEMA",
                    "CURRENT_TIMESTAMP",
                ] {
                    assert!(!text.contains(bad), "{text}");
                }
            }
        }
    }
}
