// sluice driver test: MariaDB Connector/J (Debian's libmariadb-java) through the proxy.
//
//   javac -cp $JAR -d OUT DriverTest.java
//   java -cp $JAR:OUT DriverTest HOST PORT USER PASSWORD DATABASE
//
// Runs the same checks in three connection modes:
//   text    useServerPrepStmts=false (client-side prepared statements, COM_QUERY only)
//   binary  useServerPrepStmts=true&useBulkStmts=true (COM_STMT_PREPARE / COM_STMT_EXECUTE;
//           byte[] parameters go up as COM_STMT_SEND_LONG_DATA; the int/string batch is one
//           MariaDB COM_STMT_BULK_EXECUTE)
//   binary-pipelined  useServerPrepStmts=true&useBulkStmts=false&useBatchMultiSend=true (a
//           batch is pipelined COM_STMT_EXECUTEs: several commands sent before the replies)
// Checks: Statement queries, a PreparedStatement executed several times with different
// parameters (NULL, unicode, 1 MiB bytes), batches, a transaction committed and one rolled back,
// getGeneratedKeys, SQLExceptions (1146 / 42S02, 1062 / 23000), a session variable, isValid.
// Exit code 0 only if every check passed. connectTimeout/socketTimeout bound every socket
// operation; a watchdog thread ends the run after 100 s.

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.ThreadLocalRandom;

public class DriverTest {
    static final String UNICODE = "h\u00e9llo \u2713"; // "héllo ✓"
    static final byte[] SMALL_BIN = {0, 1, '\'', '"', '\\', (byte) 0xff};
    static final byte[] BLOB_1M = new byte[1 << 20];
    static final String RUN_ID = ProcessHandle.current().pid() + "_"
            + Integer.toHexString(ThreadLocalRandom.current().nextInt(1 << 30));

    static int passed = 0;
    static final List<String> failures = new ArrayList<>();
    static String section = "?";

    static {
        for (int i = 0; i < BLOB_1M.length; i++) BLOB_1M[i] = (byte) ((i * 7 + (i >> 8)) & 0xff);
    }

    static void fail(String what) {
        String msg = "FAIL [" + section + "] " + what;
        failures.add(msg);
        System.out.println(msg);
    }

    static boolean ok(boolean cond, String what) {
        if (cond) passed++;
        else fail(what);
        return cond;
    }

    static boolean eq(Object actual, Object expected, String what) {
        boolean same = (actual instanceof byte[] && expected instanceof byte[])
                ? Arrays.equals((byte[]) actual, (byte[]) expected)
                : Objects.equals(actual, expected);
        if (same) {
            passed++;
            return true;
        }
        fail(what + ": expected " + show(expected) + ", got " + show(actual));
        return false;
    }

    static String show(Object v) {
        if (v instanceof byte[]) {
            byte[] b = (byte[]) v;
            return "<byte[" + b.length + "] head=" + Arrays.toString(Arrays.copyOf(b, Math.min(8, b.length))) + ">";
        }
        if (v instanceof String) return "\"" + v + "\"";
        return String.valueOf(v);
    }

    static String md5Hex(byte[] b) throws Exception {
        StringBuilder sb = new StringBuilder();
        for (byte x : MessageDigest.getInstance("MD5").digest(b)) sb.append(String.format("%02x", x));
        return sb.toString();
    }

    interface Body {
        void run() throws Exception;
    }

    /** The body must throw an SQLException with this code and state. */
    static void expectSqlError(String what, int code, String state, Body body) {
        try {
            body.run();
            fail(what + ": no SQLException");
        } catch (SQLException e) {
            eq(e.getErrorCode(), code, what + ": getErrorCode()");
            eq(e.getSQLState(), state, what + ": getSQLState()");
        } catch (Exception e) {
            fail(what + ": unexpected " + e);
        }
    }

    static String url(String host, String port, String db, String user, String pw, String extra) {
        return "jdbc:mariadb://" + host + ":" + port + "/" + db + "?user=" + user + "&password=" + pw
                + "&connectTimeout=10000&socketTimeout=30000&characterEncoding=UTF-8" + extra;
    }

    static void runMode(String mode, String url, boolean serverPrep) throws Exception {
        section = mode;
        System.out.println("--- " + mode);
        String table = "drv_jdbc_" + mode.replace('-', '_') + "_" + RUN_ID;
        try (Connection c = DriverManager.getConnection(url)) {
            try (Statement st = c.createStatement()) {
                st.executeUpdate("DROP TABLE IF EXISTS " + table);
                st.executeUpdate("CREATE TABLE " + table + " (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,"
                        + " name VARCHAR(100) CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NULL,"
                        + " n INT NULL, data LONGBLOB NULL) ENGINE=InnoDB");
            }
            try {
                checks(c, url, table, serverPrep);
            } finally {
                try (Statement st = c.createStatement()) {
                    st.executeUpdate("DROP TABLE IF EXISTS " + table);
                }
            }
        }
    }

