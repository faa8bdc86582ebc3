//! The webhook HTTP server: verify, wrap, publish, and only then say 200.
//!
//! Routes:
//! - `POST /webhooks/stripe/{tenant}` and `POST /webhooks/stripe` (the default tenant);
//! - `GET /healthz`: the process answers;
//! - `GET /readyz`: the bus is reachable (a caller-supplied check) and we are not draining.
//!
//! Order of checks, cheapest and least revealing first: tenant (404), signature header
//! present (400), body size (413), signature and timestamp (400), JSON and event shape
//! (400), then publish (200, or 503 so that Stripe retries).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use super::config::{ConfigError, IngressConfig, PublishStyles};
use super::counters::{IngressCounters, RejectReason};
use super::secrets::WebhookSecret;
use super::signature::{self, SIGNATURE_HEADER, SignatureError};
use crate::backend::{Bus, BusEntry, publish_all};
pub use crate::clock::Clock;
use crate::clock::system_clock;
use crate::event::envelope::{webhook_snapshot_entry, webhook_thin_entry};
use crate::retry::Backoff;
use crate::telemetry::metrics;
use crate::telemetry::trace::{MESSAGING_SYSTEM_EVENTBRIDGE, link_trace, traceparent_of};

/// The bus name of the embedded backend's local bus (the publish span's destination).
pub const LOCAL_BUS_NAME: &str = "local-bus";

/// How long `/readyz` waits for its check. A frozen backend must make the probe answer
/// 503 with a logged reason, not hang: under the probes' own timeouts (2 s in k8s/, 3 s
/// for `healthcheck` on ECS), so the answer arrives before the prober gives up.
pub const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// A readiness probe: `Ok` when the bus can take entries, `Err(why)` otherwise. `why` is
/// logged, never sent to the client.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What the server runs with: the configuration, the bus to publish to, the counters,
/// and optional readiness and clock hooks. Build with [`IngressState::new`].
pub struct IngressState<B> {
    tenants: HashMap<Box<str>, Box<[WebhookSecret]>>,
    default_tenant: Option<Box<str>>,
    tolerance: std::time::Duration,
    max_body_bytes: usize,
    styles: PublishStyles,
    publish_retry: Backoff,
    header_read_timeout: std::time::Duration,
    body_read_timeout: std::time::Duration,
    bus: Arc<B>,
    /// `messaging.destination.name` of the publish span: the bus's name.
    bus_name: Box<str>,
    counters: Arc<IngressCounters>,
    ready: Option<ReadyCheck>,
    clock: Clock,
}

impl<B: Bus> IngressState<B> {
    /// Validate `config` and prepare the state. `listen` is not used here: the caller
    /// binds the listener (so tests can bind port 0).
    pub fn new(config: IngressConfig, bus: Arc<B>) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(IngressState {
            tenants: config
                .tenants
                .into_iter()
                .map(|(t, s)| (t.into_boxed_str(), s.into_boxed_slice()))
                .collect(),
            default_tenant: config.default_tenant.map(String::into_boxed_str),
            tolerance: config.tolerance,
            max_body_bytes: config.max_body_bytes,
            styles: config.styles,
            publish_retry: config.publish_retry,
            header_read_timeout: config.header_read_timeout,
            body_read_timeout: config.body_read_timeout,
            bus,
            bus_name: LOCAL_BUS_NAME.into(),
            counters: Arc::new(IngressCounters::default()),
            ready: None,
            clock: system_clock(),
        })
    }

    /// Answer `/readyz` with `check` (without one, ready whenever not shutting down).
    pub fn with_ready_check(mut self, check: ReadyCheck) -> Self {
        self.ready = Some(check);
        self
    }

    /// Name the bus (the AWS event bus's name) as the publish span's destination.
    pub fn with_bus_name(mut self, name: impl Into<String>) -> Self {
        self.bus_name = name.into().into_boxed_str();
        self
    }

    /// Use `clock` (ms since the epoch) instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The counters this state updates, for telemetry.
    pub fn counters(&self) -> Arc<IngressCounters> {
        Arc::clone(&self.counters)
    }
}

struct Shared<B> {
    state: IngressState<B>,
}

