//! SQLite backends: the embedded default. Durable across restarts, and usable by several
//! processes on one file (a `publish` in one process, `run` in another).
//!
//! One [`SqliteDb`] per file and process holds two connections: a writer, owned by a
//! dedicated thread that group-commits every write request, and a reader for queries (WAL
//! lets it read while the writer writes), used on [`tokio::task::spawn_blocking`]. Write
//! transactions use `BEGIN IMMEDIATE`, so they take the file's write lock up front and wait
//! on `busy_timeout` instead of failing on a lock upgrade when another process writes too.
//!
//! Durability: WAL with `synchronous=NORMAL`, the usual trade-off: a committed transaction
//! survives a process crash; an OS crash or power loss may roll back the last few commits,
//! which at-least-once delivery and dedupe absorb (a lost delete means a redelivery, a lost
//! dedupe completion a re-application that the newer-wins state writes make a no-op).
//!
//! Clocks: queue visibility and delays use wall-clock ms, shared by every process on the
//! file. Long polls wake at once for sends made through the same [`SqliteDb`] and poll
//! every [`POLL_INTERVAL`] for sends made by other processes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::dead_letter::{DeadLetterOps, RedriveProgress, strip_reason};
pub use super::dead_letter::{DlqMessage, RedriveFilter};
pub use super::queue_rules::MAX_RECEIVE_COUNT_EXCEEDED;
use super::queue_rules::{
    check_batch, check_max, invalid_receipt, reason_attributes, redrive_reason, wall_ms,
};
use super::{
    ApplyOutcome, Archive, BackendError, BackendResult, BatchFailures, Claim, DeadLetterReason,
    DedupeKey, DedupeStore, EventWrite, FencingToken, Marker, Queue, QueueSpec, QueueStats,
    Receipt, ReceivedMessage, StateRecord, StateStore, WriteOutcome, blocked_by,
};

/// How often a long poll looks for messages sent by other processes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long a statement waits for another connection's lock before giving up with
/// [`BackendError::Throttled`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// Version 1: queues (one table, the queue name a column; a DLQ is the queue
/// `<name>-dlq`), dedupe claims, billing state and the bus archive.
const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS queue_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    queue         TEXT    NOT NULL,
    message_id    TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    sent_at_ms    INTEGER NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,
    attributes    TEXT
);
CREATE INDEX IF NOT EXISTS queue_messages_visible
    ON queue_messages (queue, visible_at_ms, seq);

