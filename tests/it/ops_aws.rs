//! The operations on the AWS backends, against the emulator `tests/run.sh` starts (moto):
//! SQS dead-letter listing, redrive and purge (including a redrive interrupted midway),
//! queue counts, and an EventBridge archive replay that applies nothing twice.

use crate::aws_support;
use crate::ops_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_config::SdkConfig;
use ops_support::{config, customer_event, drain};
use stripe_worker::backend::aws::{AwsBackend, AwsNames, SqsQueue};
use stripe_worker::backend::publish_entries;
use stripe_worker::backend::{
    DeadLetterOps, DeadLetterReason, Queue, RedriveFilter, StateStore, dlq_attributes,
};
use stripe_worker::clock::now_ms;
use stripe_worker::domain::Domain;
use stripe_worker::event::envelope::partner_snapshot_entry;
use stripe_worker::ops::{dlq, queues, replay};
use stripe_worker::state_view::export_document;

/// Create every resource under a fresh prefix, with the real routing patterns.
async fn deployment(label: &str) -> (SdkConfig, AwsNames, AwsBackend) {
    aws_support::deployment(label).await
}

/// The customer queue of `backend`, holding DLQ messages only `hold` while listing and
/// redriving (so a test sees interrupted work come back quickly).
fn customer_queue(backend: &AwsBackend, hold: Duration) -> SqsQueue {
    backend
        .queues
        .get(Domain::Customer)
        .clone()
        .with_dlq_hold(hold)
}

/// Send `bodies` to `queue` and dead-letter each with `kind`.
async fn dead_letter_bodies(queue: &SqsQueue, bodies: &[String], kind: &str) {
    for body in bodies {
        queue.send(body, Duration::ZERO).await.unwrap();
    }
    let mut left = bodies.len();
    let reason = DeadLetterReason {
        kind: kind.to_owned(),
        message: format!("test {kind}"),
        handler: None,
    };
    while left > 0 {
        let got = queue.receive(10, Duration::from_secs(1)).await.unwrap();
        for m in &got {
            queue.dead_letter(m, &reason).await.unwrap();
        }
        left -= got.len();
    }
}

/// Every body in the DLQ and in the queue (taking them from both), counted.
async fn bodies_in(queue: &SqsQueue) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut dlq = BTreeMap::new();
    let mut held = Vec::new();
    for m in queue.dlq_peek(usize::MAX).await.unwrap() {
        *dlq.entry(m.body).or_insert(0) += 1;
        held.push(m.message_id);
    }
    let mut main = BTreeMap::new();
    loop {
        let got = queue.receive(10, Duration::from_secs(1)).await.unwrap();
        if got.is_empty() {
            break;
        }
        for m in got {
            *main.entry(m.body).or_insert(0) += 1;
        }
    }
    (dlq, main)
}

/// Receive until `n` messages came (within 20 s).
async fn receive_n(queue: &SqsQueue, n: usize) -> Vec<stripe_worker::backend::ReceivedMessage> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < n && std::time::Instant::now() < deadline {
        got.extend(queue.receive(10, Duration::from_secs(1)).await.unwrap());
    }
    got
}