/// The ingress routes as an axum [`Router`], for serving elsewhere or driving in-process
/// (benchmarks). `/readyz` reports not ready once `shutdown` is cancelled, so load
/// balancers stop sending while in-flight requests finish.
pub fn router<B: Bus>(state: IngressState<B>, shutdown: CancellationToken) -> Router {
    let probes = probe_router(state.ready.clone(), shutdown);
    let shared = Arc::new(Shared { state });
    Router::new()
        .route("/webhooks/stripe", post(webhook_default::<B>))
        .route("/webhooks/stripe/{tenant}", post(webhook_tenant::<B>))
        .with_state(shared)
        .merge(probes)
}

/// `GET /healthz` (the process answers) and `GET /readyz` (`ready` passes and `shutdown`
/// is not cancelled), for Kubernetes probes and load balancers. The ingress serves them
/// next to its webhook routes, the worker on its admin port.
pub fn probe_router(ready: Option<ReadyCheck>, shutdown: CancellationToken) -> Router {
    let probes = Arc::new(Probes { ready, shutdown });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(probes)
}

struct Probes {
    ready: Option<ReadyCheck>,
    shutdown: CancellationToken,
}

/// Serve the ingress on `listener` until `shutdown` is cancelled, then stop accepting,
/// let in-flight requests finish (their publishes included) and return. A connection
/// that does not deliver a request's headers within the header read timeout is closed.
pub async fn serve<B: Bus>(
    listener: tokio::net::TcpListener,
    state: IngressState<B>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tenants = state.tenants.len(), styles = %state.styles, "webhook ingress listening");
    }
    let header_read_timeout = state.header_read_timeout;
    let app = router(state, shutdown.clone());
    serve_router(listener, app, header_read_timeout, shutdown).await
}

/// Serve `app` on `listener` with HTTP/1.1, a header read timeout and graceful shutdown
/// (what `axum::serve` does, plus the timeout, which it has no setting for).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    app: Router,
    header_read_timeout: std::time::Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn healthz() -> Response {
    json_answer(StatusCode::OK, r#"{"status":"ok"}"#)
}

async fn readyz(State(shared): State<Arc<Probes>>) -> Response {
    if shared.shutdown.is_cancelled() {
        return json_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"shutting_down"}"#,
        );
    }
    if let Some(check) = &shared.ready {
        let why = match tokio::time::timeout(READY_CHECK_TIMEOUT, check()).await {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(_) => Some(format!(
                "the readiness check did not answer within {READY_CHECK_TIMEOUT:?}"
            )),
        };
        if let Some(why) = why {
            tracing::warn!(%why, "not ready");
            return json_answer(StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"not_ready"}"#);
        }
    }
    json_answer(StatusCode::OK, r#"{"status":"ready"}"#)
}

async fn webhook_default<B: Bus>(
    State(shared): State<Arc<Shared<B>>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let state = &shared.state;
    // No default tenant: an empty name is no tenant's, so the answer is 404.
    let tenant = state.default_tenant.as_deref().unwrap_or_default();
    traced(state, "/webhooks/stripe", tenant, &headers, body).await
}

async fn webhook_tenant<B: Bus>(
    State(shared): State<Arc<Shared<B>>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let state = &shared.state;
    traced(state, "/webhooks/stripe/{tenant}", &tenant, &headers, body).await
}

/// Handle a webhook inside its server span, and answer. The span is the root of the
/// event's trace: a caller's `traceparent` is only linked (see [`link_trace`]); the
/// webhook is public, so its trace context is not trusted.
async fn traced<B: Bus>(
    state: &IngressState<B>,
    route: &'static str,
    tenant: &str,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let span = tracing::debug_span!(
        "webhook",
        otel.name = %format_args!("POST {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = "POST",
        http.route = route,
        http.response.status_code = Empty,
        stripe_worker.tenant = Empty,
        stripe_worker.reason = Empty,
        stripe.event.id = Empty,
        stripe.event.type = Empty,
    );
    link_trace(&span, incoming_traceparent(headers));
    let outcome = async {
        match precheck(state, tenant, headers) {
            Ok(secrets) => handle(state, tenant, secrets, headers, body).await,
            Err(reason) => {
                // Read (and drop) the body the client is sending before answering: closing
                // a connection with unread data makes the kernel reset it, and the client
                // sees "broken pipe" or "connection reset" instead of this 4xx.
                discard_body(body, state.max_body_bytes, state.body_read_timeout).await;
                Err(reason)
            }
        }
    };
    let (status, response) = match outcome.instrument(span.clone()).await {
        Ok(()) => (200, accepted()),
        Err(reason) => {
            span.record("stripe_worker.reason", reason.as_str());
            (reason.status(), reject(state, reason))
        }
    };
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// The caller's valid `traceparent` header, if any.
fn incoming_traceparent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_traceparent(v))
}

