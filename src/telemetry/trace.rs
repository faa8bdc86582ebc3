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