    static void checks(Connection c, String url, String table, boolean serverPrep) throws Exception {
        // ---- Statement (text protocol) ----
        try (Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT 1, 'h\u00e9llo \u2713', NULL, CAST(12345678901234 AS SIGNED)")) {
            ok(rs.next(), "Statement SELECT returns a row");
            eq(rs.getInt(1), 1, "Statement SELECT int");
            eq(rs.getString(2), UNICODE, "Statement SELECT unicode");
            eq(rs.getString(3), null, "Statement SELECT NULL");
            ok(rs.wasNull(), "wasNull after NULL");
            eq(rs.getLong(4), 12345678901234L, "Statement SELECT bigint");
            ok(!rs.next(), "Statement SELECT has one row");
        }

        // ---- PreparedStatement executed several times, with generated keys ----
        String insSql = "INSERT INTO " + table + " (name, n, data) VALUES (?, ?, ?)";
        Object[][] rows = {
                {UNICODE, 42, SMALL_BIN},
                {null, null, null},
                {"plain", -7, BLOB_1M},
                {"", 0, new byte[0]},
        };
        long[] ids = new long[rows.length];
        try (PreparedStatement ps = c.prepareStatement(insSql, Statement.RETURN_GENERATED_KEYS)) {
            String cls = ps.getClass().getName();
            if (serverPrep) ok(cls.contains("ServerSide") || cls.contains("ServerPrepared"),
                    "useServerPrepStmts=true gives a server-side prepared statement, got " + cls);
            else ok(cls.contains("ClientSide") || cls.contains("ClientPrepared"),
                    "useServerPrepStmts=false gives a client-side prepared statement, got " + cls);
            for (int i = 0; i < rows.length; i++) {
                bind(ps, rows[i]);
                eq(ps.executeUpdate(), 1, "INSERT #" + i + " update count");
                try (ResultSet keys = ps.getGeneratedKeys()) {
                    ok(keys.next(), "INSERT #" + i + " has a generated key");
                    ids[i] = keys.getLong(1);
                }
            }
        }
        ok(ids[0] > 0, "first generated key > 0: " + ids[0]);
        for (int i = 1; i < ids.length; i++) eq(ids[i], ids[i - 1] + 1, "generated key #" + i);
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT LAST_INSERT_ID()")) {
            rs.next();
            eq(rs.getLong(1), ids[ids.length - 1], "LAST_INSERT_ID() matches the last generated key");
        }

        // The same SELECT executed for every row.
        try (PreparedStatement ps = c.prepareStatement("SELECT name, n, data, LENGTH(data), MD5(data) FROM " + table + " WHERE id = ?")) {
            for (int i = 0; i < rows.length; i++) {
                ps.setLong(1, ids[i]);
                try (ResultSet rs = ps.executeQuery()) {
                    ok(rs.next(), "SELECT id=" + ids[i] + " finds the row");
                    eq(rs.getString(1), rows[i][0], "row " + i + " name");
                    int n = rs.getInt(2);
                    eq(rs.wasNull() ? null : n, rows[i][1], "row " + i + " n");
                    eq(rs.getBytes(3), rows[i][2], "row " + i + " data");
                    byte[] d = (byte[]) rows[i][2];
                    if (d != null) {
                        eq(rs.getLong(4), (long) d.length, "row " + i + " server-side LENGTH(data)");
                        eq(rs.getString(5), md5Hex(d), "row " + i + " server-side MD5(data)");
                    }
                    ok(!rs.next(), "SELECT id=" + ids[i] + " has one row");
                }
            }
        }

        // UPDATE counts (Connector/J sets CLIENT_FOUND_ROWS unless useAffectedRows: matched rows).
        try (PreparedStatement ps = c.prepareStatement("UPDATE " + table + " SET n = ? WHERE id >= ? AND id <= ?")) {
            ps.setInt(1, 100);
            ps.setLong(2, ids[0]);
            ps.setLong(3, ids[2]);
            eq(ps.executeUpdate(), 3, "UPDATE of 3 rows");
            ps.setInt(1, 5);
            ps.setLong(2, -10);
            ps.setLong(3, -1);
            eq(ps.executeUpdate(), 0, "UPDATE of no row");
        }

