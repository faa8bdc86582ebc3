//! The AWS backend end to end, against the local AWS emulator (moto, `AWS_ENDPOINT_URL`)
//! and through the binary as an operator runs it: `setup`, `publish` (bus and
//! `--to-queue`), `run --until-idle`, `state export` and `status`, all with
//! `--backend aws --prefix <unique>`.
//!
//! The stream comes from the demo generator: webhook-shaped and partner-shaped events,
//! snapshot and thin, with repeated deliveries across sources and shuffled order. Thin
//! events are hydrated from a Stripe API double (wiremock) that serves each object's final
//! version under its tenant's key. The DynamoDB state must equal the generator's expected
//! state, and each poison message must be in a DLQ with its reason.

use crate::aws_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use stripe_worker::backend::aws::{AwsNames, AwsSettings, connect, load_sdk_config};
use stripe_worker::backend::{BusEntry, Queue, StateStore, dlq_attributes};
use stripe_worker::demo::generator::{GeneratedStream, GeneratorConfig, generate};
use stripe_worker::domain::Domain;
use stripe_worker::event::envelope::{
    api_path, envelope_json, partner_snapshot_entry, partner_thin_entry, webhook_snapshot_entry,
};
use stripe_worker::routing::domain_for_event_type;
use stripe_worker::state_view::export_document;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_stripe-worker");

/// The partner event destination of a tenant's snapshot or thin payloads.
fn destination(tenant: &str, style: &str) -> String {
    format!("ed_test_{}_{style}", tenant.replace('-', "_"))
}

/// The restricted API key the Stripe double expects from `tenant`.
fn api_key(tenant: &str) -> String {
    format!("rk_test_{}", tenant.replace('-', "_"))
}

/// Run the binary with `args`; the emulator's endpoint and credentials come from this
/// process's environment, plus `env`.
async fn stripe_worker(args: &[&str], env: &[(String, String)]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "warn,stripe_worker=info")
        .env("STRIPE_WORKER_LOG_FORMAT", "json")
        .output()
        .await
        .expect("the binary runs")
}

fn check(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every generated event on one or two snapshot paths (webhook, partner), some also as
/// thin partner events, some webhook deliveries repeated (Stripe redelivers when our
/// answer is lost); then shuffled.
fn bus_entries(stream: &GeneratedStream, seed: u64) -> Vec<BusEntry> {
    let mut entries = Vec::new();
    for (i, generated) in stream.events.iter().enumerate() {
        let (event, tenant) = (&generated.event, generated.tenant.as_str());
        let received_at = event["created"].as_i64().expect("created") * 1000 + 250;
        let by_webhook = i % 3 != 1;
        if by_webhook {
            let entry = webhook_snapshot_entry(event, tenant, received_at, None).expect("webhook");
            if i % 7 == 0 {
                entries.push(entry.clone());
            }
            entries.push(entry);
        }
        if !by_webhook || i % 5 == 0 {
            entries.push(
                partner_snapshot_entry(event, &destination(tenant, "snapshot")).expect("partner"),
            );
        }
        if i % 4 == 0 {
            entries.push(partner_thin_entry(event, &destination(tenant, "thin")).expect("thin"));
        }
    }
    entries.shuffle(&mut StdRng::seed_from_u64(seed));
    entries
}

/// Messages that can never succeed, with the DLQ reason each must get, and the queue each
/// is sent to (the one its event type routes to, where it has one).
fn poison(tenant: &str) -> Vec<(Domain, String, &'static str)> {
    let unmapped_partner = json!({
        "version": "0", "id": "poison-unmapped", "detail-type": "customer.updated",
        "source": "aws.partner/stripe.com/ed_not_configured", "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {"id": "evt_poison_unmapped", "object": "event", "type": "customer.updated",
            "created": 1_700_000_000, "livemode": false,
            "data": {"object": {"id": "cus_poison", "object": "customer"}}},
    });
    let thin_missing_in_stripe = json!({
        "version": "0", "id": "poison-gone", "detail-type": "v1.invoice.paid",
        "source": format!("aws.partner/stripe.com/{}", destination(tenant, "thin")),
        "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"id": "evt_poison_gone", "object": "v2.core.event", "type": "v1.invoice.paid",
            "created": "2026-01-01T00:00:00.000Z", "livemode": false, "context": null,
            "related_object": {"id": "in_never_existed", "type": "invoice",
                "url": "/v1/invoices/in_never_existed"}},
    });
    let domain = |t: &str| domain_for_event_type(t).expect("routed type");
    vec![
        (
            Domain::Subscription,
            "not json at all".to_owned(),
            "invalid_json",
        ),
        (
            domain("customer.updated"),
            unmapped_partner.to_string(),
            "unknown_tenant",
        ),
        (
            domain("v1.invoice.paid"),
            thin_missing_in_stripe.to_string(),
            "stripe_not_found",
        ),
    ]
}

