//! The memory backends against the conformance suite, plus their operations methods.

use crate::conformance;

use std::time::Duration;

use conformance::DlqProbe;
use stripe_worker::backend::DeadLetterOps;
use stripe_worker::backend::MAX_RECEIVE_COUNT_EXCEEDED;
use stripe_worker::backend::doubles::memory::{
    MemoryArchive, MemoryDedupe, MemoryQueue, MemoryState,
};
use stripe_worker::backend::{Queue, QueueSpec, Receipt, ReceivedMessage, dlq_attributes};

impl DlqProbe for MemoryQueue {
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

/// A dedupe store and the state store sharing its markers.
fn memory_pair() -> (MemoryDedupe, MemoryState) {
    let dedupe = MemoryDedupe::new();
    let state = dedupe.state();
    (dedupe, state)
}

async fn make_queue(spec: QueueSpec) -> MemoryQueue {
    MemoryQueue::new(spec)
}

macro_rules! queue_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            conformance::$case(make_queue).await;
        }
    )*};
}

macro_rules! store_cases {
    ($make:expr => $($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            conformance::$case($make).await;
        }
    )*};
}

all_queue_cases!(queue_cases!());
local_queue_cases!(queue_cases!());

pair_cases!(store_cases!(memory_pair() =>));

state_cases!(store_cases!(MemoryState::new() =>));

store_cases!(MemoryArchive::new() => archive_range);

// --- memory-specific ---------------------------------------------------------------------

fn spec(max_receive_count: u32) -> QueueSpec {
    QueueSpec {
        name: "mem".to_owned(),
        visibility_timeout: Duration::from_secs(30),
        max_receive_count,
    }
}

/// Redrive marks the message with the `max_receive_count_exceeded` kind and the count.
#[tokio::test]
async fn redrive_sets_error_kind() {
    let q = MemoryQueue::new(spec(1));
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
    assert_eq!(attr(dlq_attributes::SOURCE_QUEUE), Some("mem"));
}

/// Receive sizes and batch sizes outside SQS limits are permanent errors.
#[tokio::test]
async fn limits_are_enforced() {
    let q = MemoryQueue::new(spec(5));
    assert!(q.receive(0, Duration::ZERO).await.is_err());
    assert!(q.receive(11, Duration::ZERO).await.is_err());
    let many: Vec<Receipt> = (0..11).map(|i| Receipt(i.to_string())).collect();
    let err = q.delete_batch(&many).await.unwrap_err();
    assert!(!err.is_retryable());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Any order of versions converges on the newest, with truthful outcomes.
    #[test]
    fn state_any_order_converges(
        versions in proptest::collection::vec((0i64..5, "[a-c]{0,2}"), 0..12)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = MemoryState::new();
        rt.block_on(conformance::state_any_order_converges(&store, &versions));
    }
}