        // ---- batches ----
        String batchSql = "INSERT INTO " + table + " (id, name, n, data) VALUES (?, ?, ?, ?)";
        try (PreparedStatement ps = c.prepareStatement(batchSql)) {
            for (int i = 0; i < 20; i++) {
                ps.setLong(1, 1000 + i);
                ps.setString(2, "batch " + i + " \u2713");
                if (i % 5 == 0) ps.setNull(3, Types.INTEGER);
                else ps.setInt(3, i);
                ps.setBytes(4, new byte[] {(byte) i, (byte) (255 - i)});
                ps.addBatch();
            }
            int[] counts = ps.executeBatch();
            eq(counts.length, 20, "PreparedStatement batch: number of update counts");
            boolean allOk = true;
            for (int cnt : counts) allOk &= cnt == 1 || cnt == Statement.SUCCESS_NO_INFO;
            ok(allOk, "PreparedStatement batch: every count is 1 or SUCCESS_NO_INFO: " + Arrays.toString(counts));
        }
        try (Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT id, name, n, data FROM " + table + " WHERE id >= 1000 AND id < 1100 ORDER BY id")) {
            int i = 0;
            while (rs.next()) {
                eq(rs.getLong(1), 1000L + i, "batch row " + i + " id");
                eq(rs.getString(2), "batch " + i + " \u2713", "batch row " + i + " name");
                int n = rs.getInt(3);
                eq(rs.wasNull() ? null : n, i % 5 == 0 ? null : i, "batch row " + i + " n");
                eq(rs.getBytes(4), new byte[] {(byte) i, (byte) (255 - i)}, "batch row " + i + " data");
                i++;
            }
            eq(i, 20, "rows written by the PreparedStatement batch");
        }
        // A batch of ints and strings only (with useServerPrepStmts&useBulkStmts and MariaDB >=
        // 10.2.7, Connector/J 2.7 sends it as one COM_STMT_BULK_EXECUTE).
        try (PreparedStatement ps = c.prepareStatement("INSERT INTO " + table + " (id, name, n) VALUES (?, ?, ?)")) {
            for (int i = 0; i < 50; i++) {
                ps.setLong(1, 5000 + i);
                ps.setString(2, i % 7 == 0 ? null : "bulk " + i + " \u2713");
                ps.setInt(3, -i);
                ps.addBatch();
            }
            int[] counts = ps.executeBatch();
            eq(counts.length, 50, "int/string batch: number of update counts");
        }
        try (Statement st = c.createStatement();
             ResultSet rs = st.executeQuery("SELECT COUNT(*), SUM(n), SUM(name IS NULL), MAX(name) FROM " + table
                     + " WHERE id >= 5000 AND id < 5050")) {
            rs.next();
            eq(rs.getInt(1), 50, "int/string batch: rows");
            eq(rs.getLong(2), -1225L, "int/string batch: SUM(n)");
            eq(rs.getInt(3), 8, "int/string batch: NULL names");
            eq(rs.getString(4), "bulk 9 \u2713", "int/string batch: MAX(name)");
        }
        try (Statement st = c.createStatement()) {
            st.addBatch("INSERT INTO " + table + " (id, name) VALUES (2000, 'sb1')");
            st.addBatch("UPDATE " + table + " SET n = 7 WHERE id >= 1000 AND id < 1003");
            st.addBatch("INSERT INTO " + table + " (id, name) VALUES (2001, 'sb2'), (2002, 'sb3')");
            eq(Arrays.toString(st.executeBatch()), "[1, 3, 2]", "Statement batch update counts");
        }

        // ---- transactions ----
        c.setAutoCommit(false);
        try (Statement st = c.createStatement();
             PreparedStatement ins = c.prepareStatement("INSERT INTO " + table + " (id, name) VALUES (?, ?)")) {
            ins.setLong(1, 3000);
            ins.setString(2, "committed");
            eq(ins.executeUpdate(), 1, "INSERT in the committed transaction");
            st.executeUpdate("UPDATE " + table + " SET name = 'changed in tx' WHERE id = " + ids[2]);
            c.commit();
            ins.setLong(1, 3001);
            ins.setString(2, "rolled back");
            eq(ins.executeUpdate(), 1, "INSERT in the rolled-back transaction");
            st.executeUpdate("UPDATE " + table + " SET name = 'should not stay' WHERE id = " + ids[2]);
            try (ResultSet rs = st.executeQuery("SELECT COUNT(*) FROM " + table + " WHERE id = 3001")) {
                rs.next();
                eq(rs.getInt(1), 1, "uncommitted row visible inside its transaction");
            }
            c.rollback();
        } finally {
            c.setAutoCommit(true);
        }
        try (Connection other = DriverManager.getConnection(url);
             Statement st = other.createStatement();
             ResultSet rs = st.executeQuery("SELECT id, name FROM " + table + " WHERE id IN (" + ids[2] + ", 3000, 3001) ORDER BY id")) {
            List<String> got = new ArrayList<>();
            while (rs.next()) got.add(rs.getLong(1) + ":" + rs.getString(2));
            eq(got.toString(), "[" + ids[2] + ":changed in tx, 3000:committed]", "second connection after commit + rollback");
        }