fn accepted() -> Response {
    json_answer(StatusCode::OK, r#"{"received":true}"#)
}

fn reject<B>(state: &IngressState<B>, reason: RejectReason) -> Response {
    state.counters.reject(reason);
    let status = StatusCode::from_u16(reason.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let body = serde_json::json!({"error": reason.error_text(), "reason": reason.as_str()});
    (status, axum::Json(body)).into_response()
}

fn json_answer(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The checks that need no body, cheapest first: the tenant (its secrets), a signature
/// header, a declared length within the limit.
fn precheck<'s, B>(
    state: &'s IngressState<B>,
    tenant: &str,
    headers: &HeaderMap,
) -> Result<&'s [WebhookSecret], RejectReason> {
    let Some(secrets) = state.tenants.get(tenant) else {
        tracing::debug!(reason = "unknown_tenant", "webhook rejected");
        return Err(RejectReason::UnknownTenant);
    };
    tracing::Span::current().record("stripe_worker.tenant", tenant);
    if headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_none()
    {
        return Err(RejectReason::MissingSignature);
    }
    if content_length(headers).is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(RejectReason::PayloadTooLarge);
    }
    Ok(secrets)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Read and drop up to `limit` bytes of `body` within `timeout`, so that the client can
/// finish sending and read the answer. A larger or slower body is left: the connection is
/// then closed after the answer, which bounds what a hostile client costs.
async fn discard_body(body: Body, limit: usize, timeout: std::time::Duration) {
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read = read.saturating_add(chunk.len());
            if read > limit {
                break;
            }
        }
    })
    .await;
}

async fn handle<B: Bus>(
    state: &IngressState<B>,
    tenant: &str,
    secrets: &[WebhookSecret],
    headers: &HeaderMap,
    body: Body,
) -> Result<(), RejectReason> {
    let received_at_ms = (state.clock)();
    let span = tracing::Span::current();
    let sig_header = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or(RejectReason::MissingSignature)?;
    let body = tokio::time::timeout(
        state.body_read_timeout,
        read_body(body, state.max_body_bytes, content_length(headers)),
    )
    .await
    .map_err(|_| RejectReason::BodyTimeout)??;

    let now_unix = received_at_ms.div_euclid(1000);
    if let Err(e) = signature::verify(sig_header, &body, secrets, now_unix, state.tolerance) {
        tracing::info!(tenant, reason = e.reason(), error = %e, "webhook signature rejected");
        return Err(match e {
            SignatureError::Malformed(_) => RejectReason::MalformedSignature,
            SignatureError::NoV1Signature => RejectReason::NoV1Signature,
            SignatureError::NoMatchingSignature => RejectReason::NoMatchingSignature,
            SignatureError::TimestampOutsideTolerance { .. } => {
                RejectReason::TimestampOutsideTolerance
            }
        });
    }

    let event: Value = serde_json::from_slice(&body).map_err(|_| RejectReason::NotJson)?;
    if !is_stripe_event(&event) {
        return Err(RejectReason::NotStripeEvent);
    }
    span.record("stripe.event.id", event["id"].as_str());
    span.record("stripe.event.type", event["type"].as_str());
    let publish_span = tracing::debug_span!(
        "publish",
        otel.name = %format_args!("publish {}", state.bus_name),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = MESSAGING_SYSTEM_EVENTBRIDGE,
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = &*state.bus_name,
        messaging.batch.message_count = Empty,
        stripe.event.id = event["id"].as_str(),
    );
    // The worker continues the trace from the publish span when export is on. A caller's
    // trace context is never passed on: it is not ours to trust.
    let traceparent = traceparent_of(&publish_span);
    let traceparent = traceparent.as_deref();

    let mut entries: Vec<BusEntry> = Vec::with_capacity(2);
    let build = |e: Result<BusEntry, _>| {
        e.map_err(|err: crate::event::envelope::EnvelopeError| {
            tracing::warn!(tenant, error = %err, "webhook event could not be wrapped");
            RejectReason::Envelope
        })
    };
    if state.styles.snapshot() {
        entries.push(build(webhook_snapshot_entry(
            &event,
            tenant,
            received_at_ms,
            traceparent,
        ))?);
    }
    if state.styles.thin() {
        entries.push(build(webhook_thin_entry(
            &event,
            tenant,
            received_at_ms,
            traceparent,
        ))?);
    }

    let count = entries.len();
    publish_span.record("messaging.batch.message_count", count as i64);
    if let Err(e) = publish_all(state.bus.as_ref(), &entries, &state.publish_retry, |_| {
        state.counters.retry()
    })
    .instrument(publish_span.clone())
    .await
    {
        publish_span.record("otel.status_code", "ERROR");
        metrics::get().publish_failed(e.is_retryable());
        tracing::warn!(tenant, operation = e.operation(), retryable = e.is_retryable(), error = %e, "webhook publish failed; answering 503");
        return Err(RejectReason::PublishFailed);
    }
    state.counters.accept(count);
    Ok(())
}

