//! The SQLite backends against the conformance suite, plus durability across reopen, two
//! connections and two processes on one file, and the operations methods.

use crate::{child_process, conformance};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use conformance::DlqProbe;
use stripe_worker::backend::sqlite::{
    MAX_RECEIVE_COUNT_EXCEEDED, SqliteArchive, SqliteDb, SqliteDedupe, SqliteQueue, SqliteState,
};
use stripe_worker::backend::{
    ApplyOutcome, Archive, Claim, DeadLetterOps, DedupeKey, DedupeStore, EventWrite, Marker, Queue,
    QueueSpec, Receipt, ReceivedMessage, StateRecord, StateStore, WriteOutcome, dlq_attributes,
};
use tempfile::TempDir;

impl DlqProbe for SqliteQueue {
    async fn dlq_messages(&self) -> Vec<ReceivedMessage> {
        self.dlq_peek(100)
            .await
            .expect("dlq_peek")
            .into_iter()
            .map(|m| ReceivedMessage {
                message_id: m.message_id,
                receipt: Receipt(String::new()),
                body: m.body,
                receive_count: 0,
                sent_at_ms: m.sent_at_ms,
                attributes: m.attributes,
            })
            .collect()
    }
}

/// A fresh database in its own temporary directory (removed when the `TempDir` drops).
fn fresh() -> (TempDir, SqliteDb) {
    let dir = TempDir::new().expect("tempdir");
    let db = SqliteDb::open(&dir.path().join("stripe-worker.db")).expect("open");
    (dir, db)
}

/// The dedupe and state stores of one database.
fn sqlite_pair(db: &SqliteDb) -> (SqliteDedupe, SqliteState) {
    (SqliteDedupe::new(db), SqliteState::new(db))
}

macro_rules! queue_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (_dir, db) = fresh();
            conformance::$case(|spec| {
                let db = db.clone();
                async move { SqliteQueue::open(&db, spec) }
            })
            .await;
        }
    )*};
}

macro_rules! store_cases {
    ($ctor:path => $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let (_dir, db) = fresh();
            conformance::$case($ctor(&db)).await;
        }
    )*};
}

queue_cases!(
    queue_send_receive_delete,
    queue_receive_oldest_first,
    queue_visibility_timeout_redelivers,
    queue_change_visibility_zero_releases,
    queue_change_visibility_extends,
    queue_stale_receipt_rejected,
    queue_redrive_after_max_receive_count,
    queue_dead_letter_keeps_reason,
    queue_send_delay,
    queue_long_poll_wakes_on_send,
    queue_batch_unknown_receipt,
    queue_stats,
    queue_dlq_peek_redrive_purge,
);

store_cases!(sqlite_pair =>
    dedupe_claim_apply_duplicate,
    dedupe_in_progress_elsewhere,
    dedupe_expired_lease_takeover_and_fencing,
    dedupe_retention_expiry,
    dedupe_release,
    dedupe_renew_extends_the_lease,
    dedupe_fenced_apply_requires_claim,
    dedupe_keys_independent,
    dedupe_concurrent_claims_one_winner,
    apply_writes_marker_and_records_together,
    apply_concurrent_same_event_writes_once,
    apply_skips_stale_records,
    apply_overwrite_reapplies,
    apply_many_records,
);

store_cases!(SqliteState::new =>
    state_put_get_roundtrip,
    state_newer_wins_older_ignored,
    state_tiebreak_rule,
    state_by_customer,
    state_by_kind_status,
    state_export_ordering,
    state_tenant_isolation,
    state_concurrent_writers_keep_newest,
);

store_cases!(SqliteArchive::new => archive_range);

// --- SQLite-specific -----------------------------------------------------------------------

fn spec(name: &str, max_receive_count: u32) -> QueueSpec {
    QueueSpec {
        name: name.to_owned(),
        visibility_timeout: Duration::from_secs(30),
        max_receive_count,
    }
}

fn key() -> DedupeKey {
    DedupeKey {
        tenant: "acme".to_owned(),
        handler: "subscription".to_owned(),
        dedupe_id: "evt_1".to_owned(),
    }
}

fn record() -> StateRecord {
    StateRecord {
        tenant: "acme".to_owned(),
        kind: "subscription".to_owned(),
        id: "sub_1".to_owned(),
        customer: Some("cus_1".to_owned()),
        as_of_ms: 1_700_000_000_000,
        tiebreak: "evt_1".to_owned(),
        doc: serde_json::json!({ "status": "active" }),
    }
}

