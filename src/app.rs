//! Assembling backends from configuration: the names of local queues and the one place
//! that opens the embedded SQLite backend or the memory backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::doubles::memory::{MemoryArchive, MemoryDedupe, MemoryQueue, MemoryState};
use crate::backend::local_bus::LocalBus;
use crate::backend::sqlite::{SqliteArchive, SqliteDb, SqliteDedupe, SqliteQueue, SqliteState};
use crate::backend::{Backend, BackendError, PerDomain, Queue, QueueSpec};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::Domain;
use crate::worker::WorkerStats;

/// The embedded backend: SQLite queues, dedupe, state and archive, and the local bus.
pub type LocalBackend =
    Backend<SqliteQueue, SqliteDedupe, SqliteState, LocalBus<SqliteQueue, SqliteArchive>>;

/// The in-memory backend (tests and benchmarks).
pub type MemoryBackend =
    Backend<MemoryQueue, MemoryDedupe, MemoryState, LocalBus<MemoryQueue, MemoryArchive>>;

/// The SQLite file inside a data directory.
pub const DATABASE_FILE: &str = "stripe-worker.sqlite";

/// The queue spec of a domain's local queue: `<domain>-events` (and `-dlq`).
pub fn local_queue_spec(domain: Domain, config: &Config) -> QueueSpec {
    QueueSpec {
        name: format!("{domain}-events"),
        visibility_timeout: config.visibility_timeout(),
        max_receive_count: config.worker.max_receive_count,
    }
}

/// Open (creating if needed) the embedded backend in `data_dir`.
pub fn open_local(
    data_dir: &Path,
    config: &Config,
    clock: Clock,
) -> Result<LocalBackend, BackendError> {
    std::fs::create_dir_all(data_dir).map_err(|e| BackendError::Permanent {
        operation: "open",
        message: format!("creating data directory {}: {e}", data_dir.display()),
    })?;
    let db = SqliteDb::open(&data_dir.join(DATABASE_FILE))?;
    Ok(local_backend(&db, config, clock))
}

/// Open the embedded backend an earlier run left in `data_dir`, read-only: for the
/// commands that only look. A directory or database that does not exist is an error naming
/// it (a mistyped `--data-dir` must not read as an empty store); nothing is created or
/// migrated, and a read-only directory works.
pub fn open_local_read_only(
    data_dir: &Path,
    config: &Config,
    clock: Clock,
) -> Result<LocalBackend, BackendError> {
    let db = SqliteDb::open_read_only(&existing_database(data_dir)?)?;
    Ok(local_backend(&db, config, clock))
}

/// The database file of `data_dir`, which must exist: for the commands that work on what
/// an earlier run left (reading, redriving, replaying).
pub fn existing_database(data_dir: &Path) -> Result<std::path::PathBuf, BackendError> {
    let missing = |what: String| BackendError::Permanent {
        operation: "open",
        message: what,
    };
    if !data_dir.is_dir() {
        return Err(missing(format!(
            "data directory {} does not exist (check --data-dir or STRIPE_WORKER_DATA_DIR)",
            data_dir.display()
        )));
    }
    let file = data_dir.join(DATABASE_FILE);
    if !file.is_file() {
        return Err(missing(format!(
            "data directory {} holds no {DATABASE_FILE}: nothing has run there yet",
            data_dir.display()
        )));
    }
    Ok(file)
}

/// The backend over an open database.
fn local_backend(db: &SqliteDb, config: &Config, clock: Clock) -> LocalBackend {
    let queues = Arc::new(PerDomain::from_fn(|domain| {
        SqliteQueue::open(db, local_queue_spec(domain, config))
    }));
    let archive = Arc::new(SqliteArchive::new(db));
    Backend {
        bus: Arc::new(LocalBus::new(Arc::clone(&queues), archive, clock)),
        queues,
        dedupe: Arc::new(SqliteDedupe::new(db)),
        state: Arc::new(SqliteState::new(db)),
    }
}

/// A fresh in-memory backend.
pub fn memory_backend(config: &Config, clock: Clock) -> MemoryBackend {
    let queues = Arc::new(PerDomain::from_fn(|domain| {
        MemoryQueue::new(local_queue_spec(domain, config))
    }));
    // One store for claims and applied-markers, as on the other backends.
    let dedupe = MemoryDedupe::new();
    Backend {
        bus: Arc::new(LocalBus::new(
            Arc::clone(&queues),
            Arc::new(MemoryArchive::new()),
            clock,
        )),
        queues,
        state: Arc::new(dedupe.state()),
        dedupe: Arc::new(dedupe),
    }
}

/// Cancel `shutdown` once every queue (main queues, not DLQs) has been empty, with nothing
/// in flight or delayed, for `idle_for`: how `run --until-idle` and the demo end.
pub async fn cancel_when_idle<Q: Queue>(
    queues: Arc<PerDomain<Q>>,
    stats: Arc<WorkerStats>,
    idle_for: Duration,
    shutdown: CancellationToken,
) {
    let poll = (idle_for / 10).clamp(Duration::from_millis(20), Duration::from_millis(500));
    let mut idle_since: Option<tokio::time::Instant> = None;
    while !shutdown.is_cancelled() {
        let mut busy = stats.in_flight() > 0;
        for domain in Domain::ALL {
            match queues.get(domain).stats().await {
                Ok((main, _dlq)) => busy |= main.visible + main.in_flight + main.delayed > 0,
                Err(error) => {
                    tracing::warn!(%error, "queue stats failed while waiting for idle");
                    busy = true;
                }
            }
        }
        let now = tokio::time::Instant::now();
        match (busy, idle_since) {
            (true, _) => idle_since = None,
            (false, None) => idle_since = Some(now),
            (false, Some(since)) if now - since >= idle_for => {
                shutdown.cancel();
                return;
            }
            (false, Some(_)) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
