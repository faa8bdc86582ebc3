//! Every metric the service emits, defined here and nowhere else: its OpenTelemetry name,
//! unit, kind, labels, and the Prometheus name it gets after the collector's OTLP to
//! Prometheus translation (dots to underscores, unit suffix, `_total` on counters).
//!
//! Labels are bounded sets only (domain, outcome, source, reason, operation, status):
//! never an event id, a customer id or a tenant.
//!
//! Instruments are created once, when telemetry starts ([`install`]); code that records
//! calls [`get`], which without an installed meter provider hands out no-op instruments.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, MeterProvider, UpDownCounter};

/// What kind of instrument a metric is (decides its Prometheus shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic sum: Prometheus `<name>_total`.
    Counter,
    /// Non-monotonic sum: a Prometheus gauge.
    UpDownCounter,
    /// Last value: a Prometheus gauge.
    Gauge,
    /// Explicit-bucket histogram: `<name>_bucket`, `_sum`, `_count`.
    Histogram,
}

/// One metric's definition.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// The OpenTelemetry instrument name.
    pub name: &'static str,
    /// The UCUM unit (`s`, or an annotation such as `{message}` that Prometheus drops).
    pub unit: &'static str,
    /// Instrument kind.
    pub kind: Kind,
    /// The label keys it is recorded with.
    pub labels: &'static [&'static str],
    /// What it counts or measures.
    pub description: &'static str,
}

impl MetricDef {
    /// The name after the collector's Prometheus translation (the `prometheus` exporter
    /// with its default `add_metric_suffixes: true`), without histogram series suffixes.
    pub fn prometheus_name(&self) -> String {
        let mut name = self.name.replace('.', "_");
        if self.unit == "s" {
            name.push_str("_seconds");
        }
        if self.kind == Kind::Counter {
            name.push_str("_total");
        }
        name
    }

    /// Every series name Prometheus holds for this metric.
    pub fn prometheus_series(&self) -> Vec<String> {
        let base = self.prometheus_name();
        match self.kind {
            Kind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{base}{s}"))
                .collect(),
            _ => vec![base],
        }
    }
}

/// Messages received from the domain queues.
pub const MESSAGES_RECEIVED: MetricDef = MetricDef {
    name: "stripe_worker.messages.received",
    unit: "{message}",
    kind: Kind::Counter,
    labels: &["domain"],
    description: "Messages received from the domain queues.",
};
/// Messages finished, by outcome: applied, duplicate, ignored, retry_later,
/// in_progress_elsewhere, dead_lettered, released.
pub const MESSAGES_PROCESSED: MetricDef = MetricDef {
    name: "stripe_worker.messages.processed",
    unit: "{message}",
    kind: Kind::Counter,
    labels: &["domain", "outcome"],
    description: "Messages finished, by outcome.",
};
/// Messages put in a DLQ, by reason code.
pub const MESSAGES_DEAD_LETTERED: MetricDef = MetricDef {
    name: "stripe_worker.messages.dead_lettered",
    unit: "{message}",
    kind: Kind::Counter,
    labels: &["domain", "reason"],
    description: "Messages sent to a dead-letter queue, by reason code.",
};
/// In-process retry attempts of a failed step, by operation.
pub const RETRIES: MetricDef = MetricDef {
    name: "stripe_worker.retries",
    unit: "{retry}",
    kind: Kind::Counter,
    labels: &["operation"],
    description: "In-process retry attempts of transient failures, by operation.",
};
/// Messages being processed now.
pub const MESSAGES_IN_FLIGHT: MetricDef = MetricDef {
    name: "stripe_worker.messages.in_flight",
    unit: "{message}",
    kind: Kind::UpDownCounter,
    labels: &["domain"],
    description: "Messages being processed now.",
};
/// The in-flight limits: per queue (`scope=queue`, with `domain`) and across all queues
/// (`scope=global`).
pub const CONCURRENCY_LIMIT: MetricDef = MetricDef {
    name: "stripe_worker.concurrency.limit",
    unit: "{message}",
    kind: Kind::Gauge,
    labels: &["scope", "domain"],
    description: "Largest number of messages in flight (per queue, and across all queues).",
};
/// Receive to outcome, per message.
pub const PROCESSING_DURATION: MetricDef = MetricDef {
    name: "stripe_worker.processing.duration",
    unit: "s",
    kind: Kind::Histogram,
    labels: &["domain", "outcome"],
    description: "Time from receive to outcome, per message.",
};
/// Now minus the Stripe event's `created`, when the worker starts applying it.
pub const EVENT_LAG: MetricDef = MetricDef {
    name: "stripe_worker.event.lag",
    unit: "s",
    kind: Kind::Histogram,
    labels: &["domain", "source"],
    description: "Age of an event (now minus Stripe's created) when the worker applies it.",
};
/// Duration of calls to the backends (queue, dedupe, state, bus, Stripe API).
pub const BACKEND_DURATION: MetricDef = MetricDef {
    name: "stripe_worker.backend.duration",
    unit: "s",
    kind: Kind::Histogram,
    labels: &["operation", "outcome"],
    description: "Duration of backend calls, by operation and outcome (ok, error).",
};
/// Webhook requests answered, by HTTP status and reason.
pub const INGRESS_REQUESTS: MetricDef = MetricDef {
    name: "stripe_worker.ingress.requests",
    unit: "{request}",
    kind: Kind::Counter,
    labels: &["status", "reason"],
    description: "Webhook requests answered, by HTTP status and reason (accepted or why not).",
};
/// Webhook events the ingress could not publish to the bus (answered 503).
pub const PUBLISH_FAILURES: MetricDef = MetricDef {
    name: "stripe_worker.ingress.publish_failures",
    unit: "{request}",
    kind: Kind::Counter,
    labels: &["reason"],
    description: "Webhook events not published after retries (retryable or permanent).",
};

