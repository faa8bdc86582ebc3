//! `stripe-worker demo`: the whole job in one process on the embedded backend. Generate a
//! realistic stream, publish it on every path with duplicates, shuffled order, poison
//! messages and injected transient faults, run the worker until drained, and compare the
//! final state with the generator's own expectation.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::generator::{GeneratorConfig, generate_for_tenants, tenant_name};
use crate::app::{cancel_when_idle, open_local};
use crate::backend::doubles::faults::Faulty;
use crate::backend::local_bus::RoutedCounts;
use crate::backend::{Backend, BusEntry, Queue, StateStore};
use crate::clock::system_clock;
use crate::config::Config;
use crate::domain::Domain;
use crate::event::envelope;
use crate::stripe::double::StripeDouble;
use crate::worker::{StatsSnapshot, Worker};

/// What the demo does.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// About how many Stripe events to generate.
    pub events: usize,
    /// How many tenants share the stream.
    pub tenants: usize,
    /// Seed for the generator, the shuffle, duplicates and faults.
    pub seed: u64,
    /// Where the SQLite files go; a temporary directory when `None`.
    pub data_dir: Option<PathBuf>,
    /// Share of dedupe and state calls, and of Stripe API fetches, that fail transiently.
    pub fault_rate: f64,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Generate, publish, drain and check the stream this many events at a time, each
    /// chunk with tenants of its own, so memory stays flat however long the run; `None`
    /// is one chunk.
    pub chunk_events: Option<usize>,
    /// `STRIPE_WORKER_*` variables, applied over the demo's own worker settings as every
    /// command applies them (the demo's tenants are its own whatever they say).
    pub config_env: Vec<(String, String)>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            events: 20_000,
            tenants: 3,
            seed: 42,
            data_dir: None,
            fault_rate: 0.02,
            progress: true,
            chunk_events: None,
            config_env: Vec::new(),
        }
    }
}

/// The demo's result, printed as a summary or as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct DemoReport {
    /// Stripe events the generator made.
    pub generated_events: usize,
    /// Chunks the stream was generated and checked in.
    pub chunks: usize,
    /// Entries put on the bus (every path and every duplicate), poison excluded.
    pub published: usize,
    /// Poison messages sent straight to the queues.
    pub poison_injected: usize,
    /// Deliveries per domain queue.
    pub routed: RoutedCounts,
    /// Messages applied by a handler.
    pub applied: u64,
    /// Messages acknowledged as duplicates.
    pub duplicates: u64,
    /// Messages acknowledged with nothing to do.
    pub ignored: u64,
    /// Retries (in process and by visibility).
    pub retried: u64,
    /// Messages sent to a DLQ.
    pub dead_lettered: u64,
    /// Dead letters per reason.
    pub dead_letter_reasons: std::collections::BTreeMap<String, u64>,
    /// Transient faults injected into dedupe, state and Stripe API calls.
    pub faults_injected: u64,
    /// Messages processed per second, publish to drain.
    pub events_per_sec: f64,
    /// Median processing time of a message, ms.
    pub p50_ms: f64,
    /// 99th percentile processing time, ms.
    pub p99_ms: f64,
    /// Seconds from the first publish to the drained queues.
    pub elapsed_secs: f64,
    /// Seconds spent publishing (the worker runs meanwhile).
    pub publish_secs: f64,
    /// Whether the final state equals the generator's expected state.
    pub state_matches: bool,
    /// How many expected facts differ.
    pub mismatches: usize,
    /// The first few differences, to start debugging from.
    pub mismatch_examples: Vec<String>,
    /// Where the SQLite files are.
    pub data_dir: String,
    /// Every worker counter.
    pub worker: StatsSnapshot,
}

/// The partner destination id of a demo tenant's snapshot or thin event destination.
fn destination(tenant: &str, style: &str) -> String {
    format!("ed_demo_{}_{style}", tenant.replace('-', "_"))
}

