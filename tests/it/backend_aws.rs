//! The AWS backends against a real local AWS emulator (moto, started by `tests/run.sh`),
//! plus the faults no emulator can produce (throttling, partial batch failures) through
//! `aws-smithy-mocks`.

use crate::aws_support;
use crate::conformance;

use std::time::Duration;

use aws_support::{make_queue, make_tables, queue_spec, sdk_config};
use stripe_worker::backend::aws::{
    AwsNames, DynamoDedupe, DynamoState, EventBridgeBus, QueueUrls, SqsQueue,
};
use stripe_worker::backend::{
    ApplyOutcome, BackendError, BusEntry, Claim, DeadLetterReason, DedupeKey, DedupeStore,
    EventWrite, FencingToken, Marker, Queue, Receipt, ReceivedMessage, StateRecord, StateStore,
    WriteOutcome, dlq_attributes,
};

const SECOND: Duration = Duration::from_secs(1);

// ------------------------------------------------- the conformance suite against moto

impl conformance::DlqProbe for SqsQueue {
    async fn dlq_messages(&self) -> Vec<ReceivedMessage> {
        // Receive from the DLQ as from any queue, until a receive comes back empty.
        let dlq = SqsQueue::new(
            self.client().clone(),
            QueueUrls {
                queue: self.urls().dlq.clone(),
                dlq: self.urls().dlq.clone(),
            },
        );
        let mut out = Vec::new();
        loop {
            let batch = dlq.receive(10, SECOND).await.expect("receive from the DLQ");
            if batch.is_empty() {
                return out;
            }
            out.extend(batch);
        }
    }
}

macro_rules! queue_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let config = sdk_config().await;
            conformance::$case(|spec| {
                let config = config.clone();
                async move { make_queue(&config, &spec).await }
            })
            .await;
        }
    )*};
}

/// Both stores, for the dedupe and apply cases.
fn pair(dedupe: DynamoDedupe, state: DynamoState) -> (DynamoDedupe, DynamoState) {
    (dedupe, state)
}

/// The state store alone, for the state cases.
fn state_only(_dedupe: DynamoDedupe, state: DynamoState) -> DynamoState {
    state
}

macro_rules! store_cases {
    ($store:ident => $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let config = sdk_config().await;
            let names = make_tables(&config, stringify!($store)).await;
            let client = aws_sdk_dynamodb::Client::new(&config);
            let dedupe = DynamoDedupe::new(client.clone(), names.dedupe_table());
            let state = DynamoState::new(client, names.state_table(), names.dedupe_table());
            conformance::$case($store(dedupe, state)).await;
        }
    )*};
}