/// Same-second ties between two events for one object (equal as-of, different events),
/// by resolution: `fetched` (the object was fetched from the Stripe API and stored) or
/// `unresolved` (no API key: the deterministic tiebreak decided, and may be wrong).
pub const STATE_TIES: MetricDef = MetricDef {
    name: "stripe_worker.state.ties",
    unit: "{tie}",
    kind: Kind::Counter,
    labels: &["resolution"],
    description: "Same-second ties between events for one object, by resolution (fetched, unresolved).",
};
/// How far back the oldest event not yet swept is (scheduled `sweep`); Stripe keeps
/// events for 30 days.
pub const SWEEP_UNSWEPT_AGE: MetricDef = MetricDef {
    name: "stripe_worker.sweep.unswept_age",
    unit: "s",
    kind: Kind::Gauge,
    labels: &[],
    description: "Age of the oldest time the scheduled sweep has not covered yet.",
};

/// Every metric, for documentation and for checking dashboards against the code.
pub const ALL: [MetricDef; 13] = [
    MESSAGES_RECEIVED,
    MESSAGES_PROCESSED,
    MESSAGES_DEAD_LETTERED,
    RETRIES,
    MESSAGES_IN_FLIGHT,
    CONCURRENCY_LIMIT,
    PROCESSING_DURATION,
    EVENT_LAG,
    BACKEND_DURATION,
    INGRESS_REQUESTS,
    PUBLISH_FAILURES,
    STATE_TIES,
    SWEEP_UNSWEPT_AGE,
];

/// Histogram buckets in seconds: from a millisecond (memory backends) to a few minutes
/// (event lag of a backlog), dense around the tens of milliseconds AWS calls take.
const SECONDS_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// The instruments, created once.
#[derive(Debug)]
pub struct Metrics {
    received: Counter<u64>,
    processed: Counter<u64>,
    dead_lettered: Counter<u64>,
    retries: Counter<u64>,
    in_flight: UpDownCounter<i64>,
    concurrency_limit: Gauge<i64>,
    processing_duration: Histogram<f64>,
    event_lag: Histogram<f64>,
    backend_duration: Histogram<f64>,
    ingress_requests: Counter<u64>,
    publish_failures: Counter<u64>,
    state_ties: Counter<u64>,
    sweep_unswept_age: Gauge<f64>,
}

