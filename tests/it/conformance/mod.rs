//! The backend conformance suite: one set of cases, written once against the traits of
//! `stripe_worker::backend`, run by every backend's test binary (`mod conformance;`).
//!
//! Each case is a plain `async fn`; a backend's test file wraps each in a `#[tokio::test]`
//! so a failure names the case. Queue cases take a `make` closure that must return a fresh,
//! empty queue (with its own empty DLQ) for the given [`QueueSpec`]; the suite picks a unique
//! name per case (`cf-<case>-<12 hex>`, at most 40 characters, valid as an SQS queue name).
//! Dedupe, state and archive cases take a store and use unique tenants, keys and markers,
//! so they also pass against a store shared by several cases (one DynamoDB table). Dedupe
//! and apply cases take a pair: a dedupe store and the state store whose applies keep
//! their markers where it claims (one SQLite file, one memory store, the two tables).
//!
//! Time-based queue cases use visibility timeouts and delays of whole seconds (SQS has
//! one-second granularity), and wait 1.5 s where a 1 s timeout must pass. Dedupe cases pass
//! `now_ms` explicitly, so they never sleep.
//!
//! Cases that need to look inside a dead-letter queue require [`DlqProbe`], which each
//! backend's test file implements for its queue type (the trait is local to the test
//! crate, so that is allowed for any queue type).

// ---------------------------------------------------------------------------------------
// The cases, listed once
// ---------------------------------------------------------------------------------------
//
// Each list is a macro that hands its case names to a backend's runner macro, after the
// runner's own arguments: `pair_cases!(store_cases!(memory_pair() =>))` expands to
// `store_cases!(memory_pair() => dedupe_claim_apply_duplicate, ...)`, and the runner
// wraps each case in a `#[tokio::test]` that builds the backend. A case added here runs
// on every backend.

/// Queue cases every queue promises, SQS included.
macro_rules! all_queue_cases {
    ($run:ident!($($args:tt)*)) => {
        $run!($($args)*
            queue_send_receive_delete,
            queue_receive_oldest_first,
            queue_visibility_timeout_redelivers,
            queue_change_visibility_zero_releases,
            queue_change_visibility_extends,
            queue_redrive_after_max_receive_count,
            queue_dead_letter_keeps_reason,
            queue_send_delay,
            queue_long_poll_wakes_on_send,
            queue_batch_unknown_receipt,
            queue_stats,
        );
    };
}

/// Queue cases of the local queues (memory, SQLite) only: SQS documents that a stale
/// receipt "might" still act (and moto accepts any past receipt), and the SQS DLQ
/// operations are tested in `ops_aws` against the real command.
macro_rules! local_queue_cases {
    ($run:ident!($($args:tt)*)) => {
        $run!($($args)* queue_stale_receipt_rejected, queue_dlq_peek_redrive_purge);
    };
}

/// Cases of a dedupe store and the state store that keeps its markers.
macro_rules! pair_cases {
    ($run:ident!($($args:tt)*)) => {
        $run!($($args)*
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
    };
}

/// Cases of a state store alone.
macro_rules! state_cases {
    ($run:ident!($($args:tt)*)) => {
        $run!($($args)*
            state_put_get_roundtrip,
            state_keeps_raw_objects,
            state_newer_wins_older_ignored,
            state_tiebreak_rule,
            state_by_customer,
            state_by_kind_status,
            state_export_ordering,
            state_tenant_isolation,
            state_concurrent_writers_keep_newest,
        );
    };
}

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use stripe_worker::backend::{
    ApplyOutcome, Archive, BackendError, Claim, DeadLetterOps, DeadLetterReason, DedupeKey,
    DedupeStore, EventWrite, FencingToken, Marker, Queue, QueueSpec, Receipt, ReceivedMessage,
    RedriveFilter, StateRecord, StateStore, WriteOutcome, dlq_attributes,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Reads what a queue's dead-letter queue holds, for the cases that check redrive and
/// `dead_letter`. Implement it in the backend's test file (e.g. with the backend's own
/// `dlq_peek`, or by receiving from the DLQ).
pub trait DlqProbe {
    /// Every message currently in the DLQ with its body and string attributes. May make
    /// them invisible (receiving from the DLQ is fine); called once per case.
    fn dlq_messages(&self) -> impl Future<Output = Vec<ReceivedMessage>> + Send;
}

/// A unique name such as `cf-redrive-0123456789ab`.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("cf-{prefix}-{}", &id[..12])
}

/// A queue spec with a unique name.
pub fn spec(case: &str, visibility_secs: u64, max_receive_count: u32) -> QueueSpec {
    QueueSpec {
        name: unique(case),
        visibility_timeout: Duration::from_secs(visibility_secs),
        max_receive_count,
    }
}

/// Wall-clock now, ms since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Receive until `n` messages arrived or `within` passed (SQS may spread messages over
/// several receives).
pub async fn receive_n<Q: Queue>(q: &Q, n: usize, within: Duration) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let wait = left.min(Duration::from_secs(1));
        let batch = q
            .receive((n - got.len()).min(10), wait)
            .await
            .expect("receive");
        got.extend(batch);
    }
    got
}

/// Receive once without waiting: whatever is visible now.
async fn receive_now<Q: Queue>(q: &Q) -> Vec<ReceivedMessage> {
    q.receive(10, Duration::ZERO).await.expect("receive")
}

/// Total messages of a queue as `stats` reports them (visible + in flight + delayed).
async fn main_total<Q: Queue>(q: &Q) -> u64 {
    let (main, _) = q.stats().await.expect("stats");
    main.visible + main.in_flight + main.delayed
}

fn bogus_receipt() -> Receipt {
    Receipt(format!("not-a-receipt-{}", uuid::Uuid::new_v4().simple()))
}

const SECOND_AND_A_HALF: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------
// Queue cases
// ---------------------------------------------------------------------------------------

/// Send, receive (receive count 1, message id as returned by send, body, sent time), then
/// delete: the queue is empty afterwards. `receive` honours `max`.
pub async fn queue_send_receive_delete<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let spec = spec("basic", 30, 5);
    let q = make(spec.clone()).await;
    assert_eq!(q.name(), spec.name);

    let before = now_ms();
    let mut ids = BTreeMap::new();
    for body in ["one", "two", "three"] {
        let id = q.send(body, Duration::ZERO).await.expect("send");
        ids.insert(id, body.to_owned());
    }
    let after = now_ms();
    assert_eq!(ids.len(), 3, "message ids are unique");

    let first = q.receive(2, Duration::from_secs(2)).await.expect("receive");
    assert!(
        (1..=2).contains(&first.len()),
        "receive(max = 2) returned {} messages",
        first.len()
    );
    let mut got = first;
    got.extend(receive_n(&q, 3 - got.len(), Duration::from_secs(5)).await);
    assert_eq!(got.len(), 3);

    for m in &got {
        assert_eq!(ids.get(&m.message_id), Some(&m.body), "id/body as sent");
        assert_eq!(m.receive_count, 1);
        assert!(
            m.sent_at_ms >= before - 1000 && m.sent_at_ms <= after + 1000,
            "sent_at_ms {} outside [{before}, {after}]",
            m.sent_at_ms
        );
    }
    let receipts: BTreeSet<_> = got.iter().map(|m| m.receipt.clone()).collect();
    assert_eq!(receipts.len(), 3, "receipts are distinct");

    let receipts: Vec<Receipt> = got.iter().map(|m| m.receipt.clone()).collect();
    let failures = q.delete_batch(&receipts).await.expect("delete_batch");
    assert!(failures.failed.is_empty(), "{:?}", failures.failed);
    assert_eq!(main_total(&q).await, 0, "queue empty after delete");
    assert!(receive_now(&q).await.is_empty());
}