CREATE TABLE IF NOT EXISTS dedupe (
    key      TEXT    PRIMARY KEY,
    done     INTEGER NOT NULL,
    token    TEXT,
    until_ms INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS state (
    tenant   TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    id       TEXT    NOT NULL,
    customer TEXT,
    as_of_ms INTEGER NOT NULL,
    tiebreak TEXT    NOT NULL,
    doc      TEXT    NOT NULL,
    PRIMARY KEY (tenant, kind, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS state_by_customer ON state (tenant, customer, kind, id);

CREATE TABLE IF NOT EXISTS archive (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms  INTEGER NOT NULL,
    envelope TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS archive_time ON archive (time_ms, seq);
";

/// Version 2: named checkpoints per tenant (reconciliation's import cursors and sweep
/// watermark, [`super::ReconcileStore`]).
const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS checkpoints (
    tenant TEXT NOT NULL,
    name   TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
";

/// Version 3: records by (tenant, kind, status), for the read API's lists
/// ([`super::StateStore::by_kind_status`]). An index on an expression: the status stays
/// inside the document, and the query repeats the expression exactly so SQLite uses it.
const SCHEMA_V3: &str = "
CREATE INDEX IF NOT EXISTS state_by_kind_status
    ON state (tenant, kind, json_extract(doc, '$.status'), id);
";

/// One read-only view per built-in kind over the `state` table, named by the kind's
/// plural (`subscriptions`, `tax_ids`, ...): `tenant`, `id`, `customer`, `as_of_ms`, each
/// projected doc field as a column (`json_extract`, so booleans read 0/1 and lists JSON
/// text) and `raw`, the whole Stripe object as JSON text. So `sqlite3` answers
/// `select id, status from subscriptions where status = 'past_due'`.
fn kind_views_sql() -> String {
    let mut sql = String::new();
    for info in crate::handlers::kinds::INFO {
        let mut columns = vec![
            "tenant".to_owned(),
            "id".to_owned(),
            "customer".to_owned(),
            "as_of_ms".to_owned(),
        ];
        columns.extend(
            info.fields
                .iter()
                .chain(&[crate::handlers::raw::RAW_FIELD])
                .filter(|f| !matches!(**f, "id" | "customer"))
                .map(|f| format!("json_extract(doc, '$.{f}') AS \"{f}\"")),
        );
        sql.push_str(&format!(
            "DROP VIEW IF EXISTS {plural};\nCREATE VIEW {plural} AS SELECT {columns} \
             FROM state WHERE kind = '{kind}';\n",
            plural = info.plural,
            columns = columns.join(", "),
            kind = info.kind,
        ));
    }
    sql
}

/// Map a SQLite error to what the caller should do: busy/locked is throttling, I/O and
/// resource trouble may pass, the rest (bad schema, corrupt or read-only file, SQL errors)
/// will not.
fn db_error(operation: &'static str, e: rusqlite::Error) -> BackendError {
    let message = e.to_string();
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            BackendError::Throttled { operation, message }
        }
        Some(
            ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory
            | ErrorCode::DiskFull
            | ErrorCode::FileLockingProtocolFailed,
        ) => BackendError::Transient { operation, message },
        _ => BackendError::Permanent { operation, message },
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only the reader is behind a mutex, and a panic during a query leaves it usable, so
    // poisoning carries no information here.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn to_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The most write requests committed together in one transaction.
pub const MAX_GROUP_COMMIT: usize = 128;

/// Called after the group's commit: `Some` if the transaction failed (the job's writes
/// were rolled back with it).
type Deliver = Box<dyn FnOnce(Option<&BackendError>) + Send>;

/// A job that ran inside a group transaction: whether it succeeded (its savepoint is
/// released, else rolled back) and how to hand its result over after the commit.
struct Ran {
    ok: bool,
    deliver: Deliver,
}

/// A write request for the writer thread: run on the connection, or told the group
/// transaction could not start.
type Job = Box<dyn FnOnce(Result<&Connection, &BackendError>) -> Option<Ran> + Send>;

#[derive(Debug)]
struct DbInner {
    path: PathBuf,
    /// Requests for the writer thread, which owns the writer connection. The thread ends
    /// when the last `SqliteDb` clone drops this sender.
    jobs: std::sync::mpsc::Sender<Job>,
    reader: Mutex<Connection>,
    /// One long-poll wake-up per queue name, shared by every handle on this `SqliteDb`.
    notifiers: Mutex<HashMap<String, Arc<Notify>>>,
}

/// An open SQLite database file: a writer thread that owns the write connection and a
/// reader connection for queries. Cheap to clone; clones share both.
///
/// Writes are group-committed: the writer thread takes every request waiting (up to
/// [`MAX_GROUP_COMMIT`]) and runs them in one `BEGIN IMMEDIATE` transaction, each in its
/// own savepoint so one failing request undoes only its own writes. Results are handed
/// back only after the commit, so a caller never sees a write that could still roll back.
/// Under load this turns many small commits (claims, upserts, completions) into a few.
#[derive(Debug, Clone)]
pub struct SqliteDb {
    inner: Arc<DbInner>,
}

/// The same error, reported for another operation (a group commit's failure is every
/// member's failure).
fn with_operation(e: &BackendError, operation: &'static str) -> BackendError {
    match e.clone() {
        BackendError::Throttled { message, .. } => BackendError::Throttled { operation, message },
        BackendError::Transient { message, .. } => BackendError::Transient { operation, message },
        BackendError::Permanent { message, .. } => BackendError::Permanent { operation, message },
        BackendError::LeaseLost { .. } => BackendError::LeaseLost { operation },
    }
}

fn writer_loop(conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP_COMMIT {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_group(&conn, batch);
    }
}

/// Run one transaction-control statement, prepared once (they run several times per
/// group, so parsing them each time would cost more than the statements).
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn run_group(conn: &Connection, batch: Vec<Job>) {
    const OP: &str = "sqlite_write";
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        let err = db_error(OP, e);
        for job in batch {
            job(Err(&err));
        }
        return;
    }
    let mut ran = Vec::with_capacity(batch.len());
    let mut not_run = Vec::new();
    let mut fatal: Option<BackendError> = None;
    for job in batch {
        if fatal.is_some() {
            not_run.push(job);
            continue;
        }
        if let Err(e) = control(conn, "SAVEPOINT job") {
            fatal = Some(db_error(OP, e));
            not_run.push(job);
            continue;
        }
        // A panicking job loses only its own answer (its caller sees the request
        // dropped); the thread and the other jobs go on.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(conn))));
        let (ok, deliver) = match outcome {
            Ok(Some(r)) => (r.ok, Some(r.deliver)),
            Ok(None) | Err(_) => (false, None),
        };
        ran.extend(deliver);
        if !ok && conn.is_autocommit() {
            // SQLite rolled the whole transaction back (it may on a full disk, an I/O
            // error or no memory): the savepoint went with it, and so did every write of
            // this group. Say so, as a transient failure, rather than the confusing
            // "no such savepoint" that rolling back to it would report.
            fatal = Some(BackendError::Transient {
                operation: OP,
                message: "SQLite rolled the transaction back after a failed write (disk \
                          full, I/O error or out of memory); nothing of this group was written"
                    .to_owned(),
            });
            continue;
        }
        let end = if ok {
            control(conn, "RELEASE job")
        } else {
            control(conn, "ROLLBACK TO job").and_then(|()| control(conn, "RELEASE job"))
        };
        if let Err(e) = end {
            fatal = Some(db_error(OP, e));
        }
    }
    let result = match fatal {
        Some(e) => Err(e),
        None => control(conn, "COMMIT").map_err(|e| db_error("sqlite_commit", e)),
    };
    if result.is_err() {
        // Ignore the rollback's own error: the transaction is gone either way.
        let _ = control(conn, "ROLLBACK");
    }
    let failed = result.err();
    for deliver in ran {
        deliver(failed.as_ref());
    }
    if let Some(e) = &failed {
        for job in not_run {
            job(Err(e));
        }
    }
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers with a row, so it is read rather than updated.
    let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> BackendResult<()> {
    let op = "sqlite_migrate";
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| db_error(op, e))?;
    // Read the version inside the write transaction: two processes opening a new file at
    // once migrate it once.
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| db_error(op, e))?;
    if version > SCHEMA_VERSION {
        return Err(BackendError::Permanent {
            operation: op,
            message: format!(
                "database schema version {version} is newer than this build's {SCHEMA_VERSION}"
            ),
        });
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1).map_err(|e| db_error(op, e))?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_V2).map_err(|e| db_error(op, e))?;
    }
    if version < 3 {
        tx.execute_batch(SCHEMA_V3).map_err(|e| db_error(op, e))?;
    }
    // The views follow this build's kinds (their fields may change without a schema
    // change), so every migration re-creates them.
    tx.execute_batch(&kind_views_sql())
        .map_err(|e| db_error(op, e))?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(|e| db_error(op, e))?;
    tx.commit().map_err(|e| db_error(op, e))
}

/// Open an existing database file for reading only: no file is created and nothing is
/// written. A reader of a WAL database needs its `-shm` index, which SQLite creates next to
/// the file; in a directory this process may not write (a read-only mount, another user's
/// data) it cannot, so the file is then opened `immutable`: read as it is, without locks,
/// which is exact when nobody can be writing it (no writer without a `-wal` file there).
fn connect_read_only(path: &Path) -> rusqlite::Result<Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    match conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(conn),
        Err(_) => {
            // Percent-encode the path for the URI; `immutable` skips the `-shm` file.
            let mut uri = String::from("file:");
            for byte in path.to_string_lossy().bytes() {
                match byte {
                    b'?' | b'#' | b'%' => uri.push_str(&format!("%{byte:02X}")),
                    _ => uri.push(char::from(byte)),
                }
            }
            uri.push_str("?immutable=1");
            let conn = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            Ok(conn)
        }
    }
}

