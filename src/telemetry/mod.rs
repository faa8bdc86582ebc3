//! Telemetry: logs on stderr (pretty or JSON lines with trace ids), and traces and metrics
//! over OTLP to an OpenTelemetry collector.
//!
//! Export is configured by the standard `OTEL_*` variables only. With no OTLP endpoint
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the per-signal `..._TRACES_ENDPOINT` /
//! `..._METRICS_ENDPOINT`) nothing is exported and nothing complains. The SDK itself reads
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
//! `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT` and
//! `..._COMPRESSION` (`gzip` is compiled in for both transports, `zstd` is not: warned
//! about and ignored, as any other value); `OTEL_EXPORTER_OTLP_PROTOCOL` (or per signal
//! `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `..._METRICS_PROTOCOL`) picks gRPC (default) or
//! HTTP/protobuf.
//!
//! As the specification asks, values are case-insensitive, and a value this build does not
//! know (a typo, `http/json`) is warned about and ignored, never fatal: telemetry must not
//! keep the service, or `healthcheck`, from starting. An exporter that cannot be built
//! leaves that signal off, with a warning.
//!
//! Filters are per layer: `RUST_LOG` filters the log lines only; the OpenTelemetry layer
//! always takes this crate's spans (at debug and above, where the per-message spans are)
//! and its info-and-above events, so a quiet `RUST_LOG` does not silence export, and with
//! export off the per-message spans are disabled at their call sites and cost nothing.
//!
//! - [`metrics`]: every metric, defined once;
//! - [`trace`]: `traceparent` across the bus, span attribute keys.

mod logs;
pub mod metrics;
pub mod stderr;
pub mod trace;

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use logs::{DispatchSlot, JsonWithTrace};

/// The log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "warn,stripe_worker=info";

/// The instrumentation scope name of every span and metric.
pub const SCOPE: &str = "stripe-worker";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line, with `trace_id` and `span_id` inside traced work.
    Json,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An exporter could not be built (bad endpoint, no async runtime for gRPC).
    #[error("building the OTLP {signal} exporter: {message}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// What the SDK said.
        message: String,
    },
    /// A global subscriber was already installed.
    #[error("installing the log and trace subscriber: {0}")]
    Subscriber(String),
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (port 4317), the default.
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318).
    HttpProtobuf,
}

/// What to export, where. Build it with [`TelemetryConfig::from_env`].
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// Export traces.
    pub traces: bool,
    /// Export metrics.
    pub metrics: bool,
    /// The transport of traces.
    pub protocol: Protocol,
    /// The transport of metrics.
    pub metrics_protocol: Protocol,
    /// Values of `OTEL_*` variables that were ignored, to be logged once logging is up.
    pub warnings: Vec<String>,
    /// An endpoint that overrides the environment's (tests point it at their receiver);
    /// `None` lets the SDK read the `OTEL_EXPORTER_OTLP_*ENDPOINT` variables.
    pub endpoint: Option<String>,
    /// A metric export interval that overrides `OTEL_METRIC_EXPORT_INTERVAL`.
    pub metric_interval: Option<Duration>,
}

impl TelemetryConfig {
    /// Nothing exported: logs only.
    pub fn disabled() -> Self {
        TelemetryConfig {
            traces: false,
            metrics: false,
            protocol: Protocol::Grpc,
            metrics_protocol: Protocol::Grpc,
            warnings: Vec::new(),
            endpoint: None,
            metric_interval: None,
        }
    }

    /// Traces and metrics over OTLP/gRPC to `endpoint` (e.g. `http://127.0.0.1:4317`).
    pub fn otlp_grpc(endpoint: impl Into<String>) -> Self {
        TelemetryConfig {
            traces: true,
            metrics: true,
            protocol: Protocol::Grpc,
            metrics_protocol: Protocol::Grpc,
            warnings: Vec::new(),
            endpoint: Some(endpoint.into()),
            metric_interval: None,
        }
    }

