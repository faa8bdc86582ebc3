//! The operations commands on the embedded backends: through the library functions
//! (memory and SQLite) and through the binary (exit codes, tables, JSON), including a
//! redrive interrupted at random points that loses nothing.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use stripe_worker::app::{MemoryBackend, memory_backend, open_local};
use stripe_worker::backend::publish_entries;
use stripe_worker::backend::{
    Backend, BusEntry, DeadLetterOps, DeadLetterReason, PerDomain, Queue, RedriveFilter, StateStore,
};
use stripe_worker::clock::{now_ms, system_clock};
use stripe_worker::domain::Domain;
use stripe_worker::event::envelope::{
    envelope_json, partner_snapshot_entry, webhook_snapshot_entry,
};
use stripe_worker::ops::{OpsError, backfill, dlq, queues, replay};
use stripe_worker::state_view::export_document;
use stripe_worker::stripe::api::{ApiKey, StripeApiClient, StripeApiConfig};

use crate::ops_support;

use ops_support::{config, customer_event, drain};

const BIN: &str = env!("CARGO_BIN_EXE_stripe-worker");

/// Three partner events from `ed_acme` (unmapped in `config(false)`) and one webhook event.
fn mixed_entries() -> Vec<BusEntry> {
    let mut entries: Vec<BusEntry> = (1..=3)
        .map(|i| {
            let e = customer_event(
                &format!("evt_p{i}"),
                &format!("cus_p{i}"),
                "p@example.com",
                1_700_000_000 + i,
            );
            partner_snapshot_entry(&e, "ed_acme").unwrap()
        })
        .collect();
    let e = customer_event("evt_w1", "cus_w1", "w@example.com", 1_700_000_000);
    entries.push(webhook_snapshot_entry(&e, "acme", now_ms(), None).unwrap());
    entries
}

async fn state_json<Q, D, S: StateStore, B>(backend: &Backend<Q, D, S, B>) -> Value {
    export_document(&backend.state.export(None).await.unwrap())
}