impl SqliteDb {
    /// Open (or create) the database at `path`, set WAL, `synchronous=NORMAL` and the busy
    /// timeout, and bring the schema to [`SCHEMA_VERSION`]. Blocking: call it at start-up.
    pub fn open(path: &Path) -> Result<SqliteDb, BackendError> {
        let op = "sqlite_open";
        let mut writer = connect(path).map_err(|e| db_error(op, e))?;
        migrate(&mut writer)?;
        let reader = connect(path).map_err(|e| db_error(op, e))?;
        reader
            .pragma_update(None, "query_only", "ON")
            .map_err(|e| db_error(op, e))?;
        SqliteDb::start(path, writer, reader)
    }

    /// Open the existing database at `path` read-only, for the commands that only look
    /// (`queues`, `dlq list`, `state export`, ...): no file is created, no migration runs,
    /// and a read-only directory works. Every write fails as permanent. A missing file, or
    /// one of another schema version, is an error. Blocking: call it at start-up.
    pub fn open_read_only(path: &Path) -> Result<SqliteDb, BackendError> {
        let op = "sqlite_open";
        let reader = connect_read_only(path).map_err(|e| db_error(op, e))?;
        let version: i64 = reader
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| db_error(op, e))?;
        let problem = match version {
            SCHEMA_VERSION => None,
            0 => Some("is not a stripe-worker database (no schema)".to_owned()),
            v if v > SCHEMA_VERSION => Some(format!(
                "has schema version {v}, newer than this build's {SCHEMA_VERSION}"
            )),
            v => Some(format!(
                "has schema version {v}, older than this build's {SCHEMA_VERSION} (`run` \
                 migrates it)"
            )),
        };
        if let Some(problem) = problem {
            return Err(BackendError::Permanent {
                operation: op,
                message: format!("{} {problem}", path.display()),
            });
        }
        let writer = connect_read_only(path).map_err(|e| db_error(op, e))?;
        SqliteDb::start(path, writer, reader)
    }

    /// Start the writer thread on `writer` and wrap both connections.
    fn start(
        path: &Path,
        writer: Connection,
        reader: Connection,
    ) -> Result<SqliteDb, BackendError> {
        let op = "sqlite_open";
        let (jobs, queue) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || writer_loop(writer, queue))
            .map_err(|e| BackendError::Permanent {
                operation: op,
                message: format!("cannot start the SQLite writer thread: {e}"),
            })?;
        Ok(SqliteDb {
            inner: Arc::new(DbInner {
                path: path.to_owned(),
                jobs,
                reader: Mutex::new(reader),
                notifiers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The file this database was opened from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn notifier(&self, queue: &str) -> Arc<Notify> {
        Arc::clone(
            lock(&self.inner.notifiers)
                .entry(queue.to_owned())
                .or_default(),
        )
    }

    /// Run `f` on the writer thread, inside a group transaction (see [`SqliteDb`]); the
    /// answer comes after the commit.
    async fn write<T, F>(&self, operation: &'static str, f: F) -> BackendResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel::<BackendResult<T>>();
        let job: Job = Box::new(move |conn| {
            let conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    let _ = answer.send(Err(with_operation(e, operation)));
                    return None;
                }
            };
            let result = f(conn);
            Some(Ran {
                ok: result.is_ok(),
                deliver: Box::new(move |failed| {
                    let out = match (result, failed) {
                        (Err(e), _) => Err(db_error(operation, e)),
                        (Ok(_), Some(e)) => Err(with_operation(e, operation)),
                        (Ok(v), None) => Ok(v),
                    };
                    // The caller may have gone (a cancelled receive): nothing to tell.
                    let _ = answer.send(out);
                }),
            })
        });
        self.inner
            .jobs
            .send(job)
            .map_err(|_| BackendError::Permanent {
                operation,
                message: "the SQLite writer thread has stopped".to_owned(),
            })?;
        answered.await.map_err(|_| BackendError::Transient {
            operation,
            message: "the SQLite writer dropped the request".to_owned(),
        })?
    }

    /// Run `f` on the reader connection on the blocking pool.
    async fn read<T, F>(&self, operation: &'static str, f: F) -> BackendResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&lock(&inner.reader)))
            .await
            .map_err(|e| BackendError::Transient {
                operation,
                message: format!("blocking task failed: {e}"),
            })?
            .map_err(|e| db_error(operation, e))
    }
}

// ---------------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------------

fn parse_attributes(text: Option<String>) -> BTreeMap<String, String> {
    match text {
        None => BTreeMap::new(),
        Some(t) => serde_json::from_str(&t).unwrap_or_else(|e| {
            // Only this module writes the column; a bad value must not block the queue.
            tracing::warn!(error = %e, "ignoring unreadable message attributes");
            BTreeMap::new()
        }),
    }
}

fn attributes_json(a: &BTreeMap<String, String>) -> Option<String> {
    if a.is_empty() {
        None
    } else {
        serde_json::to_string(a).ok()
    }
}

/// Receipts are `<seq>.<nonce>`: the row id finds the message, the random nonce (new per
/// receive) proves the receipt is the latest.
fn receipt_seq(r: &Receipt) -> Option<i64> {
    r.0.split_once('.').and_then(|(seq, _)| seq.parse().ok())
}

/// A queue with SQS semantics stored in a [`SqliteDb`], with its DLQ (`<name>-dlq`) in
/// the same table.
///
/// - Order: a receive takes the messages that became receivable earliest (send time plus
///   delay, or the end of an earlier visibility timeout), then by send order; for
///   messages sent without delay and not yet received that is oldest first.
/// - Receipts are `<row id>.<random nonce>`, new on every receive; only the latest one
///   deletes or changes the message, any other is a failed batch entry.
/// - Redrive: a message already received `max_receive_count` times is moved to the DLQ by
///   the next receive that would take it (with [`MAX_RECEIVE_COUNT_EXCEEDED`] as its error
///   kind), and does not count toward that receive's `max`.
/// - Cancellation: a receive dropped after its request reached the writer thread still
///   takes its messages, which come back after the visibility timeout (as when an SQS
///   response is lost). The other calls are single requests: dropping one lets it finish
///   or not happen, never half-happen.
#[derive(Debug, Clone)]
pub struct SqliteQueue {
    db: SqliteDb,
    spec: Arc<QueueSpec>,
    dlq_name: Arc<str>,
    arrived: Arc<Notify>,
}

struct Row {
    seq: i64,
    message_id: String,
    body: String,
    sent_at_ms: i64,
    receive_count: u32,
    attributes: Option<String>,
}

impl SqliteQueue {
    /// A handle on the queue `spec.name` (and its DLQ) in `db`. Queues need no creation:
    /// messages carry their queue's name, so this does no I/O.
    pub fn open(db: &SqliteDb, spec: QueueSpec) -> SqliteQueue {
        SqliteQueue {
            arrived: db.notifier(&spec.name),
            dlq_name: format!("{}-dlq", spec.name).into(),
            spec: Arc::new(spec),
            db: db.clone(),
        }
    }

    /// The spec the queue was opened with.
    pub fn spec(&self) -> &QueueSpec {
        &self.spec
    }

    /// The dead-letter queue's name, `<name>-dlq`.
    pub fn dlq_name(&self) -> &str {
        &self.dlq_name
    }

    /// One receive attempt in one write transaction.
    async fn try_receive(&self, max: usize) -> BackendResult<Vec<ReceivedMessage>> {
        let name = self.spec.name.clone();
        let dlq = self.dlq_name.to_string();
        let visibility = to_i64(self.spec.visibility_timeout);
        let max_receive_count = self.spec.max_receive_count;
        self.db
            .write("receive", move |conn| {
                let now = wall_ms();
                let mut out = Vec::new();
                let mut seen = HashSet::new();
                loop {
                    let rows: Vec<Row> = {
                        let mut st = conn.prepare_cached(
                            "SELECT seq, message_id, body, sent_at_ms, receive_count, attributes
                             FROM queue_messages
                             WHERE queue = ?1 AND visible_at_ms <= ?2
                             ORDER BY visible_at_ms, seq LIMIT ?3",
                        )?;
                        st.query_map(params![name, now, max as i64], |r| {
                            Ok(Row {
                                seq: r.get(0)?,
                                message_id: r.get(1)?,
                                body: r.get(2)?,
                                sent_at_ms: r.get(3)?,
                                receive_count: r.get(4)?,
                                attributes: r.get(5)?,
                            })
                        })?
                        .collect::<rusqlite::Result<_>>()?
                    };
                    let mut redriven = false;
                    let mut fresh = false;
                    for row in rows {
                        if out.len() >= max || !seen.insert(row.seq) {
                            continue;
                        }
                        fresh = true;
                        if row.receive_count >= max_receive_count {
                            // SQS redrive: this receive would exceed the limit, so the
                            // message moves to the DLQ instead of being delivered.
                            let mut attributes = parse_attributes(row.attributes);
                            attributes.extend(reason_attributes(
                                &name,
                                row.sent_at_ms,
                                row.receive_count,
                                &redrive_reason(max_receive_count),
                                now,
                            ));
                            conn.prepare_cached(
                                "UPDATE queue_messages
                                 SET queue = ?2, sent_at_ms = ?3, visible_at_ms = ?3,
                                     receive_count = 0, receipt = NULL, attributes = ?4
                                 WHERE seq = ?1",
                            )?
                            .execute(params![
                                row.seq,
                                dlq,
                                now,
                                attributes_json(&attributes)
                            ])?;
                            redriven = true;
                            continue;
                        }
                        let receipt = format!("{}.{:016x}", row.seq, rand::random::<u64>());
                        let count = row.receive_count + 1;
                        conn.prepare_cached(
                            "UPDATE queue_messages
                             SET receive_count = ?2, receipt = ?3, visible_at_ms = ?4
                             WHERE seq = ?1",
                        )?
                        .execute(params![
                            row.seq,
                            count,
                            receipt,
                            now.saturating_add(visibility)
                        ])?;
                        out.push(ReceivedMessage {
                            message_id: row.message_id,
                            receipt: Receipt(receipt),
                            body: row.body,
                            receive_count: count,
                            sent_at_ms: row.sent_at_ms,
                            attributes: parse_attributes(row.attributes),
                        });
                    }
                    // Redriven rows took places in the batch: look again for more.
                    if out.len() >= max || !redriven || !fresh {
                        break;
                    }
                }
                Ok(out)
            })
            .await
    }

    /// When the next message of this queue becomes receivable (ms since the epoch), from
    /// the reader connection, so an idle long poll does not take the write lock.
    async fn next_visible_ms(&self) -> BackendResult<Option<i64>> {
        let name = self.spec.name.clone();
        self.db
            .read("receive", move |conn| {
                conn.prepare_cached(
                    "SELECT MIN(visible_at_ms) FROM queue_messages WHERE queue = ?1",
                )?
                .query_row(params![name], |r| r.get(0))
            })
            .await
    }
}

/// Each operation is one SQLite request (a read, or one write transaction): an
/// interruption lets it commit whole or not at all.
impl DeadLetterOps for SqliteQueue {
    /// Peeking neither hides nor counts.
    async fn dlq_peek(&self, limit: usize) -> BackendResult<Vec<DlqMessage>> {
        let dlq = self.dlq_name.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .read("dlq_peek", move |conn| {
                conn.prepare_cached(
                    "SELECT message_id, body, sent_at_ms, attributes FROM queue_messages
                     WHERE queue = ?1 ORDER BY seq LIMIT ?2",
                )?
                .query_map(params![dlq, limit], |r| {
                    Ok(DlqMessage {
                        message_id: r.get(0)?,
                        body: r.get(1)?,
                        sent_at_ms: r.get(2)?,
                        attributes: parse_attributes(r.get(3)?),
                    })
                })?
                .collect()
            })
            .await
    }

    /// Moved messages get their receive count reset and `sent_at_ms` back to the
    /// first-seen time, in one transaction.
    async fn dlq_redrive(
        &self,
        filter: &RedriveFilter,
        progress: RedriveProgress<'_>,
    ) -> BackendResult<u64> {
        let name = self.spec.name.clone();
        let dlq = self.dlq_name.to_string();
        let filter = filter.clone();
        let moved = self
            .db
            .write("dlq_redrive", move |conn| {
                let now = wall_ms();
                let rows: Vec<(i64, String, String, i64, Option<String>)> = conn
                    .prepare_cached(
                        "SELECT seq, message_id, body, sent_at_ms, attributes FROM queue_messages
                         WHERE queue = ?1 ORDER BY seq",
                    )?
                    .query_map(params![dlq], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let mut moved = 0u64;
                for (seq, id, body, sent_at_ms, attributes) in rows {
                    let attributes = parse_attributes(attributes);
                    if !filter.matches(&id, &attributes, &body) {
                        continue;
                    }
                    let first_seen = attributes
                        .get(super::dlq_attributes::FIRST_SEEN_MS)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(sent_at_ms);
                    conn.prepare_cached(
                        "UPDATE queue_messages
                         SET queue = ?2, sent_at_ms = ?3, visible_at_ms = ?4,
                             receive_count = 0, receipt = NULL, attributes = ?5
                         WHERE seq = ?1",
                    )?
                    .execute(params![
                        seq,
                        name,
                        first_seen,
                        now,
                        attributes_json(&strip_reason(&attributes))
                    ])?;
                    moved += 1;
                }
                Ok(moved)
            })
            .await?;
        if moved > 0 {
            self.arrived.notify_waiters();
        }
        progress(moved);
        Ok(moved)
    }

    async fn dlq_purge(&self) -> BackendResult<u64> {
        let dlq = self.dlq_name.to_string();
        self.db
            .write("dlq_purge", move |conn| {
                conn.prepare_cached("DELETE FROM queue_messages WHERE queue = ?1")?
                    .execute(params![dlq])
                    .map(|n| n as u64)
            })
            .await
    }
}

impl Queue for SqliteQueue {
    fn name(&self) -> &str {
        &self.spec.name
    }

    async fn receive(&self, max: usize, wait: Duration) -> BackendResult<Vec<ReceivedMessage>> {
        check_max("receive", max)?;
        let deadline = Instant::now() + wait;
        let mut look = true;
        loop {
            // Register before looking, so a send in between still wakes us.
            let notified = self.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();

            if look {
                let got = self.try_receive(max).await?;
                if !got.is_empty() {
                    return Ok(got);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                () = &mut notified => look = true,
                () = tokio::time::sleep_until((now + POLL_INTERVAL).min(deadline)) => {
                    // Another process may have sent, or a message's visibility passed:
                    // check cheaply on the reader before taking the write lock.
                    look = self
                        .next_visible_ms()
                        .await?
                        .is_some_and(|at| at <= wall_ms());
                    if Instant::now() >= deadline && !look {
                        return Ok(Vec::new());
                    }
                }
            }
        }
    }

    async fn delete_batch(&self, receipts: &[Receipt]) -> BackendResult<BatchFailures> {
        check_batch("delete_batch", receipts.len())?;
        if receipts.is_empty() {
            return Ok(BatchFailures::default());
        }
        let name = self.spec.name.clone();
        let owned = receipts.to_vec();
        let deleted = self
            .db
            .write("delete_batch", move |conn| {
                let mut ok = Vec::with_capacity(owned.len());
                {
                    let mut st = conn.prepare_cached(
                        "DELETE FROM queue_messages WHERE seq = ?1 AND queue = ?2 AND receipt = ?3",
                    )?;
                    for r in &owned {
                        let n = match receipt_seq(r) {
                            Some(seq) => st.execute(params![seq, name, r.0])?,
                            None => 0,
                        };
                        ok.push(n == 1);
                    }
                }
                Ok(ok)
            })
            .await?;
        Ok(BatchFailures {
            failed: receipts
                .iter()
                .zip(deleted)
                .filter(|(_, ok)| !ok)
                .map(|(r, _)| (r.clone(), invalid_receipt("delete_batch")))
                .collect(),
        })
    }

    async fn change_visibility_batch(
        &self,
        entries: &[(Receipt, Duration)],
    ) -> BackendResult<BatchFailures> {
        check_batch("change_visibility_batch", entries.len())?;
        if entries.is_empty() {
            return Ok(BatchFailures::default());
        }
        let name = self.spec.name.clone();
        let owned = entries.to_vec();
        let changed = self
            .db
            .write("change_visibility_batch", move |conn| {
                let now = wall_ms();
                let mut ok = Vec::with_capacity(owned.len());
                {
                    let mut st = conn.prepare_cached(
                        "UPDATE queue_messages SET visible_at_ms = ?4
                         WHERE seq = ?1 AND queue = ?2 AND receipt = ?3",
                    )?;
                    for (r, timeout) in &owned {
                        let at = now.saturating_add(to_i64(*timeout));
                        let n = match receipt_seq(r) {
                            Some(seq) => st.execute(params![seq, name, r.0, at])?,
                            None => 0,
                        };
                        ok.push(n == 1);
                    }
                }
                Ok(ok)
            })
            .await?;
        let released = entries
            .iter()
            .zip(&changed)
            .any(|((_, t), ok)| *ok && t.is_zero());
        if released {
            self.arrived.notify_waiters();
        }
        Ok(BatchFailures {
            failed: entries
                .iter()
                .zip(changed)
                .filter(|(_, ok)| !ok)
                .map(|((r, _), _)| (r.clone(), invalid_receipt("change_visibility_batch")))
                .collect(),
        })
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        reason: &DeadLetterReason,
    ) -> BackendResult<()> {
        let name = self.spec.name.clone();
        let dlq = self.dlq_name.to_string();
        let message = message.clone();
        let reason = reason.clone();
        let deleted = self
            .db
            .write("dead_letter", move |conn| {
                let now = wall_ms();
                let mut attributes = message.attributes.clone();
                attributes.extend(reason_attributes(
                    &name,
                    message.sent_at_ms,
                    message.receive_count,
                    &reason,
                    now,
                ));
                // Insert into the DLQ and delete from the queue in one transaction: no
                // loss and no duplicate. A stale receipt deletes nothing (the message
                // stays for redelivery, as on SQS where the delete would fail).
                conn.prepare_cached(
                    "INSERT INTO queue_messages
                       (queue, message_id, body, sent_at_ms, visible_at_ms, receive_count,
                        receipt, attributes)
                     VALUES (?1, ?2, ?3, ?4, ?4, 0, NULL, ?5)",
                )?
                .execute(params![
                    dlq,
                    message.message_id,
                    message.body,
                    now,
                    attributes_json(&attributes)
                ])?;
                match receipt_seq(&message.receipt) {
                    Some(seq) => conn
                        .prepare_cached(
                            "DELETE FROM queue_messages
                             WHERE seq = ?1 AND queue = ?2 AND receipt = ?3",
                        )?
                        .execute(params![seq, name, message.receipt.0])
                        .map(|n| (n == 1, message.message_id)),
                    None => Ok((false, message.message_id)),
                }
            })
            .await?;
        if !deleted.0 {
            tracing::warn!(
                queue = %self.spec.name,
                message_id = %deleted.1,
                "dead-lettered a message whose receipt is stale; it stays in the queue too"
            );
        }
        Ok(())
    }

    async fn send(&self, body: &str, delay: Duration) -> BackendResult<String> {
        let name = self.spec.name.clone();
        let body = body.to_owned();
        let id = uuid::Uuid::new_v4().to_string();
        let message_id = id.clone();
        self.db
            .write("send", move |conn| {
                let now = wall_ms();
                conn.prepare_cached(
                    "INSERT INTO queue_messages
                       (queue, message_id, body, sent_at_ms, visible_at_ms, receive_count)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)",
                )?
                .execute(params![
                    name,
                    message_id,
                    body,
                    now,
                    now.saturating_add(to_i64(delay))
                ])
            })
            .await?;
        if delay.is_zero() {
            self.arrived.notify_waiters();
        }
        Ok(id)
    }

    async fn stats(&self) -> BackendResult<(QueueStats, QueueStats)> {
        let name = self.spec.name.clone();
        let dlq = self.dlq_name.to_string();
        self.db
            .read("stats", move |conn| {
                let now = wall_ms();
                let mut st = conn.prepare_cached(
                    "SELECT
                       COALESCE(SUM(visible_at_ms <= ?2), 0),
                       COALESCE(SUM(visible_at_ms > ?2 AND receive_count > 0), 0),
                       COALESCE(SUM(visible_at_ms > ?2 AND receive_count = 0), 0),
                       MIN(sent_at_ms)
                     FROM queue_messages WHERE queue = ?1",
                )?;
                let mut one = |queue: &str| {
                    st.query_row(params![queue, now], |r| {
                        let oldest: Option<i64> = r.get(3)?;
                        Ok(QueueStats {
                            visible: r.get(0)?,
                            in_flight: r.get(1)?,
                            delayed: r.get(2)?,
                            oldest_age_secs: oldest
                                .map(|o| u64::try_from((now - o).max(0) / 1000).unwrap_or(0)),
                        })
                    })
                };
                Ok((one(&name)?, one(&dlq)?))
            })
            .await
    }
}

// ---------------------------------------------------------------------------------------
// Dedupe
// ---------------------------------------------------------------------------------------

/// Dedupe claims in a [`SqliteDb`], in the table [`SqliteState::apply`] writes its
/// markers to: each claim is one conditional upsert.
#[derive(Debug, Clone)]
pub struct SqliteDedupe {
    db: SqliteDb,
}

impl SqliteDedupe {
    /// The dedupe store of `db`.
    pub fn new(db: &SqliteDb) -> SqliteDedupe {
        SqliteDedupe { db: db.clone() }
    }
}

/// Take `key` for a claim (`token` set) or as applied (`token` `None`), valid until
/// `until`, if it is absent or its lease or retention (both kept in `until_ms`) ended
/// before `now_ms`: one statement, so no race between look and set. `None` if taken,
/// else what holds it: (applied, until).
fn take_key(
    conn: &Connection,
    key: &str,
    token: Option<&str>,
    until: i64,
    now_ms: i64,
) -> rusqlite::Result<Option<(bool, i64)>> {
    let took = conn
        .prepare_cached(
            "INSERT INTO dedupe (key, done, token, until_ms) VALUES (?1, ?2 IS NULL, ?2, ?3)
             ON CONFLICT (key) DO UPDATE
               SET done = excluded.done, token = excluded.token, until_ms = excluded.until_ms
               WHERE dedupe.until_ms < ?4",
        )?
        .execute(params![key, token, until, now_ms])?;
    if took == 1 {
        return Ok(None);
    }
    conn.prepare_cached("SELECT done, until_ms FROM dedupe WHERE key = ?1")?
        .query_row(params![key], |r| Ok((r.get::<_, bool>(0)?, r.get(1)?)))
        .optional()
}

/// Turn the claim held with `token` into the applied-marker (or, with `renew`, extend its
/// lease): whether the token still held it.
fn settle_claim(
    conn: &Connection,
    key: &str,
    token: &str,
    until: i64,
    done: bool,
) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE dedupe SET done = ?4, token = CASE WHEN ?4 THEN NULL ELSE token END,
                               until_ms = ?3
             WHERE key = ?1 AND done = 0 AND token = ?2",
        )?
        .execute(params![key, token, until, done])?;
    Ok(changed == 1)
}

