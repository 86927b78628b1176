#!/usr/bin/env python3
"""Capture real MySQL-protocol traffic and turn it into seed corpora for sluice's fuzz targets.

    capture.py all --port MARIADB_PORT [--out fuzz/corpus] [--keep-capture DIR]
        Starts a logging TCP relay in front of the MariaDB at 127.0.0.1:PORT, runs real clients
        through it (the mariadb CLI, PyMySQL, mysql-connector with prepared cursors, sysbench
        oltp_read_write, and a small raw-protocol client for the commands drivers rarely send),
        then writes seeds to OUT/<target>/ (replacing what is there).
    capture.py relay --port MARIADB_PORT --listen LPORT --capture DIR
        Only the relay (Ctrl-C to stop): point any client at 127.0.0.1:LPORT.
    capture.py seeds --capture DIR [--out fuzz/corpus]
        Only the seed building, from a capture directory.

The relay parses each direction's byte stream into frames (int<3> length, int<1> sequence id,
payload) and writes one JSON-lines file per connection: {"d": "c"|"s", "seq": n, "p": hex} per
packet, plus the raw byte streams (c.bin / s.bin). It needs the server without TLS (the clients are
run with TLS off; the private server of scripts/mariadb.sh has none).

Python drivers: run this with a Python that has PyMySQL and mysql-connector-python (see
fuzz/README.md); a missing driver or tool is skipped with a warning.
"""

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HOST = "127.0.0.1"
USER, PASSWORD, DB = "app", "app", "app"

# Capability bits (src/codec/caps.rs).
LONG_PASSWORD = 1
CONNECT_WITH_DB = 1 << 3
LOCAL_FILES = 1 << 7
PROTOCOL_41 = 1 << 9
TRANSACTIONS = 1 << 13
SECURE_CONNECTION = 1 << 15
MULTI_STATEMENTS = 1 << 16
MULTI_RESULTS = 1 << 17
PS_MULTI_RESULTS = 1 << 18
PLUGIN_AUTH = 1 << 19
CONNECT_ATTRS = 1 << 20
PLUGIN_AUTH_LENENC = 1 << 21
SESSION_TRACK = 1 << 23
DEPRECATE_EOF = 1 << 24