#[tokio::test]
async fn poisoned_events_are_listed_with_reasons_then_redriven_and_applied() {
    let unmapped = config(false);
    let mapped = config(true);
    let backend: MemoryBackend = memory_backend(&unmapped, system_clock());
    publish_entries(backend.bus.as_ref(), &mixed_entries())
        .await
        .unwrap();
    let stats = drain(&backend, &unmapped).await;
    assert_eq!(stats.applied, 1);
    assert_eq!(stats.dead_letter_reasons.get("unknown_tenant"), Some(&3));

    let report = queues::queue_report(&backend.queues).await.unwrap();
    let dlq_line = report.line(Domain::Customer, true).unwrap();
    assert_eq!(dlq_line.stats.visible, 3);
    assert_eq!(dlq_line.queue, "customer-events-dlq");
    assert_eq!(
        report.line(Domain::Customer, false).unwrap().stats.visible,
        0
    );
    assert!(report.to_string().contains("customer-events-dlq"));

    let queue = backend.queues.get(Domain::Customer);
    let listing = dlq::list(queue, Domain::Customer, 10, &unmapped.tenants)
        .await
        .unwrap();
    assert_eq!(listing.messages.len(), 3);
    let ids: BTreeSet<_> = listing
        .messages
        .iter()
        .map(|m| m.event_id.clone().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["evt_p1".into(), "evt_p2".into(), "evt_p3".into()])
    );
    for m in &listing.messages {
        assert_eq!(m.error_kind.as_deref(), Some("unknown_tenant"));
        assert_eq!(m.event_type.as_deref(), Some("customer.created"));
        assert_eq!(
            m.tenant, None,
            "the current configuration cannot resolve it"
        );
        assert_eq!(m.source_queue.as_deref(), Some("customer-events"));
        assert_eq!(m.receive_count, Some(1));
        assert!(m.first_seen_ms.is_some());
        assert!(m.error_message.as_deref().unwrap().contains("ed_acme"));
    }
    assert!(listing.to_string().contains("unknown_tenant"));
    // With the mapping the tenant is known: the fix is visible before redriving.
    let fixed = dlq::list(queue, Domain::Customer, 10, &mapped.tenants)
        .await
        .unwrap();
    assert!(
        fixed
            .messages
            .iter()
            .all(|m| m.tenant.as_deref() == Some("acme"))
    );
    assert_eq!(
        dlq::list(queue, Domain::Customer, 2, &mapped.tenants)
            .await
            .unwrap()
            .messages
            .len(),
        2
    );

    let hidden = indicatif::ProgressBar::hidden();
    let dry = dlq::redrive(
        queue,
        Domain::Customer,
        &RedriveFilter::error_kind("unknown_tenant"),
        true,
        &mapped.tenants,
        &hidden,
    )
    .await
    .unwrap();
    assert_eq!((dry.moved, dry.would_move.len()), (3, 3));
    assert_eq!(
        queue.dlq_peek(10).await.unwrap().len(),
        3,
        "a dry run moves nothing"
    );
    let other_type = RedriveFilter {
        event_type: Some("customer.updated".into()),
        ..RedriveFilter::all()
    };
    let none = dlq::redrive(
        queue,
        Domain::Customer,
        &other_type,
        false,
        &mapped.tenants,
        &hidden,
    )
    .await
    .unwrap();
    assert_eq!(none.moved, 0);
    let moved = dlq::redrive(
        queue,
        Domain::Customer,
        &RedriveFilter {
            event_type: Some("customer.created".into()),
            ..RedriveFilter::error_kind("unknown_tenant")
        },
        false,
        &mapped.tenants,
        &hidden,
    )
    .await
    .unwrap();
    assert_eq!(moved.moved, 3);
    assert!(queue.dlq_peek(10).await.unwrap().is_empty());

    let stats = drain(&backend, &mapped).await;
    assert_eq!((stats.applied, stats.dead_lettered), (3, 0));
    let state = state_json(&backend).await;
    for c in ["cus_p1", "cus_p2", "cus_p3", "cus_w1"] {
        assert!(
            state["tenants"]["acme"]["customers"].get(c).is_some(),
            "{c} applied: {state:#}"
        );
    }
}