impl DedupeStore for SqliteDedupe {
    async fn claim(&self, key: &DedupeKey, now_ms: i64, lease: Duration) -> BackendResult<Claim> {
        let key = key.storage_key();
        let token = FencingToken::new();
        let until = now_ms.saturating_add(to_i64(lease));
        let t = token.0.clone();
        let answer = self
            .db
            .write("dedupe_claim", move |conn| {
                take_key(conn, &key, Some(&t), until, now_ms)
            })
            .await?;
        Ok(match answer {
            None => Claim::Claimed(token),
            Some((true, _)) => Claim::AlreadyDone,
            Some((false, until_ms)) => Claim::InProgressElsewhere { until_ms },
        })
    }

    async fn renew(
        &self,
        key: &DedupeKey,
        token: &FencingToken,
        now_ms: i64,
        lease: Duration,
    ) -> BackendResult<()> {
        let key = key.storage_key();
        let token = token.0.clone();
        let until = now_ms.saturating_add(to_i64(lease));
        let held = self
            .db
            .write("dedupe_renew", move |conn| {
                settle_claim(conn, &key, &token, until, false)
            })
            .await?;
        if held {
            Ok(())
        } else {
            Err(BackendError::LeaseLost {
                operation: "dedupe_renew",
            })
        }
    }

