//! Telemetry against a real OTLP endpoint: an OTLP/gRPC receiver (the collector's trace and
//! metric services, over tonic) runs inside the test on port 0, and receives the export of
//! a real pipeline run: a signed webhook POST to the ingress (port 0), the local bus over
//! the memory backend, the worker pool, the state store. Also: no secret ever reaches logs,
//! answers or span attributes, and the Grafana dashboard uses only metrics the code emits.

use crate::{child_process, stripe_signing};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stripe_signing::sign;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::Value;
use stripe_worker::app::{cancel_when_idle, memory_backend};
use stripe_worker::backend::Bus;
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::event::envelope::entry_from_envelope;
use stripe_worker::ingress::{IngressConfig, IngressState, LOCAL_BUS_NAME, WebhookSecret, serve};
use stripe_worker::stripe::api::{ApiKey, StripeApiClient, StripeApiConfig};
use stripe_worker::stripe::hydrate::Hydrator;
use stripe_worker::telemetry::trace::StoreSpans;
use stripe_worker::telemetry::{self, LogFormat, Telemetry, TelemetryConfig, metrics};
use stripe_worker::worker::Worker;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const SECRET: &str = "whsec_telemetry_test_do_not_log_4f9a1c";
const WRONG_SECRET: &str = "whsec_wrong_secret_never_logged_77e2b0";
const API_KEY: &str = "rk_test_telemetry_key_never_logged_91d3";