fn partner_body(i: usize) -> String {
    let e = customer_event(
        &format!("evt_a{i}"),
        &format!("cus_a{i}"),
        "a@example.com",
        1_700_000_000 + i as i64,
    );
    let entry = partner_snapshot_entry(&e, "ed_acme").unwrap();
    stripe_worker::event::envelope::envelope_json(
        &entry,
        &format!("env-{i}"),
        now_ms(),
        "us-east-1",
        None,
    )
    .unwrap()
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_dlq_lists_without_losing_and_redrives_by_reason_without_the_reason() {
    let (_sdk, _names, backend) = deployment("ops-dlq").await;
    let queue = customer_queue(&backend, Duration::from_secs(5));
    let poison: Vec<String> = (1..=3).map(partner_body).collect();
    let garbage: Vec<String> = (1..=2).map(|i| format!("garbage {i}")).collect();
    dead_letter_bodies(&queue, &poison, "unknown_tenant").await;
    dead_letter_bodies(&queue, &garbage, "decode_error").await;

    let report = queues::queue_report(&backend.queues).await.unwrap();
    assert_eq!(
        report.line(Domain::Customer, true).unwrap().stats.visible,
        5
    );

    // Listing twice sees the same messages: a listing releases what it received.
    let mapped = config(true);
    let first = dlq::list(&queue, Domain::Customer, 50, &mapped.tenants)
        .await
        .unwrap();
    let second = dlq::list(&queue, Domain::Customer, 50, &mapped.tenants)
        .await
        .unwrap();
    let ids = |l: &dlq::DlqListing| -> BTreeSet<String> {
        l.messages.iter().map(|m| m.message_id.clone()).collect()
    };
    assert_eq!(first.messages.len(), 5);
    assert_eq!(ids(&first), ids(&second));
    let (_, dlq_stats) = queue.stats().await.unwrap();
    assert_eq!((dlq_stats.visible, dlq_stats.in_flight), (5, 0));
    let partner: Vec<_> = first
        .messages
        .iter()
        .filter(|m| m.error_kind.as_deref() == Some("unknown_tenant"))
        .collect();
    assert_eq!(partner.len(), 3);
    assert!(partner.iter().all(|m| m.tenant.as_deref() == Some("acme")
        && m.event_type.as_deref() == Some("customer.created")
        && m.source_queue.is_some()));
    let one = &first.messages[0].message_id;
    let detail = dlq::show(&queue, Domain::Customer, one, &mapped.tenants)
        .await
        .unwrap();
    assert_eq!(&detail.entry.message_id, one);

    let hidden = indicatif::ProgressBar::hidden();
    let moved = dlq::redrive(
        &queue,
        Domain::Customer,
        &RedriveFilter::error_kind("unknown_tenant"),
        false,
        &mapped.tenants,
        &hidden,
    )
    .await
    .unwrap();
    assert_eq!(moved.moved, 3);
    let back = receive_n(&queue, 3).await;
    assert_eq!(
        back.iter().map(|m| m.body.clone()).collect::<BTreeSet<_>>(),
        poison.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert!(
        back.iter()
            .all(|m| !m.attributes.contains_key(dlq_attributes::ERROR_KIND)),
        "the reason attributes are stripped on the way back"
    );
    let left = queue.dlq_peek(50).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|m| m.body.starts_with("garbage")));
    assert_eq!(
        dlq::purge(&queue, Domain::Customer).await.unwrap().deleted,
        2
    );
    assert!(queue.dlq_peek(50).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sqs_redrive_loses_nothing() {
    let (_sdk, _names, backend) = deployment("ops-cut").await;
    let hold = Duration::from_secs(2);
    let queue = customer_queue(&backend, hold);
    let bodies: Vec<String> = (0..40).map(|i| format!("body-{i:03}")).collect();
    dead_letter_bodies(&queue, &bodies, "retries_exhausted").await;
    for cut_ms in [30u64, 120, 400] {
        let _ = tokio::time::timeout(
            Duration::from_millis(cut_ms),
            queue.dlq_redrive(&RedriveFilter::all(), &|_| {}),
        )
        .await;
        // Whatever the cut held comes back once the hold lapses.
        tokio::time::sleep(hold + Duration::from_millis(500)).await;
        let (in_dlq, in_queue) = bodies_in(&queue).await;
        for body in &bodies {
            assert!(
                in_dlq.contains_key(body) || in_queue.contains_key(body),
                "{body} lost after a cut at {cut_ms} ms"
            );
        }
        // Put what reached the queue back in the DLQ for the next cut (those taken from the
        // queue above are gone: dead-letter them again).
        let back: Vec<String> = in_queue
            .keys()
            .filter(|b| !in_dlq.contains_key(*b))
            .cloned()
            .collect();
        dead_letter_bodies(&queue, &back, "retries_exhausted").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eventbridge_replay_applies_nothing_twice() {
    let (sdk, names, backend) = deployment("ops-replay").await;
    let cfg = config(true);
    let from = now_ms() - 60_000;
    let entries: Vec<_> = (1..=4)
        .map(|i| {
            let e = customer_event(
                &format!("evt_rp{i}"),
                &format!("cus_rp{i}"),
                "rp@example.com",
                1_700_000_000 + i,
            );
            partner_snapshot_entry(&e, "ed_acme").unwrap()
        })
        .collect();
    publish_entries(backend.bus.as_ref(), &entries)
        .await
        .unwrap();
    let first = drain(&backend, &cfg).await;
    assert_eq!(first.applied, 4);
    let before = export_document(&backend.state.export(None).await.unwrap());

    let client = aws_sdk_eventbridge::Client::new(&sdk);
    let request = replay::ReplayRequest {
        from_ms: from,
        to_ms: now_ms() + 60_000,
        domain: Some(Domain::Customer),
        name: Some(format!("{}-r", names.prefix)),
        reprocess: false,
    };
    let report = replay::replay_aws(
        &client,
        &names,
        &request,
        now_ms(),
        Duration::from_millis(200),
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert_eq!(report.state, "COMPLETED");
    assert!(report.replay_arn.is_some());
    let again = drain(&backend, &cfg).await;
    assert_eq!(again.applied, 0, "nothing applied twice");
    assert!(
        again.duplicates >= 4,
        "the replayed events arrived: {again:?}"
    );
    let after = export_document(&backend.state.export(None).await.unwrap());
    assert_eq!(before, after);
}