    async fn release(&self, key: &DedupeKey, token: &FencingToken) -> BackendResult<()> {
        let key = key.storage_key();
        let token = token.0.clone();
        self.db
            .write("dedupe_release", move |conn| {
                conn.prepare_cached(
                    "DELETE FROM dedupe WHERE key = ?1 AND done = 0 AND token = ?2",
                )?
                .execute(params![key, token])
            })
            .await?;
        Ok(())
    }
}

impl super::ReconcileStore for SqliteDedupe {
    async fn was_applied(&self, key: &DedupeKey, now_ms: i64) -> BackendResult<bool> {
        let key = key.storage_key();
        self.db
            .read("dedupe_was_applied", move |conn| {
                conn.prepare_cached(
                    "SELECT 1 FROM dedupe WHERE key = ?1 AND done = 1 AND until_ms >= ?2",
                )?
                .exists(params![key, now_ms])
            })
            .await
    }

    async fn checkpoint(&self, tenant: &str, name: &str) -> BackendResult<Option<String>> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.db
            .read("checkpoint_get", move |conn| {
                conn.prepare_cached(
                    "SELECT value FROM checkpoints WHERE tenant = ?1 AND name = ?2",
                )?
                .query_row(params![tenant, name], |r| r.get(0))
                .optional()
            })
            .await
    }

    async fn set_checkpoint(
        &self,
        tenant: &str,
        name: &str,
        value: Option<&str>,
    ) -> BackendResult<()> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        let value = value.map(str::to_owned);
        self.db
            .write("checkpoint_set", move |conn| match value {
                Some(value) => conn
                    .prepare_cached(
                        "INSERT INTO checkpoints (tenant, name, value) VALUES (?1, ?2, ?3)
                         ON CONFLICT (tenant, name) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![tenant, name, value]),
                None => conn
                    .prepare_cached("DELETE FROM checkpoints WHERE tenant = ?1 AND name = ?2")?
                    .execute(params![tenant, name]),
            })
            .await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