    /// What the standard `OTEL_*` variables among `vars` ask for. Never fails: values it
    /// does not know are ignored and listed in [`TelemetryConfig::warnings`].
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let vars: std::collections::HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, v)| k.starts_with("OTEL_") && !v.trim().is_empty())
            .map(|(k, v)| (k, v.trim().to_ascii_lowercase()))
            .collect();
        let get = |k: &str| vars.get(k).map(String::as_str);
        let mut warnings = Vec::new();
        match get("OTEL_SDK_DISABLED") {
            Some("true") => return Self::disabled(),
            None | Some("false") => {}
            Some(other) => warnings.push(format!(
                "OTEL_SDK_DISABLED={other:?} is neither true nor false: ignored"
            )),
        }
        let general = get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let mut wanted = |signal: &str| {
            let name = format!("OTEL_{signal}_EXPORTER");
            let exporter = match get(&name) {
                Some("none") => return false,
                None | Some("otlp") => "otlp",
                Some(other) => {
                    warnings.push(format!(
                        "{name}={other:?} is not supported (otlp or none): using otlp"
                    ));
                    "otlp"
                }
            };
            let endpoint = get(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")).is_some();
            exporter == "otlp" && (general || endpoint)
        };
        let (traces, metrics) = (wanted("TRACES"), wanted("METRICS"));
        let general_protocol = protocol_var("OTEL_EXPORTER_OTLP_PROTOCOL", get, &mut warnings);
        let mut protocol_of = |signal: &str| {
            protocol_var(
                &format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"),
                get,
                &mut warnings,
            )
            .or(general_protocol)
            .unwrap_or(Protocol::Grpc)
        };
        let (protocol, metrics_protocol) = (protocol_of("TRACES"), protocol_of("METRICS"));
        // The SDK reads the compression itself; a value it cannot use is named here once.
        for name in [
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION",
        ] {
            match get(name) {
                None | Some("gzip" | "none") => {}
                Some(other) => warnings.push(format!(
                    "{name}={other:?} is not supported (gzip or none): sent uncompressed"
                )),
            }
        }
        TelemetryConfig {
            traces,
            metrics,
            protocol,
            metrics_protocol,
            warnings,
            endpoint: None,
            metric_interval: None,
        }
    }
}

/// The protocol the variable `name` names; `None` when unset or unknown (with a warning).
fn protocol_var<'a>(
    name: &str,
    get: impl Fn(&str) -> Option<&'a str>,
    warnings: &mut Vec<String>,
) -> Option<Protocol> {
    match get(name)? {
        "grpc" => Some(Protocol::Grpc),
        "http/protobuf" => Some(Protocol::HttpProtobuf),
        other => {
            warnings.push(format!(
                "{name}={other:?} is not supported (grpc or http/protobuf): ignored"
            ));
            None
        }
    }
}

/// The running exporters. Keep it for the life of the process and call
/// [`Telemetry::shutdown`] at the end, so the last spans and metrics are sent.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

/// The resource: the SDK's detectors (`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`),
/// with `stripe-worker` as the service name when none is given, this build's
/// `service.version`, and a `service.instance.id` unique to the process (replicas of one
/// service would otherwise export colliding metric series). Attributes given in
/// `OTEL_RESOURCE_ATTRIBUTES` win.
fn resource() -> Resource {
    let given = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let has = |key: &str| {
        given
            .split(',')
            .any(|pair| pair.split('=').next().is_some_and(|k| k.trim() == key))
    };
    let named =
        std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty()) || has("service.name");
    let mut builder = Resource::builder();
    if !named {
        builder = builder.with_service_name(SCOPE);
    }
    if !has("service.version") {
        builder =
            builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    if !has("service.instance.id") {
        builder = builder.with_attribute(KeyValue::new(
            "service.instance.id",
            uuid::Uuid::new_v4().to_string(),
        ));
    }
    builder.build()
}