/// Messages come out oldest first.
pub async fn queue_receive_oldest_first<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("order", 30, 5)).await;
    for i in 0..5 {
        q.send(&format!("m{i}"), Duration::ZERO)
            .await
            .expect("send");
        // Distinct send times, so "oldest" is well defined on every backend.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = receive_n(&q, 5, Duration::from_secs(5)).await;
    let bodies: Vec<_> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
}

/// A received message that is not deleted comes back once its visibility timeout passed,
/// with the same id, receive count 2 and a new receipt; not before.
pub async fn queue_visibility_timeout_redelivers<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("vis", 1, 5)).await;
    let id = q.send("again", Duration::ZERO).await.expect("send");
    let first = receive_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message_id, id);
    assert_eq!(first[0].receive_count, 1);
    assert!(
        receive_now(&q).await.is_empty(),
        "invisible while in flight"
    );

    tokio::time::sleep(SECOND_AND_A_HALF).await;
    let second = receive_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(second.len(), 1, "redelivered after the visibility timeout");
    assert_eq!(second[0].message_id, id);
    assert_eq!(second[0].body, "again");
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(
        second[0].receipt, first[0].receipt,
        "new receipt per receive"
    );
}

/// `change_visibility_batch` with 0 makes the message receivable at once.
pub async fn queue_change_visibility_zero_releases<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("release", 30, 5)).await;
    let id = q.send("release me", Duration::ZERO).await.expect("send");
    let first = receive_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    assert!(receive_now(&q).await.is_empty());

    let failures = q
        .change_visibility_batch(&[(first[0].receipt.clone(), Duration::ZERO)])
        .await
        .expect("change_visibility_batch");
    assert!(failures.failed.is_empty(), "{:?}", failures.failed);

    let again = receive_n(&q, 1, Duration::from_secs(3)).await;
    assert_eq!(again.len(), 1, "released message is receivable at once");
    assert_eq!(again[0].message_id, id);
    assert_eq!(again[0].receive_count, 2);
}

/// Extending the visibility (a heartbeat) keeps the message invisible past the queue's
/// timeout; the receipt stays usable.
pub async fn queue_change_visibility_extends<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("extend", 1, 5)).await;
    q.send("long job", Duration::ZERO).await.expect("send");
    let got = receive_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let failures = q
        .change_visibility_batch(&[(got[0].receipt.clone(), Duration::from_secs(5))])
        .await
        .expect("extend");
    assert!(failures.failed.is_empty(), "{:?}", failures.failed);

    tokio::time::sleep(SECOND_AND_A_HALF).await;
    assert!(
        receive_now(&q).await.is_empty(),
        "extended message must stay invisible past the queue's 1 s timeout"
    );
    let failures = q
        .delete_batch(std::slice::from_ref(&got[0].receipt))
        .await
        .expect("delete");
    assert!(failures.failed.is_empty(), "{:?}", failures.failed);
    assert_eq!(main_total(&q).await, 0);
}

/// A receipt from an earlier receive (the message was received again since) can neither
/// delete nor change the message; it is reported as a failed entry. The current receipt
/// works.
///
/// Note: real SQS documents that a stale receipt "might" still delete, and moto accepts
/// any past receipt, so an SQS-backed queue cannot promise this; the memory and SQLite
/// queues do.
pub async fn queue_stale_receipt_rejected<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("stale", 1, 5)).await;
    q.send("contested", Duration::ZERO).await.expect("send");
    let first = receive_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    tokio::time::sleep(SECOND_AND_A_HALF).await;
    let second = receive_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(second.len(), 1);
    let stale = first[0].receipt.clone();

    let failures = q
        .change_visibility_batch(&[(stale.clone(), Duration::ZERO)])
        .await
        .expect("change_visibility_batch");
    assert_eq!(failures.failed.len(), 1, "stale receipt must fail");
    assert_eq!(failures.failed[0].0, stale);
    assert!(
        receive_now(&q).await.is_empty(),
        "stale release had no effect"
    );

    let failures = q
        .delete_batch(std::slice::from_ref(&stale))
        .await
        .expect("delete_batch");
    assert_eq!(failures.failed.len(), 1, "stale receipt must fail");
    assert_eq!(failures.failed[0].0, stale);
    assert_eq!(main_total(&q).await, 1, "stale delete had no effect");

    let failures = q
        .delete_batch(std::slice::from_ref(&second[0].receipt))
        .await
        .expect("delete_batch");
    assert!(failures.failed.is_empty(), "{:?}", failures.failed);
    assert_eq!(main_total(&q).await, 0);
}

/// A message received `max_receive_count` times is moved to the DLQ on the next receive
/// instead of being delivered (SQS redrive).
pub async fn queue_redrive_after_max_receive_count<Q, F, Fut>(make: F)
where
    Q: Queue + DlqProbe,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("redrive", 30, 2)).await;
    q.send("poison", Duration::ZERO).await.expect("send");
    for expected_count in 1..=2 {
        let got = receive_n(&q, 1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "receive #{expected_count}");
        assert_eq!(got[0].receive_count, expected_count);
        let failures = q
            .change_visibility_batch(&[(got[0].receipt.clone(), Duration::ZERO)])
            .await
            .expect("release");
        assert!(failures.failed.is_empty(), "{:?}", failures.failed);
    }
    let third = q
        .receive(10, Duration::from_secs(1))
        .await
        .expect("receive");
    assert!(
        third.is_empty(),
        "third receive must redrive, not deliver: {third:?}"
    );
    assert_eq!(main_total(&q).await, 0, "message left the main queue");
    let (_, dlq) = q.stats().await.expect("stats");
    assert_eq!(dlq.visible + dlq.in_flight, 1, "message is in the DLQ");
    let dead = q.dlq_messages().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
}

/// `dead_letter` moves the message to the DLQ with its body and every reason attribute.
pub async fn queue_dead_letter_keeps_reason<Q, F, Fut>(make: F)
where
    Q: Queue + DlqProbe,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("deadletter", 30, 5)).await;
    let body = r#"{"id":"evt_1","type":"invoice.paid"}"#;
    q.send(body, Duration::ZERO).await.expect("send");
    let got = receive_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let reason = DeadLetterReason {
        kind: "decode_error".to_owned(),
        message: "expected an object at line 1".to_owned(),
        handler: Some("invoice".to_owned()),
    };
    let before = now_ms();
    q.dead_letter(&got[0], &reason).await.expect("dead_letter");
    let after = now_ms();

    assert_eq!(main_total(&q).await, 0, "deleted from the main queue");
    let (_, dlq) = q.stats().await.expect("stats");
    assert_eq!(dlq.visible + dlq.in_flight, 1);

    let dead = q.dlq_messages().await;
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(d.body, body);
    let attr = |name: &str| d.attributes.get(name).map(String::as_str);
    assert_eq!(attr(dlq_attributes::ERROR_KIND), Some("decode_error"));
    assert_eq!(
        attr(dlq_attributes::ERROR_MESSAGE),
        Some("expected an object at line 1")
    );
    assert_eq!(attr(dlq_attributes::HANDLER), Some("invoice"));
    assert_eq!(attr(dlq_attributes::SOURCE_QUEUE), Some(q.name()));
    assert_eq!(
        attr(dlq_attributes::FIRST_SEEN_MS),
        Some(got[0].sent_at_ms.to_string().as_str())
    );
    assert_eq!(attr(dlq_attributes::RECEIVE_COUNT), Some("1"));
    let dead_lettered: i64 = attr(dlq_attributes::DEAD_LETTERED_MS)
        .and_then(|v| v.parse().ok())
        .expect("dead_lettered_ms attribute");
    assert!(
        dead_lettered >= before - 1000 && dead_lettered <= after + 1000,
        "dead_lettered_ms {dead_lettered} outside [{before}, {after}]"
    );
}