        // ---- errors ----
        String missing = "no_such_table_" + RUN_ID;
        expectSqlError("Statement on a missing table", 1146, "42S02", () -> {
            try (Statement st = c.createStatement()) {
                st.executeQuery("SELECT * FROM " + missing);
            }
        });
        expectSqlError("PreparedStatement on a missing table", 1146, "42S02", () -> {
            try (PreparedStatement ps = c.prepareStatement("SELECT * FROM " + missing + " WHERE id = ?")) {
                ps.setInt(1, 1);
                ps.executeQuery();
            }
        });
        try (PreparedStatement ps = c.prepareStatement(batchSql)) {
            expectSqlError("duplicate key", 1062, "23000", () -> {
                ps.setLong(1, 1000);
                ps.setString(2, "dup");
                ps.setNull(3, Types.INTEGER);
                ps.setNull(4, Types.BLOB);
                ps.executeUpdate();
            });
            ps.setLong(1, 4000);
            ps.setString(2, "after error");
            ps.setNull(3, Types.INTEGER);
            ps.setNull(4, Types.BLOB);
            eq(ps.executeUpdate(), 1, "same PreparedStatement usable after an error");
        }

        // ---- session state ----
        try (Statement st = c.createStatement()) {
            st.execute("SET time_zone = '+03:00'");
            try (ResultSet rs = st.executeQuery("SELECT @@session.time_zone")) {
                rs.next();
                eq(rs.getString(1), "+03:00", "time_zone after SET");
            }
        }
        ok(c.isValid(5), "isValid (COM_PING)");
    }

    static void bind(PreparedStatement ps, Object[] row) throws SQLException {
        if (row[0] == null) ps.setNull(1, Types.VARCHAR);
        else ps.setString(1, (String) row[0]);
        if (row[1] == null) ps.setNull(2, Types.INTEGER);
        else ps.setInt(2, (Integer) row[1]);
        if (row[2] == null) ps.setNull(3, Types.BLOB);
        else ps.setBytes(3, (byte[]) row[2]);
    }

    public static void main(String[] args) {
        if (args.length != 5) {
            System.err.println("usage: DriverTest HOST PORT USER PASSWORD DATABASE");
            System.exit(2);
        }
        Thread watchdog = new Thread(() -> {
            try {
                Thread.sleep(100_000);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println("FAIL: Connector/J test still running after 100 s");
            Runtime.getRuntime().halt(3);
        });
        watchdog.setDaemon(true);
        watchdog.start();

        String host = args[0], port = args[1], user = args[2], pw = args[3], db = args[4];
        String[][] modes = {
                {"text", "&useServerPrepStmts=false"},
                {"binary", "&useServerPrepStmts=true&useBulkStmts=true"},
                {"binary-pipelined", "&useServerPrepStmts=true&useBulkStmts=false&useBatchMultiSend=true"},
        };
        for (String[] m : modes) {
            try {
                runMode(m[0], url(host, port, db, user, pw, m[1]), m[1].contains("useServerPrepStmts=true"));
            } catch (Throwable e) {
                section = m[0];
                java.io.StringWriter sw = new java.io.StringWriter();
                e.printStackTrace(new java.io.PrintWriter(sw));
                fail("unexpected exception: " + sw);
            }
        }
        String driver;
        try {
            driver = DriverManager.getDriver(url(host, port, db, user, pw, "")).getClass().getName();
        } catch (SQLException e) {
            driver = "?";
        }
        if (!failures.isEmpty()) {
            System.out.println("Connector/J (" + driver + "): " + failures.size() + " check(s) FAILED, " + passed + " ok");
            for (String f : failures) System.err.println("  " + f.split("\n")[0]);
            System.exit(1);
        }
        if (passed < 100) {
            System.out.println("Connector/J: only " + passed + " checks ran");
            System.exit(1);
        }
        System.out.println("Connector/J (" + driver + "): all " + passed + " checks ok");
        System.exit(0);
    }
}