/// Run the demo.
///
/// The stream is generated, published, drained and checked one chunk at a time (the whole
/// stream is one chunk unless [`DemoOptions::chunk_events`] says otherwise). Each chunk has
/// tenants of its own, so chunks share no state and each one's expected state can be
/// checked, and its memory freed, before the next is generated; the worker pool runs
/// throughout. That keeps a million-event soak within a few hundred MiB.
pub async fn run_demo(options: DemoOptions) -> anyhow::Result<DemoReport> {
    let chunk_events = options.chunk_events.unwrap_or(options.events).max(1);
    let chunks = options.events.div_ceil(chunk_events).max(1);
    let tenants_per_chunk = options.tenants.max(1);
    let tenants: Vec<String> = (0..chunks * tenants_per_chunk).map(tenant_name).collect();

    let mut config = Config::default();
    config.worker.wait_time_secs = 1;
    config.worker.visibility_timeout_secs = 10;
    // At most half the visibility timeout, as validation requires.
    config.dedupe.lease_secs = 5;
    config.retry.visibility_backoff_base_secs = 1;
    crate::config::apply_env(&mut config, options.config_env.iter().cloned())?;
    config.tenants.tenants = tenants.clone();
    for tenant in &tenants {
        for style in ["snapshot", "thin"] {
            config
                .tenants
                .destinations
                .insert(destination(tenant, style), tenant.clone());
        }
    }
    config.validate()?;

    let temp;
    let data_dir = match &options.data_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("stripe-worker-demo-")
                .tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let backend = open_local(&data_dir, &config, system_clock())?;

    // The Stripe API stand-in serves each object's final version to thin events.
    let double = Arc::new(StripeDouble::with_transient_failures(
        options.fault_rate,
        options.seed,
    ));
    let dedupe = Arc::new(Faulty::new(
        Arc::clone(&backend.dedupe),
        options.fault_rate,
        options.seed ^ 1,
    ));
    let state = Arc::new(Faulty::new(
        Arc::clone(&backend.state),
        options.fault_rate,
        options.seed ^ 2,
    ));
    let faulty = Backend {
        queues: Arc::clone(&backend.queues),
        dedupe: Arc::clone(&dedupe),
        state: Arc::clone(&state),
        bus: Arc::clone(&backend.bus),
    };
    let worker = Worker::build(
        &config,
        &faulty,
        Some(Arc::clone(&double) as _),
        system_clock(),
    );
    let stats = Arc::clone(worker.stats());

    let mut rng = StdRng::seed_from_u64(options.seed);
    let poison = poison_messages(&tenants);

    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let pool = tokio::spawn(worker.run(shutdown.clone()));
    let progress = progress_bar(options.progress);
    crate::telemetry::stderr::set_progress_bar(&progress);
    let ticker = tokio::spawn({
        let stats = Arc::clone(&stats);
        let progress = progress.clone();
        async move {
            loop {
                // Messages that reached their end (a redelivery is one message, not two),
                // never past the length: the bar ends at 100%.
                let s = stats.snapshot();
                let done = s.applied + s.duplicates + s.ignored + s.dead_lettered;
                progress.set_position(done.min(progress.length().unwrap_or(0)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let mut generated_events = 0;
    let mut published = 0;
    let mut publish_secs = 0.0;
    let mut mismatches = Vec::new();
    for chunk in 0..chunks {
        let events = chunk_events.min(options.events.saturating_sub(chunk * chunk_events));
        let first_tenant = chunk * tenants_per_chunk;
        let stream = generate_for_tenants(
            &GeneratorConfig {
                events: events.max(1),
                tenants: tenants_per_chunk,
                seed: options.seed.wrapping_add(chunk as u64),
            },
            first_tenant,
        );
        double.put_all(stream.final_objects)?;
        let mut entries = publishable_entries(&stream.events, &mut rng)?;
        entries.shuffle(&mut rng);
        generated_events += stream.events.len();
        published += entries.len();
        drop(stream.events);
        let extra = if chunk == 0 { poison.len() } else { 0 };
        progress.inc_length((entries.len() + extra) as u64);
        if chunk == 0 {
            progress.set_style(counting_style());
        }

        let publish_started = Instant::now();
        crate::backend::publish_entries(backend.bus.as_ref(), &entries).await?;
        drop(entries);
        if chunk == 0 {
            for (domain, body) in &poison {
                backend
                    .queues
                    .get(*domain)
                    .send(body, Duration::ZERO)
                    .await?;
            }
        }
        publish_secs += publish_started.elapsed().as_secs_f64();

        // Wait for this chunk to drain (the pool keeps running), then check its tenants.
        cancel_when_idle(
            Arc::clone(&backend.queues),
            Arc::clone(&stats),
            Duration::from_millis(1500),
            CancellationToken::new(),
        )
        .await;
        let chunk_tenants = &tenants[first_tenant..first_tenant + tenants_per_chunk];
        let mut records = Vec::new();
        for tenant in chunk_tenants {
            records.extend(backend.state.export(Some(tenant)).await?);
            double.forget_tenant(tenant);
        }
        mismatches.extend(stream.expected.compare(&records));
    }
    shutdown.cancel();
    pool.await?;
    ticker.abort();
    progress.finish_and_clear();
    crate::telemetry::stderr::clear_progress_bar();
    let elapsed = started.elapsed();

    let worker = stats.snapshot();
    Ok(DemoReport {
        generated_events,
        chunks,
        published,
        poison_injected: poison.len(),
        routed: backend.bus.routed(),
        applied: worker.applied,
        duplicates: worker.duplicates,
        ignored: worker.ignored,
        retried: worker.retried,
        dead_lettered: worker.dead_lettered,
        dead_letter_reasons: worker.dead_letter_reasons.clone(),
        faults_injected: dedupe.injected() + state.injected() + double.injected_failures(),
        events_per_sec: worker.received as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: worker.p50_ms,
        p99_ms: worker.p99_ms,
        elapsed_secs: elapsed.as_secs_f64(),
        publish_secs,
        state_matches: mismatches.is_empty(),
        mismatches: mismatches.len(),
        mismatch_examples: mismatches
            .iter()
            .take(10)
            .map(ToString::to_string)
            .collect(),
        data_dir: if options.data_dir.is_some() {
            data_dir.display().to_string()
        } else {
            "(temporary, removed)".to_owned()
        },
        worker,
    })
}

/// Each generated event on one or more paths (webhook snapshot, partner snapshot, partner
/// thin), with some webhook deliveries repeated as Stripe does when an answer is lost.
fn publishable_entries(
    events: &[super::generator::GeneratedEvent],
    rng: &mut StdRng,
) -> anyhow::Result<Vec<BusEntry>> {
    let mut entries = Vec::with_capacity(events.len() * 2);
    for generated in events {
        let tenant = &generated.tenant;
        let received_at = generated.event["created"].as_i64().unwrap_or(0) * 1000 + 500;
        let webhook = rng.random_bool(0.7);
        let partner_snapshot = rng.random_bool(0.4) || !webhook;
        if webhook {
            let entry =
                envelope::webhook_snapshot_entry(&generated.event, tenant, received_at, None)?;
            if rng.random_bool(0.05) {
                entries.push(entry.clone());
            }
            entries.push(entry);
        }
        if partner_snapshot {
            entries.push(envelope::partner_snapshot_entry(
                &generated.event,
                &destination(tenant, "snapshot"),
            )?);
        }
        // Only objects the API serves by id can be sent thin (not discounts, nor
        // entitlement summaries, which have no id).
        if rng.random_bool(0.2) && fetchable(&generated.event["data"]["object"]) {
            entries.push(envelope::partner_thin_entry(
                &generated.event,
                &destination(tenant, "thin"),
            )?);
        }
    }
    Ok(entries)
}

/// Whether the Stripe API serves `object` by id, so a thin event can name it.
fn fetchable(object: &serde_json::Value) -> bool {
    let text = |field: &str| object.get(field).and_then(serde_json::Value::as_str);
    matches!((text("object"), text("id")), (Some(t), Some(id)) if envelope::api_path(t, id).is_some())
}

/// Messages that can never succeed, each for a different reason, sent straight to a queue.
fn poison_messages(tenants: &[String]) -> Vec<(Domain, String)> {
    let tenant = tenants.first().map_or("tenant-0", String::as_str);
    let bad_tenant_event = json!({
        "id": "evt_poison_unknown_tenant", "object": "event", "type": "customer.updated",
        "created": 1_700_000_000, "livemode": false, "api_version": "2025-03-31.basil",
        "data": {"object": {"id": "cus_poison", "object": "customer"}}
    });
    let unmapped_partner = json!({
        "version": "0", "id": "poison-1", "detail-type": "customer.updated",
        "source": "aws.partner/stripe.com/ed_unmapped", "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1", "resources": [], "detail": bad_tenant_event,
    });
    let thin_without_object = json!({
        "version": "0", "id": "poison-2", "detail-type": "v1.customer.subscription.updated",
        "source": format!("aws.partner/stripe.com/{}", destination(tenant, "thin")),
        "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"id": "evt_poison_thin", "object": "v2.core.event",
            "type": "v1.customer.subscription.updated", "created": "2026-01-01T00:00:00.000Z",
            "livemode": false, "context": null, "related_object": null},
    });
    let thin_missing_in_stripe = json!({
        "version": "0", "id": "poison-3", "detail-type": "v1.invoice.paid",
        "source": format!("aws.partner/stripe.com/{}", destination(tenant, "thin")),
        "time": "2026-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
        "detail": {"id": "evt_poison_gone", "object": "v2.core.event", "type": "v1.invoice.paid",
            "created": "2026-01-01T00:00:00.000Z", "livemode": false, "context": null,
            "related_object": {"id": "in_never_existed", "type": "invoice", "url": "/v1/invoices/in_never_existed"}},
    });
    let no_detail = json!({
        "version": "0", "id": "poison-4", "detail-type": "Stripe Webhook Event",
        "source": "stripe.webhook", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
    });
    vec![
        (
            Domain::Payment,
            "{\"version\": \"0\", \"detail\": {".to_owned(),
        ),
        (Domain::Customer, "not json at all".to_owned()),
        (Domain::Customer, unmapped_partner.to_string()),
        (Domain::Subscription, thin_without_object.to_string()),
        (Domain::Payment, thin_missing_in_stripe.to_string()),
        (Domain::Subscription, no_detail.to_string()),
    ]
}

/// The demo's bar: a spinner while the first chunk is generated (its length is not known
/// yet, so no "0/0"), then [`counting_style`]. Hidden when not asked for; indicatif hides
/// it too when stderr is not a terminal.
fn progress_bar(enabled: bool) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} generating and publishing events")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The bar once messages are counted.
fn counting_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{spinner} processed {pos}/{len} messages {wide_bar} {per_sec} ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
}

/// The summary for a terminal.
pub fn render_summary(report: &DemoReport) -> String {
    let mut out = String::new();
    let reasons: Vec<String> = report
        .dead_letter_reasons
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let r = &report.routed;
    out.push_str(&format!(
        "generated events   {}\npublished          {} entries on the bus (+{} poison messages sent to queues)\nrouted             subscription={} payment={} customer={} unrouted={}\napplied            {}\nduplicates         {}\nignored            {}\nretried            {} ({} faults injected)\ndead-lettered      {} ({})\nthroughput         {:.0} messages/s over {:.1} s\nprocessing latency p50 {:.2} ms, p99 {:.2} ms\nstate              {}\n",
        report.generated_events, report.published, report.poison_injected,
        r.subscription, r.payment, r.customer, r.unrouted,
        report.applied, report.duplicates, report.ignored, report.retried, report.faults_injected,
        report.dead_lettered, reasons.join(", "),
        report.events_per_sec, report.elapsed_secs, report.p50_ms, report.p99_ms,
        if report.state_matches { "matches the generator's expected state".to_owned() } else { format!("{} MISMATCHES", report.mismatches) },
    ));
    for example in &report.mismatch_examples {
        out.push_str(&format!("  {example}\n"));
    }
    out
}
