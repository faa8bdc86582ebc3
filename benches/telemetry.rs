//! The cost of telemetry: events/s through the worker on the memory backends, with OTLP
//! export off (no exporter: the per-message spans are disabled at their call sites) and on
//! (every span recorded and exported over gRPC to a receiver in this process that discards
//! what it gets, metrics exported every second).
//!
//! `cargo bench --bench telemetry [-- EVENTS ROUNDS]`; prints one line per round and the
//! median of each mode.

use std::sync::Arc;
use std::time::{Duration, Instant};

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
use serde_json::json;
use stripe_worker::app::{cancel_when_idle, memory_backend};
use stripe_worker::backend::{Bus, BusEntry};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::event::envelope::webhook_snapshot_entry;
use stripe_worker::telemetry::{self, LogFormat, Telemetry, TelemetryConfig};
use stripe_worker::worker::Worker;
use tokio_util::sync::CancellationToken;

/// The shipped binary's allocator, so the figures are the ones `stripe-worker run` gets.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An OTLP receiver that accepts and drops everything.
#[derive(Clone, Copy)]
struct Sink;

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        _: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        _: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

fn entries(n: usize, round: usize, now_ms: i64) -> Vec<BusEntry> {
    (0..n)
        .map(|i| {
            let event = json!({
                "id": format!("evt_bench_{round}_{i}"), "object": "event",
                "type": "customer.updated", "created": now_ms / 1000, "livemode": false,
                "data": {"object": {"id": format!("cus_{}", i % 500), "object": "customer",
                                    "email": format!("c{i}@example.com")}}
            });
            webhook_snapshot_entry(&event, "default", now_ms, None).expect("entry")
        })
        .collect()
}

/// Publish `n` events and run the pool until the queues are idle; events/s.
async fn round(n: usize, round: usize) -> f64 {
    let mut config = Config::default();
    config.tenants.default_tenant = Some("default".into());
    config.tenants.tenants = vec!["default".into()];
    config.worker.wait_time_secs = 1;
    config.worker.ack_flush_ms = 1;
    let backend = memory_backend(&config, system_clock());
    for chunk in entries(n, round, system_clock()()).chunks(10) {
        backend.bus.publish(chunk).await.expect("publish");
    }
    let worker = Worker::build(&config, &backend, None, system_clock());
    let stats = Arc::clone(worker.stats());
    let stop = CancellationToken::new();
    let started = Instant::now();
    let idle = tokio::spawn(cancel_when_idle(
        Arc::clone(&backend.queues),
        Arc::clone(&stats),
        Duration::from_millis(50),
        stop.clone(),
    ));
    worker.run(stop).await;
    idle.await.expect("idle task");
    // The idle wait is the same in both modes and is not processing: leave it out.
    let elapsed = started.elapsed().saturating_sub(Duration::from_millis(50));
    assert_eq!(stats.snapshot().applied as usize, n, "every event applied");
    n as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Which mode a child process measures (metric instruments are process-wide, so each
/// mode runs in its own process).
const MODE_VAR: &str = "TELEMETRY_BENCH_MODE";

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let events: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    match std::env::var(MODE_VAR).as_deref() {
        Ok("on") => println!("median {:.0}", measure(true, events, rounds)),
        Ok(_) => println!("median {:.0}", measure(false, events, rounds)),
        Err(_) => {
            let mut medians = Vec::new();
            for mode in ["off", "on"] {
                let output = std::process::Command::new(std::env::current_exe().expect("exe"))
                    .args([events.to_string(), rounds.to_string()])
                    .env(MODE_VAR, mode)
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .expect("run a mode");
                let text = String::from_utf8_lossy(&output.stdout);
                print!("{text}");
                let median: f64 = text
                    .lines()
                    .find_map(|l| l.strip_prefix("median "))
                    .and_then(|m| m.trim().parse().ok())
                    .expect("a median line");
                medians.push(median);
            }
            println!(
                "{events} events x {rounds} rounds: export off {:.0} events/s, export on {:.0} events/s, overhead {:.1}%",
                medians[0],
                medians[1],
                (1.0 - medians[1] / medians[0]) * 100.0
            );
        }
    }
}

/// Start the receiver on a thread and runtime of its own (a collector is another process:
/// decoding what it receives must not be charged to the worker); its endpoint.
fn start_sink() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr"))
                .expect("send the address");
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(Sink))
                .add_service(MetricsServiceServer::new(Sink))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .expect("serve");
        });
    });
    format!("http://{}", rx.recv().expect("the sink's address"))
}

/// Median events/s over `rounds` rounds of `events`, with export on or off.
fn measure(export: bool, events: usize, rounds: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let telemetry = if export {
        let endpoint = start_sink();
        let _enter = runtime.enter();
        // `TELEMETRY_BENCH_SIGNALS=traces|metrics` measures one signal alone.
        let signals = std::env::var("TELEMETRY_BENCH_SIGNALS").unwrap_or_default();
        let telemetry = Telemetry::start(&TelemetryConfig {
            metric_interval: Some(Duration::from_secs(1)),
            traces: signals != "metrics",
            metrics: signals != "traces",
            ..TelemetryConfig::otlp_grpc(endpoint)
        })
        .expect("exporters");
        telemetry.install_metrics();
        telemetry
    } else {
        Telemetry::default()
    };
    let mode = if export { "on" } else { "off" };
    let subscriber = telemetry::subscriber(
        &telemetry,
        LogFormat::Json,
        std::io::sink,
        telemetry::log_filter(),
    );
    let guard = tracing::subscriber::set_default(subscriber);
    // One warm-up round, then the measured ones.
    runtime.block_on(round(events.min(1_000), 0));
    let mut rates = Vec::new();
    for r in 1..=rounds {
        let rate = runtime.block_on(round(events, r));
        println!("export {mode:>3} round {r}: {rate:>9.0} events/s");
        rates.push(rate);
    }
    drop(guard);
    runtime.block_on(async {
        tokio::task::spawn_blocking(move || telemetry.shutdown())
            .await
            .expect("shutdown")
    });
    median(rates)
}