#[tokio::test]
async fn show_finds_one_message_in_full_and_purge_empties() {
    let cfg = config(false);
    let backend = memory_backend(&cfg, system_clock());
    let queue = backend.queues.get(Domain::Customer);
    queue.send("not json", Duration::ZERO).await.unwrap();
    let m = queue.receive(1, Duration::ZERO).await.unwrap().remove(0);
    let reason = DeadLetterReason {
        kind: "decode_error".into(),
        message: "expected value".into(),
        handler: None,
    };
    queue.dead_letter(&m, &reason).await.unwrap();

    let detail = dlq::show(queue, Domain::Customer, &m.message_id, &cfg.tenants)
        .await
        .unwrap();
    assert_eq!(detail.entry.error_kind.as_deref(), Some("decode_error"));
    assert!(detail.entry.decode_error.is_some());
    assert_eq!(detail.body, json!("not json"));
    assert!(detail.to_string().contains("decode_error"));
    let missing = dlq::show(queue, Domain::Customer, "nope", &cfg.tenants).await;
    assert!(matches!(missing, Err(OpsError::NotFound { .. })));

    let purged = dlq::purge(queue, Domain::Customer).await.unwrap();
    assert_eq!(purged.deleted, 1);
    assert!(queue.dlq_peek(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_replay_applies_nothing_twice_and_reprocess_keeps_the_same_state() {
    let cfg = config(true);
    let backend = memory_backend(&cfg, system_clock());
    let from = now_ms() - 1_000;
    let entries: Vec<BusEntry> = (1..=5)
        .map(|i| {
            let e = customer_event(
                &format!("evt_r{i}"),
                &format!("cus_r{i}"),
                "r@example.com",
                1_700_000_000 + i,
            );
            partner_snapshot_entry(&e, "ed_acme").unwrap()
        })
        .collect();
    publish_entries(backend.bus.as_ref(), &entries)
        .await
        .unwrap();
    let first = drain(&backend, &cfg).await;
    assert_eq!(first.applied, 5);
    let before = state_json(&backend).await;
    let to = now_ms() + 1_000;
    let hidden = indicatif::ProgressBar::hidden();

    let request = replay::ReplayRequest {
        from_ms: from,
        to_ms: to,
        domain: None,
        name: Some("after-outage".into()),
        reprocess: false,
    };
    let report = replay::replay_local(&backend.bus, &request, now_ms(), &hidden)
        .await
        .unwrap();
    assert_eq!((report.archived, report.delivered), (Some(5), Some(5)));
    assert_eq!(report.state, "COMPLETED");
    let again = drain(&backend, &cfg).await;
    assert_eq!((again.applied, again.duplicates), (0, 5));
    assert_eq!(state_json(&backend).await, before);

    // Only the chosen domain's queue gets replayed events: these are customer events.
    let payment_only = replay::ReplayRequest {
        domain: Some(Domain::Payment),
        name: Some("payment-only".into()),
        ..request.clone()
    };
    let report = replay::replay_local(&backend.bus, &payment_only, now_ms(), &hidden)
        .await
        .unwrap();
    assert_eq!(report.delivered, Some(0));

    let reprocess = replay::ReplayRequest {
        reprocess: true,
        name: Some("fix".into()),
        ..request
    };
    let report = replay::replay_local(&backend.bus, &reprocess, now_ms(), &hidden)
        .await
        .unwrap();
    assert_eq!(report.name, "reprocess-fix");
    let reapplied = drain(&backend, &cfg).await;
    assert_eq!(reapplied.applied, 5, "handlers ran again");
    assert_eq!(
        reapplied.writes, 0,
        "and changed nothing: same as-of, same state"
    );
    assert_eq!(state_json(&backend).await, before);

    let backwards = replay::ReplayRequest {
        from_ms: to,
        to_ms: from,
        domain: None,
        name: None,
        reprocess: false,
    };
    assert!(matches!(
        replay::replay_local(&backend.bus, &backwards, now_ms(), &hidden).await,
        Err(OpsError::Invalid(_))
    ));
}

#[tokio::test]
async fn backfill_publishes_every_page_of_undelivered_events_and_overlaps_are_harmless() {
    use wiremock::matchers::{header, method, path, query_param, query_param_is_missing};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    let now = now_ms();
    let since = now - 3_600_000;
    let gte = (since / 1000 + i64::from(since % 1000 > 0)).to_string();
    let event = |i: i64| {
        customer_event(
            &format!("evt_b{i}"),
            &format!("cus_b{i}"),
            "b@example.com",
            since / 1000 + i,
        )
    };
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(header("authorization", "Bearer rk_test_acme"))
        .and(query_param("delivery_success", "false"))
        .and(query_param("created[gte]", gte.as_str()))
        .and(query_param("limit", "100"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "data": [event(3), event(2)], "has_more": true}),
        ))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param("starting_after", "evt_b2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "data": [event(1), {"id": "evt_bad"}], "has_more": false}),
        ))
        .expect(2)
        .mount(&server)
        .await;
    let api = StripeApiClient::new(StripeApiConfig {
        base_url: server.uri(),
        keys: [("acme".to_owned(), ApiKey::new("rk_test_acme").unwrap())].into(),
        ..StripeApiConfig::default()
    })
    .unwrap();

    let cfg = config(false);
    let backend = memory_backend(&cfg, system_clock());
    let hidden = indicatif::ProgressBar::hidden();
    let report = backfill::backfill(&api, backend.bus.as_ref(), "acme", since, now, &hidden)
        .await
        .unwrap();
    assert_eq!(
        (
            report.pages,
            report.listed,
            report.published,
            report.skipped
        ),
        (2, 4, 3, 1)
    );
    assert!(!report.since_clamped);
    let stats = drain(&backend, &cfg).await;
    assert_eq!(stats.applied, 3);
    let state = state_json(&backend).await;
    assert_eq!(
        state["tenants"]["acme"]["customers"]
            .as_object()
            .unwrap()
            .len(),
        3
    );

    // Running it again (an overlap) applies nothing twice.
    backfill::backfill(&api, backend.bus.as_ref(), "acme", since, now, &hidden)
        .await
        .unwrap();
    let again = drain(&backend, &cfg).await;
    assert_eq!((again.applied, again.duplicates), (0, 3));

    // A tenant without a key is a clear permanent error; nothing is published.
    let err = backfill::backfill(&api, backend.bus.as_ref(), "other", since, now, &hidden)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no Stripe API key"), "{err}");
}