/// Billing state in a [`SqliteDb`], docs stored as JSON text.
#[derive(Debug, Clone)]
pub struct SqliteState {
    db: SqliteDb,
}

impl SqliteState {
    /// The state store of `db`.
    pub fn new(db: &SqliteDb) -> SqliteState {
        SqliteState { db: db.clone() }
    }
}

type RawRecord = (String, String, String, Option<String>, i64, String, String);

const RECORD_COLUMNS: &str = "tenant, kind, id, customer, as_of_ms, tiebreak, doc";

fn raw_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode_record(operation: &'static str, raw: RawRecord) -> BackendResult<StateRecord> {
    let (tenant, kind, id, customer, as_of_ms, tiebreak, doc) = raw;
    let doc = serde_json::from_str(&doc).map_err(|e| BackendError::Permanent {
        operation,
        message: format!("stored doc of {tenant}/{kind}/{id} is not JSON: {e}"),
    })?;
    Ok(StateRecord {
        tenant,
        kind,
        id,
        customer,
        as_of_ms,
        tiebreak,
        doc,
    })
}

fn decode_all(operation: &'static str, raw: Vec<RawRecord>) -> BackendResult<Vec<StateRecord>> {
    raw.into_iter()
        .map(|r| decode_record(operation, r))
        .collect()
}

