//! Black-box tests of the webhook ingress: a real server on a port-0 listener, a recording
//! in-test bus, and signatures computed with hmac/sha2 directly by tests/stripe_signing
//! (never with the library's own signing helper).

use crate::stripe_signing;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stripe_signing::{sign, v1};

use serde_json::Value;
use stripe_worker::backend::{BackendError, BackendResult, Bus, BusEntry, PublishFailures};
use stripe_worker::ingress::{
    IngressConfig, IngressCounters, IngressState, PublishStyles, RejectReason, WebhookSecret,
    serve, signature_header,
};
use stripe_worker::retry::Backoff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "whsec_test_primary_0123456789abcdef";
const OLD_SECRET: &str = "whsec_test_rolled_out_fedcba9876543210";
const ACME_SECRET: &str = "whsec_test_acme_tenant_secret";
/// Fixed "now" of the server's clock, seconds since the epoch.
const NOW: i64 = 1_750_000_100;

fn fixture() -> Vec<u8> {
    std::fs::read("tests/fixtures/ingress/subscription_updated_event.json").expect("fixture")
}

/// A bus that records accepted entries and fails the first `fail_calls` publish calls
/// (every entry of them, as transient failures).
#[derive(Default)]
struct RecordingBus {
    accepted: Mutex<Vec<BusEntry>>,
    calls: AtomicUsize,
    fail_calls: usize,
    /// When set, each publish waits for a notification first (to hold a request in flight).
    gate: Option<Arc<Notify>>,
    entered: Arc<Notify>,
}

impl RecordingBus {
    fn failing(n: usize) -> Self {
        RecordingBus {
            fail_calls: n,
            ..Default::default()
        }
    }

    fn entries(&self) -> Vec<BusEntry> {
        self.accepted.lock().expect("lock").clone()
    }
}

impl Bus for RecordingBus {
    async fn publish(&self, entries: &[BusEntry]) -> BackendResult<PublishFailures> {
        if let Some(gate) = &self.gate {
            self.entered.notify_one();
            gate.notified().await;
        }
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.fail_calls {
            return Ok(PublishFailures {
                failed: (0..entries.len())
                    .map(|i| {
                        (
                            i,
                            BackendError::Transient {
                                operation: "put_events",
                                message: "injected".into(),
                            },
                        )
                    })
                    .collect(),
            });
        }
        self.accepted
            .lock()
            .expect("lock")
            .extend_from_slice(entries);
        Ok(PublishFailures::default())
    }
}

struct Server {
    base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    counters: Arc<IngressCounters>,
}

fn config() -> IngressConfig {
    let mut tenants = BTreeMap::new();
    tenants.insert(
        "default".to_owned(),
        vec![WebhookSecret::new(SECRET).expect("secret")],
    );
    tenants.insert(
        "acme".to_owned(),
        vec![WebhookSecret::new(ACME_SECRET).expect("secret")],
    );
    IngressConfig {
        tenants,
        publish_retry: Backoff::doubling(Duration::from_millis(5), Duration::from_millis(10), 1),
        ..IngressConfig::default()
    }
}

async fn start(config: IngressConfig, bus: Arc<RecordingBus>) -> Server {
    start_with(IngressState::new(config, bus).expect("valid config")).await
}

async fn start_with(state: IngressState<RecordingBus>) -> Server {
    let state = state.with_clock(Arc::new(|| NOW * 1000));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counters = state.counters();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve(listener, state, shutdown.clone()));
    Server {
        base: format!("http://{addr}"),
        shutdown,
        task,
        counters,
    }
}