/// The operations side of a DLQ ([`DeadLetterOps`]). Peek does not consume; redrive by
/// filter moves back, visible, count reset and reason attributes gone; purge empties.
pub async fn queue_dlq_peek_redrive_purge<Q, F, Fut>(make: F)
where
    Q: Queue + DeadLetterOps,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("dlqops", 30, 5)).await;
    for (body, kind) in [
        ("a", "decode_error"),
        ("b", "unknown_tenant"),
        ("c", "decode_error"),
    ] {
        q.send(body, Duration::ZERO).await.unwrap();
        let m = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
        let reason = DeadLetterReason {
            kind: kind.to_owned(),
            message: "x".to_owned(),
            handler: None,
        };
        q.dead_letter(&m, &reason).await.unwrap();
    }
    assert_eq!(q.dlq_peek(2).await.unwrap().len(), 2);
    let all = q.dlq_peek(10).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["a", "b", "c"]
    );

    let moved = q
        .dlq_redrive(&RedriveFilter::error_kind("decode_error"), &|_| {})
        .await
        .unwrap();
    assert_eq!(moved, 2);
    let back = q.receive(10, Duration::ZERO).await.unwrap();
    assert_eq!(
        back.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["a", "c"]
    );
    assert!(back.iter().all(|m| m.receive_count == 1));
    assert!(back.iter().all(|m| m.attributes.is_empty()));
    assert_eq!(
        back[0].sent_at_ms,
        all[0].attributes[dlq_attributes::FIRST_SEEN_MS]
            .parse::<i64>()
            .unwrap()
    );

    let b_id = q.dlq_peek(10).await.unwrap()[0].message_id.clone();
    assert_eq!(
        q.dlq_redrive(&RedriveFilter::ids(["nope".to_owned()]), &|_| {})
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        q.dlq_redrive(&RedriveFilter::ids([b_id]), &|_| {})
            .await
            .unwrap(),
        1
    );
    assert!(q.dlq_peek(10).await.unwrap().is_empty());

    let m = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
    let reason = DeadLetterReason {
        kind: "k".to_owned(),
        message: "m".to_owned(),
        handler: None,
    };
    q.dead_letter(&m, &reason).await.unwrap();
    assert_eq!(
        q.dlq_redrive(&RedriveFilter::all(), &|_| {}).await.unwrap(),
        1
    );
    let m = q.receive(1, Duration::ZERO).await.unwrap().remove(0);
    q.dead_letter(&m, &reason).await.unwrap();
    assert_eq!(q.dlq_purge().await.unwrap(), 1);
    assert!(q.dlq_peek(10).await.unwrap().is_empty());
}

/// A message sent with a delay is not receivable before the delay passed, and is after.
pub async fn queue_send_delay<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("delay", 30, 5)).await;
    let id = q.send("later", Duration::from_secs(1)).await.expect("send");
    assert!(
        receive_now(&q).await.is_empty(),
        "delayed message not yet visible"
    );
    let (main, _) = q.stats().await.expect("stats");
    assert_eq!(main.delayed, 1);
    assert_eq!(main.visible, 0);

    tokio::time::sleep(SECOND_AND_A_HALF).await;
    let got = receive_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "visible once the delay passed");
    assert_eq!(got[0].message_id, id);
    assert_eq!(got[0].receive_count, 1);
}

/// A long poll on an empty queue returns as soon as a message arrives, well before its
/// wait ends; with nothing arriving it waits about `wait` and returns empty.
pub async fn queue_long_poll_wakes_on_send<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = Arc::new(make(spec("longpoll", 30, 5)).await);

    let started = Instant::now();
    let empty = q.receive(1, Duration::from_secs(1)).await.expect("receive");
    let waited = started.elapsed();
    assert!(empty.is_empty());
    assert!(
        waited >= Duration::from_millis(900),
        "an empty long poll waits, returned after {waited:?}"
    );

    let sender = Arc::clone(&q);
    let send = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sender.send("wake up", Duration::ZERO).await.expect("send");
    });
    let started = Instant::now();
    let got = q
        .receive(1, Duration::from_secs(10))
        .await
        .expect("receive");
    let waited = started.elapsed();
    send.await.expect("sender task");
    assert_eq!(got.len(), 1, "long poll delivered the message");
    assert_eq!(got[0].body, "wake up");
    assert!(
        waited < Duration::from_secs(5),
        "long poll returned after {waited:?}, not early"
    );
}

/// In a batch, an unknown receipt fails alone: the other entries succeed.
pub async fn queue_batch_unknown_receipt<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("batch", 30, 5)).await;
    q.send("a", Duration::ZERO).await.expect("send");
    q.send("b", Duration::ZERO).await.expect("send");
    let got = receive_n(&q, 2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2);
    let bogus = bogus_receipt();

    let failures = q
        .change_visibility_batch(&[
            (got[0].receipt.clone(), Duration::from_secs(60)),
            (bogus.clone(), Duration::from_secs(60)),
            (got[1].receipt.clone(), Duration::from_secs(60)),
        ])
        .await
        .expect("change_visibility_batch");
    assert_eq!(failures.failed.len(), 1, "{:?}", failures.failed);
    assert_eq!(failures.failed[0].0, bogus);

    let failures = q
        .delete_batch(&[
            got[0].receipt.clone(),
            bogus.clone(),
            got[1].receipt.clone(),
        ])
        .await
        .expect("delete_batch");
    assert_eq!(failures.failed.len(), 1, "{:?}", failures.failed);
    assert_eq!(failures.failed[0].0, bogus);
    assert_eq!(main_total(&q).await, 0, "the known receipts were deleted");
}

/// `stats` counts visible, in-flight and delayed messages of the queue and its DLQ.
pub async fn queue_stats<Q, F, Fut>(make: F)
where
    Q: Queue,
    F: Fn(QueueSpec) -> Fut,
    Fut: Future<Output = Q>,
{
    let q = make(spec("stats", 30, 5)).await;
    let (main, dlq) = q.stats().await.expect("stats");
    assert_eq!((main.visible, main.in_flight, main.delayed), (0, 0, 0));
    assert_eq!((dlq.visible, dlq.in_flight, dlq.delayed), (0, 0, 0));

    for body in ["s1", "s2", "s3"] {
        q.send(body, Duration::ZERO).await.expect("send");
    }
    q.send("s4", Duration::from_secs(30)).await.expect("send");
    let (main, _) = q.stats().await.expect("stats");
    assert_eq!((main.visible, main.in_flight, main.delayed), (3, 0, 1));

    let got = receive_n(&q, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let (main, _) = q.stats().await.expect("stats");
    assert_eq!((main.visible, main.in_flight, main.delayed), (2, 1, 1));

    let reason = DeadLetterReason {
        kind: "unknown_tenant".to_owned(),
        message: "no tenant for account acct_x".to_owned(),
        handler: None,
    };
    q.dead_letter(&got[0], &reason).await.expect("dead_letter");
    let (main, dlq) = q.stats().await.expect("stats");
    assert_eq!((main.visible, main.in_flight, main.delayed), (2, 0, 1));
    assert_eq!((dlq.visible, dlq.in_flight, dlq.delayed), (1, 0, 0));
    if let Some(age) = main.oldest_age_secs {
        assert!(age < 120, "oldest age {age} s for messages sent just now");
    }
}

// ---------------------------------------------------------------------------------------
// Dedupe cases
// ---------------------------------------------------------------------------------------

fn key(handler: &str) -> DedupeKey {
    DedupeKey {
        tenant: unique("tenant"),
        handler: handler.to_owned(),
        dedupe_id: unique("evt"),
    }
}

const LEASE: Duration = Duration::from_secs(30);
const RETENTION: Duration = Duration::from_secs(3600);
const T0: i64 = 1_700_000_000_000;

fn claimed(c: Claim) -> FencingToken {
    match c {
        Claim::Claimed(token) => token,
        other => panic!("expected Claimed, got {other:?}"),
    }
}

/// The writes of one event for `k`.
fn event_write<'a>(
    k: &'a DedupeKey,
    marker: Marker<'a>,
    now_ms: i64,
    records: &'a [StateRecord],
) -> EventWrite<'a> {
    EventWrite {
        key: k,
        marker,
        now_ms,
        retention: RETENTION,
        records,
    }
}