/// A record ready for the upsert: its document serialised.
type RecordRow = (StateRecord, String);

fn record_row(operation: &'static str, record: &StateRecord) -> BackendResult<RecordRow> {
    let doc = serde_json::to_string(&record.doc).map_err(|e| BackendError::Permanent {
        operation,
        message: format!("doc does not serialise: {e}"),
    })?;
    Ok((record.clone(), doc))
}

/// Newer wins in one statement (StateRecord::supersedes): SQLite compares TEXT bytewise,
/// like Rust's str ordering.
fn upsert_record(conn: &Connection, (r, doc): &RecordRow) -> rusqlite::Result<WriteOutcome> {
    let changed = conn
        .prepare_cached(
            "INSERT INTO state (tenant, kind, id, customer, as_of_ms, tiebreak, doc)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (tenant, kind, id) DO UPDATE SET
               customer = excluded.customer, as_of_ms = excluded.as_of_ms,
               tiebreak = excluded.tiebreak, doc = excluded.doc
             WHERE excluded.as_of_ms > state.as_of_ms
                OR (excluded.as_of_ms = state.as_of_ms
                    AND excluded.tiebreak > state.tiebreak)",
        )?
        .execute(params![
            r.tenant, r.kind, r.id, r.customer, r.as_of_ms, r.tiebreak, doc
        ])?;
    Ok(if changed == 1 {
        WriteOutcome::Written
    } else {
        WriteOutcome::Stale
    })
}

/// A page of records by (tenant, kind, status) after an id. The status expression is the
/// state_by_kind_status index's, character for character. The index is named: without
/// statistics the planner prefers the primary key (already in id order, so it can stop at
/// the limit), which scans every record of the kind when the status is rare; the index
/// reads one page whatever the mix.
fn by_kind_status_sql() -> String {
    format!(
        "SELECT {RECORD_COLUMNS} FROM state INDEXED BY state_by_kind_status
         WHERE tenant = ?1 AND kind = ?2 AND json_extract(doc, '$.status') = ?3 AND id > ?4
         ORDER BY id LIMIT ?5"
    )
}

/// What the apply transaction found: [`ApplyOutcome`], or a fenced apply's lost claim.
enum Applied {
    Outcome(ApplyOutcome),
    LeaseLost,
}

impl StateStore for SqliteState {
    /// One write request, so one savepoint of a group commit: the marker and the records
    /// commit together or roll back together.
    async fn apply(&self, write: &EventWrite<'_>) -> BackendResult<ApplyOutcome> {
        const OP: &str = "state_apply";
        let rows = write
            .records
            .iter()
            .map(|r| record_row(OP, r))
            .collect::<BackendResult<Vec<_>>>()?;
        let key = write.key.storage_key();
        let now_ms = write.now_ms;
        let until = now_ms.saturating_add(to_i64(write.retention));
        let fence = match write.marker {
            Marker::IfAbsent => None,
            Marker::Overwrite => Some(None),
            Marker::Fenced(token) => Some(Some(token.0.clone())),
        };
        let applied = self
            .db
            .write(OP, move |conn| {
                match fence {
                    None => {
                        if let Some((done, until_ms)) = take_key(conn, &key, None, until, now_ms)? {
                            return Ok(Applied::Outcome(blocked_by(done, until_ms)));
                        }
                    }
                    Some(Some(token)) => {
                        if !settle_claim(conn, &key, &token, until, true)? {
                            return Ok(Applied::LeaseLost);
                        }
                    }
                    Some(None) => {
                        conn.prepare_cached(
                            "INSERT INTO dedupe (key, done, token, until_ms) VALUES (?1, 1, NULL, ?2)
                             ON CONFLICT (key) DO UPDATE
                               SET done = 1, token = NULL, until_ms = excluded.until_ms",
                        )?
                        .execute(params![key, until])?;
                    }
                }
                let outcomes = rows
                    .iter()
                    .map(|row| upsert_record(conn, row))
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(Applied::Outcome(ApplyOutcome::Applied(outcomes)))
            })
            .await?;
        match applied {
            Applied::Outcome(outcome) => Ok(outcome),
            Applied::LeaseLost => Err(BackendError::LeaseLost { operation: OP }),
        }
    }