/// Read the body, at most `limit` bytes. One chunk (the usual case for small bodies) is
/// kept as is; more are copied once into a buffer sized from `Content-Length`.
async fn read_body(
    body: Body,
    limit: usize,
    content_length: Option<u64>,
) -> Result<Bytes, RejectReason> {
    let mut stream = body.into_data_stream();
    let mut first: Option<Bytes> = None;
    let mut buf: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| RejectReason::BodyRead)?;
        total = total.saturating_add(chunk.len());
        if total > limit {
            return Err(RejectReason::PayloadTooLarge);
        }
        match first.take() {
            None if buf.is_empty() => first = Some(chunk),
            None => buf.extend_from_slice(&chunk),
            Some(f) => {
                let hint = content_length.map_or(0, |n| usize::try_from(n).unwrap_or(limit));
                buf.reserve(hint.min(limit).max(f.len() + chunk.len()));
                buf.extend_from_slice(&f);
                buf.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buf)))
}

/// The minimum that makes a body a Stripe event: `id`, `type`, `created` and
/// `object: "event"`.
fn is_stripe_event(event: &Value) -> bool {
    let non_empty_str = |k: &str| {
        event
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    event.get("object").and_then(Value::as_str) == Some("event")
        && non_empty_str("id")
        && non_empty_str("type")
        && event
            .get("created")
            .is_some_and(|c| c.is_i64() || c.is_u64())
}

/// W3C trace context `traceparent`: `vv-<32 hex>-<16 hex>-<2 hex>`, lower-case, with
/// non-zero ids. Anything else is dropped rather than forwarded.
fn is_valid_traceparent(v: &str) -> bool {
    let b = v.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    b.len() == 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[0..2])
        && &b[0..2] != b"ff"
        && hex(&b[3..35])
        && b[3..35].iter().any(|c| *c != b'0')
        && hex(&b[36..52])
        && b[36..52].iter().any(|c| *c != b'0')
        && hex(&b[53..55])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_event_shape() {
        let ok = serde_json::json!({"id":"evt_1","type":"a.b","created":1,"object":"event"});
        assert!(is_stripe_event(&ok));
        for bad in [
            serde_json::json!({"id":"evt_1","type":"a.b","created":1,"object":"v2.core.event"}),
            serde_json::json!({"id":"","type":"a.b","created":1,"object":"event"}),
            serde_json::json!({"id":"evt_1","created":1,"object":"event"}),
            serde_json::json!({"id":"evt_1","type":"a.b","created":"1","object":"event"}),
            serde_json::json!([1, 2]),
        ] {
            assert!(!is_stripe_event(&bad), "{bad}");
        }
    }

    #[test]
    fn traceparent_validation() {
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent(
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
        assert!(!is_valid_traceparent("garbage"));
    }
}
