//! The webhook ingress end to end on the embedded backend: a signed POST to
//! `stripe-worker run --ingest` (the binary, a SQLite data directory, a config with
//! tenants) goes through the local bus and a queue to the worker and shows in `status` and
//! `state export`; bad requests get their HTTP codes and change nothing; thin webhook
//! events are hydrated from a Stripe API double (wiremock), through a 429, or
//! dead-lettered as `stripe_not_found`. In process: a bus outage answers 503 and changes
//! nothing, and Stripe's retry is then applied once.
//!
//! Signatures are computed by tests/stripe_signing, never with the library's helper; the
//! request-level cases without a worker are in tests/ingress.rs.

use crate::stripe_signing;

use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use stripe_signing::sign_now;

use serde_json::{Value, json};
use stripe_worker::app::{cancel_when_idle, open_local};
use stripe_worker::backend::DeadLetterOps;
use stripe_worker::backend::{
    BackendError, BackendResult, Bus, BusEntry, PublishFailures, Queue, StateStore, dlq_attributes,
};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::domain::Domain;
use stripe_worker::ingress::{IngressConfig, IngressState, WebhookSecret, serve};
use stripe_worker::retry::Backoff;
use stripe_worker::worker;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_stripe-worker");
const TENANT: &str = "acme";
const SECRET: &str = "whsec_e2e_acme_0123456789abcdef";
const API_KEY: &str = "rk_test_e2e_acme";

/// A `customer.subscription.updated` event (the captured fixture) for `customer`'s
/// subscription `subscription` in `status`.
fn subscription_event(event_id: &str, subscription: &str, customer: &str, status: &str) -> Value {
    let mut event: Value = serde_json::from_slice(
        &std::fs::read("tests/fixtures/ingress/subscription_updated_event.json").expect("fixture"),
    )
    .expect("fixture JSON");
    event["id"] = json!(event_id);
    event["data"]["object"]["id"] = json!(subscription);
    event["data"]["object"]["customer"] = json!(customer);
    event["data"]["object"]["status"] = json!(status);
    event
}