// Not run here: `queue_stale_receipt_rejected`. SQS documents that an earlier receipt
// "might" still act on a message received again since, and moto accepts any past receipt;
// the suite itself says an SQS-backed queue cannot promise it.
queue_cases!(
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

store_cases!(pair =>
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

store_cases!(state_only =>
    state_put_get_roundtrip,
    state_newer_wins_older_ignored,
    state_tiebreak_rule,
    state_by_customer,
    state_by_kind_status,
    state_export_ordering,
    state_tenant_isolation,
    state_concurrent_writers_keep_newest,
);

// ---------------------------------------------------------------- SQS against moto

#[tokio::test]
async fn sqs_send_receive_delete() {
    let config = sdk_config().await;
    let queue = make_queue(&config, &queue_spec("sqs-basic", 30 * SECOND, 5)).await;
    let before = aws_support::now_ms();
    queue.send(r#"{"n":1}"#, Duration::ZERO).await.unwrap();
    queue.send(r#"{"n":2}"#, Duration::ZERO).await.unwrap();

    let mut received = Vec::new();
    for _ in 0..5 {
        received.extend(queue.receive(10, SECOND).await.unwrap());
        if received.len() == 2 {
            break;
        }
    }
    assert_eq!(received.len(), 2);
    let mut bodies: Vec<&str> = received.iter().map(|m| m.body.as_str()).collect();
    bodies.sort();
    assert_eq!(bodies, vec![r#"{"n":1}"#, r#"{"n":2}"#]);
    for m in &received {
        assert_eq!(m.receive_count, 1);
        // SentTimestamp is set by the emulator's clock, in ms.
        assert!(
            (m.sent_at_ms - before).abs() < 60_000,
            "sent_at_ms {}",
            m.sent_at_ms
        );
    }
    let (stats, dlq) = queue.stats().await.unwrap();
    assert_eq!((stats.visible, stats.in_flight), (0, 2));
    assert_eq!(dlq.visible, 0);
    assert_eq!(stats.oldest_age_secs, None);

    let receipts: Vec<Receipt> = received.iter().map(|m| m.receipt.clone()).collect();
    let failures = queue.delete_batch(&receipts).await.unwrap();
    assert!(failures.failed.is_empty(), "{:?}", failures.failed);
    let (stats, _) = queue.stats().await.unwrap();
    assert_eq!((stats.visible, stats.in_flight), (0, 0));
}

#[tokio::test]
async fn sqs_same_receipt_twice_in_one_batch_is_not_a_duplicate_id() {
    let config = sdk_config().await;
    let queue = make_queue(&config, &queue_spec("sqs-dupid", 30 * SECOND, 5)).await;
    queue.send("x", Duration::ZERO).await.unwrap();
    let m = queue.receive(1, SECOND).await.unwrap().remove(0);
    let failures = queue
        .delete_batch(&[m.receipt.clone(), m.receipt.clone()])
        .await
        .unwrap();
    assert!(failures.failed.is_empty(), "{:?}", failures.failed);
    let (stats, _) = queue.stats().await.unwrap();
    assert_eq!(stats.visible + stats.in_flight, 0);
}

#[tokio::test]
async fn sqs_release_makes_visible_again_and_counts_receives() {
    let config = sdk_config().await;
    let queue = make_queue(&config, &queue_spec("sqs-vis", 30 * SECOND, 5)).await;
    queue.send("again", Duration::ZERO).await.unwrap();
    let first = queue.receive(1, SECOND).await.unwrap().remove(0);
    // Invisible for 30 s: nothing to receive now.
    assert!(queue.receive(1, Duration::ZERO).await.unwrap().is_empty());

    let failures = queue
        .change_visibility_batch(&[(first.receipt.clone(), Duration::ZERO)])
        .await
        .unwrap();
    assert!(failures.failed.is_empty(), "{:?}", failures.failed);
    let second = queue.receive(1, SECOND).await.unwrap().remove(0);
    assert_eq!(second.message_id, first.message_id);
    assert_eq!(second.receive_count, 2);
    assert_eq!(second.sent_at_ms, first.sent_at_ms);

    // A heartbeat extension keeps it hidden.
    let failures = queue
        .change_visibility_batch(&[(second.receipt.clone(), 60 * SECOND)])
        .await
        .unwrap();
    assert!(failures.failed.is_empty());
    assert!(queue.receive(1, Duration::ZERO).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqs_dead_letter_carries_the_reason_and_removes_the_message() {
    let config = sdk_config().await;
    let spec = queue_spec("sqs-dlq", 30 * SECOND, 5);
    let queue = make_queue(&config, &spec).await;
    queue.send(r#"{"bad":true}"#, Duration::ZERO).await.unwrap();
    let m = queue.receive(1, SECOND).await.unwrap().remove(0);
    let reason = DeadLetterReason {
        kind: "decode_error".into(),
        message: "x".repeat(5000),
        handler: Some("subscription".into()),
    };
    queue.dead_letter(&m, &reason).await.unwrap();

    let (stats, dlq_stats) = queue.stats().await.unwrap();
    assert_eq!(stats.visible + stats.in_flight, 0);
    assert_eq!(dlq_stats.visible, 1);

    let dlq = aws_support::dlq_of(&config, &queue);
    let dead = dlq.receive(1, SECOND).await.unwrap().remove(0);
    assert_eq!(dead.body, m.body);
    let attr = |k: &str| dead.attributes.get(k).cloned().unwrap_or_default();
    assert_eq!(attr(dlq_attributes::ERROR_KIND), "decode_error");
    assert!(attr(dlq_attributes::ERROR_MESSAGE).starts_with("xxx"));
    assert!(attr(dlq_attributes::ERROR_MESSAGE).len() < 5000);
    assert_eq!(attr(dlq_attributes::HANDLER), "subscription");
    assert_eq!(attr(dlq_attributes::SOURCE_QUEUE), spec.name);
    assert_eq!(attr(dlq_attributes::RECEIVE_COUNT), "1");
    assert_eq!(
        attr(dlq_attributes::FIRST_SEEN_MS),
        m.sent_at_ms.to_string()
    );
    let dead_at: i64 = attr(dlq_attributes::DEAD_LETTERED_MS).parse().unwrap();
    assert!(dead_at >= m.sent_at_ms);
}

#[tokio::test]
async fn sqs_send_with_delay_counts_as_delayed() {
    let config = sdk_config().await;
    let queue = make_queue(&config, &queue_spec("sqs-delay", 30 * SECOND, 5)).await;
    let id = queue.send("later", 60 * SECOND).await.unwrap();
    assert!(!id.is_empty());
    assert!(queue.receive(1, Duration::ZERO).await.unwrap().is_empty());
    let (stats, _) = queue.stats().await.unwrap();
    assert_eq!(stats.delayed, 1);
    assert_eq!(stats.visible, 0);
}

#[tokio::test]
async fn sqs_resolve_finds_queues_by_name_and_rejects_missing_ones() {
    let config = sdk_config().await;
    let spec = queue_spec("sqs-resolve", 30 * SECOND, 5);
    let made = make_queue(&config, &spec).await;
    let client = aws_sdk_sqs::Client::new(&config);
    let resolved = SqsQueue::resolve(client.clone(), &spec.name, &format!("{}-dlq", spec.name))
        .await
        .unwrap();
    assert_eq!(resolved.urls(), made.urls());
    assert_eq!(resolved.name(), spec.name);
    assert_eq!(made.name(), spec.name);

    let missing = SqsQueue::resolve(client, "t-no-such-queue", "x")
        .await
        .unwrap_err();
    assert!(
        matches!(missing, BackendError::Permanent { .. }),
        "{missing:?}"
    );
}

#[tokio::test]
async fn sqs_invalid_receipt_fails_per_entry() {
    let config = sdk_config().await;
    let queue = make_queue(&config, &queue_spec("sqs-badrcpt", 30 * SECOND, 5)).await;
    queue.send("y", Duration::ZERO).await.unwrap();
    let m = queue.receive(1, SECOND).await.unwrap().remove(0);
    let bogus = Receipt("not-a-receipt".into());
    let result = queue
        .change_visibility_batch(&[(m.receipt.clone(), Duration::ZERO), (bogus.clone(), SECOND)])
        .await
        .unwrap();
    assert_eq!(result.failed.len(), 1, "{:?}", result.failed);
    assert_eq!(result.failed[0].0, bogus);
    assert!(!result.failed[0].1.is_retryable());
}

// ---------------------------------------------------------- DynamoDB against moto

fn key(id: &str) -> DedupeKey {
    DedupeKey {
        tenant: "acme".into(),
        handler: "subscription".into(),
        dedupe_id: id.into(),
    }
}

/// Apply the event `k` under the claim `token` with no records: the claim becomes the
/// applied-marker, kept for `retention`.
async fn apply_fenced(
    state: &DynamoState,
    k: &DedupeKey,
    token: &FencingToken,
    now_ms: i64,
    retention: Duration,
) -> Result<ApplyOutcome, BackendError> {
    state
        .apply(&EventWrite {
            key: k,
            marker: Marker::Fenced(token),
            now_ms,
            retention,
            records: &[],
        })
        .await
}

fn stores(config: &aws_config::SdkConfig, names: &AwsNames) -> (DynamoDedupe, DynamoState) {
    let client = aws_sdk_dynamodb::Client::new(config);
    (
        DynamoDedupe::new(client.clone(), names.dedupe_table()),
        DynamoState::new(client, names.state_table(), names.dedupe_table()),
    )
}

#[tokio::test]
async fn dedupe_claim_lease_apply_and_retention() {
    let config = sdk_config().await;
    let names = make_tables(&config, "dedupe").await;
    let (store, state) = stores(&config, &names);
    let k = key("evt_1");
    let now = 1_700_000_000_000;
    let lease = 30 * SECOND;

    let Claim::Claimed(first) = store.claim(&k, now, lease).await.unwrap() else {
        panic!("fresh key must be claimable");
    };
    assert_eq!(
        store.claim(&k, now + 1, lease).await.unwrap(),
        Claim::InProgressElsewhere {
            until_ms: now + 30_000
        }
    );
    // The lease ran out: another worker takes over, and the first token is fenced off.
    let Claim::Claimed(second) = store.claim(&k, now + 30_001, lease).await.unwrap() else {
        panic!("an expired lease must be claimable");
    };
    assert_ne!(first, second);
    let lost = apply_fenced(&state, &k, &first, now + 30_002, 3600 * SECOND)
        .await
        .unwrap_err();
    assert!(matches!(lost, BackendError::LeaseLost { .. }), "{lost:?}");
    // A stale release changes nothing.
    store.release(&k, &first).await.unwrap();
    assert!(matches!(
        store.claim(&k, now + 30_003, lease).await.unwrap(),
        Claim::InProgressElsewhere { .. }
    ));

    apply_fenced(&state, &k, &second, now + 40_000, 3600 * SECOND)
        .await
        .unwrap();
    assert_eq!(
        store.claim(&k, now + 50_000, lease).await.unwrap(),
        Claim::AlreadyDone
    );
    // Retention is compared in code, to the millisecond.
    let end = now + 40_000 + 3_600_000;
    assert_eq!(
        store.claim(&k, end, lease).await.unwrap(),
        Claim::AlreadyDone
    );
    assert!(matches!(
        store.claim(&k, end + 1, lease).await.unwrap(),
        Claim::Claimed(_)
    ));
}

#[tokio::test]
async fn dedupe_release_frees_the_key_at_once() {
    let config = sdk_config().await;
    let names = make_tables(&config, "release").await;
    let (store, state) = stores(&config, &names);
    let k = key("evt_2");
    let now = 1_700_000_000_000;
    let Claim::Claimed(token) = store.claim(&k, now, 60 * SECOND).await.unwrap() else {
        panic!("fresh key must be claimable");
    };
    store.release(&k, &token).await.unwrap();
    let Claim::Claimed(again) = store.claim(&k, now + 1, 60 * SECOND).await.unwrap() else {
        panic!("a released key must be claimable");
    };
    // Releasing twice, or after the apply, is harmless.
    store.release(&k, &token).await.unwrap();
    apply_fenced(&state, &k, &again, now + 2, 60 * SECOND)
        .await
        .unwrap();
    store.release(&k, &again).await.unwrap();
    assert_eq!(
        store.claim(&k, now + 3, 60 * SECOND).await.unwrap(),
        Claim::AlreadyDone
    );
    // Other keys are independent.
    assert!(matches!(
        store.claim(&key("evt_3"), now, 60 * SECOND).await.unwrap(),
        Claim::Claimed(_)
    ));
}

#[tokio::test]
async fn dedupe_concurrent_claims_have_one_winner() {
    let config = sdk_config().await;
    let names = make_tables(&config, "race").await;
    let store = std::sync::Arc::new(DynamoDedupe::new(
        aws_sdk_dynamodb::Client::new(&config),
        names.dedupe_table(),
    ));
    let now = 1_700_000_000_000;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.claim(&key("evt_race"), now, 60 * SECOND).await })
        })
        .collect();
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            Claim::Claimed(_) => winners += 1,
            Claim::InProgressElsewhere { until_ms } => assert_eq!(until_ms, now + 60_000),
            Claim::AlreadyDone => panic!("nobody completed"),
        }
    }
    assert_eq!(winners, 1);
}

fn record(
    kind: &str,
    id: &str,
    customer: Option<&str>,
    as_of_ms: i64,
    tiebreak: &str,
) -> StateRecord {
    StateRecord {
        tenant: "acme".into(),
        kind: kind.into(),
        id: id.into(),
        customer: customer.map(str::to_owned),
        as_of_ms,
        tiebreak: tiebreak.into(),
        doc: serde_json::json!({ "as_of": as_of_ms, "tiebreak": tiebreak }),
    }
}

#[tokio::test]
async fn state_newer_wins_in_one_conditional_write() {
    let config = sdk_config().await;
    let names = make_tables(&config, "state").await;
    let store = DynamoState::new(
        aws_sdk_dynamodb::Client::new(&config),
        names.state_table(),
        names.dedupe_table(),
    );
    let put = |r: StateRecord| {
        let store = store.clone();
        async move { store.put_if_newer(&r).await.unwrap() }
    };
    assert_eq!(
        put(record("subscription", "sub_1", Some("cus_1"), 100, "evt_b")).await,
        WriteOutcome::Written
    );
    // Equal version: a replay is a no-op.
    assert_eq!(
        put(record("subscription", "sub_1", Some("cus_1"), 100, "evt_b")).await,
        WriteOutcome::Stale
    );
    // Same time, smaller tiebreak loses; larger wins.
    assert_eq!(
        put(record("subscription", "sub_1", Some("cus_1"), 100, "evt_a")).await,
        WriteOutcome::Stale
    );
    assert_eq!(
        put(record("subscription", "sub_1", Some("cus_1"), 100, "evt_c")).await,
        WriteOutcome::Written
    );
    // Older loses, later wins.
    assert_eq!(
        put(record("subscription", "sub_1", Some("cus_1"), 99, "evt_z")).await,
        WriteOutcome::Stale
    );
    assert_eq!(
        put(record("subscription", "sub_1", Some("cus_1"), 101, "evt_0")).await,
        WriteOutcome::Written
    );

    let got = store
        .get("acme", "subscription", "sub_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        record("subscription", "sub_1", Some("cus_1"), 101, "evt_0")
    );
    assert_eq!(
        store.get("acme", "subscription", "sub_2").await.unwrap(),
        None
    );
    assert_eq!(
        store.get("other", "subscription", "sub_1").await.unwrap(),
        None
    );
}

#[tokio::test]
async fn state_queries_by_customer_and_exports_in_order() {
    let config = sdk_config().await;
    let names = make_tables(&config, "export").await;
    let store = DynamoState::new(
        aws_sdk_dynamodb::Client::new(&config),
        names.state_table(),
        names.dedupe_table(),
    );
    let mut other_tenant = record("customer", "cus_1", Some("cus_1"), 1, "e");
    other_tenant.tenant = "globex".into();
    let records = vec![
        record("subscription", "sub_2", Some("cus_1"), 1, "e"),
        record("invoice", "in_1", Some("cus_1"), 1, "e"),
        record("customer", "cus_1", Some("cus_1"), 1, "e"),
        record("invoice", "in_9", Some("cus_2"), 1, "e"),
        record("price", "price_1", None, 1, "e"),
        record("invoice_item", "ii_1", Some("cus_1"), 1, "e"),
        other_tenant.clone(),
    ];
    for r in &records {
        assert_eq!(store.put_if_newer(r).await.unwrap(), WriteOutcome::Written);
    }

    let ids = |rs: Vec<StateRecord>| -> Vec<(String, String, String)> {
        rs.into_iter().map(|r| (r.tenant, r.kind, r.id)).collect()
    };
    let t = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    assert_eq!(
        ids(store.by_customer("acme", "cus_1").await.unwrap()),
        vec![
            t("acme", "customer", "cus_1"),
            t("acme", "invoice", "in_1"),
            t("acme", "invoice_item", "ii_1"),
            t("acme", "subscription", "sub_2"),
        ]
    );
    assert_eq!(
        ids(store.by_customer("globex", "cus_1").await.unwrap()),
        vec![t("globex", "customer", "cus_1")]
    );
    assert!(
        store
            .by_customer("acme", "cus_404")
            .await
            .unwrap()
            .is_empty()
    );

    let acme = store.export(Some("acme")).await.unwrap();
    assert_eq!(acme.len(), 6);
    assert!(
        acme.windows(2)
            .all(|w| (&w[0].kind, &w[0].id) < (&w[1].kind, &w[1].id))
    );
    let all = store.export(None).await.unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all.last().unwrap(), &other_tenant);
    assert_eq!(
        all[0].doc,
        serde_json::json!({ "as_of": 1, "tiebreak": "e" })
    );
}

// ------------------------------------------------------- EventBridge against moto

#[tokio::test]
async fn bus_rejects_oversized_entries_without_a_call_and_sends_the_rest() {
    let config = sdk_config().await;
    let (names, report) = aws_support::setup_prefix(&config, "bus-size").await;
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&config), names.bus())
        .with_max_request_bytes(400);
    let entry = |detail: String| BusEntry {
        source: "stripe.webhook".into(),
        detail_type: "test.payment".into(),
        detail,
        resources: vec![],
    };
    let entries = vec![
        entry(r#"{"n":1}"#.into()),
        entry(format!(r#"{{"pad":"{}"}}"#, "x".repeat(500))),
        entry(r#"{"n":3}"#.into()),
    ];
    let failures = stripe_worker::backend::Bus::publish(&bus, &entries)
        .await
        .unwrap();
    assert_eq!(failures.failed.len(), 1);
    assert_eq!(failures.failed[0].0, 1);
    assert!(!failures.failed[0].1.is_retryable());

    let queue = aws_support::queue_at(&config, &report.queue_urls.payment);
    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(queue.receive(10, SECOND).await.unwrap());
        if got.len() >= 2 {
            break;
        }
    }
    assert_eq!(got.len(), 2);
}

// --------------------------------------------------------------- faults, mocked

mod mocked {
    use super::*;
    use aws_sdk_eventbridge::operation::put_events::PutEventsOutput;
    use aws_sdk_eventbridge::types::PutEventsResultEntry;
    use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, DeleteMessageBatchResultEntry};
    use aws_smithy_mocks::{Rule, RuleMode, mock};
    use stripe_worker::backend::aws::PublishRetry;

    macro_rules! mocked_client {
        ($krate:ident, $rules:expr) => {{
            let mut interceptor =
                aws_smithy_mocks::MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
            for rule in $rules {
                interceptor = interceptor.with_rule(rule);
            }
            $krate::Client::from_conf(
                $krate::Config::builder()
                    .behavior_version($krate::config::BehaviorVersion::latest())
                    .region($krate::config::Region::new("us-east-1"))
                    .credentials_provider($krate::config::Credentials::new(
                        "test", "test", None, None, "test",
                    ))
                    .http_client(aws_smithy_mocks::create_mock_http_client())
                    .interceptor(interceptor)
                    // The SDK's own retries are not what these tests look at.
                    .retry_config($krate::config::retry::RetryConfig::disabled())
                    .build(),
            )
        }};
    }

    fn sqs_queue(rules: &[&Rule]) -> SqsQueue {
        SqsQueue::new(
            mocked_client!(aws_sdk_sqs, rules.iter().copied()),
            QueueUrls {
                queue: "https://sqs.us-east-1.amazonaws.com/123456789012/q".into(),
                dlq: "https://sqs.us-east-1.amazonaws.com/123456789012/q-dlq".into(),
            },
        )
    }

    fn http_response(status: u16, body: &'static str) -> aws_smithy_runtime_api::http::Response {
        aws_smithy_runtime_api::http::Response::new(
            aws_smithy_runtime_api::http::StatusCode::try_from(status).expect("valid status"),
            aws_smithy_types::body::SdkBody::from(body),
        )
    }

    fn error_meta(code: &str) -> aws_sdk_sqs::error::ErrorMetadata {
        aws_sdk_sqs::error::ErrorMetadata::builder()
            .code(code)
            .message("mocked")
            .build()
    }

    #[tokio::test]
    async fn dynamodb_throughput_exceeded_is_throttled() {
        // The response DynamoDB sends, so the SDK's own error parsing is part of the test.
        let rule = mock!(aws_sdk_dynamodb::Client::put_item).then_http_response(|| {
            http_response(
                400,
                r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#,
            )
        });
        let client = mocked_client!(aws_sdk_dynamodb, [&rule]);
        let state = DynamoState::new(client.clone(), "t", "d");
        let err = state
            .put_if_newer(&record("invoice", "in_1", None, 1, "e"))
            .await
            .unwrap_err();
        assert!(err.is_throttle(), "{err:?}");
        let dedupe = DynamoDedupe::new(client, "t");
        let err = dedupe.claim(&key("e"), 1, SECOND).await.unwrap_err();
        assert!(err.is_throttle(), "{err:?}");
        assert_eq!(err.operation(), "dynamodb.dedupe.claim");
        assert_eq!(rule.num_calls(), 2);
    }

    #[tokio::test]
    async fn sqs_throttling_and_server_errors_are_retryable() {
        let throttled = mock!(aws_sdk_sqs::Client::receive_message)
            .then_error(|| ReceiveMessageError::generic(error_meta("RequestThrottled")));
        let err = sqs_queue(&[&throttled])
            .receive(10, SECOND)
            .await
            .unwrap_err();
        assert!(err.is_throttle(), "{err:?}");

        let server = mock!(aws_sdk_sqs::Client::receive_message)
            .then_http_response(|| http_response(503, "{}"));
        let err = sqs_queue(&[&server]).receive(10, SECOND).await.unwrap_err();
        assert!(err.is_retryable() && !err.is_throttle(), "{err:?}");

        let missing = mock!(aws_sdk_sqs::Client::receive_message).then_error(|| {
            ReceiveMessageError::generic(error_meta("AWS.SimpleQueueService.NonExistentQueue"))
        });
        let err = sqs_queue(&[&missing])
            .receive(10, SECOND)
            .await
            .unwrap_err();
        assert!(!err.is_retryable(), "{err:?}");
    }

    #[tokio::test]
    async fn sqs_partial_delete_failure_is_reported_per_entry() {
        let rule = mock!(aws_sdk_sqs::Client::delete_message_batch)
            .match_requests(|req| {
                req.entries().iter().map(|e| e.id()).collect::<Vec<_>>() == ["0", "1", "2"]
            })
            .then_output(|| {
                DeleteMessageBatchOutput::builder()
                    .successful(
                        DeleteMessageBatchResultEntry::builder()
                            .id("0")
                            .build()
                            .unwrap(),
                    )
                    .failed(
                        BatchResultErrorEntry::builder()
                            .id("1")
                            .code("ReceiptHandleIsInvalid")
                            .sender_fault(true)
                            .build()
                            .unwrap(),
                    )
                    .failed(
                        BatchResultErrorEntry::builder()
                            .id("2")
                            .code("InternalError")
                            .sender_fault(false)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap()
            });
        let queue = sqs_queue(&[&rule]);
        let receipts = [
            Receipt("a".into()),
            Receipt("b".into()),
            Receipt("c".into()),
        ];
        let failures = queue.delete_batch(&receipts).await.unwrap();
        assert_eq!(rule.num_calls(), 1);
        assert_eq!(failures.failed.len(), 2);
        assert_eq!(failures.failed[0].0, Receipt("b".into()));
        assert!(!failures.failed[0].1.is_retryable());
        assert_eq!(failures.failed[1].0, Receipt("c".into()));
        assert!(failures.failed[1].1.is_retryable());
    }

    fn bus_entry(n: usize) -> BusEntry {
        BusEntry {
            source: "stripe.webhook".into(),
            detail_type: "Stripe Webhook Event".into(),
            detail: format!(r#"{{"n":{n}}}"#),
            resources: vec![],
        }
    }

    fn details(req: &aws_sdk_eventbridge::operation::put_events::PutEventsInput) -> Vec<String> {
        req.entries()
            .iter()
            .map(|e| e.detail().unwrap_or_default().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn put_events_failed_entries_are_the_only_ones_resent() {
        // First call: entry 1 throttled, entry 2 rejected for good, 0 and 3 accepted.
        let first = mock!(aws_sdk_eventbridge::Client::put_events)
            .match_requests(|req| req.entries().len() == 4)
            .then_output(|| {
                PutEventsOutput::builder()
                    .failed_entry_count(2)
                    .entries(PutEventsResultEntry::builder().event_id("a").build())
                    .entries(
                        PutEventsResultEntry::builder()
                            .error_code("ThrottlingException")
                            .error_message("rate exceeded")
                            .build(),
                    )
                    .entries(
                        PutEventsResultEntry::builder()
                            .error_code("MalformedDetail")
                            .error_message("bad detail")
                            .build(),
                    )
                    .entries(PutEventsResultEntry::builder().event_id("d").build())
                    .build()
            });
        // The re-send carries entry 1 alone and succeeds.
        let resend = mock!(aws_sdk_eventbridge::Client::put_events)
            .match_requests(|req| details(req) == [r#"{"n":1}"#])
            .then_output(|| {
                PutEventsOutput::builder()
                    .failed_entry_count(0)
                    .entries(PutEventsResultEntry::builder().event_id("b").build())
                    .build()
            });
        let client = mocked_client!(aws_sdk_eventbridge, [&first, &resend]);
        let bus = EventBridgeBus::new(client, "bus").with_retry(PublishRetry {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            max_resends: 3,
        });
        let entries: Vec<BusEntry> = (0..4).map(bus_entry).collect();
        let failures = bus.publish_all(&entries).await;
        assert_eq!(first.num_calls(), 1);
        assert_eq!(resend.num_calls(), 1);
        assert_eq!(failures.failed.len(), 1);
        assert_eq!(failures.failed[0].0, 2);
        assert!(!failures.failed[0].1.is_retryable());

        // `publish` itself reports the failed entries for the caller to re-send.
        let failures = stripe_worker::backend::Bus::publish(&bus, &entries)
            .await
            .unwrap();
        let failed: Vec<usize> = failures.failed.iter().map(|(i, _)| *i).collect();
        assert_eq!(failed, vec![1, 2]);
        assert!(failures.failed[0].1.is_throttle());
    }

    #[tokio::test]
    async fn put_events_resends_are_bounded() {
        let always = mock!(aws_sdk_eventbridge::Client::put_events).then_output(|| {
            PutEventsOutput::builder()
                .failed_entry_count(1)
                .entries(
                    PutEventsResultEntry::builder()
                        .error_code("InternalFailure")
                        .build(),
                )
                .build()
        });
        let client = mocked_client!(aws_sdk_eventbridge, [&always]);
        let bus = EventBridgeBus::new(client, "bus").with_retry(PublishRetry {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_resends: 2,
        });
        let failures = bus.publish_all(&[bus_entry(0)]).await;
        assert_eq!(always.num_calls(), 3, "one send and two re-sends");
        assert_eq!(failures.failed.len(), 1);
        assert!(failures.failed[0].1.is_retryable());
    }

    #[tokio::test]
    async fn put_events_are_split_into_requests_of_ten() {
        let rule = mock!(aws_sdk_eventbridge::Client::put_events)
            .match_requests(|req| req.entries().len() <= 10)
            .then_compute_output(|req| {
                let mut out = PutEventsOutput::builder().failed_entry_count(0);
                for _ in req.entries() {
                    out = out.entries(PutEventsResultEntry::builder().event_id("x").build());
                }
                out.build()
            });
        let client = mocked_client!(aws_sdk_eventbridge, [&rule]);
        let bus = EventBridgeBus::new(client, "bus");
        let entries: Vec<BusEntry> = (0..25).map(bus_entry).collect();
        let failures = stripe_worker::backend::Bus::publish(&bus, &entries)
            .await
            .unwrap();
        assert!(failures.failed.is_empty());
        assert_eq!(rule.num_calls(), 3);
    }
}