/// Serve every object's final version at its API path, to its own tenant's key only.
/// Anything else (an unknown object, a wrong key) gets wiremock's default 404.
async fn stripe_double(stream: &GeneratedStream) -> MockServer {
    let server = MockServer::start().await;
    for (tenant, object) in &stream.final_objects {
        let kind = object["object"].as_str().expect("object type");
        let id = object["id"].as_str().expect("object id");
        let Some(api) = api_path(kind, id) else {
            continue;
        };
        Mock::given(method("GET"))
            .and(path(api))
            .and(header(
                "authorization",
                format!("Bearer {}", api_key(tenant)).as_str(),
            ))
            .respond_with(ResponseTemplate::new(200).set_body_json(object))
            .mount(&server)
            .await;
    }
    server
}

fn write_config(file: &Path, tenants: &[String]) {
    let mut text = String::from(
        "[worker]\nwait_time_secs = 1\nvisibility_timeout_secs = 10\nmax_receive_count = 3\n\
         [dedupe]\nlease_secs = 5\n[retry]\nvisibility_backoff_base_secs = 1\n[tenants]\n",
    );
    text.push_str(&format!("tenants = {}\n", json!(tenants)));
    text.push_str("[tenants.destinations]\n");
    for tenant in tenants {
        for style in ["snapshot", "thin"] {
            text.push_str(&format!("{} = \"{tenant}\"\n", destination(tenant, style)));
        }
    }
    std::fs::write(file, text).expect("write config");
}

