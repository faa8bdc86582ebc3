//! Trace context across the bus: the ingress writes a W3C `traceparent` into the event it
//! publishes, the worker continues that trace. Span attribute keys live here too, so the
//! instrumentation and the tests name them the same way.
//!
//! Integer span attributes are recorded as `i64`: `tracing-opentelemetry` exports other
//! integer types as strings.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `messaging.system` of the worker's queue spans (OTel messaging conventions).
pub const MESSAGING_SYSTEM_SQS: &str = "aws_sqs";
/// `messaging.system` of the ingress's publish span.
pub const MESSAGING_SYSTEM_EVENTBRIDGE: &str = "aws_eventbridge";

/// The `db.*` attributes of the worker's store spans (dedupe claim, state write), per
/// the OpenTelemetry database conventions: which store, which operation, which table.
/// Built once by the command that picks the backend; the memory backend has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreSpans {
    /// `db.system.name`: `aws.dynamodb` or `sqlite`.
    pub system: Option<&'static str>,
    /// `db.collection.name` of the dedupe claim: the dedupe table.
    pub dedupe: Option<String>,
    /// `db.collection.name` of the state write: the state table.
    pub state: Option<String>,
    /// `db.operation.name` of the claim and of the write (DynamoDB's API names).
    pub operations: Option<(&'static str, &'static str)>,
    /// `aws.dynamodb.table_names` of the state write (one transaction over both tables),
    /// comma-separated: span attributes recorded through `tracing` are strings.
    pub write_tables: Option<String>,
}

impl StoreSpans {
    /// The DynamoDB tables `dedupe` and `state`: a claim is a conditional `PutItem`, a
    /// write one `TransactWriteItems` over both tables.
    pub fn dynamodb(dedupe: String, state: String) -> Self {
        StoreSpans {
            system: Some("aws.dynamodb"),
            write_tables: Some(format!("{state},{dedupe}")),
            dedupe: Some(dedupe),
            state: Some(state),
            operations: Some(("PutItem", "TransactWriteItems")),
        }
    }

    /// The embedded SQLite store (one database file per store).
    pub fn sqlite() -> Self {
        StoreSpans {
            system: Some("sqlite"),
            dedupe: Some("dedupe".to_owned()),
            state: Some("state".to_owned()),
            ..StoreSpans::default()
        }
    }
}

/// The client span of one HTTP request to the Stripe API (OpenTelemetry HTTP client
/// conventions): named by its method, with `url.full` (the path names the object; the key
/// travels in a header and never appears), `server.address` and `server.port`;
/// [`record_http_status`] adds the answer. A debug span: free when export is off.
pub fn http_client_span(method: &'static str, url: &str) -> tracing::Span {
    let parsed = reqwest::Url::parse(url).ok();
    tracing::debug_span!(
        "http request",
        otel.name = method,
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        url.full = url,
        server.address = parsed.as_ref().and_then(|u| u.host_str().map(str::to_owned)),
        server.port = parsed
            .as_ref()
            .and_then(|u| u.port_or_known_default())
            .map(i64::from),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// Record the answer of an [`http_client_span`]: its status, and `error.type` (the status,
/// or `transport` when no answer came) for a failure.
pub fn record_http_status(span: &tracing::Span, status: Option<u16>) {
    match status {
        Some(status) => {
            span.record("http.response.status_code", i64::from(status));
            if status >= 400 {
                span.record("error.type", status.to_string());
                span.record("otel.status_code", "ERROR");
            }
        }
        None => {
            span.record("error.type", "transport");
            span.record("otel.status_code", "ERROR");
        }
    }
}

/// The `traceparent` of `span`, when it is recorded by OpenTelemetry (export on): what the
/// ingress puts into the event so that the worker continues the same trace.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::with_capacity(1);
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Make `span` a child of the remote span `traceparent` names. Does nothing when the span
/// is not recorded (export off) or the header does not parse; must be called before the
/// span is first entered.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    if span.is_disabled() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        // Fails only when the span has no OpenTelemetry layer or already started: then
        // it simply stays a root, which loses the link but nothing else.
        let _ = span.set_parent(parent);
    }
}

/// Link `span` to the remote span `traceparent` names, without making it its parent: for
/// a caller that is not trusted (the public webhook). Its trace and sampling decision are
/// not adopted (a caller cannot switch tracing off, nor join our spans to its trace), but
/// the link keeps its context visible. Must be called before the span is first entered.
pub fn link_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    if span.is_disabled() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let remote = TraceContextPropagator::new().extract(&carrier);
    let remote = remote.span().span_context().clone();
    if remote.is_valid() {
        span.add_link(remote);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_propagated() {
        let span = tracing::info_span!("x");
        assert_eq!(traceparent_of(&span), None);
        continue_trace(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
    }
}
