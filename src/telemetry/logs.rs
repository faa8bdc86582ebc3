//! JSON log lines that carry the trace and span ids of the span they were logged in, so a
//! log line leads to its trace (and back).

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt;
use tracing::dispatcher::WeakDispatch;
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::layer::Layer;
use tracing_subscriber::registry::LookupSpan;

/// Where the subscriber's dispatcher is remembered, to ask the OpenTelemetry layer for a
/// span's ids while formatting (the formatter is not given the dispatcher).
#[derive(Debug, Clone, Default)]
pub struct DispatchSlot(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> Layer<S> for DispatchSlot {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

/// The JSON event format of `tracing-subscriber`, plus `trace_id` and `span_id` of the
/// current span when OpenTelemetry records it.
pub struct JsonWithTrace {
    inner: Format<Json>,
    dispatch: DispatchSlot,
}

impl JsonWithTrace {
    /// A formatter that finds the dispatcher in `dispatch` (a layer of the same subscriber).
    pub fn new(dispatch: DispatchSlot) -> Self {
        JsonWithTrace {
            inner: tracing_subscriber::fmt::format().json(),
            dispatch,
        }
    }

    fn ids<S>(&self, ctx: &FmtContext<'_, S, JsonFields>) -> Option<(String, String)>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        // The subscriber's current span, not the log layer's: the traced spans are at debug,
        // below the production log level, so the log layer's own view (`ctx`) filters them
        // out; the registry still tracks them for the OpenTelemetry layer.
        let dispatch = self.dispatch.0.get()?.upgrade()?;
        let current = dispatch.current_span();
        let id = current
            .id()
            .cloned()
            .or_else(|| ctx.lookup_current().map(|s| s.id()))?;
        let context = tracing_opentelemetry::get_otel_context(&id, &dispatch)?;
        let otel = context.span();
        let span_context = otel.span_context();
        span_context.is_valid().then(|| {
            (
                span_context.trace_id().to_string(),
                span_context.span_id().to_string(),
            )
        })
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonWithTrace
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if let (Some((trace_id, span_id)), true) = (self.ids(ctx), line.starts_with('{')) {
            line.insert_str(
                1,
                &format!("\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\","),
            );
        }
        writer.write_str(&line)
    }
}