fn assert_lease_lost<T: std::fmt::Debug>(result: Result<T, BackendError>, what: &str) {
    match result {
        Err(e @ BackendError::LeaseLost { .. }) => assert!(!e.is_retryable()),
        other => panic!("{what}: expected LeaseLost, got {other:?}"),
    }
}

/// Claim, apply under the claim (fenced), then the key is applied: a claim is
/// `AlreadyDone` and an unfenced apply a duplicate.
pub async fn dedupe_claim_apply_duplicate<D: DedupeStore, S: StateStore>((dedupe, state): (D, S)) {
    let k = key("subscription");
    let token = claimed(dedupe.claim(&k, T0, LEASE).await.expect("claim"));
    let records = [record(&k.tenant, "subscription", "sub_1", 5, "evt_a")];
    let applied = state
        .apply(&event_write(&k, Marker::Fenced(&token), T0 + 10, &records))
        .await
        .expect("apply");
    assert_eq!(applied, ApplyOutcome::Applied(vec![WriteOutcome::Written]));
    assert_eq!(
        dedupe.claim(&k, T0 + 20, LEASE).await.expect("claim"),
        Claim::AlreadyDone
    );
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::IfAbsent, T0 + 30, &records))
            .await
            .expect("apply"),
        ApplyOutcome::Duplicate
    );
}

/// A held lease makes other claims answer `InProgressElsewhere` with the lease end, up to
/// and including the lease end (expiry is strictly "ended before now"); an unfenced apply
/// meets it too, and writes nothing.
pub async fn dedupe_in_progress_elsewhere<D: DedupeStore, S: StateStore>((dedupe, state): (D, S)) {
    let k = key("invoice");
    claimed(dedupe.claim(&k, T0, LEASE).await.expect("claim"));
    let until = T0 + LEASE.as_millis() as i64;
    for at in [T0, T0 + 1, until] {
        assert_eq!(
            dedupe.claim(&k, at, LEASE).await.expect("claim"),
            Claim::InProgressElsewhere { until_ms: until },
            "claim at {at}"
        );
    }
    let records = [record(&k.tenant, "invoice", "in_1", 5, "evt_a")];
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::IfAbsent, T0 + 1, &records))
            .await
            .expect("apply"),
        ApplyOutcome::HeldElsewhere { until_ms: until }
    );
    assert_eq!(
        state.get(&k.tenant, "invoice", "in_1").await.expect("get"),
        None
    );
}

/// After the lease ended another worker takes over with a new token. The old token can
/// then neither apply (a lost lease writes nothing), nor renew, nor release; the new one
/// applies.
pub async fn dedupe_expired_lease_takeover_and_fencing<D: DedupeStore, S: StateStore>(
    (dedupe, state): (D, S),
) {
    let k = key("payment_intent");
    let old = claimed(dedupe.claim(&k, T0, LEASE).await.expect("claim"));
    let later = T0 + LEASE.as_millis() as i64 + 1;
    let new = claimed(dedupe.claim(&k, later, LEASE).await.expect("takeover"));
    assert_ne!(old, new, "takeover gets a fresh token");

    let records = [
        record(&k.tenant, "payment_intent", "pi_1", 5, "evt_a"),
        record(&k.tenant, "charge", "ch_1", 5, "evt_a"),
    ];
    assert_lease_lost(
        state
            .apply(&event_write(&k, Marker::Fenced(&old), later + 1, &records))
            .await,
        "apply with the old token",
    );
    for (kind, id) in [("payment_intent", "pi_1"), ("charge", "ch_1")] {
        assert_eq!(
            state.get(&k.tenant, kind, id).await.expect("get"),
            None,
            "a lost lease wrote {kind} {id}"
        );
    }
    assert_lease_lost(
        dedupe.renew(&k, &old, later + 1, LEASE).await,
        "renew with the old token",
    );
    dedupe.release(&k, &old).await.expect("stale release is Ok");
    assert_eq!(
        dedupe.claim(&k, later + 2, LEASE).await.expect("claim"),
        Claim::InProgressElsewhere {
            until_ms: later + LEASE.as_millis() as i64
        },
        "stale release had no effect"
    );

    let applied = state
        .apply(&event_write(&k, Marker::Fenced(&new), later + 3, &records))
        .await
        .expect("the new token applies");
    assert_eq!(
        applied,
        ApplyOutcome::Applied(vec![WriteOutcome::Written, WriteOutcome::Written])
    );
    assert_eq!(
        dedupe.claim(&k, later + 4, LEASE).await.expect("claim"),
        Claim::AlreadyDone
    );
}

/// An applied key is a duplicate until `now + retention`, then can be claimed again.
pub async fn dedupe_retention_expiry<D: DedupeStore, S: StateStore>((dedupe, state): (D, S)) {
    let k = key("charge");
    let retention = Duration::from_secs(60);
    let write = EventWrite {
        retention,
        ..event_write(&k, Marker::IfAbsent, T0, &[])
    };
    assert_eq!(
        state.apply(&write).await.expect("apply"),
        ApplyOutcome::Applied(vec![])
    );
    let kept_until = T0 + 60_000;
    assert_eq!(
        dedupe
            .claim(&k, kept_until - 1, LEASE)
            .await
            .expect("claim"),
        Claim::AlreadyDone
    );
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::IfAbsent, kept_until - 1, &[]))
            .await
            .expect("apply"),
        ApplyOutcome::Duplicate
    );
    claimed(
        dedupe
            .claim(&k, kept_until + 1, LEASE)
            .await
            .expect("claim"),
    );
}

/// Release lets the key be claimed again at once; a release of an absent key is Ok.
pub async fn dedupe_release<D: DedupeStore, S: StateStore>((dedupe, _state): (D, S)) {
    let k = key("customer");
    let token = claimed(dedupe.claim(&k, T0, LEASE).await.expect("claim"));
    dedupe.release(&k, &token).await.expect("release");
    let again = claimed(dedupe.claim(&k, T0 + 1, LEASE).await.expect("claim"));
    assert_ne!(again, token);

    dedupe
        .release(&key("customer"), &FencingToken::new())
        .await
        .expect("release of an absent key is Ok");
}

