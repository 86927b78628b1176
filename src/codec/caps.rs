//! Capability flags (`int<4>` in the handshake, plus MariaDB's `int<4>` extension) and server status
//! flags (`int<2>` in OK/EOF packets).

/// Client/server capability flags.
pub mod cap {
    /// MySQL: CLIENT_LONG_PASSWORD. MariaDB calls it CLIENT_MYSQL: a server that clears it sends
    /// MariaDB's extended capabilities in the handshake filler.
    pub const LONG_PASSWORD: u32 = 1;
    pub const FOUND_ROWS: u32 = 1 << 1;
    pub const LONG_FLAG: u32 = 1 << 2;
    pub const CONNECT_WITH_DB: u32 = 1 << 3;
    pub const NO_SCHEMA: u32 = 1 << 4;
    pub const COMPRESS: u32 = 1 << 5;
    pub const ODBC: u32 = 1 << 6;
    pub const LOCAL_FILES: u32 = 1 << 7;
    pub const IGNORE_SPACE: u32 = 1 << 8;
    pub const PROTOCOL_41: u32 = 1 << 9;
    pub const INTERACTIVE: u32 = 1 << 10;
    pub const SSL: u32 = 1 << 11;
    pub const IGNORE_SIGPIPE: u32 = 1 << 12;
    pub const TRANSACTIONS: u32 = 1 << 13;
    pub const RESERVED: u32 = 1 << 14;
    pub const SECURE_CONNECTION: u32 = 1 << 15;
    pub const MULTI_STATEMENTS: u32 = 1 << 16;
    pub const MULTI_RESULTS: u32 = 1 << 17;
    pub const PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const PLUGIN_AUTH: u32 = 1 << 19;
    pub const CONNECT_ATTRS: u32 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
    pub const SESSION_TRACK: u32 = 1 << 23;
    pub const DEPRECATE_EOF: u32 = 1 << 24;
    pub const OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
    pub const ZSTD_COMPRESSION: u32 = 1 << 26;
    pub const QUERY_ATTRIBUTES: u32 = 1 << 27;
    pub const MULTI_FACTOR_AUTH: u32 = 1 << 28;
    pub const CAPABILITY_EXTENSION: u32 = 1 << 29;
    pub const SSL_VERIFY_SERVER_CERT: u32 = 1 << 30;
    pub const REMEMBER_OPTIONS: u32 = 1 << 31;

    /// Flags sluice can offer its clients when the backend has them: every flag whose wire format
    /// or behaviour sluice either passes through unchanged, translates, or replays per client.
    /// Left out: compression, query attributes, optional metadata, multi-factor auth and expired
    /// passwords (formats sluice does not translate), and SSL (offered only when TLS is set up).
    pub const PROXYABLE: u32 = LONG_PASSWORD
        | FOUND_ROWS
        | LONG_FLAG
        | CONNECT_WITH_DB
        | NO_SCHEMA
        | ODBC
        | LOCAL_FILES
        | IGNORE_SPACE
        | PROTOCOL_41
        | INTERACTIVE
        | IGNORE_SIGPIPE
        | TRANSACTIONS
        | RESERVED
        | SECURE_CONNECTION
        | MULTI_STATEMENTS
        | MULTI_RESULTS
        | PS_MULTI_RESULTS
        | PLUGIN_AUTH
        | CONNECT_ATTRS
        | PLUGIN_AUTH_LENENC_CLIENT_DATA
        | SESSION_TRACK
        | DEPRECATE_EOF;

    /// Flags a client must have for sluice to serve it.
    pub const REQUIRED_FROM_CLIENT: u32 = PROTOCOL_41 | SECURE_CONNECTION;

    /// Client flags that change the meaning or framing of results in ways sluice cannot translate
    /// exactly: backend connections are opened with the client's values and pooled apart.
    pub const PROFILE: u32 = FOUND_ROWS | IGNORE_SPACE | DEPRECATE_EOF;
}

/// MariaDB extended capabilities (sent in the handshake filler when `cap::LONG_PASSWORD` is clear).
pub mod mariadb_cap {
    pub const PROGRESS: u32 = 1;
    pub const COM_MULTI: u32 = 1 << 1;
    pub const STMT_BULK_OPERATIONS: u32 = 1 << 2;
    pub const EXTENDED_METADATA: u32 = 1 << 3;
    pub const CACHE_METADATA: u32 = 1 << 4;
}

/// Server status flags (`int<2>` in OK and EOF packets).
pub mod status {
    pub const IN_TRANS: u16 = 1;
    pub const AUTOCOMMIT: u16 = 1 << 1;
    pub const MORE_RESULTS_EXISTS: u16 = 1 << 3;
    pub const NO_GOOD_INDEX_USED: u16 = 1 << 4;
    pub const NO_INDEX_USED: u16 = 1 << 5;
    pub const CURSOR_EXISTS: u16 = 1 << 6;
    pub const LAST_ROW_SENT: u16 = 1 << 7;
    pub const DB_DROPPED: u16 = 1 << 8;
    pub const NO_BACKSLASH_ESCAPES: u16 = 1 << 9;
    pub const METADATA_CHANGED: u16 = 1 << 10;
    pub const QUERY_WAS_SLOW: u16 = 1 << 11;
    pub const PS_OUT_PARAMS: u16 = 1 << 12;
    pub const IN_TRANS_READONLY: u16 = 1 << 13;
    pub const SESSION_STATE_CHANGED: u16 = 1 << 14;
    /// MariaDB: sql_mode has ANSI_QUOTES.
    pub const ANSI_QUOTES: u16 = 1 << 15;
    /// The flags that describe the session rather than one statement's result: what a server
    /// reports for a command that runs no statement (COM_PING, COM_SET_OPTION, …).
    pub const SESSION_FLAGS: u16 =
        IN_TRANS | AUTOCOMMIT | IN_TRANS_READONLY | NO_BACKSLASH_ESCAPES | ANSI_QUOTES;
}