/// Everything written survives closing and reopening the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_across_reopen() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db.sqlite");
    let now = 1_700_000_000_000;
    let in_flight_id = {
        let db = SqliteDb::open(&path).unwrap();
        let q = SqliteQueue::open(&db, spec("subscription", 5));
        q.send("kept", Duration::ZERO).await.unwrap();
        q.send("in flight", Duration::ZERO).await.unwrap();
        let got = q.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(got[0].body, "kept");
        // Release the first, keep nothing else in flight but "in flight" after receive.
        q.change_visibility_batch(&[(got[0].receipt.clone(), Duration::ZERO)])
            .await
            .unwrap();
        let applied = SqliteState::new(&db)
            .apply(&EventWrite {
                key: &key(),
                marker: Marker::IfAbsent,
                now_ms: now,
                retention: Duration::from_secs(3600),
                records: &[record()],
            })
            .await
            .unwrap();
        assert_eq!(applied, ApplyOutcome::Applied(vec![WriteOutcome::Written]));
        SqliteArchive::new(&db)
            .append("{\"a\":1}", now)
            .await
            .unwrap();
        got[0].message_id.clone()
    };
    let db = SqliteDb::open(&path).unwrap();
    let q = SqliteQueue::open(&db, spec("subscription", 5));
    let got = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 2);
    let first = got.iter().find(|m| m.message_id == in_flight_id).unwrap();
    assert_eq!(first.receive_count, 2, "receive count survives reopen");
    assert_eq!(
        SqliteDedupe::new(&db)
            .claim(&key(), now + 1, Duration::from_secs(60))
            .await
            .unwrap(),
        Claim::AlreadyDone
    );
    assert_eq!(
        SqliteState::new(&db)
            .get("acme", "subscription", "sub_1")
            .await
            .unwrap(),
        Some(record())
    );
    assert_eq!(
        SqliteArchive::new(&db).range(now, now + 1).await.unwrap(),
        ["{\"a\":1}"]
    );
}

/// A message sent through one `SqliteDb` is received through another on the same file,
/// and a long poll on the second wakes (by polling) soon after the send on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_one_file() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db.sqlite");
    let db1 = SqliteDb::open(&path).unwrap();
    let db2 = SqliteDb::open(&path).unwrap();
    let q1 = SqliteQueue::open(&db1, spec("payment", 5));
    let q2 = SqliteQueue::open(&db2, spec("payment", 5));

    q1.send("direct", Duration::ZERO).await.unwrap();
    let got = q2.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "direct");
    assert!(
        q1.delete_batch(&[got[0].receipt.clone()])
            .await
            .unwrap()
            .failed
            .is_empty()
    );

    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        q1.send("polled", Duration::ZERO).await.unwrap();
    });
    let started = Instant::now();
    let got = q2.receive(1, Duration::from_secs(5)).await.unwrap();
    sender.await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "polled");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Claims through two `SqliteDb`s (two writer connections) on one file: exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_across_connections() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db.sqlite");
    let stores = [
        SqliteDedupe::new(&SqliteDb::open(&path).unwrap()),
        SqliteDedupe::new(&SqliteDb::open(&path).unwrap()),
    ];
    for round in 0..5 {
        let k = DedupeKey {
            dedupe_id: format!("evt_{round}"),
            ..key()
        };
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = stores[i % 2].clone();
                let k = k.clone();
                tokio::spawn(async move { store.claim(&k, 1_000, Duration::from_secs(30)).await })
            })
            .collect();
        let mut winners = 0;
        for t in tasks {
            if matches!(t.await.unwrap().unwrap(), Claim::Claimed(_)) {
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
}

const CHILD_ENV: &str = "STRIPE_WORKER_TEST_SQLITE_CHILD_DB";
const CHILD_TEST: &str = "backend_sqlite::two_processes_one_file";

/// Another process sends to the file; this one receives. The test re-runs its own binary
/// as the child, selecting this same test with an environment variable set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_one_file() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        // Child: open the parent's file and send.
        let db = SqliteDb::open(Path::new(&path)).expect("child open");
        let q = SqliteQueue::open(&db, spec("customer", 5));
        q.send("from the child", Duration::ZERO)
            .await
            .expect("child send");
        return;
    }
    let dir = TempDir::new().unwrap();
    let path: PathBuf = dir.path().join("db.sqlite");
    let db = SqliteDb::open(&path).unwrap();
    let q = SqliteQueue::open(&db, spec("customer", 5));

    let mut child = child_process::command(CHILD_TEST);
    child.env(CHILD_ENV, &path);
    let child = tokio::process::Command::from(child).output();
    let got = q.receive(1, Duration::from_secs(20));
    let (output, got) = tokio::join!(child, got);
    child_process::assert_passed(CHILD_TEST, &output.unwrap());
    let got = got.unwrap();
    assert_eq!(got.len(), 1, "received the child's message");
    assert_eq!(got[0].body, "from the child");
}

