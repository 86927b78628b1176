#!/usr/bin/env python3
"""sluice driver test: PyMySQL and mysql-connector-python through the proxy.

    python_drivers.py --host H --port P --user U --password PW --database DB

For each driver (PyMySQL; mysql-connector-python with a plain cursor and with
``cursor(prepared=True)``, i.e. COM_STMT_PREPARE / COM_STMT_EXECUTE / COM_STMT_RESET /
COM_STMT_SEND_LONG_DATA / COM_STMT_CLOSE) this creates its own table, round-trips parameters
(NULL, unicode, a 1 MiB blob), checks UPDATE row counts, a committed and a rolled-back
transaction, executemany, a server error (1146 / 42S02), multiple result sets, and a session
variable (time_zone), then drops the table.

Exit code 0 only if every check passed; every failed check is printed to stdout, and a
summary of the failures to stderr.
Every socket operation has a timeout, and a watchdog (SIGALRM) ends the whole run after 100 s.
"""

import argparse
import hashlib
import io
import os
import random
import re
import signal
import sys
import traceback

CONNECT_TIMEOUT = 10
IO_TIMEOUT = 30
WATCHDOG_SECONDS = 100

UNICODE = "héllo ✓"
# 1 MiB of every byte value (NUL, 0xff, quotes, backslashes: whatever the escaping has to handle).
BLOB_1M = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(1 << 20))
RUN_ID = f"{os.getpid()}_{random.randrange(1 << 30):x}"


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = []
        self.section = "?"

    def ok(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.fail(what)
        return cond

    def eq(self, actual, expected, what):
        if actual == expected:
            self.passed += 1
            return True
        self.fail(f"{what}: expected {short(expected)}, got {short(actual)}")
        return False

    def fail(self, what):
        msg = f"FAIL [{self.section}] {what}"
        self.failed.append(msg)
        print(msg, flush=True)

    def run(self, section, fn, *args):
        """Runs one driver's section; an unexpected exception is a failure of that section."""
        self.section = section
        print(f"--- {section}", flush=True)
        try:
            fn(self, *args)
        except Exception:  # noqa: BLE001 - any exception is a failed check, reported in full
            self.fail("unexpected exception:\n" + traceback.format_exc())


def short(v):
    if isinstance(v, (bytes, bytearray)) and len(v) > 64:
        return f"<{type(v).__name__} len={len(v)} head={bytes(v[:16])!r}>"
    if isinstance(v, list):
        return [short(x) for x in v]
    if isinstance(v, tuple):
        return tuple(short(x) for x in v)
    r = repr(v)
    return r if len(r) < 300 else r[:300] + "…"


def as_bytes(v):
    return bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else v


def norm_row(row):
    return tuple(as_bytes(x) for x in row)


def create_table_sql(table):
    return (
        f"CREATE TABLE {table} ("
        " id INT NOT NULL PRIMARY KEY,"
        " name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL,"
        " n INT NULL,"
        " data LONGBLOB NULL"
        ") ENGINE=InnoDB"
    )


# ---------------------------------------------------------------------------------------------
# PyMySQL (text protocol only)
# ---------------------------------------------------------------------------------------------

def pymysql_connect(args, **extra):
    import pymysql

    return pymysql.connect(
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password,
        database=args.database,
        charset="utf8mb4",
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=IO_TIMEOUT,
        write_timeout=IO_TIMEOUT,
        autocommit=True,
        **extra,
    )


def pymysql_section(c, args):
    import pymysql
    import pymysql.err

    # PyMySQL versions before 1.1.1 drop the SQLSTATE of an ERR packet; capture it from the raw
    # packet the driver parses so the check does not depend on the version.
    seen_sqlstates = []
    orig_raise = pymysql.err.raise_mysql_exception

    def capturing_raise(data):
        if len(data) >= 9 and data[3] == 0x23:
            seen_sqlstates.append(bytes(data[4:9]).decode("ascii", "replace"))
        else:
            seen_sqlstates.append(None)
        return orig_raise(data)

    pymysql.err.raise_mysql_exception = capturing_raise

    def connect(**extra):
        return pymysql_connect(args, **extra)

    table = f"drv_pymysql_{RUN_ID}"
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(create_table_sql(table))

        # INSERT with parameters: NULLs, unicode, 1 MiB of binary.
        rows = [
            (1, UNICODE, 42, b"\x00\x01'\"\\\xff"),
            (2, None, None, None),
            (3, "plain", -7, BLOB_1M),
        ]
        for r in rows:
            n = cur.execute(f"INSERT INTO {table} (id, name, n, data) VALUES (%s, %s, %s, %s)", r)
            c.eq(n, 1, f"INSERT id={r[0]} rowcount")
        cur.execute(f"SELECT id, name, n, data FROM {table} ORDER BY id")
        got = [norm_row(r) for r in cur.fetchall()]
        c.eq(len(got), 3, "SELECT row count")
        for exp, act in zip(rows, got):
            c.eq(act, exp, f"round trip of row id={exp[0]}")
        cur.execute(f"SELECT CHAR_LENGTH(name), LENGTH(name), LENGTH(data) FROM {table} WHERE id = 1")
        c.eq(tuple(cur.fetchone()), (7, 10, 6), "server-side lengths of the unicode / binary values")
        cur.execute(f"SELECT LENGTH(data), MD5(data) FROM {table} WHERE id = 3")
        c.eq(tuple(cur.fetchone()), (1 << 20, hashlib.md5(BLOB_1M).hexdigest()), "server-side size/MD5 of the 1 MiB blob")
        cur.execute("SELECT %s, %s, %s", (UNICODE, None, 12345678901234))
        c.eq(tuple(cur.fetchone()), (UNICODE, None, 12345678901234), "parameters echoed by SELECT")

        # UPDATE and affected rows (changed rows, not matched rows: CLIENT_FOUND_ROWS is off).
        n = cur.execute(f"UPDATE {table} SET n = 100 WHERE id IN (1, 2, 3)")
        c.eq(n, 3, "UPDATE rowcount (3 rows changed)")
        n = cur.execute(f"UPDATE {table} SET n = 100 WHERE id = 1")
        c.eq(n, 0, "UPDATE rowcount when nothing changes")
        n = cur.execute(f"UPDATE {table} SET n = n + 1 WHERE id = 999")
        c.eq(n, 0, "UPDATE rowcount for no matching row")

        # Transactions: one committed, one rolled back.
        conn.begin()
        cur.execute(f"INSERT INTO {table} (id, name) VALUES (10, 'committed')")
        cur.execute(f"UPDATE {table} SET name = 'changed in tx' WHERE id = 3")
        conn.commit()
        conn.begin()
        cur.execute(f"INSERT INTO {table} (id, name) VALUES (11, 'rolled back')")
        cur.execute(f"UPDATE {table} SET name = 'should not stay' WHERE id = 3")
        cur.execute(f"SELECT COUNT(*) FROM {table} WHERE id = 11")
        c.eq(cur.fetchone()[0], 1, "uncommitted row visible inside its transaction")
        conn.rollback()
        cur.execute(f"SELECT id, name FROM {table} WHERE id IN (3, 10, 11) ORDER BY id")
        c.eq([tuple(r) for r in cur.fetchall()], [(3, "changed in tx"), (10, "committed")],
             "after commit + rollback")
        # And the same seen from a second connection (the commit really reached the server).
        other = connect()
        try:
            oc = other.cursor()
            oc.execute(f"SELECT COUNT(*) FROM {table} WHERE id IN (10, 11)")
            c.eq(oc.fetchone()[0], 1, "second connection sees the committed row only")
        finally:
            other.close()

        # executemany (PyMySQL rewrites INSERT ... VALUES into one multi-row INSERT).
        many = [(20 + i, f"many {i} ✓", i, bytes([i]) * (i + 1)) for i in range(25)]
        n = cur.executemany(f"INSERT INTO {table} (id, name, n, data) VALUES (%s, %s, %s, %s)", many)
        c.eq(n, 25, "executemany INSERT rowcount")
        n = cur.executemany(f"UPDATE {table} SET n = n + %s WHERE id = %s", [(1000, 20), (1000, 21), (1000, 999)])
        c.eq(n, 2, "executemany UPDATE rowcount")
        cur.execute(f"SELECT id, name, n, data FROM {table} WHERE id >= 20 ORDER BY id")
        exp = [(i, nm, v + (1000 if i in (20, 21) else 0), d) for (i, nm, v, d) in many]
        c.eq([norm_row(r) for r in cur.fetchall()], exp, "rows written by executemany")

        # A server error: code, SQLSTATE, and the connection still works afterwards.
        seen_sqlstates.clear()
        try:
            cur.execute(f"SELECT * FROM no_such_table_{RUN_ID}")
            c.fail("SELECT from a missing table did not raise")
        except pymysql.err.ProgrammingError as e:
            c.eq(e.args[0], 1146, "error code for a missing table")
            c.eq(seen_sqlstates[-1:], ["42S02"], "SQLSTATE in the ERR packet")
            if hasattr(e, "sqlstate"):
                c.eq(e.sqlstate, "42S02", "exception's sqlstate")
            c.ok(f"no_such_table_{RUN_ID}" in str(e.args[1]), f"error message names the table: {e.args[1]!r}")
        cur.execute("SELECT 1")
        c.eq(cur.fetchone(), (1,), "connection usable after an error")

        # Session variable.
        cur.execute("SET time_zone = '+03:00'")
        cur.execute("SELECT @@session.time_zone")
        c.eq(cur.fetchone()[0], "+03:00", "time_zone after SET")

        # ping (COM_PING), then the connection still answers.
        conn.ping(reconnect=False)
        cur.execute("SELECT 'after ping'")
        c.eq(cur.fetchone(), ("after ping",), "query after COM_PING")
    finally:
        try:
            conn.cursor().execute(f"DROP TABLE IF EXISTS {table}")
        finally:
            conn.close()
            pymysql.err.raise_mysql_exception = orig_raise


def pymysql_multi_section(c, args):
    """Multiple result sets on a connection made with CLIENT_MULTI_STATEMENTS, and CALL."""
    import pymysql.err
    from pymysql.constants import CLIENT

    conn = pymysql_connect(args, client_flag=CLIENT.MULTI_STATEMENTS)
    mtable = f"drv_pymysql_multi_{RUN_ID}"
    try:
        cur = conn.cursor()
        cur.execute(
            f"DROP TABLE IF EXISTS {mtable};"
            f" CREATE TABLE {mtable} (id INT PRIMARY KEY, v VARCHAR(20));"
            f" INSERT INTO {mtable} VALUES (1, 'a'), (2, 'b');"
            f" SELECT id, v FROM {mtable} ORDER BY id;"
            " SELECT 'second ✓', NULL;"
            f" UPDATE {mtable} SET v = 'c';"
            f" SELECT COUNT(*) FROM {mtable} WHERE v = 'c'"
        )
        results = []
        while True:
            results.append((cur.description is not None, cur.rowcount, [tuple(r) for r in cur.fetchall()]))
            if not cur.nextset():
                break
        c.eq(
            results,
            [
                (False, 0, []),
                (False, 0, []),
                (False, 2, []),
                (True, 2, [(1, "a"), (2, "b")]),
                (True, 1, [("second ✓", None)]),
                (False, 2, []),
                (True, 1, [(2,)]),
            ],
            "seven results of a multi-statement query (description?, rowcount, rows)",
        )
        # An error in the middle of a multi-statement query: results before it, then the error.
        cur.execute(f"SELECT 1; SELECT * FROM no_such_table_{RUN_ID}; SELECT 3")
        c.eq(cur.fetchall(), ((1,),), "first result before the failing statement")
        try:
            cur.nextset()
            c.fail("nextset() into the failing statement did not raise")
        except pymysql.err.ProgrammingError as e:
            c.eq(e.args[0], 1146, "error code in a multi-statement query")
        cur.execute("SELECT 'still in sync'")
        c.eq(cur.fetchall(), (("still in sync",),), "connection in sync after a failed multi-statement query")

        # A stored procedure: several result sets plus the final OK (CLIENT_MULTI_RESULTS).
        proc = f"drv_pymysql_proc_{RUN_ID}"
        cur.execute(f"DROP PROCEDURE IF EXISTS {proc}")
        cur.execute(f"CREATE PROCEDURE {proc}(IN x INT) BEGIN SELECT x; SELECT x * 2, 'p ✓'; END")
        try:
            cur.callproc(proc, (21,))
            sets = [[tuple(r) for r in cur.fetchall()]]
            while cur.nextset():
                sets.append([tuple(r) for r in cur.fetchall()])
            c.eq(sets, [[(21,)], [(42, "p ✓")], []], "result sets of CALL")
        finally:
            cur.execute(f"DROP PROCEDURE IF EXISTS {proc}")
        cur.execute("SELECT 2")
        c.eq(cur.fetchall(), ((2,),), "connection in sync after CALL")
    finally:
        try:
            conn.cursor().execute(f"DROP TABLE IF EXISTS {mtable}")
        finally:
            conn.close()


# ---------------------------------------------------------------------------------------------
# mysql-connector-python (text cursor, and prepared cursor = binary protocol)
# ---------------------------------------------------------------------------------------------

def connector_connect(args, **extra):
    import mysql.connector

    return mysql.connector.connect(
        host=args.host,
        port=args.port,
        user=args.user,
        password=args.password,
        database=args.database,
        charset="utf8mb4",
        collation="utf8mb4_general_ci",
        # The C extension needs a newer OpenSSL than some machines have: the pure-Python
        # protocol implementation everywhere, for the same packets on every machine.
        use_pure=True,
        connection_timeout=CONNECT_TIMEOUT,
        read_timeout=IO_TIMEOUT,
        write_timeout=IO_TIMEOUT,
        autocommit=True,
        **extra,
    )


def connector_section(c, args, prepared):
    import mysql.connector
    import mysql.connector.errors

    kind = "prepared" if prepared else "text"
    table = f"drv_myconn_{kind}_{RUN_ID}"
    conn = connector_connect(args)

    def cursor():
        return conn.cursor(prepared=True) if prepared else conn.cursor()

    try:
        ddl = conn.cursor()
        ddl.execute(f"DROP TABLE IF EXISTS {table}")
        ddl.execute(create_table_sql(table))
        ddl.close()

        cur = cursor()
        if prepared:
            c.eq(type(cur).__name__, "MySQLCursorPrepared", "cursor(prepared=True) is a prepared cursor")

        # INSERT with parameters: NULLs, unicode, 1 MiB of binary. The same statement several
        # times (prepared: one COM_STMT_PREPARE, then COM_STMT_RESET + COM_STMT_EXECUTE each).
        rows = [
            (1, UNICODE, 42, b"\x00\x01'\"\\\xff"),
            (2, None, None, None),
            (3, "plain", -7, BLOB_1M),
        ]
        ins = f"INSERT INTO {table} (id, name, n, data) VALUES (%s, %s, %s, %s)"
        for r in rows:
            cur.execute(ins, r)
            c.eq(cur.rowcount, 1, f"INSERT id={r[0]} rowcount")
        if prepared:
            # A parameter given as a file object goes up in COM_STMT_SEND_LONG_DATA chunks
            # (which have no reply) before the COM_STMT_EXECUTE.
            cur.execute(ins, (4, "long data ✓", 4, io.BytesIO(BLOB_1M)))
            c.eq(cur.rowcount, 1, "INSERT with a COM_STMT_SEND_LONG_DATA parameter rowcount")
            rows.append((4, "long data ✓", 4, BLOB_1M))

        # (The prepared cursor re-uses its statement when given the same string object again.)
        sel_sql = f"SELECT id, name, n, data FROM {table} WHERE id >= %s ORDER BY id"
        sel = cursor()
        sel.execute(sel_sql, (0,))
        got = [norm_row(r) for r in sel.fetchall()]
        c.eq(len(got), len(rows), "SELECT row count")
        for exp, act in zip(rows, got):
            c.eq(act, exp, f"round trip of row id={exp[0]}")
        c.eq(sel.column_names, ("id", "name", "n", "data"), "column names")
        # Several executions of the same SELECT with different parameters.
        for want in rows:
            sel.execute(sel_sql, (want[0],))
            first = sel.fetchall()[0]
            c.eq(norm_row(first), want, f"re-executed SELECT for id >= {want[0]}")
        sel.execute("SELECT %s, %s, %s", (UNICODE, None, 12345678901234))
        r = tuple(sel.fetchone())
        # A prepared cursor gets '?' parameters back typed as the server reports them.
        r = tuple(x.decode() if isinstance(x, (bytes, bytearray)) else x for x in r)
        c.eq(r, (UNICODE, None, 12345678901234), "parameters echoed by SELECT")
        sel.close()

        # UPDATE and affected rows.
        cur.execute(f"UPDATE {table} SET n = %s WHERE id IN (1, 2, 3)", (100,))
        c.eq(cur.rowcount, 3, "UPDATE rowcount (3 rows changed)")
        cur.execute(f"UPDATE {table} SET n = %s WHERE id = %s", (100, 1))
        c.eq(cur.rowcount, 0, "UPDATE rowcount when nothing changes")
        cur.execute(f"UPDATE {table} SET n = %s WHERE id = %s", (5, 999))
        c.eq(cur.rowcount, 0, "UPDATE rowcount for no matching row")

        # Transactions: one committed, one rolled back.
        conn.start_transaction()
        cur.execute(f"INSERT INTO {table} (id, name) VALUES (%s, %s)", (10, "committed"))
        cur.execute(f"UPDATE {table} SET name = %s WHERE id = %s", ("changed in tx", 3))
        conn.commit()
        conn.start_transaction()
        cur.execute(f"INSERT INTO {table} (id, name) VALUES (%s, %s)", (11, "rolled back"))
        cur.execute(f"UPDATE {table} SET name = %s WHERE id = %s", ("should not stay", 3))
        q = cursor()
        q.execute(f"SELECT COUNT(*) FROM {table} WHERE id = %s", (11,))
        c.eq(q.fetchone()[0], 1, "uncommitted row visible inside its transaction")
        q.close()
        conn.rollback()
        q = cursor()
        q.execute(f"SELECT id, name FROM {table} WHERE id IN (3, 10, 11) ORDER BY id")
        c.eq([tuple(r) for r in q.fetchall()], [(3, "changed in tx"), (10, "committed")], "after commit + rollback")
        q.close()
        other = connector_connect(args)
        try:
            oc = other.cursor()
            oc.execute(f"SELECT COUNT(*) FROM {table} WHERE id IN (10, 11)")
            c.eq(oc.fetchone()[0], 1, "second connection sees the committed row only")
            oc.close()
        finally:
            other.close()

        # executemany.
        many = [(20 + i, f"many {i} ✓", i, bytes([i]) * (i + 1)) for i in range(25)]
        cur.executemany(ins, many)
        c.eq(cur.rowcount, 25, "executemany INSERT rowcount")
        cur.executemany(f"UPDATE {table} SET n = n + %s WHERE id = %s", [(1000, 20), (1000, 21), (1000, 999)])
        c.eq(cur.rowcount, 2, "executemany UPDATE rowcount")
        q = cursor()
        q.execute(f"SELECT id, name, n, data FROM {table} WHERE id >= 20 ORDER BY id")
        exp = [(i, nm, v + (1000 if i in (20, 21) else 0), d) for (i, nm, v, d) in many]
        c.eq([norm_row(r) for r in q.fetchall()], exp, "rows written by executemany")
        q.close()

        # A server error (for the prepared cursor it comes from COM_STMT_PREPARE).
        e_cur = cursor()
        try:
            e_cur.execute(f"SELECT * FROM no_such_table_{RUN_ID} WHERE id = %s", (1,))
            e_cur.fetchall()
            c.fail("SELECT from a missing table did not raise")
        except mysql.connector.errors.Error as e:
            c.eq(e.errno, 1146, "error code for a missing table")
            c.eq(e.sqlstate, "42S02", "SQLSTATE for a missing table")
            c.ok(f"no_such_table_{RUN_ID}" in (e.msg or ""), f"error message names the table: {e.msg!r}")
        e_cur.close()
        # An error from COM_STMT_EXECUTE itself (duplicate key), then the statement still works.
        try:
            cur.execute(ins, (1, "duplicate", None, None))
            c.fail("duplicate key INSERT did not raise")
        except mysql.connector.errors.Error as e:
            c.eq(e.errno, 1062, "error code for a duplicate key")
            c.eq(e.sqlstate, "23000", "SQLSTATE for a duplicate key")
        cur.execute(ins, (99, "after error", None, None))
        c.eq(cur.rowcount, 1, "same statement usable after an execute error")
        q = cursor()
        q.execute("SELECT 1")
        c.eq(q.fetchall(), [(1,)], "connection usable after errors")
        q.close()

        # Session variable.
        s = cursor()
        s.execute("SET time_zone = '+03:00'")
        s.execute("SELECT @@session.time_zone")
        tz = s.fetchone()[0]
        c.eq(tz.decode() if isinstance(tz, (bytes, bytearray)) else tz, "+03:00", "time_zone after SET")
        s.close()

        cur.close()  # prepared: COM_STMT_CLOSE (no reply)
        conn.ping(reconnect=False)
        q = conn.cursor()
        q.execute("SELECT 'after close + ping'")
        c.eq(q.fetchall(), [("after close + ping",)], "in sync after COM_STMT_CLOSE and COM_PING")
        q.close()
    finally:
        try:
            d = conn.cursor()
            d.execute(f"DROP TABLE IF EXISTS {table}")
            d.close()
        finally:
            conn.close()


def connector_multi_section(c, args):
    """Multiple result sets (execute(map_results=True) / nextset(), Connector/Python 9.2+)."""
    conn = connector_connect(args)
    try:
        m = conn.cursor()
        m.execute("SELECT 1; SELECT 'two ✓', NULL; DO 0; SELECT 3", map_results=True)
        sets = []
        while True:
            sets.append([tuple(r) for r in m.fetchall()] if m.with_rows else None)
            if not m.nextset():
                break
        c.eq(sets, [[(1,)], [("two ✓", None)], None, [(3,)]], "result sets of a multi-statement query")
        m.close()
        m = conn.cursor()
        m.execute("SELECT 'in sync'")
        c.eq(m.fetchall(), [("in sync",)], "connection in sync after the multi-statement query")
        m.close()
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", default="app")
    p.add_argument("--password", default="app")
    p.add_argument("--database", default="app")
    args = p.parse_args()

    def watchdog(_sig, _frame):
        print(f"FAIL: python driver test still running after {WATCHDOG_SECONDS} s", file=sys.stderr, flush=True)
        os._exit(3)

    signal.signal(signal.SIGALRM, watchdog)
    signal.alarm(WATCHDOG_SECONDS)

    c = Checks()
    c.run("PyMySQL", pymysql_section, args)
    c.run("PyMySQL multi-statements + CALL", pymysql_multi_section, args)
    c.run("mysql-connector-python (text)", connector_section, args, False)
    c.run("mysql-connector-python multi-statements", connector_multi_section, args)
    c.run("mysql-connector-python (prepared)", connector_section, args, True)

    if c.failed:
        print(f"python drivers: {len(c.failed)} check(s) FAILED, {c.passed} ok", flush=True)
        for f in c.failed:
            lines = f.splitlines()
            # For a traceback: its first line and the exception's line (unindented, "Name: ...").
            exc = [x for x in lines[1:] if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Warning)\b", x)]
            print("  " + lines[0] + (" " + exc[-1] if exc else ""), file=sys.stderr)
        sys.exit(1)
    if c.passed < 50:
        print(f"python drivers: only {c.passed} checks ran", flush=True)
        sys.exit(1)
    print(f"python drivers: all {c.passed} checks ok", flush=True)


if __name__ == "__main__":
    main()
