#!/usr/bin/env python3
"""The soak's churn that sluice-load does not make (scripts/soak.sh runs both).

Threads, each looping until the deadline over short client lives through sluice: binary
prepared statements (COM_STMT_PREPARE/EXECUTE, some left open at disconnect), errors (unknown
table, syntax, duplicate key), session state that pins (user variables, temporary tables,
SQL PREPARE, transactions), KILL of a client by another client (SQL `KILL <id>` and
`KILL QUERY`) and by the admin console (`KILL CLIENT id`, with the mariadb CLI).

    soak_churn.py --port P --console-port C --seconds S [--threads N] [--json FILE]

Prints one JSON summary: operations per kind, errors expected (the ones provoked) and
unexpected. Needs mysql-connector-python (scripts/lib/deps.sh installs it in a venv).
"""

import argparse
import json
import random
import subprocess
import sys
import threading
import time

import mysql.connector
from mysql.connector import errorcode

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--console-port", type=int, required=True)
ap.add_argument("--seconds", type=float, required=True)
ap.add_argument("--threads", type=int, default=4)
ap.add_argument("--pause", type=float, default=0.02, help="seconds between operations per thread")
ap.add_argument("--json")
args = ap.parse_args()

DEADLINE = time.monotonic() + args.seconds
lock = threading.Lock()
counts = {}
unexpected = {}


def count(kind, n=1):
    with lock:
        counts[kind] = counts.get(kind, 0) + n


def oops(kind, e):
    key = f"{kind}: {type(e).__name__}: {str(e)[:120]}"
    with lock:
        unexpected[key] = unexpected.get(key, 0) + 1


def connect():
    return mysql.connector.connect(
        host="127.0.0.1", port=args.port, user="app", password="app", database="app",
        use_pure=True, connection_timeout=10, autocommit=True,
    )


def expect_error(cur, sql, codes):
    try:
        cur.execute(sql)
        cur.fetchall()
    except mysql.connector.Error as e:
        if e.errno in codes:
            count("errors_expected")
            return
        raise
    raise RuntimeError(f"{sql!r} succeeded; an error was expected")


def prepared(c):
    cur = c.cursor(prepared=True)
    for i in range(random.randint(1, 20)):
        cur.execute("SELECT ? + 1, CONCAT('x', ?)", (i, str(i)))
        cur.fetchall()
    count("prepared_executes")
    # Half the time the statement is left open: the disconnect must free it.
    if random.random() < 0.5:
        cur.close()


def errors(c):
    cur = c.cursor()
    expect_error(cur, "SELECT * FROM no_such_table_soak", {errorcode.ER_NO_SUCH_TABLE})
    expect_error(cur, "SELEC 1", {errorcode.ER_PARSE_ERROR})
    cur.execute("CREATE TABLE IF NOT EXISTS soak_dup (id INT PRIMARY KEY)")
    cur.execute("INSERT IGNORE INTO soak_dup VALUES (1)")
    expect_error(cur, "INSERT INTO soak_dup VALUES (1)", {errorcode.ER_DUP_ENTRY})
    count("error_rounds")


def pinned_state(c):
    cur = c.cursor()
    cur.execute("SET @soak = %s", (random.randint(1, 1000),))
    cur.execute("SELECT @soak")
    cur.fetchall()
    cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS soak_tmp (v INT)")
    cur.execute("INSERT INTO soak_tmp VALUES (1)")
    cur.execute("PREPARE soak_s FROM 'SELECT COUNT(*) FROM soak_tmp'")
    cur.execute("EXECUTE soak_s")
    cur.fetchall()
    cur.execute("DEALLOCATE PREPARE soak_s")
    cur.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES'")
    cur.execute("BEGIN")
    cur.execute("SELECT 1")
    cur.fetchall()
    cur.execute("ROLLBACK" if random.random() < 0.5 else "COMMIT")
    count("pinned_sessions")


def sql_kill(c):
    victim = connect()
    vcur = victim.cursor()
    vcur.execute("SELECT CONNECTION_ID()")
    vid = vcur.fetchall()[0][0]
    cur = c.cursor()
    if random.random() < 0.5:
        cur.execute(f"KILL {vid}")
        count("sql_kill_connection")
        try:
            vcur.execute("SELECT 1")
            vcur.fetchall()
            oops("killed client still answered", RuntimeError(vid))
        except mysql.connector.Error:
            count("errors_expected")
    else:
        # KILL QUERY of a running SLEEP: the victim gets ERR 1317 (or SLEEP returns 1) and lives.
        t = threading.Thread(target=lambda: _sleep_killed(vcur))
        t.start()
        time.sleep(0.2)
        cur.execute(f"KILL QUERY {vid}")
        t.join(10)
        count("sql_kill_query")
    try:
        victim.close()
    except mysql.connector.Error:
        pass


def _sleep_killed(vcur):
    try:
        vcur.execute("SELECT SLEEP(5)")
        vcur.fetchall()
    except mysql.connector.Error as e:
        if e.errno == errorcode.ER_QUERY_INTERRUPTED:
            count("errors_expected")
        else:
            oops("kill query victim", e)


def console_kill(c):
    victim = connect()
    vcur = victim.cursor()
    vcur.execute("SELECT CONNECTION_ID()")
    vid = vcur.fetchall()[0][0]
    r = subprocess.run(
        ["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{args.console_port}", "-uadmin", "-padmin",
         "--batch", "-e", f"KILL CLIENT {vid}"],
        capture_output=True, text=True, timeout=20,
    )
    if r.returncode != 0:
        oops("console KILL CLIENT", RuntimeError(r.stderr.strip()))
    else:
        count("console_kill")
    try:
        vcur.execute("SELECT 1")
        vcur.fetchall()
    except mysql.connector.Error:
        count("errors_expected")
    try:
        victim.close()
    except mysql.connector.Error:
        pass


ACTIONS = [(prepared, 4), (errors, 3), (pinned_state, 3), (sql_kill, 1), (console_kill, 1)]


def worker():
    kinds = [a for a, w in ACTIONS for _ in range(w)]
    while time.monotonic() < DEADLINE:
        try:
            c = connect()
            count("connects")
        except mysql.connector.Error as e:
            oops("connect", e)
            time.sleep(0.5)
            continue
        try:
            # A few operations per client life, then a disconnect (QUIT, or a dropped socket).
            for _ in range(random.randint(1, 5)):
                if time.monotonic() >= DEADLINE:
                    break
                action = random.choice(kinds)
                try:
                    action(c)
                except (mysql.connector.Error, RuntimeError) as e:
                    if getattr(e, "errno", None) == 1053 and "could not move" in str(e):
                        # Its state lived on its backend (a pin, a transaction): the process it
                        # was on stopped after an upgrade and told it why. Expected, counted.
                        count("ended_by_upgrade")
                    else:
                        oops(action.__name__, e)
                    break
                time.sleep(args.pause)
        finally:
            try:
                if random.random() < 0.2:
                    c._socket.sock.close()  # no COM_QUIT: the client just goes away
                    count("dropped_sockets")
                else:
                    c.close()
            except Exception:  # noqa: BLE001 - a killed connection may fail to close
                pass


threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.threads)]
for t in threads:
    t.start()
for t in threads:
    t.join(max(1.0, DEADLINE - time.monotonic() + 30))
summary = {"counts": counts, "unexpected": unexpected}
text = json.dumps(summary, indent=1, sort_keys=True)
if args.json:
    with open(args.json, "w") as f:
        f.write(text)
print(text)
sys.exit(0)