/// A renewal moves the lease end to `now + lease`; only the holder can renew.
pub async fn dedupe_renew_extends_the_lease<D: DedupeStore, S: StateStore>(
    (dedupe, _state): (D, S),
) {
    let k = key("renew");
    let token = claimed(dedupe.claim(&k, T0, LEASE).await.expect("claim"));
    let renewed_at = T0 + 20_000;
    dedupe
        .renew(&k, &token, renewed_at, LEASE)
        .await
        .expect("renew");
    let until = renewed_at + LEASE.as_millis() as i64;
    assert_eq!(
        dedupe
            .claim(&k, T0 + LEASE.as_millis() as i64 + 1, LEASE)
            .await
            .expect("claim"),
        Claim::InProgressElsewhere { until_ms: until },
        "the first lease would have ended; the renewed one holds"
    );
    assert_lease_lost(
        dedupe
            .renew(&k, &FencingToken::new(), renewed_at, LEASE)
            .await,
        "renew with a made-up token",
    );
    assert_lease_lost(
        dedupe
            .renew(&key("renew"), &FencingToken::new(), T0, LEASE)
            .await,
        "renew of an absent key",
    );
}

/// A fenced apply without the claim (absent key, made-up token) is `LeaseLost` and writes
/// nothing.
pub async fn dedupe_fenced_apply_requires_claim<D: DedupeStore, S: StateStore>(
    (dedupe, state): (D, S),
) {
    let absent = key("invoice");
    let records = [record(&absent.tenant, "invoice", "in_1", 5, "evt_a")];
    assert_lease_lost(
        state
            .apply(&event_write(
                &absent,
                Marker::Fenced(&FencingToken::new()),
                T0,
                &records,
            ))
            .await,
        "apply of an absent key",
    );

    let k = key("invoice");
    claimed(dedupe.claim(&k, T0, LEASE).await.expect("claim"));
    assert_lease_lost(
        state
            .apply(&event_write(
                &k,
                Marker::Fenced(&FencingToken::new()),
                T0 + 1,
                &records,
            ))
            .await,
        "apply with a made-up token",
    );
    assert_eq!(
        state
            .get(&absent.tenant, "invoice", "in_1")
            .await
            .expect("get"),
        None
    );
}

/// Keys that differ only in handler or tenant are independent.
pub async fn dedupe_keys_independent<D: DedupeStore, S: StateStore>((dedupe, state): (D, S)) {
    let a = key("subscription");
    let other_handler = DedupeKey {
        handler: "invoice".to_owned(),
        ..a.clone()
    };
    let other_tenant = DedupeKey {
        tenant: unique("tenant"),
        ..a.clone()
    };
    state
        .apply(&event_write(&a, Marker::IfAbsent, T0, &[]))
        .await
        .expect("apply");
    claimed(
        dedupe
            .claim(&other_handler, T0, LEASE)
            .await
            .expect("claim"),
    );
    assert_eq!(
        state
            .apply(&event_write(&other_tenant, Marker::IfAbsent, T0, &[]))
            .await
            .expect("apply"),
        ApplyOutcome::Applied(vec![])
    );
}

/// Of N concurrent claimers of one key exactly one wins; the others see it in progress.
pub async fn dedupe_concurrent_claims_one_winner<D: DedupeStore, S: StateStore>(
    (dedupe, _state): (D, S),
) {
    const N: usize = 16;
    let store = Arc::new(dedupe);
    for round in 0..3 {
        let k = key("concurrent");
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let tasks: Vec<_> = (0..N)
            .map(|_| {
                let store = Arc::clone(&store);
                let k = k.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    store.claim(&k, T0, LEASE).await
                })
            })
            .collect();
        let mut winners = 0;
        let mut busy = 0;
        for t in tasks {
            match t.await.expect("task").expect("claim") {
                Claim::Claimed(_) => winners += 1,
                Claim::InProgressElsewhere { until_ms } => {
                    assert_eq!(until_ms, T0 + LEASE.as_millis() as i64);
                    busy += 1;
                }
                Claim::AlreadyDone => panic!("nobody completed"),
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one winner");
        assert_eq!(busy, N - 1);
    }
}

// ---------------------------------------------------------------------------------------
// Apply cases: an event's marker and records in one commit
// ---------------------------------------------------------------------------------------

/// An apply writes the marker and every record; a second apply of the same event is a
/// duplicate that writes nothing, even with other (newer) records.
pub async fn apply_writes_marker_and_records_together<D: DedupeStore, S: StateStore>(
    (_dedupe, state): (D, S),
) {
    let k = key("subscription");
    let t = k.tenant.clone();
    let first = [
        record(&t, "subscription", "sub_1", 5, "evt_a"),
        record(&t, "invoice", "in_1", 5, "evt_a"),
    ];
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::IfAbsent, T0, &first))
            .await
            .expect("apply"),
        ApplyOutcome::Applied(vec![WriteOutcome::Written, WriteOutcome::Written])
    );
    let newer = [
        record(&t, "subscription", "sub_1", 9, "evt_b"),
        record(&t, "invoice", "in_2", 9, "evt_b"),
    ];
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::IfAbsent, T0 + 1, &newer))
            .await
            .expect("apply"),
        ApplyOutcome::Duplicate
    );
    assert_eq!(
        state.get(&t, "subscription", "sub_1").await.expect("get"),
        Some(first[0].clone()),
        "a duplicate changes nothing"
    );
    assert_eq!(state.get(&t, "invoice", "in_2").await.expect("get"), None);
}

/// N workers applying one event at once: exactly one applies, the others see a duplicate,
/// and the stored record is the winner's. A retryable failure (DynamoDB cancels one of two
/// conflicting transactions) is tried again, as the worker does.
pub async fn apply_concurrent_same_event_writes_once<D: DedupeStore, S: StateStore>(
    (_dedupe, state): (D, S),
) {
    const N: usize = 8;
    let state = Arc::new(state);
    for round in 0..3 {
        let k = key("concurrent");
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let state = Arc::clone(&state);
                let k = k.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    // Each worker writes its own version, so the stored one names the winner.
                    let mut mine = record(&k.tenant, "subscription", "sub_1", 5, "evt_a");
                    mine.doc = json!({ "writer": i });
                    let records = [mine];
                    barrier.wait().await;
                    for _attempt in 0..20 {
                        match state
                            .apply(&event_write(&k, Marker::IfAbsent, T0, &records))
                            .await
                        {
                            Err(e) if e.is_retryable() => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            other => return (i, other.expect("apply")),
                        }
                    }
                    panic!("apply kept failing");
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("task") {
                (i, ApplyOutcome::Applied(outcomes)) => {
                    assert_eq!(outcomes, vec![WriteOutcome::Written]);
                    winners.push(i);
                }
                (_, ApplyOutcome::Duplicate) => {}
                (_, other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one apply");
        let stored = state
            .get(&k.tenant, "subscription", "sub_1")
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored.doc, json!({ "writer": winners[0] }));
    }
}

/// A record older than the stored one is skipped as stale without failing the rest: the
/// other records and the marker are written.
pub async fn apply_skips_stale_records<D: DedupeStore, S: StateStore>((_dedupe, state): (D, S)) {
    let k = key("payment");
    let t = k.tenant.clone();
    let stored = record(&t, "payment_intent", "pi_1", 10, "evt_z");
    assert_eq!(
        state.put_if_newer(&stored).await.expect("put"),
        WriteOutcome::Written
    );
    let records = [
        record(&t, "charge", "ch_1", 5, "evt_a"),
        record(&t, "payment_intent", "pi_1", 5, "evt_a"),
        record(&t, "invoice", "in_1", 5, "evt_a"),
    ];
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::IfAbsent, T0, &records))
            .await
            .expect("apply"),
        ApplyOutcome::Applied(vec![
            WriteOutcome::Written,
            WriteOutcome::Stale,
            WriteOutcome::Written
        ])
    );
    assert_eq!(
        state.get(&t, "payment_intent", "pi_1").await.expect("get"),
        Some(stored)
    );
    for (kind, id) in [("charge", "ch_1"), ("invoice", "in_1")] {
        assert!(state.get(&t, kind, id).await.expect("get").is_some());
    }
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::IfAbsent, T0 + 1, &records))
            .await
            .expect("apply"),
        ApplyOutcome::Duplicate,
        "the marker was written with the fresh records"
    );

    // Every record stale: still applied (the marker), nothing written.
    let all_stale = key("payment");
    let old = [record(
        &all_stale.tenant,
        "payment_intent",
        "pi_1",
        1,
        "evt_a",
    )];
    state
        .put_if_newer(&record(
            &all_stale.tenant,
            "payment_intent",
            "pi_1",
            2,
            "evt_b",
        ))
        .await
        .expect("put");
    assert_eq!(
        state
            .apply(&event_write(&all_stale, Marker::IfAbsent, T0, &old))
            .await
            .expect("apply"),
        ApplyOutcome::Applied(vec![WriteOutcome::Stale])
    );
}