def log(*a):
    print("capture:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The relay


class Framer:
    """Splits one direction's byte stream into logical packets (frames of 0xFFFFFF continue)."""

    def __init__(self):
        self.buf = bytearray()
        self.partial = None  # (seq, bytearray) of a packet whose frames continue

    def feed(self, data):
        self.buf += data
        out = []
        while len(self.buf) >= 4:
            n = self.buf[0] | self.buf[1] << 8 | self.buf[2] << 16
            if len(self.buf) < 4 + n:
                break
            seq = self.buf[3]
            payload = bytes(self.buf[4:4 + n])
            del self.buf[:4 + n]
            if self.partial is not None:
                self.partial[1].extend(payload)
            else:
                self.partial = (seq, bytearray(payload))
            if n < 0xFFFFFF:
                out.append((self.partial[0], bytes(self.partial[1])))
                self.partial = None
        return out


class Conn:
    def __init__(self, capture_dir, n):
        self.dir = os.path.join(capture_dir, "conn-%05d" % n)
        os.makedirs(self.dir, exist_ok=True)
        self.lock = threading.Lock()
        self.records = open(os.path.join(self.dir, "packets.jsonl"), "w")
        self.raw = {"c": open(os.path.join(self.dir, "c.bin"), "wb"),
                    "s": open(os.path.join(self.dir, "s.bin"), "wb")}
        self.framers = {"c": Framer(), "s": Framer()}

    def data(self, d, chunk):
        with self.lock:
            # Raw streams are only kept up to 64 KiB: the framer seeds use their beginnings.
            if self.raw[d].tell() < 65536:
                self.raw[d].write(chunk[:65536 - self.raw[d].tell()])
            for seq, p in self.framers[d].feed(chunk):
                self.records.write(json.dumps({"d": d, "seq": seq, "p": p.hex()}) + "\n")

    def close(self):
        with self.lock:
            self.records.close()
            for f in self.raw.values():
                f.close()


class Relay:
    def __init__(self, upstream_port, capture_dir, listen_port=0):
        self.upstream = (HOST, upstream_port)
        self.capture_dir = capture_dir
        os.makedirs(capture_dir, exist_ok=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, listen_port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.n = 0
        self.stopping = False
        self.threads = []

    def serve_forever(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                break
            self.n += 1
            t = threading.Thread(target=self.handle, args=(c, self.n), daemon=True)
            t.start()
            self.threads.append(t)

    def start(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.stopping = True
        self.sock.close()
        for t in self.threads:
            t.join(timeout=10)

    def handle(self, client, n):
        conn = Conn(self.capture_dir, n)
        try:
            server = socket.create_connection(self.upstream)
        except OSError as e:
            log("upstream connect failed:", e)
            client.close()
            return

        def pump(src, dst, d):
            try:
                while True:
                    chunk = src.recv(65536)
                    if not chunk:
                        break
                    conn.data(d, chunk)
                    dst.sendall(chunk)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        t1 = threading.Thread(target=pump, args=(client, server, "c"), daemon=True)
        t2 = threading.Thread(target=pump, args=(server, client, "s"), daemon=True)
        t1.start()
        t2.start()
        t1.join()
        t2.join()
        client.close()
        server.close()
        conn.close()


# ---------------------------------------------------------------------------------------------
# Workloads


def cli_workload(port, tmp):
    if not shutil.which("mariadb"):
        log("mariadb CLI not found; skipped")
        return
    data = os.path.join(tmp, "infile.csv")
    with open(data, "w") as f:
        for i in range(200):
            f.write("%d,name %d,\\N\n" % (i, i))
    base = ["mariadb", "--no-defaults", "-h", HOST, "-P", str(port), "-u", USER,
            "-p" + PASSWORD, "--skip-ssl", "--local-infile=1", DB]
    scripts = [
        "SELECT 1; SELECT 'a' AS x, NULL AS y, 3.5 AS z; SELECT @@version, CONNECTION_ID();",
        "DROP TABLE IF EXISTS cli_t; CREATE TABLE cli_t (id INT PRIMARY KEY, name VARCHAR(40),"
        " note TEXT); INSERT INTO cli_t VALUES (1,'one',NULL),(2,'two','x');"
        " UPDATE cli_t SET name='uno' WHERE id=1; SELECT * FROM cli_t ORDER BY id;",
        "LOAD DATA LOCAL INFILE '%s' INTO TABLE cli_t FIELDS TERMINATED BY ','"
        " (@id, name, note) SET id = @id + 100; SELECT COUNT(*) FROM cli_t;" % data,
        "PREPARE s1 FROM 'SELECT id, name FROM cli_t WHERE id > ? LIMIT 3'; SET @a = 1;"
        " EXECUTE s1 USING @a; DEALLOCATE PREPARE s1;",
        "SET time_zone = '+02:00'; SET NAMES latin1; SET sql_mode = 'ANSI_QUOTES';"
        " SELECT \"id\" FROM cli_t LIMIT 1; SET autocommit = 0; BEGIN; SELECT 1; COMMIT;",
        "CREATE TEMPORARY TABLE tmp1 (x INT); INSERT INTO tmp1 VALUES (1); SELECT GET_LOCK('l1', 1);"
        " SELECT RELEASE_LOCK('l1'); DROP TEMPORARY TABLE tmp1;",
        "SELECT * FROM no_such_table;",
        "SHOW TABLES; SHOW VARIABLES LIKE 'session_track%'; SHOW WARNINGS; SELECT LAST_INSERT_ID(),"
        " ROW_COUNT(), FOUND_ROWS();",
        "DELIMITER //\nCREATE OR REPLACE PROCEDURE p2() BEGIN SELECT 1; SELECT 2, 'two'; END//\n"
        "DELIMITER ;\nCALL p2();",
        "SELECT /*!40101 1 + */ 1, 'it''s', \"dq\", `id` FROM cli_t -- comment\n WHERE id = 1"
        " # another\n; SELECT x'4142', b'01', _utf8mb4'z' COLLATE utf8mb4_bin;",
    ]
    for s in scripts:
        r = subprocess.run(base + ["-e", s], capture_output=True, text=True, timeout=60)
        if r.returncode != 0 and "no_such_table" not in s:
            log("mariadb CLI:", r.stderr.strip()[:200])


def pymysql_workload(port, tmp):
    try:
        import pymysql
        from pymysql.constants import CLIENT
    except ImportError:
        log("PyMySQL not installed; skipped")
        return
    data = os.path.join(tmp, "py.csv")
    with open(data, "w") as f:
        f.write("".join("%d\tp%d\n" % (i, i) for i in range(50)))
    c = pymysql.connect(host=HOST, port=port, user=USER, password=PASSWORD, database=DB,
                        local_infile=True, client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True)
    with c.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS py_t")
        cur.execute("CREATE TABLE py_t (id INT PRIMARY KEY AUTO_INCREMENT, v VARCHAR(50),"
                    " b BLOB, d DATETIME, f DOUBLE)")
        cur.executemany("INSERT INTO py_t (v, b, d, f) VALUES (%s, %s, NOW(), %s)",
                        [("v%d" % i, bytes([i % 256]) * i, i / 3) for i in range(20)])
        cur.execute("SELECT * FROM py_t WHERE id < %s", (10,))
        cur.fetchall()
        cur.execute("SELECT 1; SELECT 2, 3; SET @x := 5")
        while cur.nextset():
            pass
        cur.execute("LOAD DATA LOCAL INFILE %s INTO TABLE py_t (id, v)", (data,))
        try:
            cur.execute("INSERT INTO py_t (id) VALUES (1)")
        except pymysql.err.MySQLError:
            pass
        cur.execute("SELECT v FROM py_t WHERE v = %s", ("quote ' and \\ backslash",))
        cur.execute("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
        cur.execute("SELECT 'a\\b'")
    c.select_db("mysql")
    c.ping()
    c.begin()
    c.rollback()
    c.close()


def connector_workload(port, tmp):
    try:
        import mysql.connector
    except ImportError:
        log("mysql-connector-python not installed; skipped")
        return
    for pure in (True, False):
        try:
            c = mysql.connector.connect(host=HOST, port=port, user=USER, password=PASSWORD,
                                        database=DB, use_pure=pure, ssl_disabled=True,
                                        allow_local_infile=True)
        except Exception as e:  # the C extension may be missing
            log("mysql-connector (use_pure=%s): %s" % (pure, e))
            continue
        cur = c.cursor(prepared=True)
        cur.execute("DROP TABLE IF EXISTS mc_t")
        cur.execute("CREATE TABLE mc_t (id INT PRIMARY KEY, s VARCHAR(64), n DECIMAL(10,2),"
                    " t TIMESTAMP NULL, bl BLOB)")
        for i in range(10):
            cur.execute("INSERT INTO mc_t VALUES (?, ?, ?, ?, ?)",
                        (i, "s%d" % i, i * 1.25, None if i % 2 else "2024-01-02 03:04:05",
                         b"\x00\xff" * i))
        cur.execute("SELECT id, s, n, t, bl FROM mc_t WHERE id > ? AND s <> ?", (2, "x"))
        cur.fetchall()
        cur.execute("SELECT id FROM mc_t WHERE id = ?", (3,))
        cur.fetchall()
        cur.execute("UPDATE mc_t SET s = ? WHERE id = ?", ("upd", 1))
        try:
            cur.execute("SELECT nope FROM mc_t WHERE id = ?", (1,))
        except mysql.connector.Error:
            pass
        cur.close()
        cur = c.cursor()
        cur.execute("SELECT * FROM mc_t")
        cur.fetchall()
        cur.close()
        c.cmd_ping()
        c.cmd_statistics()
        c.cmd_init_db("app")
        try:
            c.cmd_reset_connection()
        except Exception:
            pass
        try:
            c.cmd_change_user(username=USER, password=PASSWORD, database=DB)
        except Exception as e:
            log("cmd_change_user:", e)
        c.close()


def sysbench_workload(port, seconds):
    if not shutil.which("sysbench"):
        log("sysbench not found; skipped")
        return
    base = ["sysbench", "oltp_read_write", "--db-driver=mysql", "--mysql-host=" + HOST,
            "--mysql-port=%d" % port, "--mysql-user=" + USER, "--mysql-password=" + PASSWORD,
            "--mysql-db=" + DB, "--tables=1", "--table-size=500", "--threads=2"]
    subprocess.run(base + ["cleanup"], capture_output=True, timeout=120)
    r = subprocess.run(base + ["prepare"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        log("sysbench prepare:", r.stderr.strip()[:300])
        return
    r = subprocess.run(base + ["--time=%d" % seconds, "run"], capture_output=True, text=True,
                       timeout=seconds + 120)
    if r.returncode != 0:
        log("sysbench run:", r.stderr.strip()[:300])
    subprocess.run(base + ["cleanup"], capture_output=True, timeout=120)


class Raw:
    """A minimal client speaking the protocol directly, for commands drivers rarely send."""

    def __init__(self, port, caps, plugin=b"mysql_native_password"):
        self.s = socket.create_connection((HOST, port))
        self.rbuf = b""
        seq, greeting = self.read()
        nul = greeting.index(0, 1)
        pos = nul + 1 + 4
        nonce = greeting[pos:pos + 8]
        pos += 8 + 1 + 2 + 1 + 2 + 2
        auth_len = greeting[pos]
        pos += 1 + 10
        part2 = greeting[pos:pos + max(13, auth_len - 8)]
        self.nonce = nonce + part2.rstrip(b"\0")
        server_caps = struct.unpack("<H", greeting[nul + 1 + 4 + 8 + 1:][:2])[0] | \
            struct.unpack("<H", greeting[nul + 1 + 4 + 8 + 1 + 2 + 1 + 2:][:2])[0] << 16
        self.caps = caps & server_caps
        resp = struct.pack("<IIB", self.caps, 1 << 24, 45) + b"\0" * 19 + struct.pack("<I", 0)
        resp += USER.encode() + b"\0"
        scramble = self.scramble(self.nonce) if plugin == b"mysql_native_password" else b"\x01" * 32
        resp += bytes([len(scramble)]) + scramble
        resp += DB.encode() + b"\0" + plugin + b"\0"
        attrs = b"".join(bytes([len(x)]) + x for x in (b"_client_name", b"sluice-capture"))
        resp += bytes([len(attrs)]) + attrs
        self.write(seq + 1, resp)
        while True:
            seq, p = self.read()
            if p[0] == 0xFE:  # auth switch
                nul = p.index(0, 1)
                self.nonce = p[nul + 1:].rstrip(b"\0")
                self.write(seq + 1, self.scramble(self.nonce))
                continue
            if p[0] != 0:
                raise RuntimeError("login failed: %r" % p)
            break

    @staticmethod
    def scramble(nonce):
        s1 = hashlib.sha1(PASSWORD.encode()).digest()
        s2 = hashlib.sha1(s1).digest()
        h = hashlib.sha1(nonce[:20] + s2).digest()
        return bytes(a ^ b for a, b in zip(s1, h))

    def write(self, seq, payload):
        self.s.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq & 0xFF]) + payload)

    def read(self):
        while True:
            if len(self.rbuf) >= 4:
                n = int.from_bytes(self.rbuf[:3], "little")
                if len(self.rbuf) >= 4 + n:
                    seq, p = self.rbuf[3], self.rbuf[4:4 + n]
                    self.rbuf = self.rbuf[4 + n:]
                    return seq, p
            chunk = self.s.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            self.rbuf += chunk

    def deprecate_eof(self):
        return self.caps & DEPRECATE_EOF != 0

    def response(self, kind):
        """Reads one whole response (the shapes ResponseTracker knows), returns its packets."""
        out = []

        def rd():
            p = self.read()[1]
            out.append(p)
            return p

        def is_term(p):
            return p[0] == 0xFE and (len(p) < 0xFFFFFF if self.deprecate_eof() else len(p) < 9)

        def status_of_terminator(p):
            if self.deprecate_eof():
                return ok_status(p)
            return struct.unpack("<H", p[3:5])[0] if len(p) >= 5 else 0

        while True:
            p = rd()
            if p[0] == 0xFF or kind == "statistics":
                return out
            if kind in ("okerr",) or (kind in ("query", "execute") and p[0] == 0):
                if ok_status(p) & 8 and kind in ("query", "execute"):
                    continue
                return out
            if kind == "setoption":
                return out
            if kind == "prepare":
                cols, params = struct.unpack("<HH", p[5:9])
                for n in (params, cols):
                    if n:
                        for _ in range(n):
                            rd()
                        if not self.deprecate_eof():
                            rd()
                return out
            if kind == "fieldlist":
                while not is_term(p) and p[0] != 0xFF:
                    p = rd()
                return out
            if kind == "fetch":
                while not is_term(p) and p[0] != 0xFF:
                    p = rd()
                return out
            # A result set.
            ncols = p[0]
            for _ in range(ncols):
                rd()
            if not self.deprecate_eof():
                p = rd()
                if kind == "execute" and struct.unpack("<H", p[3:5])[0] & 0x40:
                    return out  # cursor opened
            while True:
                p = rd()
                if p[0] == 0xFF:
                    return out
                if is_term(p):
                    break
            if kind == "execute" and self.deprecate_eof() and status_of_terminator(p) & 0x40 \
                    and len(out) == ncols + 2:
                return out
            if status_of_terminator(p) & 8:
                continue
            return out

    def cmd(self, payload, kind):
        self.write(0, payload)
        return self.response(kind)

    def close(self):
        try:
            self.write(0, b"\x01")
        finally:
            self.s.close()


def read_lenenc(b, i):
    c = b[i]
    if c < 0xFB:
        return c, i + 1
    if c == 0xFC:
        return int.from_bytes(b[i + 1:i + 3], "little"), i + 3
    if c == 0xFD:
        return int.from_bytes(b[i + 1:i + 4], "little"), i + 4
    return int.from_bytes(b[i + 1:i + 9], "little"), i + 9


def ok_status(p):
    _, i = read_lenenc(p, 1)
    _, i = read_lenenc(p, i)
    return struct.unpack("<H", p[i:i + 2])[0]


def raw_workload(port):
    base = LONG_PASSWORD | PROTOCOL_41 | TRANSACTIONS | SECURE_CONNECTION | MULTI_STATEMENTS | \
        MULTI_RESULTS | PS_MULTI_RESULTS | PLUGIN_AUTH | CONNECT_ATTRS | CONNECT_WITH_DB | LOCAL_FILES
    for extra in (0, SESSION_TRACK | DEPRECATE_EOF, SESSION_TRACK, DEPRECATE_EOF):
        r = Raw(port, base | extra)
        r.cmd(b"\x03SET session_track_system_variables = '*', session_track_state_change = 1,"
              b" session_track_schema = 1, session_track_transaction_info = 'CHARACTERISTICS'",
              "query")
        for q in [b"SET time_zone = '-03:30', sql_select_limit = 1000, max_statement_time = 2.5",
                  b"SET NAMES utf8mb4 COLLATE utf8mb4_unicode_ci",
                  b"SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES,ANSI_QUOTES'",
                  b"SET sql_mode = DEFAULT, lc_time_names = 'de_DE', default_master_connection"
                  b" = 'it''s \\\\ odd'",
                  b"SET @u = 'x'", b"USE mysql", b"USE app",
                  b"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", b"START TRANSACTION READ ONLY",
                  b"SELECT 1", b"COMMIT", b"SELECT 1; SELECT 2; SET @v := 3",
                  b"DROP TABLE IF EXISTS raw_t",
                  b"CREATE TABLE raw_t (id INT PRIMARY KEY, v VARCHAR(20), x BLOB)",
                  b"INSERT INTO raw_t VALUES (1,'a',NULL),(2,'b',''),(3,NULL,'xyz')",
                  b"SELECT CONNECTION_ID(), LAST_INSERT_ID()", b"KILL QUERY 999999"]:
            r.cmd(b"\x03" + q, "query")
        r.cmd(b"\x04raw_t\x00", "fieldlist")
        r.cmd(b"\x04raw_t\x00v%", "fieldlist")
        r.cmd(b"\x09", "statistics")
        r.cmd(b"\x0e", "okerr")
        r.cmd(b"\x1b\x01\x00", "setoption")
        r.cmd(b"\x1b\x00\x00", "setoption")
        r.cmd(b"\x0a", "query")  # COM_PROCESS_INFO: a result set
        r.cmd(b"\x02nosuchdb", "okerr")
        prep = r.cmd(b"\x16SELECT id, v, x FROM raw_t WHERE id >= ? AND v <> ?", "prepare")
        stmt = prep[0][1:5]
        # Execute with a read-only cursor, then fetch it in two steps.
        params = b"\x00" + b"\x01" + b"\x08\x00\xfd\x00" + struct.pack("<q", 1) + b"\x01z"
        r.cmd(b"\x17" + stmt + b"\x01" + b"\x01\x00\x00\x00" + params, "execute")
        r.cmd(b"\x1c" + stmt + struct.pack("<I", 2), "fetch")
        r.cmd(b"\x1c" + stmt + struct.pack("<I", 5), "fetch")
        r.cmd(b"\x1a" + stmt, "okerr")
        # Long data for the second parameter, then an execute relying on bound types.
        r.write(0, b"\x18" + stmt + b"\x01\x00" + b"long data")
        r.cmd(b"\x17" + stmt + b"\x00" + b"\x01\x00\x00\x00" + b"\x00" + b"\x01\x08\x00\xfd\x00"
              + struct.pack("<q", 2), "execute")
        r.cmd(b"\x17" + stmt + b"\x00" + b"\x01\x00\x00\x00" + b"\x02" + b"\x00"
              + struct.pack("<q", 1), "execute")
        r.write(0, b"\x19" + stmt)
        prep = r.cmd(b"\x16INSERT INTO raw_t VALUES (?, ?, ?)", "prepare")
        stmt = prep[0][1:5]
        r.cmd(b"\x17" + stmt + b"\x00" + b"\x01\x00\x00\x00" + b"\x04" + b"\x01"
              + b"\x03\x00\x0f\x00\xfc\x00" + struct.pack("<i", 10 + extra % 7) + b"\x02hi",
              "execute")
        r.cmd(b"\x16SELEKT broken ?", "prepare")
        r.cmd(b"\x17" + b"\xff\xff\x00\x00" + b"\x00\x01\x00\x00\x00", "execute")
        r.cmd(b"\x1f", "okerr")  # COM_RESET_CONNECTION
        cu = b"\x11" + USER.encode() + b"\0" + bytes([20]) + Raw.scramble(r.nonce) + DB.encode() \
            + b"\0" + struct.pack("<H", 45) + b"mysql_native_password\0"
        if r.caps & CONNECT_ATTRS:
            attrs = b"".join(bytes([len(x)]) + x for x in (b"_client_name", b"capture-cu"))
            cu += bytes([len(attrs)]) + attrs
        r.write(0, cu)
        while True:
            seq, p = r.read()
            if p[0] == 0xFE:
                nul = p.index(0, 1)
                r.write(seq + 1, Raw.scramble(p[nul + 1:].rstrip(b"\0")))
                continue
            break
        r.cmd(b"\x03SELECT 'after change user'", "query")
        r.close()
    # A client that claims caching_sha2_password: MariaDB answers with an auth switch.
    Raw(port, base, plugin=b"caching_sha2_password").close()
    # A wrong password: ERR during login.
    try:
        global PASSWORD
        saved, PASSWORD = PASSWORD, "wrong"
        Raw(port, base).close()
    except RuntimeError:
        pass
    finally:
        PASSWORD = saved


# ---------------------------------------------------------------------------------------------
# Seeds


KINDS = ["none", "okerr", "query", "prepare", "execute", "fetch", "fieldlist", "statistics",
         "setoption"]


def kind_of(code):
    """command::disposition, mapped to the index of the kind in the result_tracker target."""
    return {0x03: "query", 0x02: "okerr", 0x05: "okerr", 0x06: "okerr", 0x07: "okerr",
            0x16: "prepare", 0x17: "execute", 0x1c: "fetch", 0x1a: "okerr", 0x19: "none",
            0x18: "none", 0x04: "fieldlist", 0x01: "none", 0x0e: "okerr", 0x1f: "okerr",
            0x11: "okerr", 0x0c: "okerr", 0x1b: "setoption", 0x09: "statistics",
            0x0a: "query"}.get(code)


def frame(seq, p):
    return struct.pack("<I", len(p))[:3] + bytes([seq & 0xFF]) + p


def load_conns(capture_dir):
    conns = []
    for name in sorted(os.listdir(capture_dir)):
        d = os.path.join(capture_dir, name)
        path = os.path.join(d, "packets.jsonl")
        if not os.path.exists(path):
            continue
        recs = []
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                recs.append((r["d"], r["seq"], bytes.fromhex(r["p"])))
        raw = {}
        for k in ("c", "s"):
            with open(os.path.join(d, k + ".bin"), "rb") as f:
                raw[k] = f.read()
        conns.append((name, recs, raw))
    return conns


class SeedSet:
    def __init__(self, out, target, limit):
        self.dir = os.path.join(out, target)
        self.limit = limit
        self.seen = set()
        self.items = []

    def add(self, data, key=None, cls=None):
        """Adds a seed unless one with the same key is there; `cls` groups seeds for sampling."""
        key = key if key is not None else data
        if key in self.seen or not data:
            return
        self.seen.add(key)
        self.items.append((cls, data))

    def write(self, rng):
        if os.path.isdir(self.dir):
            shutil.rmtree(self.dir)
        os.makedirs(self.dir)
        # Over the limit: round-robin over the classes (a random order within each), so rare
        # commands and response shapes survive next to thousands of similar sysbench executes.
        groups = {}
        for cls, data in self.items:
            groups.setdefault(repr(cls), []).append(data)
        for g in groups.values():
            rng.shuffle(g)
        items, k = [], 0
        while len(items) < min(self.limit, len(self.items)):
            for g in groups.values():
                if k < len(g) and len(items) < self.limit:
                    items.append(g[k])
            k += 1
        for data in items:
            name = hashlib.sha1(data).hexdigest()
            with open(os.path.join(self.dir, name), "wb") as f:
                f.write(data)
        return len(items), sum(len(x) for x in items)


def shape(packets):
    """A response's shape for de-duplication: first bytes and rough sizes."""
    return tuple((p[:1], min(len(p), 16) // 4) for p in packets[:12]) + (len(packets) > 12,)


def session_vars(p, caps):
    """(name, value) pairs of system-variable changes in an OK packet with session tracking."""
    try:
        if p[0] != 0 or not caps & SESSION_TRACK:
            return []
        _, i = read_lenenc(p, 1)
        _, i = read_lenenc(p, i)
        st = struct.unpack("<H", p[i:i + 2])[0]
        i += 4
        if not st & 0x4000 or i >= len(p):
            return []
        n, i = read_lenenc(p, i)
        i += n  # info
        n, i = read_lenenc(p, i)
        block, out, j = p[i:i + n], [], 0
        while j < len(block):
            ty = block[j]
            n, j = read_lenenc(block, j + 1)
            data = block[j:j + n]
            j += n
            if ty == 0:
                a, k = read_lenenc(data, 0)
                name = data[k:k + a]
                b, k = read_lenenc(data, k + a)
                out.append((name, data[k:k + b]))
        return out
    except (IndexError, struct.error):
        return []


def build_seeds(capture_dir, out):
    rng = random.Random(1)
    conns = load_conns(capture_dir)
    sets = {t: SeedSet(out, t, lim) for t, lim in [
        ("framer", 120), ("handshake", 80), ("commands", 400), ("server_responses", 400),
        ("result_tracker", 500), ("sql", 600)]}
    limits = [0, 1, 7, 64, 255, 4096, 1 << 20, 64 << 20]
    tracked = []
    for name, recs, raw in conns:
        if not recs:
            continue
        # Framer: the first bytes of each direction, with a few limits and chunk patterns.
        for d in ("c", "s"):
            stream = raw[d][:2048]
            if len(stream) < 4:
                continue
            for sel, sizes in [(5, []), (6, [1]), (5, [3, 0, 17]), (rng.randrange(8), [7, 250, 2]),
                               (4, [rng.randrange(256) for _ in range(rng.randrange(1, 15))])]:
                seed = bytes([sel, len(sizes)] + sizes) + stream
                sets["framer"].add(seed, key=(d, sel, tuple(sizes), stream[:64], len(stream) // 256), cls=(d, sel))
        # Handshake: the greeting and the client's response.
        server = [r for r in recs if r[0] == "s"]
        client = [r for r in recs if r[0] == "c"]
        if not server or not client:
            continue
        greeting, hs = server[0][2], client[0][2]
        sets["handshake"].add(greeting)
        sets["handshake"].add(hs)
        if len(hs) < 4 or len(greeting) < 40:
            continue
        ccaps = struct.unpack("<I", hs[:4])[0]
        try:
            nul = greeting.index(0, 1)
            g = greeting[nul + 1 + 4 + 8 + 1:]
            scaps = struct.unpack("<H", g[:2])[0] | struct.unpack("<H", g[5:7])[0] << 16
        except (ValueError, struct.error):
            continue
        caps = ccaps & scaps
        deprecate = bool(caps & DEPRECATE_EOF)
        # Login: the server packets after the greeting until the first command.
        login, i = [], 1
        first_cmd = next((k for k, r in enumerate(recs) if r[0] == "c" and r[1] == 0), len(recs))
        login = [r for r in recs[1:first_cmd] if r[0] == "s"]
        if login:
            for opts in (0, 1, 2, 16, 32, 0x3f):
                data = bytes([opts]) + b"".join(frame(s, p) for _, s, p in login)
                sets["server_responses"].add(data, key=("login", opts, shape([p for _, _, p in login])), cls="login")
        # Commands and their responses: a command is a client packet with sequence id 0.
        cmds = []
        for k in range(first_cmd, len(recs)):
            d, seq, p = recs[k]
            if d == "c" and seq == 0 and p:
                cmds.append([p, []])
            elif d == "s" and cmds:
                cmds[-1][1].append((seq, p))
        stmt_params = {}
        for p, resp in cmds:
            code = p[0]
            # commands target: [params lo, params hi, flags] + payload.
            if len(p) <= 4096:
                params = 0
                if code in (0x17, 0x19, 0x1a, 0x18, 0x1c) and len(p) >= 5:
                    params = stmt_params.get(p[1:5], 0)
                key = (code, p if code != 0x03 else re.sub(rb"\d+", b"0", p)[:80])
                sets["commands"].add(struct.pack("<HB", params, 0) + p, key=key, cls=code)
                if code == 0x17 and params:
                    types = b"\x03\x00" * params
                    sets["commands"].add(struct.pack("<HB", params, 1) + p + types,
                                         key=key + (b"remembered",), cls=(code, 1))
            # PREPARE_OK: remember the parameter count of the statement id.
            if code == 0x16 and resp and resp[0][1][:1] == b"\x00" and len(resp[0][1]) >= 9:
                stmt_params[resp[0][1][1:5]] = struct.unpack("<H", resp[0][1][7:9])[0]
            # sql target: query and prepare texts.
            if code in (0x03, 0x16) and len(p) > 1:
                text = p[1:4096]
                sets["sql"].add(bytes([rng.randrange(0x80)]) + text,
                                key=re.sub(rb"\d+", b"0", text)[:120],
                                cls=(code, text.split(b" ", 1)[0].upper()[:12]))
            # Session tracking: variable changes for the plan seeds.
            for _, sp in resp:
                tracked.extend(session_vars(sp, caps))
            kind = kind_of(code)
            if kind is None or not resp:
                continue
            wire = b"".join(frame(s, sp) for s, sp in resp)
            if len(wire) > 16384:
                # Keep the beginning of a large response: still a real, if unfinished, sequence.
                cut, total = [], 0
                for s, sp in resp:
                    if total + len(sp) > 8192:
                        break
                    cut.append((s, sp))
                    total += len(sp) + 4
                wire = b"".join(frame(s, sp) for s, sp in cut)
            opts = KINDS.index(kind) | (0x80 if deprecate else 0)
            sh = shape([sp for _, sp in resp])
            sets["result_tracker"].add(bytes([opts]) + wire, key=(opts, sh), cls=opts)
            sets["server_responses"].add(bytes([rng.randrange(64)]) + wire, key=("resp", sh), cls=(kind, resp[0][1][:1]))
    # Plan seeds from the tracked variables MariaDB reported.
    uniq = sorted(set(tracked))
    base = b"utf8mb4\0utf8mb4_general_ci"
    for k in range(0, len(uniq), 3):
        group = uniq[k:k + 3]
        for nbe in (0x80, 0x81):
            fields = [base]
            for j, (n, v) in enumerate(group):
                fields.append(b"w\0" + n + b"\0" + v)
                if j % 2:
                    fields.append(b"c\0" + n + b"\0" + v + b"x")
            fields.append(b"W\0app\0")
            sets["sql"].add(bytes([nbe]) + b"\0".join(fields), key=("plan", nbe, tuple(group)), cls="plan")
    # Values that stress the quoting (backslashes, quotes, NULs, numbers, empty charsets).
    for nbe in (0x80, 0x81):
        for v in [b"it's", b"a\\'b", b"\\", b"''", b"x\\\\'y", b"-5", b"1.5", b"1.2.3", b".5", b"",
                  b"\xe4\xb8\x81\\", b"\\0\x00", b"--", b"/*", b"#"]:
            for n in (b"time_zone", b"character_set_results", b"collation_connection"):
                seed = bytes([nbe]) + base + b"\0w\0" + n + b"\0" + v + b"\0c\0" + n + b"\0old"
                sets["sql"].add(seed, cls="quoting")
    report = {}
    for t, s in sets.items():
        report[t] = s.write(rng)
    return report


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("all")
    a.add_argument("--port", type=int, required=True)
    a.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
    a.add_argument("--keep-capture", default=None)
    a.add_argument("--sysbench-seconds", type=int, default=5)
    r = sub.add_parser("relay")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--listen", type=int, required=True)
    r.add_argument("--capture", required=True)
    s = sub.add_parser("seeds")
    s.add_argument("--capture", required=True)
    s.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
    args = ap.parse_args()

    if args.cmd == "relay":
        relay = Relay(args.port, args.capture, args.listen)
        log("relaying 127.0.0.1:%d -> 127.0.0.1:%d, capturing to %s" % (relay.port, args.port, args.capture))
        try:
            relay.serve_forever()
        except KeyboardInterrupt:
            relay.stop()
        return
    if args.cmd == "seeds":
        for t, (n, size) in build_seeds(args.capture, args.out).items():
            log("%-17s %4d seeds, %7d bytes" % (t, n, size))
        return

    capture = args.keep_capture or tempfile.mkdtemp(prefix="sluice-capture.")
    os.makedirs(capture, exist_ok=True)
    relay = Relay(args.port, capture).start()
    log("relay on 127.0.0.1:%d, capture in %s" % (relay.port, capture))
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in [("mariadb CLI", lambda: cli_workload(relay.port, tmp)),
                         ("PyMySQL", lambda: pymysql_workload(relay.port, tmp)),
                         ("mysql-connector", lambda: connector_workload(relay.port, tmp)),
                         ("raw client", lambda: raw_workload(relay.port)),
                         ("sysbench", lambda: sysbench_workload(relay.port, args.sysbench_seconds))]:
            log("running", name)
            t0 = time.time()
            try:
                fn()
            except Exception as e:  # keep what the other clients produce
                log("%s failed: %r" % (name, e))
            log("  %s done in %.1f s" % (name, time.time() - t0))
    time.sleep(0.5)
    relay.stop()
    for t, (n, size) in build_seeds(capture, args.out).items():
        log("%-17s %4d seeds, %7d bytes" % (t, n, size))
    if not args.keep_capture:
        shutil.rmtree(capture)


if __name__ == "__main__":
    main()