/// Everything the receiver got.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    metrics: Arc<Mutex<Vec<Metric>>>,
    /// The resource attributes of every export.
    resources: Arc<Mutex<Vec<Vec<KeyValue>>>>,
    /// The `grpc-encoding` of every export request (`identity` when uncompressed).
    encodings: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn note_request<T>(&self, request: &Request<T>) {
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity");
        self.encodings
            .lock()
            .expect("lock")
            .push(encoding.to_owned());
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.note_request(&request);
        let mut spans = self.spans.lock().expect("lock");
        for resource in request.into_inner().resource_spans {
            if let Some(r) = &resource.resource {
                self.resources
                    .lock()
                    .expect("lock")
                    .push(r.attributes.clone());
            }
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.note_request(&request);
        let mut metrics = self.metrics.lock().expect("lock");
        for resource in request.into_inner().resource_metrics {
            if let Some(r) = &resource.resource {
                self.resources
                    .lock()
                    .expect("lock")
                    .push(r.attributes.clone());
            }
            for scope in resource.scope_metrics {
                metrics.extend(scope.metrics);
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// Start the receiver on port 0 (it accepts gzip-compressed exports); its `http://`
/// endpoint.
async fn start_receiver(receiver: Receiver) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(receiver.clone())
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .add_service(
                MetricsServiceServer::new(receiver)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    format!("http://{addr}")
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// A resource attribute's value as text.
fn value_text_of(value: &any_value::Value) -> String {
    match value {
        any_value::Value::StringValue(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

fn attr_str<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(&span.attributes, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn attr_int(span: &Span, key: &str) -> Option<i64> {
    match attr(&span.attributes, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn value_text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// The sum of a counter's data points (cumulative) whose labels include `labels`.
fn sum_of(metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    // Cumulative temporality: the last export holds the totals.
    let metric = metrics.iter().rev().find(|m| m.name == name)?;
    let matches = |attributes: &[KeyValue]| {
        labels.iter().all(|(k, v)| {
            attr(attributes, k).is_some_and(|a| match a {
                any_value::Value::StringValue(s) => s == v,
                any_value::Value::IntValue(i) => i.to_string() == *v,
                _ => false,
            })
        })
    };
    match metric.data.as_ref()? {
        metric::Data::Sum(sum) => Some(
            sum.data_points
                .iter()
                .filter(|p| matches(&p.attributes))
                .map(|p| match p.value {
                    Some(
                        opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i),
                    ) => i as f64,
                    Some(
                        opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(
                            d,
                        ),
                    ) => d,
                    None => 0.0,
                })
                .sum(),
        ),
        metric::Data::Histogram(h) => Some(
            h.data_points
                .iter()
                .filter(|p| matches(&p.attributes))
                .map(|p| p.count as f64)
                .sum(),
        ),
        _ => None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_trace_runs_from_the_webhook_to_the_state_write_and_metrics_match_the_run() {
    // The metric instruments are process-wide and created once: other tests of this binary
    // create them first (as no-ops) and record into them. A process of its own.
    // The child also exports gzip-compressed, as OTEL_EXPORTER_OTLP_COMPRESSION asks (the
    // SDK reads it when the exporters are built): the one setting changed from the default.
    if !child_process::is_child() {
        child_process::run_alone(
            "telemetry::one_trace_runs_from_the_webhook_to_the_state_write_and_metrics_match_the_run",
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")],
        );
        return;
    }
    let receiver = Receiver::default();
    let endpoint = start_receiver(receiver.clone()).await;
    let otel = Telemetry::start(&TelemetryConfig {
        metric_interval: Some(Duration::from_secs(3600)),
        ..TelemetryConfig::otlp_grpc(endpoint)
    })
    .expect("exporters build");
    assert!(otel.traces_enabled());
    assert!(otel.install_metrics(), "instruments are created once, here");
    let logs = Logs::default();
    let _subscriber = tracing::subscriber::set_default(telemetry::subscriber(
        &otel,
        LogFormat::Json,
        logs.clone(),
        // The production default: trace ids must be in the logs at that level too.
        tracing_subscriber::EnvFilter::new(telemetry::DEFAULT_LOG_FILTER),
    ));

    // The Stripe API answers 401 (a wrong key): the thin event dead-letters with a reason
    // whose text must not carry the key.
    let stripe_api = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(401).set_body_json(serde_json::json!({
            "error": {"type": "invalid_request_error", "message": "Invalid API Key provided: rk_test_****0000"}
        })))
        .mount(&stripe_api)
        .await;

    let mut config = Config::default();
    config.tenants.default_tenant = Some("default".into());
    config.tenants.tenants = vec!["default".into()];
    config.worker.wait_time_secs = 1;
    let backend = memory_backend(&config, system_clock());

    // The ingress on port 0.
    let mut tenants = BTreeMap::new();
    tenants.insert(
        "default".to_owned(),
        vec![WebhookSecret::new(SECRET).expect("secret")],
    );
    let ingress_config = IngressConfig {
        tenants,
        ..IngressConfig::default()
    };
    let state = IngressState::new(ingress_config, Arc::clone(&backend.bus)).expect("config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let ingress = tokio::spawn(serve(listener, state, shutdown.clone()));

    // One signed webhook, one signed with a wrong secret.
    let body =
        std::fs::read("tests/fixtures/ingress/subscription_updated_event.json").expect("fixture");
    let event: Value = serde_json::from_slice(&body).expect("json");
    let event_id = event["id"].as_str().expect("id").to_owned();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let client = reqwest::Client::new();
    let mut answers = String::new();
    // A caller's trace context, not sampled: the public webhook must start its own trace
    // (sampled, as the default sampler decides) and only link to it.
    const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const CALLER_SPAN: &str = "00f067aa0ba902b7";
    for (secret, expected) in [(SECRET, 200), (WRONG_SECRET, 400)] {
        let response = client
            .post(format!("{base}/webhooks/stripe/default"))
            .header("Stripe-Signature", sign(secret, now, &body))
            .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00"))
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status().as_u16(), expected);
        answers.push_str(&response.text().await.expect("body"));
    }

    // Partner events: a snapshot (applied, its own trace) and a thin one (hydration fails).
    for fixture in ["partner_snapshot.json", "partner_thin.json"] {
        let envelope: Value = serde_json::from_slice(
            &std::fs::read(format!("tests/fixtures/envelopes/{fixture}")).expect("fixture"),
        )
        .expect("json");
        let entry = entry_from_envelope(&envelope).expect("entry");
        let failures = backend.bus.publish(&[entry]).await.expect("publish");
        assert!(failures.failed.is_empty());
    }

    // The worker, until the queues are idle.
    let mut api = StripeApiConfig {
        base_url: stripe_api.uri(),
        ..StripeApiConfig::default()
    };
    api.keys
        .insert("default".into(), ApiKey::new(API_KEY).expect("key"));
    let hydrator: Arc<dyn Hydrator> = Arc::new(StripeApiClient::new(api).expect("client"));
    // The store spans' attributes as `run --backend aws --prefix t` sets them (the memory
    // store stands in for the tables).
    let worker = Worker::builder(&config, &backend, system_clock())
        .hydrator(Some(hydrator))
        .process_settings(|p| p.store = StoreSpans::dynamodb("t-dedupe".into(), "t-state".into()))
        .build();
    let stats = Arc::clone(worker.stats());
    let pool_stop = CancellationToken::new();
    let idle = tokio::spawn(cancel_when_idle(
        Arc::clone(&backend.queues),
        Arc::clone(&stats),
        Duration::from_millis(500),
        pool_stop.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(60), worker.run(pool_stop))
        .await
        .expect("the pool drains");
    idle.await.expect("idle task");
    shutdown.cancel();
    ingress.await.expect("ingress task").expect("ingress");
    let run = stats.snapshot();
    assert_eq!(run.received, 3, "{run:?}");
    assert_eq!(run.applied, 2, "{run:?}");
    assert_eq!(run.dead_lettered, 1, "{run:?}");

    // Export: flushing blocks on the exporters, which need this (current-thread) runtime.
    let otel = tokio::task::spawn_blocking(move || {
        otel.flush();
        otel
    })
    .await
    .expect("flush");

    let spans = receiver.spans.lock().expect("lock").clone();
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (&s.span_id[..], s)).collect();

    // ingress (server) -> publish (producer) -> process (consumer) -> handler, one trace.
    let server = named("POST /webhooks/stripe/{tenant}");
    let server = server
        .iter()
        .find(|s| attr_int(s, "http.response.status_code") == Some(200))
        .expect("the accepted request's server span");
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert!(
        server.parent_span_id.is_empty(),
        "the webhook starts the trace"
    );
    // The caller's unsampled context did not switch tracing off, nor became the parent:
    // it is a link.
    assert_ne!(hex::encode(&server.trace_id), CALLER_TRACE);
    assert_eq!(
        server
            .links
            .iter()
            .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
            .collect::<Vec<_>>(),
        [(CALLER_TRACE.to_owned(), CALLER_SPAN.to_owned())],
        "the caller's trace context is linked"
    );
    assert_eq!(attr_str(server, "stripe.event.id"), Some(event_id.as_str()));
    assert_eq!(attr_str(server, "http.request.method"), Some("POST"));
    // The destination is the bus's name (the embedded backend's local bus here; on AWS,
    // `<prefix>-event-bus`).
    let publish = named(&format!("publish {LOCAL_BUS_NAME}"));
    let publish = publish.first().expect("publish span");
    assert_eq!(publish.kind, SpanKind::Producer as i32);
    assert_eq!(publish.parent_span_id, server.span_id);
    assert_eq!(publish.trace_id, server.trace_id);
    assert_eq!(
        attr_str(publish, "messaging.system"),
        Some("aws_eventbridge")
    );
    assert_eq!(
        attr_str(publish, "messaging.destination.name"),
        Some(LOCAL_BUS_NAME)
    );

    let process: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("process "))
        .collect();
    assert_eq!(process.len(), 3, "one process span per message");
    let webhook_process = process
        .iter()
        .find(|s| attr_str(s, "stripe_worker.source") == Some("webhook"))
        .expect("process span of the webhook event");
    assert_eq!(webhook_process.kind, SpanKind::Consumer as i32);
    assert_eq!(webhook_process.trace_id, server.trace_id, "one trace");
    assert_eq!(webhook_process.parent_span_id, publish.span_id);
    for (key, value) in [
        ("messaging.system", "aws_sqs"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", "subscription-events"),
        ("stripe.event.id", event_id.as_str()),
        ("stripe.event.type", "customer.subscription.updated"),
        ("stripe_worker.tenant", "default"),
        ("stripe_worker.payload_style", "snapshot"),
        ("stripe_worker.domain", "subscription"),
        ("stripe_worker.outcome", "applied"),
    ] {
        assert_eq!(attr_str(webhook_process, key), Some(value), "{key}");
    }
    assert_eq!(
        attr_int(webhook_process, "stripe_worker.receive_count"),
        Some(1)
    );
    assert!(attr_str(webhook_process, "messaging.message.id").is_some());

    // Every step below the process span, in its trace.
    let descends_from = |span: &Span, ancestor: &Span| {
        let mut current = span;
        while let Some(parent) = by_id.get(&current.parent_span_id[..]) {
            if parent.span_id == ancestor.span_id {
                return true;
            }
            current = parent;
        }
        false
    };
    for step in [
        "handler",
        "state write",
        // The acknowledgement: the messaging `settle` span.
        "settle subscription-events",
    ] {
        assert!(
            named(step)
                .iter()
                .any(|s| s.trace_id == server.trace_id && descends_from(s, webhook_process)),
            "{step} is in the webhook's trace under its process span"
        );
    }

    // Partner events start their own trace.
    for partner in process
        .iter()
        .filter(|s| attr_str(s, "stripe_worker.source") == Some("partner"))
    {
        assert!(partner.parent_span_id.is_empty());
        assert_ne!(partner.trace_id, server.trace_id);
    }
    let thin = process
        .iter()
        .find(|s| attr_str(s, "stripe_worker.payload_style") == Some("thin"))
        .expect("thin event's span");
    assert_eq!(
        attr_str(thin, "stripe_worker.outcome"),
        Some("dead_lettered")
    );
    let hydrate = named("hydrate");
    let hydrate = hydrate
        .iter()
        .find(|s| s.trace_id == thin.trace_id)
        .expect("the thin event's hydrate span");
    // Each request to the Stripe API: an HTTP client span (semantic conventions).
    let request = named("GET");
    let request = request
        .iter()
        .find(|s| s.parent_span_id == hydrate.span_id)
        .expect("an HTTP client span under hydrate");
    assert_eq!(request.kind, SpanKind::Client as i32);
    assert_eq!(attr_str(request, "http.request.method"), Some("GET"));
    assert_eq!(attr_int(request, "http.response.status_code"), Some(401));
    assert_eq!(attr_str(request, "error.type"), Some("401"));
    assert_eq!(attr_str(request, "server.address"), Some("127.0.0.1"));
    assert!(attr_int(request, "server.port").is_some());
    assert!(
        attr_str(request, "url.full")
            .is_some_and(|u| u.starts_with(&stripe_api.uri()) && u.contains("/v1/")),
        "{:?}",
        attr_str(request, "url.full")
    );
    // The store write: database conventions.
    let write = named("state write");
    let write = write
        .iter()
        .find(|s| s.trace_id == server.trace_id)
        .expect("the webhook's state write");
    for (key, value) in [
        ("db.system.name", "aws.dynamodb"),
        ("db.operation.name", "TransactWriteItems"),
        ("db.collection.name", "t-state"),
        ("aws.dynamodb.table_names", "t-state,t-dedupe"),
    ] {
        assert_eq!(attr_str(write, key), Some(value), "{key}");
    }

    // The resource names this process: replicas' series must not collide.
    let resources = receiver.resources.lock().expect("lock").clone();
    assert!(!resources.is_empty(), "resources exported");
    for resource in &resources {
        let text = |key: &str| attr(resource, key).map(value_text_of);
        assert_eq!(
            text("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert!(
            text("service.instance.id").is_some_and(|id| uuid::Uuid::parse_str(&id).is_ok()),
            "service.instance.id is a UUID"
        );
        assert_eq!(text("service.name").as_deref(), Some("stripe-worker"));
    }
    // OTEL_EXPORTER_OTLP_COMPRESSION=gzip: every export came compressed.
    let encodings = receiver.encodings.lock().expect("lock").clone();
    assert!(
        !encodings.is_empty() && encodings.iter().all(|e| e == "gzip"),
        "{encodings:?}"
    );

    // Metrics equal the run's counts.
    let exported = receiver.metrics.lock().expect("lock").clone();
    let count = |def: metrics::MetricDef, labels: &[(&str, &str)]| {
        sum_of(&exported, def.name, labels).unwrap_or_else(|| panic!("{} exported", def.name))
    };
    assert_eq!(count(metrics::MESSAGES_RECEIVED, &[]), run.received as f64);
    assert_eq!(
        count(metrics::MESSAGES_PROCESSED, &[("outcome", "applied")]),
        run.applied as f64
    );
    assert_eq!(
        count(metrics::MESSAGES_PROCESSED, &[("outcome", "dead_lettered")]),
        run.dead_lettered as f64
    );
    assert_eq!(
        count(metrics::MESSAGES_DEAD_LETTERED, &[]),
        run.dead_lettered as f64
    );
    assert_eq!(
        count(metrics::PROCESSING_DURATION, &[]),
        run.received as f64,
        "one duration per message"
    );
    assert_eq!(count(metrics::EVENT_LAG, &[("source", "partner")]), 2.0);
    assert_eq!(count(metrics::MESSAGES_IN_FLIGHT, &[]), 0.0);
    assert_eq!(
        count(
            metrics::INGRESS_REQUESTS,
            &[("status", "200"), ("reason", "accepted")]
        ),
        1.0
    );
    assert_eq!(
        count(
            metrics::INGRESS_REQUESTS,
            &[("status", "400"), ("reason", "no_matching_signature")]
        ),
        1.0
    );
    assert!(count(metrics::BACKEND_DURATION, &[("operation", "state_write")]) >= 2.0);

    // Logs are JSON lines, those inside traced work carry the trace id.
    let log_text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    let lines: Vec<Value> = log_text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["trace_id"].as_str() == Some(&hex::encode(&thin.trace_id))),
        "the dead-letter warning carries its trace id:\n{log_text}"
    );

    // No secret anywhere: logs, answers, span attributes and events.
    let mut exported_text = String::new();
    for span in &spans {
        for kv in span
            .attributes
            .iter()
            .chain(span.events.iter().flat_map(|e| e.attributes.iter()))
        {
            if let Some(v) = &kv.value {
                exported_text.push_str(&value_text(v));
                exported_text.push('\n');
            }
        }
        for event in &span.events {
            exported_text.push_str(&event.name);
        }
    }
    for secret in [SECRET, WRONG_SECRET, API_KEY] {
        for (place, text) in [
            ("logs", &log_text),
            ("answers", &answers),
            ("spans", &exported_text),
        ] {
            assert!(!text.contains(secret), "{place} contain a secret");
        }
    }
    tokio::task::spawn_blocking(move || otel.shutdown())
        .await
        .expect("shutdown");
}

/// Every metric name a PromQL expression mentions (identifiers that start `stripe_worker_`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("stripe_worker_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_grafana_dashboard_is_valid_and_uses_only_emitted_metrics() {
    let text = std::fs::read_to_string("deploy/grafana/stripe-worker.json").expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("valid JSON");
    let emitted: Vec<String> = metrics::ALL
        .iter()
        .flat_map(|m| m.prometheus_series())
        .collect();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    let mut used = Vec::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(emitted.contains(&name), "{name} is not emitted");
                used.push(name);
            }
        }
    }
    // The panels the runbook refers to are there.
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for title in [
        "Throughput by outcome",
        "Event lag (now - Stripe created)",
        "In flight vs limit",
        "Dead letters by reason",
        "Processing time p50 / p99",
        "Ingress requests by status",
    ] {
        assert!(titles.contains(&title), "{title}");
    }
    for def in [
        metrics::MESSAGES_PROCESSED,
        metrics::EVENT_LAG,
        metrics::MESSAGES_IN_FLIGHT,
        metrics::CONCURRENCY_LIMIT,
        metrics::MESSAGES_DEAD_LETTERED,
        metrics::PROCESSING_DURATION,
        metrics::INGRESS_REQUESTS,
    ] {
        assert!(
            def.prometheus_series().iter().any(|s| used.contains(s)),
            "{} is on the dashboard",
            def.name
        );
    }
}

#[test]
fn the_collector_config_receives_otlp_exports_traces_and_prometheus_and_deltas_to_cloudwatch() {
    let text = std::fs::read_to_string("deploy/otel-collector/config.yaml").expect("config");
    for needle in [
        "otlp:",
        "127.0.0.1:4317",
        "prometheus:",
        "otlp/traces:",
        "exporters: [otlp/traces]",
        "exporters: [prometheus]",
        "cumulativetodelta/cloudwatch",
    ] {
        assert!(text.contains(needle), "{needle}");
    }
    // The CloudWatch pipeline keeps exactly the metrics the Terraform alarms read.
    let alarms = std::fs::read_to_string("deploy/terraform/variables.tf").expect("variables");
    for def in [
        metrics::MESSAGES_DEAD_LETTERED,
        metrics::PROCESSING_DURATION,
        metrics::INGRESS_REQUESTS,
    ] {
        assert!(
            text.contains(&format!("name == \"{}\"", def.name)),
            "{}",
            def.name
        );
        assert!(
            alarms.contains(&format!("default     = \"{}\"", def.name)),
            "{}",
            def.name
        );
    }
}

/// Run `stripe-worker healthcheck URL`; its exit code.
async fn healthcheck_exit(url: &str) -> i32 {
    healthcheck(url, &[])
        .await
        .status
        .code()
        .expect("exit code")
}

/// Run `stripe-worker healthcheck URL` with `env` added.
async fn healthcheck(url: &str, env: &[(&str, &str)]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_stripe-worker"))
        .args(["healthcheck", url, "--timeout-secs", "2"])
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run the binary")
}

#[tokio::test]
async fn admin_probes_follow_the_pollers_and_healthcheck_exits_by_status() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use stripe_worker::cli::health::{ready_check, serve_admin};
    use stripe_worker::domain::Domain;

    let backend = memory_backend(&Config::default(), system_clock());
    let running = Arc::new(AtomicBool::new(false));
    let ready = ready_check(
        Arc::clone(&backend.queues),
        Domain::Customer,
        Some(Arc::clone(&running)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_admin(listener, ready, None, shutdown.clone()));
    let status = |path: &'static str| {
        let url = format!("{base}{path}");
        async move { reqwest::get(url).await.expect("answer").status().as_u16() }
    };

    assert_eq!(status("/healthz").await, 200);
    assert_eq!(status("/readyz").await, 503, "pollers not running yet");
    assert_eq!(healthcheck_exit(&format!("{base}/healthz")).await, 0);
    // OTEL_* typos are warned about and ignored: never the reason a probe fails.
    let typos = healthcheck(
        &format!("{base}/healthz"),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/jsn"),
            ("OTEL_TRACES_EXPORTER", "Jaeger"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_SDK_DISABLED", "no"),
        ],
    )
    .await;
    let stderr = String::from_utf8_lossy(&typos.stderr);
    assert_eq!(typos.status.code(), Some(0), "{stderr}");
    for named in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_SDK_DISABLED",
    ] {
        assert!(stderr.contains(named), "{named} warned about:\n{stderr}");
    }
    assert_eq!(healthcheck_exit(&format!("{base}/readyz")).await, 1);
    running.store(true, Ordering::Release);
    assert_eq!(status("/readyz").await, 200);
    assert_eq!(healthcheck_exit(&format!("{base}/readyz")).await, 0);

    shutdown.cancel();
    server.await.expect("task").expect("server");
    // Nothing listens any more: the check fails.
    assert_eq!(healthcheck_exit(&format!("{base}/healthz")).await, 1);
}