fn counter(meter: &Meter, def: MetricDef) -> Counter<u64> {
    meter
        .u64_counter(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .build()
}

fn histogram(meter: &Meter, def: MetricDef) -> Histogram<f64> {
    meter
        .f64_histogram(def.name)
        .with_unit(def.unit)
        .with_description(def.description)
        .with_boundaries(SECONDS_BUCKETS.to_vec())
        .build()
}

impl Metrics {
    /// Create every instrument on `meter`.
    pub fn new(meter: &Meter) -> Self {
        Metrics {
            received: counter(meter, MESSAGES_RECEIVED),
            processed: counter(meter, MESSAGES_PROCESSED),
            dead_lettered: counter(meter, MESSAGES_DEAD_LETTERED),
            retries: counter(meter, RETRIES),
            in_flight: meter
                .i64_up_down_counter(MESSAGES_IN_FLIGHT.name)
                .with_unit(MESSAGES_IN_FLIGHT.unit)
                .with_description(MESSAGES_IN_FLIGHT.description)
                .build(),
            concurrency_limit: meter
                .i64_gauge(CONCURRENCY_LIMIT.name)
                .with_unit(CONCURRENCY_LIMIT.unit)
                .with_description(CONCURRENCY_LIMIT.description)
                .build(),
            processing_duration: histogram(meter, PROCESSING_DURATION),
            event_lag: histogram(meter, EVENT_LAG),
            backend_duration: histogram(meter, BACKEND_DURATION),
            ingress_requests: counter(meter, INGRESS_REQUESTS),
            publish_failures: counter(meter, PUBLISH_FAILURES),
            state_ties: counter(meter, STATE_TIES),
            sweep_unswept_age: meter
                .f64_gauge(SWEEP_UNSWEPT_AGE.name)
                .with_unit(SWEEP_UNSWEPT_AGE.unit)
                .with_description(SWEEP_UNSWEPT_AGE.description)
                .build(),
        }
    }

    /// `count` messages received from `domain`'s queue (now in flight).
    pub fn received(&self, domain: &'static str, count: u64) {
        let labels = [KeyValue::new("domain", domain)];
        self.received.add(count, &labels);
        self.in_flight.add(count as i64, &labels);
    }

    /// A message of `domain` finished with `outcome` after `seconds`.
    pub fn processed(&self, domain: &'static str, outcome: &'static str, seconds: f64) {
        let labels = [
            KeyValue::new("domain", domain),
            KeyValue::new("outcome", outcome),
        ];
        self.processed.add(1, &labels);
        self.processing_duration.record(seconds, &labels);
        self.in_flight.add(-1, &labels[..1]);
    }

    /// A message of `domain` is in its DLQ with reason code `reason`.
    pub fn dead_lettered(&self, domain: &'static str, reason: &str) {
        // Reason codes are a fixed set chosen by the code (decode, tenant, hydrate and
        // handler errors), so the label stays bounded; the owned copy happens only on the
        // rare dead-letter path.
        self.dead_lettered.add(
            1,
            &[
                KeyValue::new("domain", domain),
                KeyValue::new("reason", reason.to_owned()),
            ],
        );
    }

    /// One in-process retry of `operation`.
    pub fn retried(&self, operation: &'static str) {
        self.retries
            .add(1, &[KeyValue::new("operation", operation)]);
    }

    /// The in-flight limits the pool runs with.
    pub fn concurrency_limits(&self, global: usize, per_queue: &[(&'static str, usize)]) {
        self.concurrency_limit.record(
            global as i64,
            &[
                KeyValue::new("scope", "global"),
                KeyValue::new("domain", "all"),
            ],
        );
        for (domain, limit) in per_queue {
            self.concurrency_limit.record(
                *limit as i64,
                &[
                    KeyValue::new("scope", "queue"),
                    KeyValue::new("domain", *domain),
                ],
            );
        }
    }

    /// An event of `domain` from `source` is being applied `seconds` after Stripe created it.
    pub fn event_lag(&self, domain: &'static str, source: &'static str, seconds: f64) {
        self.event_lag.record(
            seconds.max(0.0),
            &[
                KeyValue::new("domain", domain),
                KeyValue::new("source", source),
            ],
        );
    }

    /// A backend call `operation` took `seconds` and succeeded or not.
    pub fn backend_call(&self, operation: &'static str, ok: bool, seconds: f64) {
        self.backend_duration.record(
            seconds,
            &[
                KeyValue::new("operation", operation),
                KeyValue::new("outcome", if ok { "ok" } else { "error" }),
            ],
        );
    }

    /// The ingress answered `status` for `reason` (`accepted` for a 200).
    pub fn ingress_request(&self, status: u16, reason: &'static str) {
        self.ingress_requests.add(
            1,
            &[
                KeyValue::new("status", i64::from(status)),
                KeyValue::new("reason", reason),
            ],
        );
    }

    /// A same-second tie, `fetched` or `unresolved`.
    pub fn state_tie(&self, resolution: &'static str) {
        self.state_ties
            .add(1, &[KeyValue::new("resolution", resolution)]);
    }

    /// The scheduled sweep's oldest unswept time is `seconds` ago.
    pub fn sweep_unswept_age(&self, seconds: f64) {
        self.sweep_unswept_age.record(seconds, &[]);
    }

    /// The ingress could not publish an event (`retryable` or `permanent`).
    pub fn publish_failed(&self, retryable: bool) {
        let reason = if retryable { "retryable" } else { "permanent" };
        self.publish_failures
            .add(1, &[KeyValue::new("reason", reason)]);
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Create the instruments on `provider`'s meter. The first call wins: instruments live for
/// the process. Returns `false` if instruments were already created (by an earlier
/// `install`, or by [`get`] before telemetry started: those are no-ops for good).
pub fn install(provider: &impl MeterProvider) -> bool {
    let meter = provider.meter("stripe-worker");
    METRICS.set(Metrics::new(&meter)).is_ok()
}

/// The instruments: the installed ones, or no-ops when telemetry was not started.
pub fn get() -> &'static Metrics {
    METRICS.get_or_init(|| {
        let noop = opentelemetry::metrics::NoopMeterProvider::new();
        Metrics::new(&noop.meter("stripe-worker"))
    })
}

/// Time `call` as backend operation `operation`.
pub async fn time_backend<T, E, F>(operation: &'static str, call: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let started = std::time::Instant::now();
    let result = call.await;
    get().backend_call(operation, result.is_ok(), started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_follow_the_collector_translation() {
        assert_eq!(
            MESSAGES_PROCESSED.prometheus_name(),
            "stripe_worker_messages_processed_total"
        );
        assert_eq!(
            PROCESSING_DURATION.prometheus_series(),
            [
                "stripe_worker_processing_duration_seconds_bucket",
                "stripe_worker_processing_duration_seconds_sum",
                "stripe_worker_processing_duration_seconds_count"
            ]
        );
        assert_eq!(
            MESSAGES_IN_FLIGHT.prometheus_name(),
            "stripe_worker_messages_in_flight"
        );
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