    async fn put_if_newer(&self, record: &StateRecord) -> BackendResult<WriteOutcome> {
        let row = record_row("state_put", record)?;
        self.db
            .write("state_put", move |conn| upsert_record(conn, &row))
            .await
    }

    async fn get(&self, tenant: &str, kind: &str, id: &str) -> BackendResult<Option<StateRecord>> {
        let (tenant, kind, id) = (tenant.to_owned(), kind.to_owned(), id.to_owned());
        let raw = self
            .db
            .read("state_get", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM state WHERE tenant = ?1 AND kind = ?2 AND id = ?3"
                ))?
                .query_row(params![tenant, kind, id], raw_record)
                .optional()
            })
            .await?;
        raw.map(|r| decode_record("state_get", r)).transpose()
    }

    async fn by_customer(&self, tenant: &str, customer: &str) -> BackendResult<Vec<StateRecord>> {
        let (tenant, customer) = (tenant.to_owned(), customer.to_owned());
        let raw = self
            .db
            .read("state_by_customer", move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {RECORD_COLUMNS} FROM state WHERE tenant = ?1 AND customer = ?2
                     ORDER BY kind, id"
                ))?
                .query_map(params![tenant, customer], raw_record)?
                .collect()
            })
            .await?;
        decode_all("state_by_customer", raw)
    }

    async fn export(&self, tenant: Option<&str>) -> BackendResult<Vec<StateRecord>> {
        let tenant = tenant.map(str::to_owned);
        let raw = self
            .db
            .read("state_export", move |conn| match tenant {
                Some(t) => conn
                    .prepare_cached(&format!(
                        "SELECT {RECORD_COLUMNS} FROM state WHERE tenant = ?1 ORDER BY kind, id"
                    ))?
                    .query_map(params![t], raw_record)?
                    .collect(),
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {RECORD_COLUMNS} FROM state ORDER BY tenant, kind, id"
                    ))?
                    .query_map([], raw_record)?
                    .collect(),
            })
            .await?;
        decode_all("state_export", raw)
    }

    async fn by_kind_status(
        &self,
        tenant: &str,
        kind: &str,
        status: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BackendResult<Vec<StateRecord>> {
        let (tenant, kind, status) = (tenant.to_owned(), kind.to_owned(), status.to_owned());
        // Every id sorts after the empty string: one statement serves the first page too.
        let after = after.unwrap_or_default().to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let raw = self
            .db
            .read("state_by_kind_status", move |conn| {
                conn.prepare_cached(&by_kind_status_sql())?
                    .query_map(params![tenant, kind, status, after, limit], raw_record)?
                    .collect()
            })
            .await?;
        decode_all("state_by_kind_status", raw)
    }
}

// ---------------------------------------------------------------------------------------
// Archive
// ---------------------------------------------------------------------------------------

/// The bus archive in a [`SqliteDb`].
#[derive(Debug, Clone)]
pub struct SqliteArchive {
    db: SqliteDb,
}

impl SqliteArchive {
    /// The archive of `db`.
    pub fn new(db: &SqliteDb) -> SqliteArchive {
        SqliteArchive { db: db.clone() }
    }
}

impl Archive for SqliteArchive {
    async fn append(&self, envelope: &str, time_ms: i64) -> BackendResult<()> {
        let envelope = envelope.to_owned();
        self.db
            .write("archive_append", move |conn| {
                conn.prepare_cached("INSERT INTO archive (time_ms, envelope) VALUES (?1, ?2)")?
                    .execute(params![time_ms, envelope])
            })
            .await?;
        Ok(())
    }

    async fn range(&self, from_ms: i64, to_ms: i64) -> BackendResult<Vec<String>> {
        self.db
            .read("archive_range", move |conn| {
                conn.prepare_cached(
                    "SELECT envelope FROM archive WHERE time_ms >= ?1 AND time_ms < ?2
                     ORDER BY time_ms, seq",
                )?
                .query_map(params![from_ms, to_ms], |r| r.get(0))?
                .collect()
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A job whose answer (`None`: written, `Some`: the group's failure) is sent back.
    fn job(
        work: impl FnOnce(&Connection) -> bool + Send + 'static,
        answer: mpsc::Sender<Option<BackendError>>,
    ) -> Job {
        Box::new(move |conn| {
            let conn = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = answer.send(Some(e.clone()));
                    return None;
                }
            };
            let ok = work(conn);
            Some(Ran {
                ok,
                deliver: Box::new(move |failed| {
                    let _ = answer.send(failed.cloned());
                }),
            })
        })
    }

    #[test]
    fn a_transaction_sqlite_rolled_back_fails_the_group_as_transient() {
        let dir = tempfile::tempdir().unwrap();
        let conn = connect(&dir.path().join("t.sqlite")).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        let (tx, rx) = mpsc::channel();
        let insert = |conn: &Connection| conn.execute("INSERT INTO t VALUES (1)", []).is_ok();
        // The second job stands for a write during which SQLite rolled everything back.
        let rolled_back = |conn: &Connection| {
            conn.execute_batch("ROLLBACK").unwrap();
            false
        };
        run_group(
            &conn,
            vec![
                job(insert, tx.clone()),
                job(rolled_back, tx.clone()),
                job(insert, tx),
            ],
        );
        let answers: Vec<Option<BackendError>> = rx.try_iter().collect();
        assert_eq!(answers.len(), 3, "every job is answered");
        for answer in answers {
            match answer {
                Some(BackendError::Transient { message, .. }) => {
                    assert!(message.contains("rolled the transaction back"), "{message}");
                }
                other => panic!("expected a transient group failure, got {other:?}"),
            }
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "nothing of the group was written");
        assert!(conn.is_autocommit(), "no transaction left open");
    }

    #[test]
    fn records_by_kind_and_status_are_read_from_their_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connect(&dir.path().join("t.sqlite")).unwrap();
        migrate(&mut conn).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", by_kind_status_sql()))
            .unwrap()
            .query_map(params!["t", "subscription", "active", "", 10], |r| r.get(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("USING INDEX state_by_kind_status"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "no sort step: {plan}");
    }
}