impl Server {
    async fn post(&self, path: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = signature {
            req = req.header("Stripe-Signature", sig);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        assert!(
            !text.contains("whsec_"),
            "an answer echoed a secret: {text}"
        );
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("join").expect("serve");
    }
}

fn reason(answer: &Value) -> &str {
    answer["reason"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn valid_signature_is_published_as_a_snapshot_entry() {
    let bus = Arc::new(RecordingBus::default());
    let server = start(config(), Arc::clone(&bus)).await;
    let body = fixture();
    let (status, answer) = server
        .post("/webhooks/stripe", Some(&sign(SECRET, NOW, &body)), body)
        .await;
    assert_eq!(status, 200, "{answer}");
    let entries = bus.entries();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].source, "stripe.webhook");
    assert_eq!(entries[0].detail_type, "Stripe Webhook Event");
    let detail: Value = serde_json::from_str(&entries[0].detail).expect("detail is JSON");
    assert_eq!(detail["id"], "evt_1QxIngressSubUpd01");
    assert_eq!(detail["tenant_id"], "default");
    assert_eq!(detail["payload_style"], "snapshot");
    let snap = server.counters.snapshot();
    assert_eq!((snap.accepted, snap.entries_published), (1, 1));
    server.stop().await;
}

#[tokio::test]
async fn tenant_path_uses_that_tenants_secret() {
    let bus = Arc::new(RecordingBus::default());
    let server = start(config(), Arc::clone(&bus)).await;
    let body = fixture();
    let (status, _) = server
        .post(
            "/webhooks/stripe/acme",
            Some(&sign(ACME_SECRET, NOW, &body)),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200);
    // The default tenant's secret does not open another tenant's endpoint.
    let (status, answer) = server
        .post(
            "/webhooks/stripe/acme",
            Some(&sign(SECRET, NOW, &body)),
            body,
        )
        .await;
    assert_eq!((status, reason(&answer)), (400, "no_matching_signature"));
    let entries = bus.entries();
    assert_eq!(entries.len(), 1);
    let detail: Value = serde_json::from_str(&entries[0].detail).expect("detail");
    assert_eq!(detail["tenant_id"], "acme");
    server.stop().await;
}

#[tokio::test]
async fn rotation_accepts_either_v1_and_either_configured_secret() {
    let bus = Arc::new(RecordingBus::default());
    let body = fixture();
    // Stripe signs with both the old and the new secret while rolling.
    let both = format!(
        "t={NOW},v1={},v1={}",
        v1(OLD_SECRET, NOW, &body),
        v1(SECRET, NOW, &body)
    );
    // An endpoint that knows only the new secret matches the second v1.
    let server = start(config(), Arc::clone(&bus)).await;
    let (status, _) = server
        .post("/webhooks/stripe", Some(&both), body.clone())
        .await;
    assert_eq!(status, 200);
    server.stop().await;

    // An endpoint configured with both secrets accepts a request signed with either.
    let mut cfg = config();
    cfg.tenants.insert(
        "default".to_owned(),
        vec![
            WebhookSecret::new(SECRET).expect("secret"),
            WebhookSecret::new(OLD_SECRET).expect("secret"),
        ],
    );
    let server = start(cfg, Arc::clone(&bus)).await;
    for secret in [SECRET, OLD_SECRET] {
        let (status, _) = server
            .post(
                "/webhooks/stripe",
                Some(&sign(secret, NOW, &body)),
                body.clone(),
            )
            .await;
        assert_eq!(status, 200, "signed with one of the configured secrets");
    }
    server.stop().await;
    assert_eq!(bus.entries().len(), 3);
}

#[tokio::test]
async fn signature_failures_are_400_with_a_counted_reason() {
    let bus = Arc::new(RecordingBus::default());
    let server = start(config(), Arc::clone(&bus)).await;
    let body = fixture();
    let good = v1(SECRET, NOW, &body);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "only v0",
            Some(format!("t={NOW},v0={good}")),
            "no_v1_signature",
        ),
        (
            "wrong secret",
            Some(sign("whsec_someone_else", NOW, &body)),
            "no_matching_signature",
        ),
        (
            "signature of another body",
            Some(sign(SECRET, NOW, b"{}")),
            "no_matching_signature",
        ),
        (
            "upper-case hex",
            Some(format!("t={NOW},v1={}", good.to_uppercase())),
            "no_matching_signature",
        ),
        (
            "old timestamp",
            Some(sign(SECRET, NOW - 301, &body)),
            "timestamp_outside_tolerance",
        ),
        (
            "far future timestamp",
            Some(sign(SECRET, NOW + 301, &body)),
            "timestamp_outside_tolerance",
        ),
        (
            "signed t differs from header t",
            Some(format!("t={},v1={good}", NOW + 1)),
            "no_matching_signature",
        ),
        (
            "v1 without value",
            Some("v1,t=1".to_owned()),
            "malformed_signature_header",
        ),
        (
            "empty t",
            Some("t=".to_owned()),
            "malformed_signature_header",
        ),
        (
            "empty header",
            Some(String::new()),
            "malformed_signature_header",
        ),
        (
            "no t",
            Some(format!("v1={good}")),
            "malformed_signature_header",
        ),
        (
            "non-numeric t",
            Some(format!("t=abc,v1={good}")),
            "malformed_signature_header",
        ),
        ("missing header", None, "missing_signature_header"),
    ];
    for (name, header, want) in &cases {
        let (status, answer) = server
            .post("/webhooks/stripe", header.as_deref(), body.clone())
            .await;
        assert_eq!((status, reason(&answer)), (400, *want), "case {name}");
        assert_eq!(answer["error"], "invalid signature", "case {name}");
    }
    assert!(bus.entries().is_empty());
    let snap = server.counters.snapshot();
    assert_eq!(snap.rejected(RejectReason::MalformedSignature), 5);
    assert_eq!(snap.rejected(RejectReason::NoMatchingSignature), 4);
    assert_eq!(snap.rejected(RejectReason::TimestampOutsideTolerance), 2);
    assert_eq!(snap.rejected(RejectReason::NoV1Signature), 1);
    assert_eq!(snap.rejected(RejectReason::MissingSignature), 1);
    assert_eq!(snap.accepted, 0);
    server.stop().await;
}

