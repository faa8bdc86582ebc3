//! The poison corpus (`tests/fixtures/poison/`, expectations in its `manifest.json`): each
//! message ends acknowledged as ignored or dead-lettered with a precise reason, the worker
//! never panics, and it keeps applying the good messages queued behind the bad ones.

use crate::reliability_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reliability_support::inproc::{FaultyBackend, fast_config};
use serde::Deserialize;
use serde_json::json;
use stripe_worker::backend::dlq_attributes::ERROR_KIND;
use stripe_worker::backend::{Receipt, ReceivedMessage};
use stripe_worker::domain::Domain;
use stripe_worker::event::decode_message;
use stripe_worker::event::envelope;
use stripe_worker::worker::Outcome;

/// One poison case: a file, or a body the test generates (too big to check in).
#[derive(Debug, Deserialize)]
struct Case {
    /// A file in the corpus directory, or a generated case's name.
    name: String,
    /// Generated rather than read from a file.
    #[serde(default)]
    generated: bool,
    /// The queue it is sent to.
    domain: Domain,
    /// `dead_letter` or `ignored`.
    outcome: String,
    /// The dead-letter kind, or the ignore reason.
    reason: String,
    /// Bytes no queue can carry (queue bodies are strings): checked at the decoder only.
    #[serde(default)]
    decoder_only: bool,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/poison")
}

fn manifest() -> Vec<Case> {
    let text = std::fs::read_to_string(corpus_dir().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A customer event with a `size`-byte description.
fn event_with_description(id: &str, event_type: &str, size: usize) -> String {
    json!({
        "version": "0", "id": id, "detail-type": "Stripe Webhook Event",
        "source": "stripe.webhook", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
        "resources": [],
        "detail": {
            "id": id, "object": "event", "type": event_type, "created": 1_700_000_000,
            "livemode": false, "api_version": "2025-03-31.basil",
            "data": {"object": {"id": "cus_big", "object": "customer",
                "description": "x".repeat(size)}},
            "tenant_id": "acme", "received_at": "2026-01-01T00:00:00.000Z",
            "payload_style": "snapshot"
        }
    })
    .to_string()
}

fn body(case: &Case) -> Vec<u8> {
    if !case.generated {
        return std::fs::read(corpus_dir().join(&case.name)).unwrap();
    }
    match case.name.as_str() {
        "detail_1mib" => event_with_description("evt_big_1mib", "customer.source.created", 1 << 20),
        "body_5mib" => event_with_description("evt_big_5mib", "customer.updated", 5 << 20),
        other => panic!("unknown generated case {other}"),
    }
    .into_bytes()
}

fn outcome_of(case: &Case, outcome: &Outcome) -> (String, String) {
    match outcome {
        Outcome::DeadLetter(reason) => ("dead_letter".to_owned(), reason.kind.clone()),
        Outcome::Ignored { reason } => ("ignored".to_owned(), (*reason).to_owned()),
        other => panic!("{}: unexpected outcome {other:?}", case.name),
    }
}

fn config() -> stripe_worker::config::Config {
    fast_config(
        &["acme".to_owned()],
        &[("ed_poison_acme".to_owned(), "acme".to_owned())],
    )
}

#[tokio::test]
async fn every_poison_case_ends_with_its_precise_outcome() {
    let cases = manifest();
    let on_disk: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "manifest.json")
        .collect();
    for name in &on_disk {
        assert!(
            cases.iter().any(|c| &c.name == name),
            "{name} is in the corpus but not in the manifest"
        );
    }
    let config = config();
    let backend = FaultyBackend::new(&config, 0.0, 0.0, 1);
    let worker = backend.worker(&config, None);
    let processor = worker.processor();
    for case in &cases {
        let bytes = body(case);
        if case.decoder_only {
            let error = decode_message(&bytes).expect_err(&case.name);
            assert_eq!(
                ("dead_letter".to_owned(), error.reason().to_owned()),
                (case.outcome.clone(), case.reason.clone()),
                "{}",
                case.name
            );
            continue;
        }
        let message = ReceivedMessage {
            message_id: case.name.clone(),
            receipt: Receipt(case.name.clone()),
            body: String::from_utf8(bytes).unwrap(),
            receive_count: 1,
            sent_at_ms: 0,
            attributes: BTreeMap::new(),
        };
        let outcome = processor.process_one(case.domain, &message).await.outcome;
        assert_eq!(
            outcome_of(case, &outcome),
            (case.outcome.clone(), case.reason.clone()),
            "{}: {outcome:?}",
            case.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_keeps_applying_good_messages_queued_behind_poison() {
    let cases: Vec<Case> = manifest().into_iter().filter(|c| !c.decoder_only).collect();
    let config = config();
    let backend = FaultyBackend::new(&config, 0.0, 0.0, 1);
    // Each poison message with a good customer event before and after it, on one queue.
    let mut good = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        for n in [2 * i, 2 * i + 1] {
            let id = format!("cus_good_{n:03}");
            let event = json!({
                "id": format!("evt_good_{n:03}"), "object": "event", "type": "customer.created",
                "created": 1_700_000_000 + n as i64, "livemode": false,
                "api_version": "2025-03-31.basil",
                "data": {"object": {"id": id, "object": "customer", "email": "ok@example.com"}},
            });
            let entry = envelope::webhook_snapshot_entry(&event, "acme", 0, None).unwrap();
            let good_body =
                envelope::envelope_json(&entry, &format!("good-{n}"), 0, "us-east-1", None)
                    .unwrap();
            backend
                .send_raw(Domain::Customer, &good_body.to_string())
                .await;
            good.push(id);
            if n == 2 * i {
                let poison = String::from_utf8(body(case)).unwrap();
                backend.send_raw(case.domain, &poison).await;
            }
        }
    }
    backend.run_until_idle(&config, None).await;

    assert_eq!(backend.left_in_queues().await, (0, 0, 0), "nothing stalls");
    let records = backend.export().await;
    for id in &good {
        assert!(
            records.iter().any(|r| r.tenant == "acme" && &r.id == id),
            "good message {id} applied"
        );
    }
    let mut dead: Vec<(Domain, String)> = backend
        .dead_letters()
        .await
        .into_iter()
        .map(|(d, m)| (d, m.attributes[ERROR_KIND].clone()))
        .collect();
    let mut expected: Vec<(Domain, String)> = cases
        .iter()
        .filter(|c| c.outcome == "dead_letter")
        .map(|c| (c.domain, c.reason.clone()))
        .collect();
    dead.sort();
    expected.sort();
    assert_eq!(
        dead, expected,
        "the dead letters are exactly the poison, with reasons"
    );
}