/// Reprocessing overwrites the marker of an applied event and writes its records newer-wins.
pub async fn apply_overwrite_reapplies<D: DedupeStore, S: StateStore>((_dedupe, state): (D, S)) {
    let k = key("subscription");
    let t = k.tenant.clone();
    let first = [record(&t, "subscription", "sub_1", 5, "evt_a")];
    state
        .apply(&event_write(&k, Marker::IfAbsent, T0, &first))
        .await
        .expect("apply");
    let newer = [record(&t, "subscription", "sub_1", 6, "evt_a")];
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::Overwrite, T0 + 1, &newer))
            .await
            .expect("apply"),
        ApplyOutcome::Applied(vec![WriteOutcome::Written])
    );
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::Overwrite, T0 + 2, &first))
            .await
            .expect("apply"),
        ApplyOutcome::Applied(vec![WriteOutcome::Stale])
    );
    assert_eq!(
        state.get(&t, "subscription", "sub_1").await.expect("get"),
        Some(newer[0].clone())
    );
}

/// An apply larger than one DynamoDB transaction (100 items) is still applied once.
pub async fn apply_many_records<D: DedupeStore, S: StateStore>((_dedupe, state): (D, S)) {
    let k = key("bulk");
    let records: Vec<StateRecord> = (0..130)
        .map(|i| record(&k.tenant, "invoice", &format!("in_{i:03}"), 5, "evt_a"))
        .collect();
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::IfAbsent, T0, &records))
            .await
            .expect("apply"),
        ApplyOutcome::Applied(vec![WriteOutcome::Written; records.len()])
    );
    assert_eq!(
        state.export(Some(&k.tenant)).await.expect("export").len(),
        records.len()
    );
    assert_eq!(
        state
            .apply(&event_write(&k, Marker::IfAbsent, T0 + 1, &records))
            .await
            .expect("apply"),
        ApplyOutcome::Duplicate
    );
}

// ---------------------------------------------------------------------------------------
// State cases
// ---------------------------------------------------------------------------------------

fn record(tenant: &str, kind: &str, id: &str, as_of_ms: i64, tiebreak: &str) -> StateRecord {
    StateRecord {
        tenant: tenant.to_owned(),
        kind: kind.to_owned(),
        id: id.to_owned(),
        customer: Some("cus_1".to_owned()),
        as_of_ms,
        tiebreak: tiebreak.to_owned(),
        doc: json!({ "status": "active", "as_of": as_of_ms, "tb": tiebreak }),
    }
}

/// A first write is `Written` and reads back equal (nested JSON doc, customer None too).
pub async fn state_put_get_roundtrip<S: StateStore>(store: S) {
    let tenant = unique("t");
    let mut r = record(&tenant, "subscription", "sub_1", T0, "evt_a");
    r.doc = json!({
        "status": "past_due",
        "items": [{ "price": "price_1", "quantity": 2 }],
        "cancel_at": null,
        "amount": 1999,
        "metadata": { "plan": "pro" },
    });
    assert_eq!(
        store.put_if_newer(&r).await.expect("put"),
        WriteOutcome::Written
    );
    assert_eq!(
        store
            .get(&tenant, "subscription", "sub_1")
            .await
            .expect("get"),
        Some(r)
    );
    assert_eq!(
        store
            .get(&tenant, "subscription", "sub_missing")
            .await
            .expect("get"),
        None
    );

    let mut no_customer = record(&tenant, "invoice", "in_1", T0, "evt_b");
    no_customer.customer = None;
    assert_eq!(
        store.put_if_newer(&no_customer).await.expect("put"),
        WriteOutcome::Written
    );
    assert_eq!(
        store.get(&tenant, "invoice", "in_1").await.expect("get"),
        Some(no_customer)
    );
}

/// Records keep the whole Stripe object as doc field `raw`: a small one whole, any field
/// readable; one too large for a DynamoDB item (an invoice with 600 long lines) with its
/// embedded list emptied, so the store accepts it and reads it back equal.
pub async fn state_keeps_raw_objects<S: StateStore>(store: S) {
    use stripe_worker::handlers::raw::RAW_LIMIT_BYTES;
    use stripe_worker::handlers::{Handler, payment::PaymentHandler};

    let tenant = unique("t");
    let line = json!({"id": "il_1", "object": "line_item", "description": "x".repeat(1000)});
    let invoice = |id: &str, lines: usize| {
        json!({"id": id, "object": "invoice", "customer": "cus_1", "status": "paid",
               "metadata": {"plan": "pro"},
               "lines": {"object": "list", "data": vec![line.clone(); lines], "has_more": false}})
    };
    for (id, lines) in [("in_small", 1), ("in_large", 600)] {
        let change = PaymentHandler
            .changes("invoice.paid", &invoice(id, lines))
            .expect("valid invoice")
            .remove(0);
        let r = StateRecord {
            tenant: tenant.clone(),
            kind: change.kind,
            id: change.id,
            customer: change.customer,
            as_of_ms: T0,
            tiebreak: "evt_raw".to_owned(),
            doc: change.doc,
        };
        assert!(serde_json::to_vec(&r.doc).expect("json").len() < RAW_LIMIT_BYTES + 4096);
        assert_eq!(
            store.put_if_newer(&r).await.expect("put"),
            WriteOutcome::Written
        );
        let stored = store
            .get(&tenant, "invoice", id)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored, r);
        assert_eq!(stored.doc["raw"]["metadata"]["plan"], "pro");
        let kept_lines = stored.doc["raw"]["lines"]["data"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(kept_lines, if lines == 1 { 1 } else { 0 }, "{id}");
    }
}

/// A newer as-of replaces; an older one is `Stale` and changes nothing.
pub async fn state_newer_wins_older_ignored<S: StateStore>(store: S) {
    let tenant = unique("t");
    let v1 = record(&tenant, "subscription", "sub_1", T0, "evt_a");
    let v2 = record(&tenant, "subscription", "sub_1", T0 + 1000, "evt_0");
    let old = record(&tenant, "subscription", "sub_1", T0 + 500, "evt_z");
    assert_eq!(
        store.put_if_newer(&v1).await.expect("put"),
        WriteOutcome::Written
    );
    assert_eq!(
        store.put_if_newer(&v2).await.expect("put"),
        WriteOutcome::Written
    );
    assert_eq!(
        store.put_if_newer(&old).await.expect("put"),
        WriteOutcome::Stale
    );
    assert_eq!(
        store.put_if_newer(&v1).await.expect("put"),
        WriteOutcome::Stale
    );
    assert_eq!(
        store
            .get(&tenant, "subscription", "sub_1")
            .await
            .expect("get"),
        Some(v2)
    );
}