/// An `invoice.paid` event for an invoice of `customer`.
fn invoice_event(event_id: &str, invoice: &str, customer: &str) -> Value {
    json!({
        "id": event_id, "object": "event", "type": "invoice.paid", "created": 1_750_000_000,
        "livemode": false, "api_version": "2025-03-31.basil",
        "data": {"object": {"id": invoice, "object": "invoice", "customer": customer,
            "status": "paid", "amount_due": 1200, "amount_paid": 1200, "currency": "usd",
            "created": 1_750_000_000}}
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `stripe-worker run --ingest` in the background on a SQLite data directory.
struct Worker {
    child: tokio::process::Child,
    base: String,
    data_dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

impl Worker {
    /// Start the binary with `extra` arguments and `env`, and wait until it answers.
    async fn start(extra: &[&str], env: &[(&str, &str)]) -> Worker {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let config = data_dir.path().join("config.toml");
        std::fs::write(
            &config,
            "[worker]\nwait_time_secs = 1\n[tenants]\ntenants = [\"acme\"]\n",
        )
        .expect("config");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let stderr = std::fs::File::create(data_dir.path().join("stderr.log")).expect("log");
        let child = tokio::process::Command::new(BIN)
            .args(["run", "--ingest", "--listen", &listen, "--data-dir"])
            .arg(data_dir.path().join("data"))
            .arg("--config")
            .arg(&config)
            .args(extra)
            .env("STRIPE_WEBHOOK_SECRET_ACME", SECRET)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn,stripe_worker=info")
            .env("STRIPE_WORKER_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        let worker = Worker {
            child,
            base: format!("http://{listen}"),
            data_dir,
            config,
        };
        // Generous: a debug binary starting on a loaded 2-core machine can take seconds.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("{}/readyz", worker.base)).await
                && r.status() == 200
            {
                return worker;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the ingress did not become ready in 60 s:\n{}",
            worker.log()
        );
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// POST `body` to `path` with `signature` (when given); the status and JSON answer.
    async fn post(&self, path: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let answer = response.json().await.unwrap_or(Value::Null);
        (status, answer)
    }

    /// Another command of the binary on the same data directory and config.
    async fn command(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir.path().join("data"))
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "error")
            .output()
            .await
            .expect("the binary runs")
    }

    /// `status --json` of a customer of `acme`, once it has state (polls up to 60 s: the
    /// worker may be slow on a loaded machine).
    async fn wait_for_status(&self, customer: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let out = self
                .command(&[
                    "status",
                    "--tenant",
                    TENANT,
                    "--customer",
                    customer,
                    "--json",
                ])
                .await;
            if out.status.success() {
                return serde_json::from_slice(&out.stdout).expect("status JSON");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no state for {customer}:\n{}", self.log());
    }

    /// SIGTERM, wait for the drain; the exit status and the `worker stopped` counters.
    async fn stop(mut self) -> (ExitStatus, Value, tempfile::TempDir) {
        let pid = self.child.id().expect("running").to_string();
        let killed = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("drains within 30 s")
            .expect("wait");
        let log = self.log();
        let summary = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["message"] == "worker stopped")
            .map(|l| l["fields"].clone())
            .unwrap_or_else(|| panic!("no `worker stopped` line in:\n{log}"));
        (status, summary, self.data_dir)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhook_reaches_state_and_bad_requests_change_nothing() {
    let worker = Worker::start(&["--max-body-bytes", "16384"], &[]).await;

    let good = serde_json::to_vec(&subscription_event(
        "evt_e2e_good",
        "sub_e2e_good",
        "cus_e2e_good",
        "active",
    ))
    .expect("JSON");
    let signature = sign_now(SECRET, &good);
    let (status, answer) = worker
        .post(
            &format!("/webhooks/stripe/{TENANT}"),
            Some(&signature),
            good.clone(),
        )
        .await;
    assert_eq!((status, &answer), (200, &json!({"received": true})));

    // Each bad request carries an event of its own customer, which must never get state.
    let bad = |n: &str| {
        serde_json::to_vec(&subscription_event(
            &format!("evt_e2e_{n}"),
            &format!("sub_e2e_{n}"),
            &format!("cus_e2e_{n}"),
            "active",
        ))
        .expect("JSON")
    };
    let path = format!("/webhooks/stripe/{TENANT}");
    let body = bad("wrong_secret");
    let forged = sign_now("whsec_someone_else", &body);
    let (status, answer) = worker.post(&path, Some(&forged), body).await;
    assert_eq!(
        (status, &answer["reason"]),
        (400, &json!("no_matching_signature"))
    );

    let body = bad("tampered");
    let signature_of_other_body = sign_now(SECRET, &good);
    let (status, answer) = worker
        .post(&path, Some(&signature_of_other_body), body)
        .await;
    assert_eq!(
        (status, &answer["reason"]),
        (400, &json!("no_matching_signature"))
    );

    let (status, answer) = worker
        .post(&path, Some("v1=deadbeef,t=notanumber"), bad("malformed"))
        .await;
    assert_eq!(
        (status, &answer["reason"]),
        (400, &json!("malformed_signature_header"))
    );

    let (status, answer) = worker.post(&path, None, bad("unsigned")).await;
    assert_eq!(
        (status, &answer["reason"]),
        (400, &json!("missing_signature_header"))
    );

    let mut large = subscription_event("evt_e2e_large", "sub_e2e_large", "cus_e2e_large", "active");
    large["data"]["object"]["metadata"] = json!({"padding": "x".repeat(20_000)});
    let large = serde_json::to_vec(&large).expect("JSON");
    let signature = sign_now(SECRET, &large);
    let (status, answer) = worker.post(&path, Some(&signature), large).await;
    assert_eq!(
        (status, &answer["reason"]),
        (413, &json!("payload_too_large"))
    );

    let body = bad("unknown_tenant");
    let signature = sign_now(SECRET, &body);
    let (status, answer) = worker
        .post("/webhooks/stripe/nobody", Some(&signature), body)
        .await;
    assert_eq!((status, &answer["reason"]), (404, &json!("unknown_tenant")));

    // The accepted event shows in `status` and `state export`.
    let status = worker.wait_for_status("cus_e2e_good").await;
    assert_eq!(
        status["subscriptions"][0]["id"], "sub_e2e_good",
        "{status:#}"
    );
    assert_eq!(status["subscriptions"][0]["status"], "active", "{status:#}");

    // Stripe delivers the same event again (our 200 was lost): accepted, applied once.
    let (status, _) = worker
        .post(&path, Some(&sign_now(SECRET, &good)), good)
        .await;
    assert_eq!(status, 200);

    let (exit, summary, data_dir) = worker.stop().await;
    assert!(exit.success(), "{exit}");
    assert_eq!(summary["applied"], 1, "{summary}");
    assert_eq!(summary["duplicates"], 1, "{summary}");
    assert_eq!(summary["dead_lettered"], 0, "{summary}");

    let export = tokio::process::Command::new(BIN)
        .args(["state", "export", "--json", "--data-dir"])
        .arg(data_dir.path().join("data"))
        .arg("--config")
        .arg(data_dir.path().join("config.toml"))
        .output()
        .await
        .expect("export runs");
    assert!(export.status.success());
    let document: Value = serde_json::from_slice(&export.stdout).expect("export JSON");
    let text = document.to_string();
    assert!(text.contains("sub_e2e_good"), "{document:#}");
    for n in [
        "wrong_secret",
        "tampered",
        "malformed",
        "unsigned",
        "large",
        "unknown_tenant",
    ] {
        assert!(
            !text.contains(&format!("cus_e2e_{n}")),
            "a rejected request changed the state: {document:#}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_webhook_events_are_hydrated_through_429_or_dead_lettered_when_missing() {
    let stripe = MockServer::start().await;
    // The API serves the subscription's current version: `past_due`, where the webhook
    // body said `active`. Its first answer is a 429.
    let current = subscription_event("evt_unused", "sub_e2e_thin", "cus_e2e_thin", "past_due")
        ["data"]["object"]
        .clone();
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_e2e_thin"))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({"error": {}})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&stripe)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_e2e_thin"))
        .and(header(
            "authorization",
            format!("Bearer {API_KEY}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(&current))
        .with_priority(2)
        .mount(&stripe)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/invoices/in_e2e_gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing"}}),
        ))
        .mount(&stripe)
        .await;

    let worker = Worker::start(
        &[
            "--publish-styles",
            "thin",
            "--stripe-api-base",
            &stripe.uri(),
        ],
        &[("STRIPE_API_KEY_ACME", API_KEY)],
    )
    .await;
    let path = format!("/webhooks/stripe/{TENANT}");
    let subscription = serde_json::to_vec(&subscription_event(
        "evt_e2e_thin",
        "sub_e2e_thin",
        "cus_e2e_thin",
        "active",
    ))
    .expect("JSON");
    let (status, _) = worker
        .post(&path, Some(&sign_now(SECRET, &subscription)), subscription)
        .await;
    assert_eq!(status, 200);
    let invoice = serde_json::to_vec(&invoice_event(
        "evt_e2e_gone",
        "in_e2e_gone",
        "cus_e2e_thin",
    ))
    .expect("JSON");
    let (status, _) = worker
        .post(&path, Some(&sign_now(SECRET, &invoice)), invoice)
        .await;
    assert_eq!(status, 200);

    let status = worker.wait_for_status("cus_e2e_thin").await;
    assert_eq!(
        status["subscriptions"][0]["status"], "past_due",
        "the state holds the fetched version: {status:#}"
    );
    let (exit, summary, data_dir) = worker.stop().await;
    assert!(exit.success(), "{exit}");
    assert_eq!(summary["applied"], 1, "{summary}");
    assert_eq!(summary["dead_lettered"], 1, "{summary}");

    let fetches: Vec<String> = stripe
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(
        fetches
            .iter()
            .filter(|p| *p == "/v1/subscriptions/sub_e2e_thin")
            .count(),
        2,
        "one 429, then the 200: {fetches:?}"
    );
    assert_eq!(
        fetches
            .iter()
            .filter(|p| *p == "/v1/invoices/in_e2e_gone")
            .count(),
        1,
        "a 404 is not retried: {fetches:?}"
    );

    // The invoice's thin event is in the payment DLQ with its reason.
    let config = Config::load(
        Some(&data_dir.path().join("config.toml")),
        std::iter::empty::<(String, String)>(),
    )
    .expect("config");
    let backend = open_local(&data_dir.path().join("data"), &config, system_clock())
        .expect("open the data directory");
    let dead = backend
        .queues
        .get(Domain::Payment)
        .dlq_peek(10)
        .await
        .expect("peek");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = &dead[0].attributes;
    assert_eq!(
        reason.get(dlq_attributes::ERROR_KIND).map(String::as_str),
        Some("stripe_not_found"),
        "{dead:?}"
    );
    assert!(dead[0].body.contains("in_e2e_gone"));
}

/// The local bus, or an outage: while `down`, every publish fails transiently.
struct Outage<B> {
    bus: Arc<B>,
    down: AtomicBool,
}

impl<B: Bus> Bus for Outage<B> {
    async fn publish(&self, entries: &[BusEntry]) -> BackendResult<PublishFailures> {
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Transient {
                operation: "publish",
                message: "bus outage".into(),
            });
        }
        self.bus.publish(entries).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_outage_answers_503_without_state_and_stripes_retry_applies_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.worker.wait_time_secs = 1;
    config.tenants.tenants = vec![TENANT.to_owned()];
    let backend = open_local(dir.path(), &config, system_clock()).expect("open");

    let worker = worker::Worker::build(&config, &backend, None, system_clock());
    let stats = Arc::clone(worker.stats());
    let shutdown = CancellationToken::new();
    let pool = tokio::spawn(worker.run(shutdown.clone()));

    let bus = Arc::new(Outage {
        bus: Arc::clone(&backend.bus),
        down: AtomicBool::new(true),
    });
    let ingress = IngressConfig {
        tenants: [(
            TENANT.to_owned(),
            vec![WebhookSecret::new(SECRET).expect("secret")],
        )]
        .into(),
        publish_retry: Backoff::doubling(Duration::from_millis(5), Duration::from_millis(10), 1),
        ..IngressConfig::default()
    };
    let state = IngressState::new(ingress, Arc::clone(&bus)).expect("ingress config");
    let counters = state.counters();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/webhooks/stripe/{TENANT}",
        listener.local_addr().expect("addr")
    );
    let server = tokio::spawn(serve(listener, state, shutdown.clone()));

    let body = serde_json::to_vec(&subscription_event(
        "evt_e2e_outage",
        "sub_e2e_outage",
        "cus_e2e_outage",
        "active",
    ))
    .expect("JSON");
    let signature = sign_now(SECRET, &body);
    let deliver = || async {
        let response = reqwest::Client::new()
            .post(&url)
            .header("Stripe-Signature", &signature)
            .body(body.clone())
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (
            status,
            response.json::<Value>().await.unwrap_or(Value::Null),
        )
    };

    let (status, answer) = deliver().await;
    assert_eq!((status, &answer["reason"]), (503, &json!("publish_failed")));
    // Nothing was queued, so nothing is applied however long the worker runs.
    for domain in Domain::ALL {
        let (main, dlq) = backend.queues.get(domain).stats().await.expect("stats");
        assert_eq!(
            main.visible + main.in_flight + main.delayed + dlq.visible,
            0
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        backend
            .state
            .by_customer(TENANT, "cus_e2e_outage")
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(stats.snapshot().received, 0);

    // The bus is back; Stripe retries the delivery, then once more (our 200 was lost).
    bus.down.store(false, Ordering::SeqCst);
    assert_eq!(deliver().await.0, 200);
    assert_eq!(deliver().await.0, 200);
    cancel_when_idle(
        Arc::clone(&backend.queues),
        Arc::clone(&stats),
        Duration::from_millis(500),
        shutdown.clone(),
    )
    .await;
    pool.await.expect("pool");
    server.await.expect("join").expect("serve");

    let records = backend
        .state
        .by_customer(TENANT, "cus_e2e_outage")
        .await
        .expect("read");
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].id, "sub_e2e_outage");
    let worker = stats.snapshot();
    assert_eq!((worker.applied, worker.duplicates), (1, 1), "{worker:?}");
    let ingress = counters.snapshot();
    assert_eq!(ingress.accepted, 2);
}