#[tokio::test]
async fn backfill_never_asks_for_more_than_thirty_days() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    let now = 1_800_000_000_000;
    let oldest = (now - 30 * 86_400_000) / 1000;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param("created[gte]", oldest.to_string().as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"object": "list", "data": [], "has_more": false})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let api = StripeApiClient::new(StripeApiConfig {
        base_url: server.uri(),
        keys: [("acme".to_owned(), ApiKey::new("rk_test_acme").unwrap())].into(),
        ..StripeApiConfig::default()
    })
    .unwrap();
    let backend = memory_backend(&config(false), system_clock());
    let report = backfill::backfill(
        &api,
        backend.bus.as_ref(),
        "acme",
        now - 45 * 86_400_000,
        now,
        &indicatif::ProgressBar::hidden(),
    )
    .await
    .unwrap();
    assert!(report.since_clamped);
    assert_eq!((report.pages, report.listed), (1, 0));
}

// ---------------------------------------------------------------------------------------
// SQLite, and the binary
// ---------------------------------------------------------------------------------------

/// Dead-letter `n` messages into the customer DLQ of the embedded backend in `dir`;
/// returns their message ids.
async fn dead_letter_many(dir: &std::path::Path, n: usize) -> BTreeSet<String> {
    let backend = open_local(dir, &config(false), system_clock()).unwrap();
    let queue = backend.queues.get(Domain::Customer);
    let reason = DeadLetterReason {
        kind: "unknown_tenant".into(),
        message: "test".into(),
        handler: None,
    };
    let mut ids = BTreeSet::new();
    for i in 0..n {
        queue
            .send(&format!("body-{i}"), Duration::ZERO)
            .await
            .unwrap();
    }
    loop {
        let got = queue.receive(10, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        for m in got {
            queue.dead_letter(&m, &reason).await.unwrap();
            ids.insert(m.message_id);
        }
    }
    assert_eq!(ids.len(), n);
    ids
}

/// Every message id in the customer DLQ and in the customer queue (taking them), each
/// list checked for duplicates.
async fn where_are<Q: Queue + DeadLetterOps>(queues: &PerDomain<Q>) -> (Vec<String>, Vec<String>) {
    let queue = queues.get(Domain::Customer);
    let in_dlq: Vec<String> = queue
        .dlq_peek(usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.message_id)
        .collect();
    let mut in_queue = Vec::new();
    loop {
        let got = queue.receive(10, Duration::ZERO).await.unwrap();
        if got.is_empty() {
            break;
        }
        in_queue.extend(got.into_iter().map(|m| m.message_id));
    }
    (in_dlq, in_queue)
}

/// No message lost, none in both places (SQLite redrives in one transaction).
fn assert_each_exactly_once(ids: &BTreeSet<String>, in_dlq: &[String], in_queue: &[String]) {
    let mut all: Vec<&String> = in_dlq.iter().chain(in_queue).collect();
    all.sort();
    let unique: BTreeSet<String> = all.iter().map(|s| (*s).clone()).collect();
    assert_eq!(all.len(), unique.len(), "no message in two places");
    assert_eq!(&unique, ids, "no message lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_redrive_future_loses_nothing() {
    for cancel_after_us in [0u64, 200, 2_000, 20_000] {
        let dir = tempfile::tempdir().unwrap();
        let ids = dead_letter_many(dir.path(), 200).await;
        let backend = open_local(dir.path(), &config(false), system_clock()).unwrap();
        let queue = backend.queues.get(Domain::Customer);
        let _ = tokio::time::timeout(
            Duration::from_micros(cancel_after_us),
            queue.dlq_redrive(&RedriveFilter::all(), &|_| {}),
        )
        .await;
        // A redrive dropped after its request reached the writer thread still commits
        // (whole). Writes commit in order, so any later write is a barrier: after it the
        // redrive has committed or never will.
        backend
            .queues
            .get(Domain::Payment)
            .dlq_purge()
            .await
            .unwrap();
        let (in_dlq, in_queue) = where_are(&backend.queues).await;
        assert_each_exactly_once(&ids, &in_dlq, &in_queue);
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redrive_process_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dead_letter_many(dir.path(), 500).await;
    let data = dir.path().to_str().unwrap().to_owned();
    for kill_after_ms in [1u64, 20, 60, 150] {
        let mut child = Command::new(BIN)
            .args([
                "dlq",
                "redrive",
                "--domain",
                "customer",
                "--data-dir",
                &data,
            ])
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        let _ = child.kill();
        let _ = child.wait();
        let backend = open_local(dir.path(), &config(false), system_clock()).unwrap();
        let queue = backend.queues.get(Domain::Customer);
        let in_dlq: Vec<String> = queue
            .dlq_peek(usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.message_id)
            .collect();
        let (main, _) = queue.stats().await.unwrap();
        assert_eq!(
            in_dlq.len() as u64 + main.visible,
            ids.len() as u64,
            "after a kill at {kill_after_ms} ms every message is in exactly one place"
        );
    }
    let backend = open_local(dir.path(), &config(false), system_clock()).unwrap();
    let (in_dlq, in_queue) = where_are(&backend.queues).await;
    assert_each_exactly_once(&ids, &in_dlq, &in_queue);
}

#[test]
fn the_binary_lists_redrives_replays_and_refuses_unsafe_purges() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let unmapped = dir.path().join("unmapped.toml");
    let mapped = dir.path().join("mapped.toml");
    let base = "[worker]\nwait_time_secs = 1\n[tenants]\ntenants = [\"acme\"]\n";
    std::fs::write(&unmapped, base).unwrap();
    std::fs::write(
        &mapped,
        format!("{base}[tenants.destinations]\ned_acme = \"acme\"\n"),
    )
    .unwrap();
    // Partner envelopes straight on the customer queue, as `publish --to-queue` sends them.
    let file = dir.path().join("poison.jsonl");
    let mut f = std::fs::File::create(&file).unwrap();
    for i in 1..=3 {
        let e = customer_event(
            &format!("evt_c{i}"),
            &format!("cus_c{i}"),
            "c@example.com",
            1_700_000_000 + i,
        );
        let entry = partner_snapshot_entry(&e, "ed_acme").unwrap();
        let envelope = envelope_json(&entry, &format!("env-{i}"), now_ms(), "local", None).unwrap();
        writeln!(f, "{envelope}").unwrap();
    }
    drop(f);
    let with = |config: &std::path::Path, args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend([
            "--data-dir".to_owned(),
            data.to_str().unwrap().to_owned(),
            "--config".to_owned(),
            config.to_str().unwrap().to_owned(),
        ]);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        run(&refs)
    };
    let ok = |out: &Output| {
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    };

    ok(&with(
        &unmapped,
        &[
            "publish",
            "--file",
            file.to_str().unwrap(),
            "--to-queue",
            "customer",
        ],
    ));
    ok(&with(
        &unmapped,
        &["run", "--until-idle", "--idle-secs", "1"],
    ));

    let out = with(&unmapped, &["queues", "--json"]);
    ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dlq_line = report["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["queue"] == "customer-events-dlq")
        .unwrap();
    assert_eq!(dlq_line["visible"], 3);
    let out = with(&unmapped, &["queues"]);
    assert!(text(&out.stdout).contains("IN FLIGHT"));

    let out = with(&unmapped, &["dlq", "list", "--domain", "customer"]);
    ok(&out);
    assert!(
        text(&out.stdout).contains("unknown_tenant"),
        "{}",
        text(&out.stdout)
    );
    let out = with(
        &unmapped,
        &["dlq", "list", "--domain", "customer", "--json"],
    );
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["messages"].as_array().unwrap().len(), 3);
    let id = listing["messages"][0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = with(
        &unmapped,
        &["dlq", "show", "--domain", "customer", &id, "--json"],
    );
    ok(&out);
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detail["error_kind"], "unknown_tenant");
    assert_eq!(detail["body"]["detail"]["type"], "customer.created");
    let out = with(&unmapped, &["dlq", "show", "--domain", "customer", "nope"]);
    assert_eq!(out.status.code(), Some(1));

    let out = with(&unmapped, &["dlq", "purge", "--domain", "customer"]);
    assert_eq!(out.status.code(), Some(2), "no purge without --yes");
    assert!(text(&out.stderr).contains("--yes"));

    let out = with(
        &mapped,
        &[
            "dlq",
            "redrive",
            "--domain",
            "customer",
            "--reason",
            "unknown_tenant",
            "--dry-run",
            "--json",
        ],
    );
    ok(&out);
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (dry["moved"].as_u64(), dry["dry_run"].as_bool()),
        (Some(3), Some(true))
    );
    assert!(
        dry["would_move"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["tenant"] == "acme")
    );
    let out = with(
        &mapped,
        &[
            "dlq",
            "redrive",
            "--domain",
            "customer",
            "--reason",
            "unknown_tenant",
        ],
    );
    ok(&out);
    assert!(
        text(&out.stdout).contains("moved 3 messages"),
        "{}",
        text(&out.stdout)
    );
    ok(&with(&mapped, &["run", "--until-idle", "--idle-secs", "1"]));
    let out = with(
        &mapped,
        &["status", "--tenant", "acme", "--customer", "cus_c2"],
    );
    ok(&out);

    let before = with(&mapped, &["state", "export", "--json"]);
    ok(&before);
    let from = stripe_worker::event::envelope::rfc3339_seconds(now_ms() - 3_600_000).unwrap();
    let to = stripe_worker::event::envelope::rfc3339_seconds(now_ms() + 3_600_000).unwrap();
    // The poison went straight to the queue, so the archive is empty: publish through the
    // bus too, apply, then replay that window.
    let bus_file = dir.path().join("bus.jsonl");
    let e = customer_event("evt_bus", "cus_bus", "bus@example.com", 1_700_000_100);
    let entry = partner_snapshot_entry(&e, "ed_acme").unwrap();
    std::fs::write(
        &bus_file,
        format!(
            "{}\n",
            envelope_json(&entry, "env-bus", now_ms(), "local", None).unwrap()
        ),
    )
    .unwrap();
    ok(&with(
        &mapped,
        &["publish", "--file", bus_file.to_str().unwrap()],
    ));
    ok(&with(&mapped, &["run", "--until-idle", "--idle-secs", "1"]));
    let before = with(&mapped, &["state", "export", "--json"]);
    let out = with(&mapped, &["replay", "--from", &from, "--to", &to, "--json"]);
    ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["archived"].as_u64(), report["delivered"].as_u64()),
        (Some(1), Some(1))
    );
    ok(&with(&mapped, &["run", "--until-idle", "--idle-secs", "1"]));
    let after = with(&mapped, &["state", "export", "--json"]);
    assert_eq!(
        text(&before.stdout),
        text(&after.stdout),
        "a replay changes no state"
    );

    let out = with(&mapped, &["replay", "--from", "yesterday", "--to", &to]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--from"));
    let out = with(
        &mapped,
        &["dlq", "purge", "--domain", "customer", "--yes", "--json"],
    );
    ok(&out);
    let purged: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(purged["deleted"], 0);
}