impl Telemetry {
    /// Build the exporters `config` asks for. gRPC exporters need a Tokio runtime: call
    /// this inside one, and keep the runtime alive until [`Telemetry::shutdown`].
    pub fn start(config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        let mut telemetry = Telemetry::default();
        if !config.traces && !config.metrics {
            return Ok(telemetry);
        }
        let resource = resource();
        if config.traces {
            let exporter = span_exporter(config).map_err(|e| TelemetryError::Exporter {
                signal: "traces",
                message: e.to_string(),
            })?;
            telemetry.tracer = Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.clone())
                    .build(),
            );
        }
        if config.metrics {
            let exporter = metric_exporter(config).map_err(|e| TelemetryError::Exporter {
                signal: "metrics",
                message: e.to_string(),
            })?;
            let mut reader = PeriodicReader::builder(exporter);
            if let Some(interval) = config.metric_interval {
                reader = reader.with_interval(interval);
            }
            telemetry.meter = Some(
                SdkMeterProvider::builder()
                    .with_reader(reader.build())
                    .with_resource(resource)
                    .build(),
            );
        }
        Ok(telemetry)
    }

    /// Whether traces are exported.
    pub fn traces_enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// The OpenTelemetry layer with its own filter, when traces are exported.
    pub fn otel_layer<S>(&self) -> Option<Box<dyn Layer<S> + Send + Sync>>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let provider = self.tracer.as_ref()?;
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SCOPE))
            // Attributes are what the spans declare; location, thread and busy/idle time
            // would add per-span work and cardinality for little use.
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_level(false);
        Some(layer.with_filter(filter_fn(export_filter)).boxed())
    }

    /// Create the metric instruments on the meter provider (no-ops without one). Returns
    /// `false` when instruments already existed, so these metrics will not be exported.
    pub fn install_metrics(&self) -> bool {
        match &self.meter {
            Some(provider) => metrics::install(provider),
            None => true,
        }
    }

    /// Export everything recorded so far (blocks until the exports end). Failures are
    /// logged: telemetry never stops the service.
    pub fn flush(&self) {
        if let Some(tracer) = &self.tracer
            && let Err(error) = tracer.force_flush()
        {
            tracing::warn!(%error, "flushing traces failed");
        }
        if let Some(meter) = &self.meter
            && let Err(error) = meter.force_flush()
        {
            tracing::warn!(%error, "flushing metrics failed");
        }
    }

    /// Flush and stop the exporters. Blocks: call it outside async tasks (the runtime must
    /// still be alive for gRPC).
    pub fn shutdown(self) {
        if let Some(tracer) = self.tracer
            && let Err(error) = tracer.shutdown()
        {
            tracing::warn!(%error, "stopping the trace exporter failed");
        }
        if let Some(meter) = self.meter
            && let Err(error) = meter.shutdown()
        {
            tracing::warn!(%error, "stopping the metric exporter failed");
        }
    }
}

/// What the OpenTelemetry layer takes: this crate's spans at debug and above (the
/// per-message spans are debug, so that logs at info do not pay for them) and its events
/// at info and above (recorded as span events).
fn export_filter(meta: &tracing::Metadata<'_>) -> bool {
    let ours = meta.target().starts_with("stripe_worker");
    let level = if meta.is_span() {
        Level::DEBUG
    } else {
        Level::INFO
    };
    ours && *meta.level() <= level
}

fn span_exporter(
    config: &TelemetryConfig,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    match config.protocol {
        Protocol::Grpc => {
            let mut b = builder.with_tonic();
            if let Some(endpoint) = &config.endpoint {
                b = b.with_endpoint(endpoint.clone());
            }
            b.build()
        }
        Protocol::HttpProtobuf => {
            let mut b = builder
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(endpoint) = &config.endpoint {
                b = b.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
            }
            b.build()
        }
    }
}

fn metric_exporter(
    config: &TelemetryConfig,
) -> Result<opentelemetry_otlp::MetricExporter, opentelemetry_otlp::ExporterBuildError> {
    let builder = opentelemetry_otlp::MetricExporter::builder();
    match config.metrics_protocol {
        Protocol::Grpc => {
            let mut b = builder.with_tonic();
            if let Some(endpoint) = &config.endpoint {
                b = b.with_endpoint(endpoint.clone());
            }
            b.build()
        }
        Protocol::HttpProtobuf => {
            let mut b = builder
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(endpoint) = &config.endpoint {
                b = b.with_endpoint(format!("{}/v1/metrics", endpoint.trim_end_matches('/')));
            }
            b.build()
        }
    }
}

/// The log filter: `RUST_LOG`, else [`DEFAULT_LOG_FILTER`].
pub fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER))
}

/// The whole subscriber: log lines in `format` to `writer` filtered by `filter`, plus the
/// OpenTelemetry layer when `telemetry` exports traces. Tests install it with
/// `tracing::subscriber::set_default`; [`init`] installs it globally.
pub fn subscriber<W>(
    telemetry: &Telemetry,
    format: LogFormat,
    writer: W,
    filter: EnvFilter,
) -> impl Subscriber + Send + Sync + 'static
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let slot = DispatchSlot::default();
    let logs: Box<dyn Layer<Layered<DispatchSlot, Registry>> + Send + Sync> = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_ansi(stderr::colour())
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(JsonFields::new())
            .event_format(JsonWithTrace::new(slot.clone()))
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    // The slot is a layer of its own, outside the `Vec`: a `Vec` of layers does not pass
    // `on_register_dispatch` on.
    let mut layers = vec![logs];
    layers.extend(telemetry.otel_layer());
    Registry::default().with(slot).with(layers)
}