#[tokio::test]
async fn future_timestamp_inside_tolerance_is_accepted() {
    let bus = Arc::new(RecordingBus::default());
    let server = start(config(), Arc::clone(&bus)).await;
    let body = fixture();
    let (status, _) = server
        .post(
            "/webhooks/stripe",
            Some(&sign(SECRET, NOW + 299, &body)),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post(
            "/webhooks/stripe",
            Some(&sign(SECRET, NOW - 299, &body)),
            body,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(bus.entries().len(), 2);
    server.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let bus = Arc::new(RecordingBus::default());
    let mut cfg = config();
    cfg.max_body_bytes = 1024;
    let server = start(cfg, Arc::clone(&bus)).await;
    let body = vec![b' '; 1025];
    let (status, answer) = server
        .post("/webhooks/stripe", Some(&sign(SECRET, NOW, &body)), body)
        .await;
    assert_eq!((status, reason(&answer)), (413, "payload_too_large"));

    // Without Content-Length (chunked), the limit holds while reading.
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let chunk = "x".repeat(700);
    let request = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nhost: {addr}\r\nstripe-signature: t={NOW},v1=00\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");

    assert_eq!(
        server
            .counters
            .snapshot()
            .rejected(RejectReason::PayloadTooLarge),
        2
    );
    assert!(bus.entries().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn signed_but_not_a_stripe_event_is_400() {
    let bus = Arc::new(RecordingBus::default());
    let server = start(config(), Arc::clone(&bus)).await;
    let not_json = b"id=evt_1&type=x".to_vec();
    let (status, answer) = server
        .post(
            "/webhooks/stripe",
            Some(&sign(SECRET, NOW, &not_json)),
            not_json,
        )
        .await;
    assert_eq!((status, reason(&answer)), (400, "not_json"));
    assert_eq!(answer["error"], "invalid event");

    let thin_v2 = br#"{"id":"evt_1","object":"v2.core.event","type":"x","created":"2024-03-07T18:27:56.000Z"}"#.to_vec();
    let (status, answer) = server
        .post(
            "/webhooks/stripe",
            Some(&sign(SECRET, NOW, &thin_v2)),
            thin_v2,
        )
        .await;
    assert_eq!((status, reason(&answer)), (400, "not_stripe_event"));

    let no_id = br#"{"object":"event","type":"x","created":1}"#.to_vec();
    let (status, answer) = server
        .post("/webhooks/stripe", Some(&sign(SECRET, NOW, &no_id)), no_id)
        .await;
    assert_eq!((status, reason(&answer)), (400, "not_stripe_event"));
    assert!(bus.entries().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn unknown_tenant_is_404() {
    let bus = Arc::new(RecordingBus::default());
    let server = start(config(), Arc::clone(&bus)).await;
    let body = fixture();
    let (status, answer) = server
        .post(
            "/webhooks/stripe/nobody",
            Some(&sign(SECRET, NOW, &body)),
            body,
        )
        .await;
    assert_eq!((status, reason(&answer)), (404, "unknown_tenant"));
    assert_eq!(answer["error"], "unknown tenant");
    assert_eq!(
        server
            .counters
            .snapshot()
            .rejected(RejectReason::UnknownTenant),
        1
    );

    // Without a default tenant, the tenant-less path is an unknown tenant too.
    server.stop().await;
    let mut cfg = config();
    cfg.tenants.remove("default");
    let server = start(cfg, Arc::clone(&bus)).await;
    let body = fixture();
    let (status, _) = server
        .post("/webhooks/stripe", Some(&sign(SECRET, NOW, &body)), body)
        .await;
    assert_eq!(status, 404);
    assert!(bus.entries().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn bus_failure_is_503_and_stripes_retry_publishes_exactly_once() {
    // Fails two calls: both attempts of the first request (max_attempts = 2).
    let bus = Arc::new(RecordingBus::failing(2));
    let server = start(config(), Arc::clone(&bus)).await;
    let body = fixture();
    let sig = sign(SECRET, NOW, &body);
    let (status, answer) = server
        .post("/webhooks/stripe", Some(&sig), body.clone())
        .await;
    assert_eq!((status, reason(&answer)), (503, "publish_failed"));
    assert!(bus.entries().is_empty());
    // Stripe retries the same delivery.
    let (status, _) = server.post("/webhooks/stripe", Some(&sig), body).await;
    assert_eq!(status, 200);
    assert_eq!(bus.entries().len(), 1, "exactly one accepted publish");
    assert_eq!(bus.calls.load(Ordering::SeqCst), 3);
    let snap = server.counters.snapshot();
    assert_eq!(snap.rejected(RejectReason::PublishFailed), 1);
    assert_eq!((snap.accepted, snap.publish_retries), (1, 1));
    server.stop().await;
}

#[tokio::test]
async fn transient_bus_failure_is_retried_within_the_request() {
    let bus = Arc::new(RecordingBus::failing(1));
    let server = start(config(), Arc::clone(&bus)).await;
    let body = fixture();
    let (status, _) = server
        .post("/webhooks/stripe", Some(&sign(SECRET, NOW, &body)), body)
        .await;
    assert_eq!(status, 200);
    assert_eq!(bus.entries().len(), 1);
    assert_eq!(server.counters.snapshot().publish_retries, 1);
    server.stop().await;
}

#[tokio::test]
async fn both_styles_publish_a_snapshot_and_a_thin_entry() {
    let bus = Arc::new(RecordingBus::default());
    let mut cfg = config();
    cfg.styles = PublishStyles::Both;
    let server = start(cfg, Arc::clone(&bus)).await;
    let body = fixture();
    let (status, _) = server
        .post("/webhooks/stripe", Some(&sign(SECRET, NOW, &body)), body)
        .await;
    assert_eq!(status, 200);
    let styles: Vec<Value> = bus
        .entries()
        .iter()
        .map(|e| {
            let d: Value = serde_json::from_str(&e.detail).expect("detail");
            assert_eq!(d["tenant_id"], "default");
            d["payload_style"].clone()
        })
        .collect();
    assert_eq!(styles, vec![Value::from("snapshot"), Value::from("thin")]);
    assert_eq!(server.counters.snapshot().entries_published, 2);
    server.stop().await;
}

#[tokio::test]
async fn health_and_readiness() {
    let bus = Arc::new(RecordingBus::default());
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&ready);
    let state = IngressState::new(config(), bus)
        .expect("valid")
        .with_ready_check(Arc::new(move || {
            let up = flag.load(Ordering::SeqCst);
            Box::pin(async move {
                if up {
                    Ok(())
                } else {
                    Err("bus unreachable".to_owned())
                }
            })
        }));
    let server = start_with(state).await;
    let get = |path: &'static str| {
        let url = format!("{}{path}", server.base);
        async move {
            let resp = reqwest::get(url).await.expect("get");
            (resp.status().as_u16(), resp.text().await.expect("text"))
        }
    };
    assert_eq!(get("/healthz").await.0, 200);
    let (status, text) = get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        !text.contains("unreachable"),
        "the check's message stays in logs"
    );
    ready.store(true, Ordering::SeqCst);
    assert_eq!(get("/readyz").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests() {
    let gate = Arc::new(Notify::new());
    let bus = Arc::new(RecordingBus {
        gate: Some(Arc::clone(&gate)),
        ..Default::default()
    });
    let server = start(config(), Arc::clone(&bus)).await;
    let body = fixture();
    let sig = sign(SECRET, NOW, &body);
    let url = format!("{}/webhooks/stripe", server.base);
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("Stripe-Signature", sig)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    // Wait until the request is inside publish, then ask the server to stop.
    bus.entered.notified().await;
    server.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !server.task.is_finished(),
        "serve waits for the in-flight request"
    );
    gate.notify_one();
    assert_eq!(in_flight.await.expect("join").expect("response"), 200);
    tokio::time::timeout(Duration::from_secs(5), server.task)
        .await
        .expect("serve returns after draining")
        .expect("join")
        .expect("serve");
    assert_eq!(bus.entries().len(), 1);
}

#[tokio::test]
async fn readiness_reports_draining_once_shutdown_starts() {
    let bus = Arc::new(RecordingBus::default());
    let token = CancellationToken::new();
    token.cancel();
    let app =
        stripe_worker::ingress::router(IngressState::new(config(), bus).expect("valid"), token);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    let resp = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.text().await.expect("text"),
        r#"{"status":"shutting_down"}"#
    );
    task.abort();
}

#[test]
fn library_signature_header_matches_an_independent_hmac() {
    let body = fixture();
    let secret = WebhookSecret::new(SECRET).expect("secret");
    assert_eq!(
        signature_header(&body, &secret, NOW),
        sign(SECRET, NOW, &body)
    );
}

#[test]
fn config_from_a_mounted_secrets_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("acme"),
        format!("{ACME_SECRET}\n{OLD_SECRET}\n"),
    )
    .expect("write");
    let cfg = IngressConfig::from_vars(
        [(
            "STRIPE_WEBHOOK_SECRET".to_owned(),
            format!("{SECRET},{OLD_SECRET}"),
        )],
        Some(dir.path()),
        &stripe_worker::tenant::TenantConfig {
            default_tenant: Some("default".into()),
            tenants: vec!["acme".into()],
            ..Default::default()
        },
    )
    .expect("valid");
    assert_eq!(cfg.tenants["default"].len(), 2);
    assert_eq!(cfg.tenants["acme"].len(), 2);
    let printed = format!("{cfg:?}");
    assert!(
        !printed.contains("whsec_"),
        "config Debug leaks a secret: {printed}"
    );
}

#[tokio::test]
async fn an_event_the_builders_refuse_is_400_envelope_error() {
    let bus = Arc::new(RecordingBus::default());
    let mut cfg = config();
    cfg.styles = PublishStyles::Thin;
    let server = start(cfg, Arc::clone(&bus)).await;
    // A Stripe event, but without `livemode` and `data.object`, which a thin entry needs.
    let body = br#"{"id":"evt_1","object":"event","type":"customer.updated","created":1750000000}"#
        .to_vec();
    let (status, answer) = server
        .post("/webhooks/stripe", Some(&sign(SECRET, NOW, &body)), body)
        .await;
    assert_eq!((status, reason(&answer)), (400, "envelope_error"));
    assert!(bus.entries().is_empty());
    server.stop().await;
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use stripe_worker::ingress::verify;

    proptest! {
        /// Any header and body: a verdict, never a panic.
        #[test]
        fn verify_never_panics(header in ".{0,200}", body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let secret = WebhookSecret::new(SECRET).expect("secret");
            let _ = verify(&header, &body, &[secret], NOW, Duration::from_secs(300));
        }

        /// Any body signed with an independent HMAC verifies, and the same signature does
        /// not verify a different body.
        #[test]
        fn independent_signatures_verify(body in proptest::collection::vec(any::<u8>(), 0..512), skew in -300i64..=300, flip in any::<prop::sample::Index>()) {
            let secret = WebhookSecret::new(SECRET).expect("secret");
            let t = NOW + skew;
            let header = sign(SECRET, t, &body);
            prop_assert_eq!(verify(&header, &body, std::slice::from_ref(&secret), NOW, Duration::from_secs(300)), Ok(t));
            if !body.is_empty() {
                let mut other = body.clone();
                let i = flip.index(other.len());
                other[i] ^= 0x01;
                prop_assert!(verify(&header, &other, &[secret], NOW, Duration::from_secs(300)).is_err());
            }
        }
    }
}
