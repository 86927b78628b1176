'use strict';
// sluice driver test: node mysql2 (promise API) through the proxy.
//
//   node mysql2_test.js --host H --port P --user U --password PW --database DB
//   (or env SLUICE_HOST / SLUICE_PORT / SLUICE_USER / SLUICE_PASSWORD / SLUICE_DATABASE)
//
// Checks `query` (text protocol) and `execute` / `prepare` (binary protocol: COM_STMT_PREPARE,
// COM_STMT_EXECUTE several times with different parameters, COM_STMT_CLOSE), NULL / unicode /
// 1 MiB blob round trips, multi-statement results, UPDATE affected rows, transactions (commit and
// rollback), server errors (code, SQLSTATE), a session variable, and a clean close.
// Exits 0 only if every check passed; a global timer exits 1 after 60 s.

const assert = require('node:assert');
const crypto = require('node:crypto');
const mysql = require('mysql2/promise');

const GLOBAL_TIMEOUT_MS = 60_000;
const QUERY_TIMEOUT_MS = 30_000;

setTimeout(() => {
  console.error(`FAIL: mysql2 test still running after ${GLOBAL_TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, GLOBAL_TIMEOUT_MS).unref();

function parseArgs() {
  const opts = {
    host: process.env.SLUICE_HOST || '127.0.0.1',
    port: process.env.SLUICE_PORT,
    user: process.env.SLUICE_USER || 'app',
    password: process.env.SLUICE_PASSWORD || 'app',
    database: process.env.SLUICE_DATABASE || 'app',
  };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(host|port|user|password|database)(?:=(.*))?$/.exec(argv[i]);
    if (!m) throw new Error(`unknown argument ${argv[i]}`);
    opts[m[1]] = m[2] !== undefined ? m[2] : argv[++i];
  }
  if (!opts.port) throw new Error('--port is required');
  opts.port = Number(opts.port);
  return opts;
}

let passed = 0;
const failures = [];
let section = '?';

function fail(what) {
  const msg = `FAIL [${section}] ${what}`;
  failures.push(msg);
  console.log(msg);
}

function short(v) {
  if (Buffer.isBuffer(v) && v.length > 64) return `<Buffer len=${v.length} head=${v.subarray(0, 16).toString('hex')}>`;
  if (Array.isArray(v)) return `[${v.map(short).join(', ')}]`;
  if (v && typeof v === 'object' && !Buffer.isBuffer(v)) {
    return `{${Object.entries(v).map(([k, x]) => `${k}: ${short(x)}`).join(', ')}}`;
  }
  const s = Buffer.isBuffer(v) ? `<Buffer ${v.toString('hex')}>` : JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 300 ? s.slice(0, 300) + '…' : s;
}

function eq(actual, expected, what) {
  try {
    assert.deepStrictEqual(actual, expected);
    passed++;
    return true;
  } catch (_) {
    fail(`${what}: expected ${short(expected)}, got ${short(actual)}`);
    return false;
  }
}

function ok(cond, what) {
  if (cond) passed++;
  else fail(what);
  return cond;
}

// Runs fn, which must reject with a server error; returns the error (or null after a failure).
async function expectError(what, fn) {
  try {
    await fn();
  } catch (e) {
    if (e && typeof e.errno === 'number') {
      passed++;
      return e;
    }
    fail(`${what}: expected a server error, got ${e && e.stack}`);
    return null;
  }
  fail(`${what}: did not fail`);
  return null;
}

const UNICODE = 'héllo ✓';
const BLOB_1M = Buffer.alloc(1 << 20);
for (let i = 0; i < BLOB_1M.length; i++) BLOB_1M[i] = (i * 7 + (i >> 8)) & 0xff;
const SMALL_BIN = Buffer.from([0, 1, 0x27, 0x22, 0x5c, 0xff]);
const RUN_ID = `${process.pid}_${crypto.randomBytes(4).toString('hex')}`;
const TABLE = `drv_mysql2_${RUN_ID}`;

// Rows as plain objects (mysql2 returns TextRow/BinaryRow-like objects).
const plain = (rows) => rows.map((r) => ({ ...r }));

async function main() {
  const opts = parseArgs();
  const config = {
    host: opts.host,
    port: opts.port,
    user: opts.user,
    password: opts.password,
    database: opts.database,
    charset: 'utf8mb4_general_ci',
    connectTimeout: 10_000,
    dateStrings: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
    multipleStatements: true,
  };
  const conn = await mysql.createConnection(config);
  const q = (sql, params) => conn.query({ sql, timeout: QUERY_TIMEOUT_MS }, params);
  const x = (sql, params) => conn.execute({ sql, timeout: QUERY_TIMEOUT_MS }, params);

  try {
    section = 'setup';
    await q(`DROP TABLE IF EXISTS ${TABLE}`);
    await q(
      `CREATE TABLE ${TABLE} (id INT NOT NULL PRIMARY KEY, ` +
        'name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL, ' +
        'n BIGINT NULL, d DECIMAL(12,3) NULL, ts DATETIME(6) NULL, data LONGBLOB NULL) ENGINE=InnoDB',
    );

    // ---- text protocol: query with client-side escaped parameters ----
    section = 'query (text protocol)';
    const textRows = [
      { id: 1, name: UNICODE, n: '42', d: '1.500', ts: '2024-02-29 13:14:15.123456', data: SMALL_BIN },
      { id: 2, name: null, n: null, d: null, ts: null, data: null },
      { id: 3, name: 'plain', n: '-9007199254740993', d: '-0.001', ts: '1999-12-31 23:59:59.000000', data: BLOB_1M },
    ];
    for (const r of textRows) {
      const [res] = await q(`INSERT INTO ${TABLE} (id, name, n, d, ts, data) VALUES (?, ?, ?, ?, ?, ?)`, [
        r.id, r.name, r.n, r.d, r.ts, r.data,
      ]);
      eq(res.affectedRows, 1, `INSERT id=${r.id} affectedRows`);
    }
    {
      const [rows, fields] = await q(`SELECT id, name, n, d, ts, data FROM ${TABLE} WHERE id <= 3 ORDER BY id`);
      eq(fields.map((f) => f.name), ['id', 'name', 'n', 'd', 'ts', 'data'], 'column names');
      eq(plain(rows), textRows, 'text round trip (NULLs, unicode, 1 MiB blob)');
      const [[lens]] = await q(`SELECT CHAR_LENGTH(name) AS c, LENGTH(name) AS b, MD5(?) = MD5((SELECT data FROM ${TABLE} WHERE id = 3)) AS same FROM ${TABLE} WHERE id = 1`, [BLOB_1M]);
      eq({ ...lens }, { c: 7, b: 10, same: 1 }, 'server-side lengths / blob identity');
    }
    {
      const [res] = await q(`UPDATE ${TABLE} SET n = 100 WHERE id IN (1, 2, 3)`);
      eq(res.affectedRows, 3, 'UPDATE affectedRows');
      eq(res.changedRows, 3, 'UPDATE changedRows');
      // mysql2 connects with CLIENT_FOUND_ROWS: affectedRows counts matched rows, changedRows
      // (from the OK packet's info text) the changed ones.
      const [res2] = await q(`UPDATE ${TABLE} SET n = 100 WHERE id = 1`);
      eq([res2.affectedRows, res2.changedRows], [1, 0], 'UPDATE that changes nothing (CLIENT_FOUND_ROWS)');
    }
    {
      // Several result sets from one multi-statement query.
      const [results] = await q(`SELECT 1 AS a; UPDATE ${TABLE} SET n = 7 WHERE id = 1; SELECT ? AS u, NULL AS z`, [UNICODE]);
      eq(results.length, 3, 'multi-statement query: number of results');
      eq(plain(results[0]), [{ a: 1 }], 'multi-statement result 1');
      eq(results[1].affectedRows, 1, 'multi-statement result 2 affectedRows');
      eq(plain(results[2]), [{ u: UNICODE, z: null }], 'multi-statement result 3');
    }

    // ---- binary protocol: execute (cached prepared statement), several parameter sets ----
    section = 'execute (binary protocol)';
    const ins = `INSERT INTO ${TABLE} (id, name, n, d, ts, data) VALUES (?, ?, ?, ?, ?, ?)`;
    const binRows = [
      { id: 11, name: UNICODE, n: '9007199254740993', d: '123456789.125', ts: '2024-02-29 13:14:15.123456', data: SMALL_BIN },
      { id: 12, name: null, n: null, d: null, ts: null, data: null },
      { id: 13, name: 'binary ✓ 1 MiB', n: '-1', d: '0.000', ts: '2000-01-01 00:00:00.500000', data: BLOB_1M },
      { id: 14, name: '', n: '0', d: '-5.500', ts: '1970-01-02 03:04:05.000001', data: Buffer.alloc(0) },
    ];
    for (const r of binRows) {
      const [res] = await x(ins, [r.id, r.name, r.n, r.d, r.ts, r.data]);
      eq(res.affectedRows, 1, `execute INSERT id=${r.id} affectedRows`);
    }
    const sel = `SELECT id, name, n, d, ts, data FROM ${TABLE} WHERE id = ?`;
    for (const r of binRows) {
      const [rows] = await x(sel, [r.id]);
      eq(plain(rows), [r], `execute SELECT id=${r.id} round trip`);
    }
    {
      const [rows] = await x(`SELECT id FROM ${TABLE} WHERE id BETWEEN ? AND ? ORDER BY id`, [11, 14]);
      eq(rows.map((r) => r.id), [11, 12, 13, 14], 'execute range SELECT');
      const [[echo]] = await x('SELECT ? AS u, ? AS z, ? AS i, ? AS f', [UNICODE, null, 5, 2.5]);
      eq({ ...echo, u: String(echo.u) }, { u: UNICODE, z: null, i: 5, f: 2.5 }, 'execute echo of typed parameters');
      const [res] = await x(`UPDATE ${TABLE} SET n = ? WHERE id >= ?`, [77, 11]);
      eq([res.affectedRows, res.changedRows], [4, 4], 'execute UPDATE affectedRows / changedRows');
      const [res2] = await x(`UPDATE ${TABLE} SET n = ? WHERE id >= ?`, [77, 11]);
      eq([res2.affectedRows, res2.changedRows], [4, 0], 'execute UPDATE changing nothing (CLIENT_FOUND_ROWS)');
    }
    {
      // An explicit prepared statement, executed several times, then closed (COM_STMT_CLOSE has
      // no reply: the next command must still get its own answer).
      const stmt = await conn.prepare(`SELECT ? + 1 AS v, CONCAT(?, '✓') AS s, ? IS NULL AS isnull`);
      eq(stmt.statement.parameters.length, 3, 'prepare: parameter count');
      eq(stmt.statement.columns.map((c) => c.name), ['v', 's', 'isnull'], 'prepare: column names');
      for (const [a, b, c] of [[1, 'a', null], [41, 'héllo ', 0], [-2, '', null]]) {
        const [rows] = await stmt.execute([a, b, c]);
        eq(plain(rows).map((r) => ({ ...r, v: Number(r.v), s: String(r.s) })), [{ v: a + 1, s: `${b}✓`, isnull: c === null ? 1 : 0 }], `prepared statement run with ${short([a, b, c])}`);
      }
      await stmt.close();
      const [[one]] = await q('SELECT 1 AS one');
      eq(one.one, 1, 'connection in sync after COM_STMT_CLOSE');
      // Re-using a statement the driver has cached, after unprepare() closed it on the server.
      conn.unprepare(sel);
      const [rows] = await x(sel, [13]);
      eq(rows.length === 1 && Buffer.isBuffer(rows[0].data) && rows[0].data.equals(BLOB_1M), true, 're-prepared SELECT after unprepare');
    }

    // ---- transactions ----
    section = 'transactions';
    await conn.beginTransaction();
    await x(`INSERT INTO ${TABLE} (id, name) VALUES (?, ?)`, [20, 'committed']);
    await q(`UPDATE ${TABLE} SET name = 'changed in tx' WHERE id = 3`);
    await conn.commit();
    await conn.beginTransaction();
    await x(`INSERT INTO ${TABLE} (id, name) VALUES (?, ?)`, [21, 'rolled back']);
    await q(`UPDATE ${TABLE} SET name = 'should not stay' WHERE id = 3`);
    {
      const [[c]] = await x(`SELECT COUNT(*) AS c FROM ${TABLE} WHERE id = ?`, [21]);
      eq(Number(c.c), 1, 'uncommitted row visible inside its transaction');
    }
    await conn.rollback();
    {
      const [rows] = await q(`SELECT id, name FROM ${TABLE} WHERE id IN (3, 20, 21) ORDER BY id`);
      eq(plain(rows), [{ id: 3, name: 'changed in tx' }, { id: 20, name: 'committed' }], 'after commit + rollback');
      const other = await mysql.createConnection(config);
      try {
        const [[c]] = await other.query({ sql: `SELECT COUNT(*) AS c FROM ${TABLE} WHERE id IN (20, 21)`, timeout: QUERY_TIMEOUT_MS });
        eq(Number(c.c), 1, 'second connection sees the committed row only');
      } finally {
        await other.end();
      }
    }

    // ---- errors ----
    section = 'errors';
    {
      let e = await expectError('query from a missing table', () => q(`SELECT * FROM no_such_table_${RUN_ID}`));
      if (e) {
        eq([e.errno, e.sqlState, e.code], [1146, '42S02', 'ER_NO_SUCH_TABLE'], 'query error code / SQLSTATE');
        ok(String(e.sqlMessage).includes(`no_such_table_${RUN_ID}`), `error message names the table: ${e.sqlMessage}`);
      }
      e = await expectError('execute from a missing table', () => x(`SELECT * FROM no_such_table_${RUN_ID} WHERE id = ?`, [1]));
      if (e) eq([e.errno, e.sqlState], [1146, '42S02'], 'execute (prepare) error code / SQLSTATE');
      e = await expectError('execute duplicate key', () => x(ins, [11, 'dup', null, null, null, null]));
      if (e) eq([e.errno, e.sqlState, e.code], [1062, '23000', 'ER_DUP_ENTRY'], 'execute error code / SQLSTATE');
      const [res] = await x(ins, [30, 'after error', null, null, null, null]);
      eq(res.affectedRows, 1, 'same statement usable after an execute error');
      const [[one]] = await q('SELECT 1 AS one');
      eq(one.one, 1, 'connection usable after errors');
    }

    // ---- session state ----
    section = 'session';
    await q("SET time_zone = '+03:00'");
    {
      const [[r]] = await q('SELECT @@session.time_zone AS tz');
      eq(r.tz, '+03:00', 'time_zone after SET (query)');
      const [[r2]] = await x('SELECT @@session.time_zone AS tz');
      eq(String(r2.tz), '+03:00', 'time_zone after SET (execute)');
    }
    await conn.ping();
    passed++;
  } finally {
    section = 'cleanup';
    try {
      await q(`DROP TABLE IF EXISTS ${TABLE}`);
    } finally {
      await conn.end();
    }
  }
  // A closed connection refuses further work (the close really happened).
  let rejected = false;
  try {
    await conn.query('SELECT 1');
  } catch (_) {
    rejected = true;
  }
  ok(rejected, 'query after end() is refused');
}

main()
  .catch((e) => fail(`unexpected exception: ${e && e.stack ? e.stack : e}`))
  .then(() => {
    if (failures.length > 0) {
      console.log(`mysql2: ${failures.length} check(s) FAILED, ${passed} ok`);
      for (const f of failures) console.error(`  ${f.split('\n')[0]}`);
      process.exit(1);
    }
    if (passed < 40) {
      console.log(`mysql2: only ${passed} checks ran`);
      process.exit(1);
    }
    console.log(`mysql2: all ${passed} checks ok`);
    process.exit(0);
  });
