//! `/metrics` on the admin port (`run --admin-listen ADDR --prometheus`), for teams
//! without an OpenTelemetry collector: the worker's own counters ([`WorkerStats`], the
//! same calls that feed the OTLP metrics) and the queue depths, in the Prometheus text
//! exposition format (version 0.0.4). Where an OTLP metric counts the same thing the name
//! is the one it gets in Prometheus (README, "Observability"), without its `domain` label:
//! these counters are the process's totals.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::backend::{PerDomain, Queue};
use crate::domain::Domain;
use crate::worker::{StatsSnapshot, WorkerStats};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Queue depths of one domain, as the exposition shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Visible plus delayed messages in the main queue.
    pub waiting: u64,
    /// Messages received and not yet settled.
    pub in_flight: u64,
    /// Messages in the dead-letter queue.
    pub dead_letters: u64,
}

/// Render the counters and depths (a domain whose stats failed is left out of the
/// depth gauges rather than shown as 0).
pub fn render(stats: &StatsSnapshot, depths: &[(Domain, Depth)]) -> String {
    let mut out = String::new();
    let name = "stripe_worker_messages_received_total";
    describe(
        &mut out,
        name,
        "counter",
        "Messages received from the queues.",
    );
    let _ = writeln!(out, "{name} {}", stats.received);
    let name = "stripe_worker_messages_processed_total";
    describe(&mut out, name, "counter", "Messages by outcome.");
    for (outcome, count) in [
        ("applied", stats.applied),
        ("duplicate", stats.duplicates),
        ("ignored", stats.ignored),
        ("in_progress_elsewhere", stats.in_progress_elsewhere),
        ("dead_lettered", stats.dead_lettered),
        ("released", stats.released),
    ] {
        let _ = writeln!(out, "{name}{{outcome=\"{outcome}\"}} {count}");
    }
    let name = "stripe_worker_retried_total";
    describe(
        &mut out,
        name,
        "counter",
        "In-process retry attempts plus messages left for a later receive.",
    );
    let _ = writeln!(out, "{name} {}", stats.retried);
    let name = "stripe_worker_messages_dead_lettered_total";
    describe(
        &mut out,
        name,
        "counter",
        "Messages sent to a dead-letter queue, by reason.",
    );
    for (reason, count) in &stats.dead_letter_reasons {
        let _ = writeln!(out, "{name}{{reason=\"{}\"}} {count}", escape(reason));
    }
    let name = "stripe_worker_messages_in_flight";
    describe(&mut out, name, "gauge", "Messages being processed now.");
    let _ = writeln!(out, "{name} {}", stats.in_flight.max(0));
    type Pick = fn(&Depth) -> u64;
    let depth_gauges: [(&str, &str, Pick); 3] = [
        (
            "stripe_worker_queue_waiting",
            "Messages waiting in a domain's queue (visible or delayed).",
            |d| d.waiting,
        ),
        (
            "stripe_worker_queue_in_flight",
            "Messages received from a domain's queue and not yet settled.",
            |d| d.in_flight,
        ),
        (
            "stripe_worker_dlq_messages",
            "Messages in a domain's dead-letter queue.",
            |d| d.dead_letters,
        ),
    ];
    for (name, help, pick) in depth_gauges {
        describe(&mut out, name, "gauge", help);
        for (domain, depth) in depths {
            let _ = writeln!(out, "{name}{{domain=\"{domain}\"}} {}", pick(depth));
        }
    }
    out
}

/// The `# HELP` and `# TYPE` lines of a metric.
fn describe(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `/metrics` route over `stats` and the queues of `domains`.
pub fn router<Q: Queue>(
    stats: Arc<WorkerStats>,
    queues: Arc<PerDomain<Q>>,
    domains: Vec<Domain>,
) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let stats = Arc::clone(&stats);
            let queues = Arc::clone(&queues);
            let domains = domains.clone();
            async move {
                let mut depths = Vec::new();
                for domain in domains {
                    if let Ok((main, dlq)) = queues.get(domain).stats().await {
                        depths.push((
                            domain,
                            Depth {
                                waiting: main.visible + main.delayed,
                                in_flight: main.in_flight,
                                dead_letters: dlq.visible + dlq.delayed + dlq.in_flight,
                            },
                        ));
                    }
                }
                (
                    [(header::CONTENT_TYPE, CONTENT_TYPE)],
                    render(&stats.snapshot(), &depths),
                )
                    .into_response()
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_are_in_the_text_format() {
        let stats = StatsSnapshot {
            applied: 3,
            dead_lettered: 2,
            dead_letter_reasons: [("unknown_tenant".to_owned(), 2)].into(),
            in_flight: 1,
            ..StatsSnapshot::default()
        };
        let depth = Depth {
            waiting: 5,
            in_flight: 1,
            dead_letters: 2,
        };
        let text = render(&stats, &[(Domain::Payment, depth)]);
        assert!(
            text.contains("stripe_worker_messages_processed_total{outcome=\"applied\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "stripe_worker_messages_dead_lettered_total{reason=\"unknown_tenant\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("stripe_worker_queue_waiting{domain=\"payment\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("stripe_worker_messages_in_flight 1\n"),
            "{text}"
        );
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