/// The `worker stopped` log line of a `run` (JSON logs), with its counters.
fn worker_summary(stderr: &[u8]) -> Value {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "worker stopped")
        .map(|l| l["fields"].clone())
        .unwrap_or_else(|| {
            panic!(
                "no `worker stopped` line in:\n{}",
                String::from_utf8_lossy(stderr)
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_publish_run_on_the_emulator_reaches_the_generators_state() {
    aws_support::require_emulator();
    let prefix = aws_support::unique("e2e");
    let dir = tempfile::tempdir().expect("tempdir");

    let stream = generate(&GeneratorConfig {
        events: 200,
        tenants: 2,
        seed: 11,
    });
    let tenants: Vec<String> = {
        let mut t: Vec<String> = stream.events.iter().map(|e| e.tenant.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    assert_eq!(tenants.len(), 2, "both tenants have events");
    let config = dir.path().join("config.toml");
    write_config(&config, &tenants);
    let config = config.to_str().expect("utf-8 path").to_owned();
    let backend_args = ["--backend", "aws", "--prefix", &prefix, "--config", &config];

    // Setup through the binary, twice: the second finds everything in place.
    let out = stripe_worker(&[&["setup"][..], &backend_args].concat(), &[]).await;
    check("setup", &out);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.trim_end().ends_with("13 created, 0 already existed"),
        "{report}"
    );
    let out = stripe_worker(&[&["setup"][..], &backend_args].concat(), &[]).await;
    check("setup again", &out);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim_end()
            .ends_with("0 created, 13 already existed")
    );

    // The stream, as EventBridge envelopes in a JSON-lines file.
    let entries = bus_entries(&stream, 5);
    let kinds = |source_prefix: &str, style: &str| {
        entries
            .iter()
            .filter(|e| e.source.starts_with(source_prefix) && e.detail.contains(style))
            .count()
    };
    assert!(kinds("stripe.webhook", "\"snapshot\"") > 0);
    assert!(kinds("aws.partner/stripe.com/", "\"event\"") > 0);
    assert!(kinds("aws.partner/stripe.com/", "v2.core.event") > 0);
    let lines: Vec<String> = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            envelope_json(
                entry,
                &format!("e2e-{i}"),
                1_767_225_600_000,
                "us-east-1",
                None,
            )
            .expect("envelope")
            .to_string()
        })
        .collect();
    let events_file = dir.path().join("events.jsonl");
    std::fs::write(&events_file, lines.join("\n") + "\n").expect("write events");
    let out = stripe_worker(
        &[
            &["publish", "--file", events_file.to_str().expect("utf-8")][..],
            &backend_args,
        ]
        .concat(),
        &[],
    )
    .await;
    check("publish", &out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "published {} events; 0 invalid lines skipped",
            entries.len()
        )
    );

    // Poison, straight to the queues.
    let poison = poison(&tenants[0]);
    for (i, (domain, body, _)) in poison.iter().enumerate() {
        let file = dir.path().join(format!("poison-{i}.txt"));
        std::fs::write(&file, format!("{body}\n")).expect("write poison");
        let out = stripe_worker(
            &[
                &[
                    "publish",
                    "--file",
                    file.to_str().expect("utf-8"),
                    "--to-queue",
                    domain.as_str(),
                ][..],
                &backend_args,
            ]
            .concat(),
            &[],
        )
        .await;
        check("publish --to-queue", &out);
    }

    // The worker, with the Stripe API double for thin events.
    let double = stripe_double(&stream).await;
    let keys: Vec<(String, String)> = tenants
        .iter()
        .map(|t| (format!("STRIPE_API_KEY_{}", t.to_uppercase()), api_key(t)))
        .collect();
    let out = stripe_worker(
        &[
            &[
                "run",
                "--until-idle",
                "--idle-secs",
                "3",
                "--stripe-api-base",
                &double.uri(),
            ][..],
            &backend_args,
        ]
        .concat(),
        &keys,
    )
    .await;
    check("run --until-idle", &out);
    let summary = worker_summary(&out.stderr);
    assert_eq!(summary["dead_lettered"], poison.len(), "{summary}");
    assert!(
        summary["duplicates"].as_u64().expect("duplicates") > 0,
        "{summary}"
    );
    // A thin event is fetched only when it is the first of its Stripe event to arrive
    // (it dedupes with its snapshot), so some, not all, were; each under its tenant's key.
    let fetches = double.received_requests().await.expect("recording");
    let served: Vec<String> = stream
        .final_objects
        .iter()
        .filter_map(|(t, o)| {
            let api = api_path(o["object"].as_str()?, o["id"].as_str()?)?;
            Some(format!("{api} Bearer {}", api_key(t)))
        })
        .collect();
    let (hits, misses): (Vec<String>, Vec<String>) = fetches
        .iter()
        .map(|r| {
            let auth = r.headers.get("authorization").and_then(|v| v.to_str().ok());
            format!("{} {}", r.url.path(), auth.unwrap_or("-"))
        })
        .partition(|line| served.contains(line));
    assert!(!hits.is_empty(), "thin events were hydrated");
    assert!(
        misses
            .iter()
            .all(|m| m.starts_with("/v1/invoices/in_never_existed ")),
        "only the poison asked for an object the double does not serve: {misses:?}"
    );

    // The DynamoDB state is the generator's expected state, exactly.
    let sdk = load_sdk_config().await;
    let names = AwsNames::new(prefix.clone());
    let backend = connect(&sdk, &names, &AwsSettings::default())
        .await
        .expect("connect");
    let records = backend.state.export(None).await.expect("export");
    let mismatches = stream.expected.compare(&records);
    assert!(
        mismatches.is_empty(),
        "{} mismatches, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );

    // `state export` prints the same document the library builds from those records.
    let out = stripe_worker(
        &[&["state", "export", "--json"][..], &backend_args].concat(),
        &[],
    )
    .await;
    check("state export", &out);
    let exported: Value = serde_json::from_slice(&out.stdout).expect("export JSON");
    assert_eq!(exported, export_document(&records));

    // `status` shows a customer with a subscription.
    let with_subscription = records
        .iter()
        .find(|r| r.kind == "subscription" && r.customer.is_some())
        .expect("a subscription with a customer");
    let customer = with_subscription.customer.as_deref().expect("customer");
    let out = stripe_worker(
        &[
            &[
                "status",
                "--tenant",
                &with_subscription.tenant,
                "--customer",
                customer,
                "--json",
            ][..],
            &backend_args,
        ]
        .concat(),
        &[],
    )
    .await;
    check("status", &out);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains(&with_subscription.id), "{status}");

    // Every poison message is in the DLQ of the queue it was sent to, with its reason.
    let mut dead: BTreeMap<String, (Domain, String)> = BTreeMap::new();
    for domain in Domain::ALL {
        let dlq = aws_support::dlq_of(&sdk, backend.queues.get(domain));
        loop {
            let got = dlq
                .receive(10, std::time::Duration::from_secs(1))
                .await
                .expect("receive from DLQ");
            if got.is_empty() {
                break;
            }
            for message in got {
                let kind = message
                    .attributes
                    .get(dlq_attributes::ERROR_KIND)
                    .cloned()
                    .unwrap_or_else(|| panic!("no reason on {message:?}"));
                assert!(
                    message
                        .attributes
                        .contains_key(dlq_attributes::ERROR_MESSAGE)
                );
                dead.insert(message.body.clone(), (domain, kind));
            }
        }
    }
    let expected: BTreeMap<String, (Domain, String)> = poison
        .into_iter()
        .map(|(domain, body, reason)| (body, (domain, reason.to_owned())))
        .collect();
    assert_eq!(dead, expected);
}