/// Start telemetry as the environment asks and install the global subscriber. Call it
/// inside the Tokio runtime; call [`Telemetry::shutdown`] on the result at exit. Only a
/// second global subscriber is an error: `OTEL_*` problems are logged and export stays off.
pub fn init(format: LogFormat) -> Result<Telemetry, TelemetryError> {
    let config = TelemetryConfig::from_env(std::env::vars());
    let (telemetry, failure) = match Telemetry::start(&config) {
        Ok(telemetry) => (telemetry, None),
        Err(error) => (Telemetry::default(), Some(error)),
    };
    tracing::subscriber::set_global_default(subscriber(
        &telemetry,
        format,
        stderr::LogStderr,
        log_filter(),
    ))
    .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    if let Some(error) = failure {
        tracing::warn!(%error, "OpenTelemetry export is off");
    }
    if !telemetry.install_metrics() {
        tracing::warn!(
            "metric instruments existed before telemetry started; metrics are not exported"
        );
    }
    // Export errors inside the SDK are reported through `tracing` (its internal logs) at
    // warn and above, so they show in the logs and never end the process.
    if telemetry.tracer.is_some() || telemetry.meter.is_some() {
        tracing::info!(
            traces = telemetry.tracer.is_some(),
            metrics = telemetry.meter.is_some(),
            traces_protocol = ?config.protocol,
            metrics_protocol = ?config.metrics_protocol,
            "OpenTelemetry export on"
        );
    }
    Ok(telemetry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_endpoint_means_no_export() {
        let config = TelemetryConfig::from_env(vars(&[("OTEL_SERVICE_NAME", "w")]));
        assert_eq!(config, TelemetryConfig::disabled());
    }

    #[test]
    fn endpoint_turns_both_signals_on_and_protocol_is_read() {
        let config = TelemetryConfig::from_env(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]));
        assert!(config.traces);
        assert!(!config.metrics);
        assert_eq!(config.protocol, Protocol::HttpProtobuf);
        let only_traces = TelemetryConfig::from_env(vars(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:4317",
        )]));
        assert!(only_traces.traces && !only_traces.metrics);
    }

    #[test]
    fn unknown_values_are_warned_about_and_ignored_never_fatal() {
        let config = TelemetryConfig::from_env(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_EXPORTER", "jaeger"),
            ("OTEL_SDK_DISABLED", "yes"),
        ]));
        assert!(config.traces && config.metrics);
        assert_eq!(config.protocol, Protocol::Grpc);
        assert_eq!(config.warnings.len(), 3, "{:?}", config.warnings);
        assert!(config.warnings.iter().any(|w| w.contains("http/json")));
        let off = TelemetryConfig::from_env(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ]));
        assert_eq!(off, TelemetryConfig::disabled());
    }

    #[test]
    fn compression_is_gzip_or_none_and_anything_else_is_warned_about() {
        let config = TelemetryConfig::from_env(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
        ]));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let typo = TelemetryConfig::from_env(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "zstd"),
        ]));
        assert!(typo.traces && typo.metrics);
        assert_eq!(typo.warnings.len(), 1, "{:?}", typo.warnings);
        assert!(typo.warnings[0].contains("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION"));
    }

    #[test]
    fn values_are_case_insensitive_and_protocols_per_signal() {
        let config = TelemetryConfig::from_env(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "GRPC"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "HTTP/Protobuf"),
            ("OTEL_TRACES_EXPORTER", "OTLP"),
            ("OTEL_METRICS_EXPORTER", "otlp"),
        ]));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        assert!(config.traces && config.metrics);
        assert_eq!(config.protocol, Protocol::Grpc);
        assert_eq!(config.metrics_protocol, Protocol::HttpProtobuf);
        let off = TelemetryConfig::from_env(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_METRICS_EXPORTER", "None"),
        ]));
        assert!(off.traces && !off.metrics);
    }
}