/// Redrive marks the message with the `max_receive_count_exceeded` kind and the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_sets_error_kind() {
    let (_dir, db) = fresh();
    let q = SqliteQueue::open(&db, spec("sub", 1));
    q.send("poison", Duration::ZERO).await.unwrap();
    let got = q.receive(1, Duration::ZERO).await.unwrap();
    q.change_visibility_batch(&[(got[0].receipt.clone(), Duration::ZERO)])
        .await
        .unwrap();
    assert!(q.receive(1, Duration::ZERO).await.unwrap().is_empty());
    let dead = q.dlq_peek(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, got[0].message_id);
    let attr = |k: &str| dead[0].attributes.get(k).map(String::as_str);
    assert_eq!(
        attr(dlq_attributes::ERROR_KIND),
        Some(MAX_RECEIVE_COUNT_EXCEEDED)
    );
    assert_eq!(attr(dlq_attributes::RECEIVE_COUNT), Some("1"));
    assert_eq!(attr(dlq_attributes::SOURCE_QUEUE), Some("sub"));
    assert_eq!(q.dlq_name(), "sub-dlq");
}

/// A redriven message does not take a place in the batch: the receive still returns the
/// next deliverable messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_does_not_shrink_the_batch() {
    let (_dir, db) = fresh();
    let q = SqliteQueue::open(&db, spec("sub", 1));
    q.send("poison", Duration::ZERO).await.unwrap();
    let got = q.receive(1, Duration::ZERO).await.unwrap();
    q.change_visibility_batch(&[(got[0].receipt.clone(), Duration::ZERO)])
        .await
        .unwrap();
    for i in 0..3 {
        q.send(&format!("ok{i}"), Duration::ZERO).await.unwrap();
    }
    let got = q.receive(3, Duration::ZERO).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["ok0", "ok1", "ok2"]
    );
    assert_eq!(q.dlq_peek(10).await.unwrap().len(), 1);
}

/// Stats report the oldest message's age; queues on one file are independent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_age_and_queue_isolation() {
    let (_dir, db) = fresh();
    let a = SqliteQueue::open(&db, spec("a", 5));
    let b = SqliteQueue::open(&db, spec("b", 5));
    a.send("x", Duration::ZERO).await.unwrap();
    let (main, dlq) = a.stats().await.unwrap();
    assert_eq!(main.visible, 1);
    assert_eq!(main.oldest_age_secs, Some(0));
    assert_eq!(dlq.oldest_age_secs, None);
    let (main_b, _) = b.stats().await.unwrap();
    assert_eq!(main_b.visible, 0);
    assert!(b.receive(10, Duration::ZERO).await.unwrap().is_empty());
}

/// A file whose schema is newer than this build is refused, not modified.
#[test]
fn newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db.sqlite");
    drop(SqliteDb::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteDb::open(&path).unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("99"), "{err}");
}

/// State writes report Written/Stale from the conditional upsert, across connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_upsert_across_connections() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("db.sqlite");
    let s1 = SqliteState::new(&SqliteDb::open(&path).unwrap());
    let s2 = SqliteState::new(&SqliteDb::open(&path).unwrap());
    let mut newer = record();
    newer.as_of_ms += 1;
    assert_eq!(
        s1.put_if_newer(&newer).await.unwrap(),
        WriteOutcome::Written
    );
    assert_eq!(
        s2.put_if_newer(&record()).await.unwrap(),
        WriteOutcome::Stale
    );
    assert_eq!(
        s2.get("acme", "subscription", "sub_1").await.unwrap(),
        Some(newer)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

    /// Any order of versions converges on the newest, with truthful outcomes (SQLite's
    /// TEXT comparison agrees with Rust's string order, multi-byte characters included).
    #[test]
    fn state_any_order_converges(
        versions in proptest::collection::vec((0i64..5, "[a-cé€]{0,2}"), 0..12)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_dir, db) = fresh();
        let store = SqliteState::new(&db);
        rt.block_on(conformance::state_any_order_converges(&store, &versions));
    }
}