/// With equal as-of the larger tiebreak wins; an equal version is `Stale` (replays are
/// no-ops).
pub async fn state_tiebreak_rule<S: StateStore>(store: S) {
    let tenant = unique("t");
    let b = record(&tenant, "invoice", "in_1", T0, "evt_b");
    let a = record(&tenant, "invoice", "in_1", T0, "evt_a");
    let c = record(&tenant, "invoice", "in_1", T0, "evt_c");
    assert_eq!(
        store.put_if_newer(&b).await.expect("put"),
        WriteOutcome::Written
    );
    assert_eq!(
        store.put_if_newer(&a).await.expect("put"),
        WriteOutcome::Stale
    );
    let mut same = b.clone();
    same.doc = json!({ "changed": true });
    assert_eq!(
        store.put_if_newer(&same).await.expect("put"),
        WriteOutcome::Stale
    );
    assert_eq!(
        store.get(&tenant, "invoice", "in_1").await.expect("get"),
        Some(b)
    );
    assert_eq!(
        store.put_if_newer(&c).await.expect("put"),
        WriteOutcome::Written
    );
    assert_eq!(
        store.get(&tenant, "invoice", "in_1").await.expect("get"),
        Some(c)
    );
}

/// `by_customer` returns the customer's records of every kind in (kind, id) order, and
/// follows a record that moved to another customer.
pub async fn state_by_customer<S: StateStore>(store: S) {
    let tenant = unique("t");
    let mut recs = Vec::new();
    for (kind, id, customer) in [
        ("subscription", "sub_2", "cus_a"),
        ("customer", "cus_a", "cus_a"),
        ("invoice", "in_1", "cus_a"),
        ("subscription", "sub_1", "cus_a"),
        ("invoice", "in_2", "cus_b"),
        ("customer", "cus_b", "cus_b"),
    ] {
        let mut r = record(&tenant, kind, id, T0, "evt_a");
        r.customer = Some(customer.to_owned());
        store.put_if_newer(&r).await.expect("put");
        recs.push(r);
    }
    let keys = |v: &[StateRecord]| -> Vec<(String, String)> {
        v.iter().map(|r| (r.kind.clone(), r.id.clone())).collect()
    };
    let a = store
        .by_customer(&tenant, "cus_a")
        .await
        .expect("by_customer");
    assert_eq!(
        keys(&a),
        [
            ("customer".to_owned(), "cus_a".to_owned()),
            ("invoice".to_owned(), "in_1".to_owned()),
            ("subscription".to_owned(), "sub_1".to_owned()),
            ("subscription".to_owned(), "sub_2".to_owned()),
        ]
    );
    assert!(a.iter().all(|r| recs.contains(r)), "full records returned");

    // sub_2 moves to cus_b with a newer version.
    let mut moved = record(&tenant, "subscription", "sub_2", T0 + 1, "evt_b");
    moved.customer = Some("cus_b".to_owned());
    assert_eq!(
        store.put_if_newer(&moved).await.expect("put"),
        WriteOutcome::Written
    );
    let a = store
        .by_customer(&tenant, "cus_a")
        .await
        .expect("by_customer");
    assert_eq!(a.len(), 3);
    assert!(!a.iter().any(|r| r.id == "sub_2"));
    let b = store
        .by_customer(&tenant, "cus_b")
        .await
        .expect("by_customer");
    assert_eq!(
        keys(&b),
        [
            ("customer".to_owned(), "cus_b".to_owned()),
            ("invoice".to_owned(), "in_2".to_owned()),
            ("subscription".to_owned(), "sub_2".to_owned()),
        ]
    );
    assert!(
        store
            .by_customer(&tenant, "cus_none")
            .await
            .expect("by_customer")
            .is_empty()
    );
}

/// `export` orders by (tenant, kind, id), with or without a tenant filter.
pub async fn state_export_ordering<S: StateStore>(store: S) {
    let t1 = format!("{}-a", unique("t"));
    let t2 = format!("{t1}-b"); // sorts right after t1
    let mut written = Vec::new();
    for (tenant, kind, id) in [
        (&t2, "invoice", "in_2"),
        (&t1, "subscription", "sub_9"),
        (&t1, "invoice", "in_3"),
        (&t2, "customer", "cus_1"),
        (&t1, "invoice", "in_10"),
        (&t1, "customer", "cus_1"),
    ] {
        let r = record(tenant, kind, id, T0, "evt_a");
        store.put_if_newer(&r).await.expect("put");
        written.push(r);
    }
    let mut expected = written.clone();
    expected.sort_by(|a, b| (&a.tenant, &a.kind, &a.id).cmp(&(&b.tenant, &b.kind, &b.id)));

    let all = store.export(None).await.expect("export");
    let ordered = all
        .windows(2)
        .all(|w| (&w[0].tenant, &w[0].kind, &w[0].id) < (&w[1].tenant, &w[1].kind, &w[1].id));
    assert!(
        ordered,
        "export(None) is in strict (tenant, kind, id) order"
    );
    let ours: Vec<_> = all
        .into_iter()
        .filter(|r| r.tenant == t1 || r.tenant == t2)
        .collect();
    assert_eq!(ours, expected);

    let only_t1 = store.export(Some(&t1)).await.expect("export");
    let expected_t1: Vec<_> = expected
        .iter()
        .filter(|r| r.tenant == t1)
        .cloned()
        .collect();
    assert_eq!(only_t1, expected_t1);
    // "in_10" < "in_3": plain string order, not natural order.
    assert_eq!(only_t1[1].id, "in_10");
}

/// The same (kind, id) in two tenants are two records: writes, reads and queries never
/// cross tenants.
pub async fn state_tenant_isolation<S: StateStore>(store: S) {
    let t1 = unique("t");
    let t2 = unique("t");
    let r1 = record(&t1, "subscription", "sub_1", T0 + 1000, "evt_a");
    let mut r2 = record(&t2, "subscription", "sub_1", T0, "evt_a");
    r2.doc = json!({ "status": "canceled" });
    assert_eq!(
        store.put_if_newer(&r1).await.expect("put"),
        WriteOutcome::Written
    );
    // Older than r1 but in another tenant: must be written, not compared with r1.
    assert_eq!(
        store.put_if_newer(&r2).await.expect("put"),
        WriteOutcome::Written
    );
    assert_eq!(
        store.get(&t1, "subscription", "sub_1").await.expect("get"),
        Some(r1.clone())
    );
    assert_eq!(
        store.get(&t2, "subscription", "sub_1").await.expect("get"),
        Some(r2.clone())
    );
    assert_eq!(
        store.by_customer(&t1, "cus_1").await.expect("by_customer"),
        vec![r1.clone()]
    );
    assert_eq!(store.export(Some(&t2)).await.expect("export"), vec![r2]);
}

