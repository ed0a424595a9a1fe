//! The table of every setting: environment variable, TOML key, default, help.
//!
//! One table drives loading (file, then environment), validation of unknown file keys,
//! and the `--help` text, so the three can never disagree.

/// One configuration setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable name (the public dbmazz names where they exist).
    pub env: &'static str,
    /// Key in the TOML file: `section.key` or a top-level `key`.
    pub toml: &'static str,
    /// Default as text; `None` = no default (required where the command needs it).
    pub default: Option<&'static str>,
    /// Secret values are never shown (help, errors, Debug).
    pub secret: bool,
    pub help: &'static str,
}

const fn s(
    env: &'static str,
    toml: &'static str,
    default: Option<&'static str>,
    help: &'static str,
) -> Setting {
    Setting {
        env,
        toml,
        default,
        secret: false,
        help,
    }
}

const fn secret(env: &'static str, toml: &'static str, help: &'static str) -> Setting {
    Setting {
        env,
        toml,
        default: None,
        secret: true,
        help,
    }
}

/// Every setting dbmazz reads. Environment variables override the file.
pub const SETTINGS: &[Setting] = &[
    // Source.
    secret(
        "SOURCE_URL",
        "source.url",
        "PostgreSQL connection string (URL or key=value). Accepts sslmode=disable|prefer|require|verify-ca|verify-full and sslrootcert=FILE. Required.",
    ),
    secret(
        "SOURCE_PASSWORD",
        "source.password",
        "PostgreSQL password; overrides one given in SOURCE_URL.",
    ),
    s("SOURCE_SLOT_NAME", "source.slot_name", Some("dbmazz_slot"), "Logical replication slot (created if missing, never dropped)."),
    s("SOURCE_PUBLICATION_NAME", "source.publication_name", Some("dbmazz_pub"), "Publication (created if missing; missing TABLES are added, none removed)."),
    s("TABLES", "tables", None, "Comma-separated tables to replicate, optionally schema-qualified (default schema public). Required."),
    s("SOURCE_STREAMING", "source.streaming", Some("false"), "Use pgoutput protocol 2 (streaming of large in-progress transactions) when the server supports it (PostgreSQL 14+)."),
    s("SOURCE_SET_REPLICA_IDENTITY_FULL", "source.set_replica_identity_full", Some("false"), "Run ALTER TABLE ... REPLICA IDENTITY FULL on replicated tables that are not FULL yet."),
    s("SOURCE_STATUS_INTERVAL_MS", "source.status_interval_ms", Some("5000"), "Interval between unprompted standby status updates (keepalive requests are answered at once)."),
    s("DO_SNAPSHOT", "do_snapshot", Some("false"), "Copy existing rows before streaming (initial snapshot). Not supported yet: true is an error."),
    // Sink.
    s("SINK_URL", "sink.url", None, "StarRocks FE HTTP URL, e.g. http://starrocks-fe:8030. Required by `run`."),
    s("SINK_PORT", "sink.port", Some("9030"), "StarRocks FE MySQL protocol port (table checks and DDL)."),
    s("SINK_DATABASE", "sink.database", None, "StarRocks database of the target tables. Required by `run`."),
    s("SINK_USER", "sink.user", Some("root"), "StarRocks user."),
    secret("SINK_PASSWORD", "sink.password", "StarRocks password (default empty)."),
    s("SINK_BE_URL", "sink.be_url", None, "Send Stream Loads straight to this BE HTTP URL instead of following the FE's redirect."),
    s("SINK_CONNECT_TIMEOUT_MS", "sink.connect_timeout_ms", Some("5000"), "Connect timeout of every HTTP and MySQL call to StarRocks."),
    s("SINK_REQUEST_TIMEOUT_MS", "sink.request_timeout_ms", Some("300000"), "Total timeout of one Stream Load request."),
    s("SINK_FORMAT", "sink.format", Some("json"), "Stream Load body format: `json` (recommended) or `csv` (enclosed and escaped so every character round-trips)."),
    s("SINK_MAX_FILTER_RATIO", "sink.max_filter_ratio", Some("0"), "Stream Load max_filter_ratio, 0..1. Default 0: any row StarRocks rejects fails the load."),
    s("SINK_CREATE_TABLES", "sink.create_tables", Some("false"), "Create missing target tables (PRIMARY KEY, mapped types) instead of failing."),
    s("SINK_ADD_COLUMNS", "sink.add_columns", Some("true"), "ALTER TABLE ADD COLUMN for a new source column; when false a new column is an error."),
    s("SINK_TABLE_NAME_TEMPLATE", "sink.table_name_template", Some("{schema_prefix}{table}"), "Target table name; placeholders {schema}, {table} and {schema_prefix} (empty for public, else `schema__`)."),
    s("SINK_DELETE_MODE", "sink.delete_mode", Some("hard"), "`hard`: DELETE removes the row (__op=1). `soft`: the row is kept with _dbmazz_deleted = true."),
    s("SINK_REPLICATION_NUM", "sink.replication_num", Some("1"), "replication_num of tables created with SINK_CREATE_TABLES."),
    // Pipeline.
    s("FLUSH_SIZE", "flush_size", Some("10000"), "Maximum rows per Stream Load batch."),
    s("FLUSH_BYTES", "flush_bytes", Some("67108864"), "Maximum payload bytes per Stream Load batch (accepts KiB/MiB/GiB suffixes)."),
    s("FLUSH_INTERVAL_MS", "flush_interval_ms", Some("5000"), "Maximum age of a batch before it is loaded."),
    s("MAX_CONCURRENT_LOADS", "max_concurrent_loads", Some("16"), "Stream Loads in flight at once (one per table; the other tables of a window wait their turn). StarRocks refuses new loads past max_running_txn_num_per_db running transactions per database (1000 since 3.1, 100 before); keep this well under it, counting other writers."),
    s("ACK_POLICY", "ack_policy", Some("loaded"), "When to confirm an LSN to PostgreSQL: `loaded` (after StarRocks has it) or `spooled` (after the local spool has it durably; PostgreSQL stops retaining WAL for it)."),
    // Spool.
    s("SPOOL_DIR", "spool.dir", Some("./dbmazz-spool"), "Directory of the durable spool."),
    s("SPOOL_MAX_BYTES", "spool.max_bytes", Some("10GiB"), "Spool capacity; when reached, reading pauses (PostgreSQL keeps the WAL). Accepts KiB/MiB/GiB suffixes."),
    s("SPOOL_CACHE_BYTES", "spool.cache_bytes", Some("64MiB"), "Spool page cache size."),
    s("ACCEPT_SLOT_GAP", "accept_slot_gap", Some("false"), "Start even though changes are lost between the spool and the slot (the slot was dropped, or advanced past where the spool resumes): the slot is created anew if missing and the lost changes are missing in the target. Without it such a start is refused. Set it for one start, then remove it."),
    // Control plane.
    s("GRPC_LISTEN", "grpc.listen", Some("127.0.0.1:50051"), "gRPC control and status address."),
    s("GRPC_PORT", "grpc.port", None, "gRPC port on 127.0.0.1 (public dbmazz name; GRPC_LISTEN wins if both are set)."),
    s("HTTP_LISTEN", "http.listen", Some("127.0.0.1:9187"), "HTTP address of /metrics, /healthz and /readyz."),
    secret("CONTROL_TOKEN", "grpc.control_token", "Bearer token required by control calls (pause, resume, drain, stop) when set."),
    // Logging.
    s("LOG_FORMAT", "log.format", Some("text"), "Log format: text or json (JSON lines)."),
    s("RUST_LOG", "log.filter", Some("info"), "Log filter (tracing EnvFilter syntax), e.g. info,dbmazz=debug."),
];

/// Looks a setting up by environment variable name.
pub fn setting(env: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env == env)
}

/// The help text listing every variable, for `--help`.
pub fn help_table() -> String {
    let mut out = String::from(
        "Configuration (environment variables override the --config TOML file; TOML key in brackets):\n",
    );
    for s in SETTINGS {
        let default = match (s.secret, s.default) {
            (true, _) => String::new(),
            (false, Some(d)) => format!(" [default: {d}]"),
            (false, None) => String::new(),
        };
        out.push_str(&format!(
            "  {:<34} ({}){}\n      {}\n",
            s.env, s.toml, default, s.help
        ));
    }
    out
}