/// `by_kind_status` lists one kind's records of one status in id order, a page at a time:
/// pages chained by their last id hold every match once (no gap, no duplicate), and
/// records of another kind, status or tenant, or without a status, are never listed. A
/// record whose status changes moves to the other list. The backend's answer equals the
/// trait's reference (the default method, over `export`).
pub async fn state_by_kind_status<S: StateStore>(store: S) {
    let store = Arc::new(store);
    let tenant = unique("t");
    let other_tenant = unique("t");
    let put = |tenant: &str, kind: &str, id: &str, as_of: i64, doc: serde_json::Value| {
        let mut r = record(tenant, kind, id, as_of, "evt_a");
        r.doc = doc;
        r
    };
    // "sub_10" < "sub_2": plain string order, not natural order.
    let active: BTreeSet<String> = (1..=11).map(|i| format!("sub_{i}")).collect();
    let mut writes = Vec::new();
    for id in &active {
        writes.push(put(
            &tenant,
            "subscription",
            id,
            T0,
            json!({"status": "active"}),
        ));
    }
    writes.push(put(
        &tenant,
        "subscription",
        "sub_pd",
        T0,
        json!({"status": "past_due"}),
    ));
    writes.push(put(
        &tenant,
        "invoice",
        "sub_5x",
        T0,
        json!({"status": "active"}),
    ));
    writes.push(put(
        &tenant,
        "subscription",
        "sub_0",
        T0,
        json!({"state": "active"}),
    ));
    writes.push(put(
        &other_tenant,
        "subscription",
        "sub_3",
        T0,
        json!({"status": "active"}),
    ));
    for r in &writes {
        assert_eq!(
            store.put_if_newer(r).await.expect("put"),
            WriteOutcome::Written
        );
    }

    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..10 {
        let page = store
            .by_kind_status(&tenant, "subscription", "active", after.as_deref(), 4)
            .await
            .expect("by_kind_status");
        assert!(page.len() <= 4, "a page holds at most limit records");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        listed.extend(page);
    }
    let ids: Vec<String> = listed.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        ids,
        active.iter().cloned().collect::<Vec<_>>(),
        "every match once, in id order"
    );
    assert!(
        listed.iter().all(|r| writes.contains(r)),
        "whole records returned"
    );

    // The status changes: the record leaves `active` and joins `canceled`.
    let canceled = put(
        &tenant,
        "subscription",
        "sub_2",
        T0 + 1,
        json!({"status": "canceled"}),
    );
    assert_eq!(
        store.put_if_newer(&canceled).await.expect("put"),
        WriteOutcome::Written
    );
    let page = store
        .by_kind_status(&tenant, "subscription", "active", Some("sub_11"), 100)
        .await
        .expect("by_kind_status");
    let ids: Vec<&str> = page.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "sub_3", "sub_4", "sub_5", "sub_6", "sub_7", "sub_8", "sub_9"
        ]
    );
    assert_eq!(
        store
            .by_kind_status(&tenant, "subscription", "canceled", None, 100)
            .await
            .expect("by_kind_status"),
        vec![canceled]
    );
    assert!(
        store
            .by_kind_status(&tenant, "subscription", "unpaid", None, 100)
            .await
            .expect("by_kind_status")
            .is_empty()
    );

    // The same answers as the trait's reference, for a few cursors.
    struct Reference<S>(Arc<S>);
    impl<S: StateStore> StateStore for Reference<S> {
        async fn apply(&self, w: &EventWrite<'_>) -> Result<ApplyOutcome, BackendError> {
            self.0.apply(w).await
        }
        async fn put_if_newer(&self, r: &StateRecord) -> Result<WriteOutcome, BackendError> {
            self.0.put_if_newer(r).await
        }
        async fn get(
            &self,
            t: &str,
            k: &str,
            i: &str,
        ) -> Result<Option<StateRecord>, BackendError> {
            self.0.get(t, k, i).await
        }
        async fn by_customer(&self, t: &str, c: &str) -> Result<Vec<StateRecord>, BackendError> {
            self.0.by_customer(t, c).await
        }
        async fn export(&self, t: Option<&str>) -> Result<Vec<StateRecord>, BackendError> {
            self.0.export(t).await
        }
    }
    for (after, limit) in [
        (None, 1),
        (Some("sub_1"), 3),
        (Some("sub_9"), 10),
        (Some("a"), 2),
    ] {
        assert_eq!(
            store
                .by_kind_status(&tenant, "subscription", "active", after, limit)
                .await
                .expect("by_kind_status"),
            Reference(Arc::clone(&store))
                .by_kind_status(&tenant, "subscription", "active", after, limit)
                .await
                .expect("reference"),
            "after {after:?}, limit {limit}"
        );
    }
}

/// Concurrent writers of one key leave the newest version, and exactly the writes that
/// raised the stored version report `Written`.
pub async fn state_concurrent_writers_keep_newest<S: StateStore>(store: S) {
    let store = Arc::new(store);
    let tenant = unique("t");
    const N: i64 = 16;
    let barrier = Arc::new(tokio::sync::Barrier::new(N as usize));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            // Versions in a scrambled order.
            let as_of = T0 + (i * 7 % N);
            let r = record(&tenant, "subscription", "sub_1", as_of, "evt_a");
            tokio::spawn(async move {
                barrier.wait().await;
                store.put_if_newer(&r).await
            })
        })
        .collect();
    let mut written = 0;
    for t in tasks {
        if t.await.expect("task").expect("put") == WriteOutcome::Written {
            written += 1;
        }
    }
    assert!(written >= 1);
    let stored = store
        .get(&tenant, "subscription", "sub_1")
        .await
        .expect("get")
        .expect("record");
    assert_eq!(stored.as_of_ms, T0 + N - 1, "the newest version is stored");
}

// ---------------------------------------------------------------------------------------
// Archive cases
// ---------------------------------------------------------------------------------------

/// `range(from, to)` returns the envelopes with `from <= time < to`, oldest first,
/// whatever the append order.
pub async fn archive_range<A: Archive>(archive: A) {
    let marker = unique("arc");
    let env = |n: u32| format!(r#"{{"marker":"{marker}","n":{n}}}"#);
    let base = T0 + (uuid::Uuid::new_v4().as_u128() % 1_000_000) as i64 * 1000;
    for (n, t) in [
        (3, base + 30),
        (1, base + 10),
        (0, base),
        (2, base + 20),
        (4, base + 40),
    ] {
        archive.append(&env(n), t).await.expect("append");
    }
    let ours =
        |v: Vec<String>| -> Vec<String> { v.into_iter().filter(|e| e.contains(&marker)).collect() };
    assert_eq!(
        ours(archive.range(base + 10, base + 40).await.expect("range")),
        [env(1), env(2), env(3)]
    );
    assert_eq!(
        ours(archive.range(base, base + 41).await.expect("range")),
        [env(0), env(1), env(2), env(3), env(4)]
    );
    assert!(ours(archive.range(base + 41, base + 100).await.expect("range")).is_empty());
    assert!(ours(archive.range(base + 20, base + 20).await.expect("range")).is_empty());
}

/// Applying versions of one record in any order stores the greatest (as-of, tiebreak),
/// and each write reports `Written` exactly when it raised the stored version (a model
/// check, for property tests that feed random orders).
pub async fn state_any_order_converges<S: StateStore>(store: &S, versions: &[(i64, String)]) {
    let tenant = unique("t");
    let mut best: Option<(i64, String)> = None;
    for (as_of, tiebreak) in versions {
        let r = record(&tenant, "invoice", "in_1", T0 + as_of, tiebreak);
        let v = (*as_of, tiebreak.clone());
        let expected = if best.as_ref().is_none_or(|b| &v > b) {
            best = Some(v);
            WriteOutcome::Written
        } else {
            WriteOutcome::Stale
        };
        assert_eq!(
            store.put_if_newer(&r).await.expect("put"),
            expected,
            "writing {as_of}/{tiebreak}"
        );
    }
    let stored = store.get(&tenant, "invoice", "in_1").await.expect("get");
    match best {
        None => assert_eq!(stored, None),
        Some((as_of, tiebreak)) => {
            let stored = stored.expect("record");
            assert_eq!((stored.as_of_ms, stored.tiebreak), (T0 + as_of, tiebreak));
        }
    }
}
