//! The load simulator behind `stripe-worker bench`: the worker `run` builds
//! ([`crate::worker::Worker::build`]) over the memory or SQLite backend, with injected
//! latency, faults and a throttling downstream, run at several concurrencies. Each run
//! reports throughput, the Little's-law bound for its latency profile ([`model`]),
//! efficiency, end-to-end latency ([`tracker`]), CPU time per event and resident memory
//! ([`sys`]).
//!
//! The worker code is not changed for the benchmark: the simulation is only in the
//! wrappers around the backend seams.

pub mod mix;
pub mod model;
pub mod sys;
pub mod tracker;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::app::local_queue_spec;
use crate::backend::doubles::faults::Faulty;
use crate::backend::doubles::latency::{Capacity, Gate, LatencySpec, Latent, Op};
use crate::backend::doubles::memory::{MemoryDedupe, MemoryQueue};
use crate::backend::sqlite::{SqliteDb, SqliteDedupe, SqliteQueue, SqliteState};
use crate::backend::{Backend, BackendError, DedupeStore, PerDomain, Queue, StateStore};
use crate::clock::system_clock;
use crate::config::{Config, ConfigError};
use crate::domain::Domain;
use crate::event::envelope::EnvelopeError;
use crate::worker::Worker;
use crate::worker::adaptive::ConcurrencyLimits;
use model::PathCalls;
use tracker::{Completions, Tracked};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A backend call failed while setting up (opening SQLite, filling the queues).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A generated event could not be wrapped in an envelope.
    #[error("building the message mix: {0}")]
    Envelope(#[from] EnvelopeError),
    /// The configuration derived from the options is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The temporary directory for the SQLite files could not be made.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
    /// The worker pool task panicked.
    #[error("the worker pool task failed: {0}")]
    Pool(String),
    /// The options do not make sense.
    #[error("{0}")]
    Invalid(String),
}

/// Which backend the worker runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchBackend {
    /// The in-memory backend: the engine's own cost, plus what is injected.
    Memory,
    /// The embedded SQLite backend: durable, every step a committed transaction.
    Local,
}

/// Adaptive concurrency for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AdaptiveOptions {
    /// The lowest (and starting) per-queue limit.
    pub min_in_flight: usize,
    /// Mean processing latency of a window past which the limit is cut; 0 is off.
    pub latency_threshold_ms: u64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The backend under the wrappers.
    pub backend: BenchBackend,
    /// Messages processed per concurrency point.
    pub messages: usize,
    /// Further messages left waiting in the queues (to show the worker's memory does not
    /// grow with the backlog).
    pub backlog: usize,
    /// The concurrencies to run (each is `max_in_flight` and `max_in_flight_per_queue`).
    pub concurrency: Vec<usize>,
    /// Pollers per queue; by default one per 10 permits (a full receive batch each).
    pub pollers: Option<usize>,
    /// Latency of each SQS call.
    pub sqs: LatencySpec,
    /// Latency of each DynamoDB (dedupe and state) call.
    pub ddb: LatencySpec,
    /// Share of dedupe and state calls that fail ([`Faulty`]: a quarter as throttles).
    pub fault_rate: f64,
    /// Dedupe and state calls the downstream serves at once; more are throttled.
    pub throttle_above: Option<usize>,
    /// Let the per-queue limits adapt.
    pub adaptive: Option<AdaptiveOptions>,
    /// Tenants in the event mix.
    pub tenants: usize,
    /// Seed of the mix, the jitter and the faults.
    pub seed: u64,
    /// Where the SQLite files go (a fresh subdirectory per point); temporary if `None`.
    pub data_dir: Option<PathBuf>,
    /// Stop a point when no message has completed for this long.
    pub stall_timeout: Duration,
    /// `STRIPE_WORKER_*` variables, applied as every command applies them; the options
    /// above that a point measures (concurrency, pollers, adaptive) win over them.
    pub config_env: Vec<(String, String)>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            backend: BenchBackend::Memory,
            messages: 20_000,
            backlog: 0,
            concurrency: vec![16, 64, 256, 1024, 2048],
            pollers: None,
            sqs: LatencySpec::default(),
            ddb: LatencySpec::default(),
            fault_rate: 0.0,
            throttle_above: None,
            adaptive: None,
            tenants: 3,
            seed: 42,
            data_dir: None,
            stall_timeout: Duration::from_secs(30),
            config_env: Vec::new(),
        }
    }
}

/// The figures of one concurrency point.
#[derive(Debug, Clone, Serialize)]
pub struct PointReport {
    /// Permits (`max_in_flight`, and `max_in_flight_per_queue`).
    pub concurrency: usize,
    /// Pollers per queue.
    pub pollers_per_queue: usize,
    /// Messages completed (deleted or dead-lettered), drain included.
    pub completed: usize,
    /// Whether the point stopped because nothing completed for the stall timeout.
    pub stalled: bool,
    /// Completions per second in the steady state (5th to 95th percentile of
    /// completion times).
    pub events_per_sec: f64,
    /// Calls on one message's critical path, averaged.
    pub path_calls: PathCalls,
    /// Injected latency on one message's critical path, ms ([`model::critical_path`]).
    pub critical_path_ms: f64,
    /// The Little's-law bound, events/s; `None` without latency.
    pub bound_events_per_sec: Option<f64>,
    /// `events_per_sec / bound`.
    pub efficiency: Option<f64>,
    /// The critical path with the delays the timers really gave (they wake late), ms.
    pub realized_path_ms: f64,
    /// `events_per_sec` over the bound of the realized path: the engine's share of any
    /// shortfall, without the simulator's timer overshoot.
    pub realized_efficiency: Option<f64>,
    /// Median end-to-end latency (receive start to confirmed delete), ms.
    pub p50_ms: f64,
    /// 99th percentile end-to-end latency, ms.
    pub p99_ms: f64,
    /// Median processing time (receive to outcome), ms.
    pub processing_p50_ms: f64,
    /// 99th percentile processing time, ms.
    pub processing_p99_ms: f64,
    /// CPU time (user + system, all threads) per completed message, microseconds.
    pub cpu_us_per_event: f64,
    /// Resident memory just before the pool started (queues filled), MB.
    pub baseline_rss_mb: f64,
    /// Highest resident memory sampled while the pool ran, MB.
    pub peak_rss_mb: f64,
    /// `peak - baseline`: what the worker added while running, MB.
    pub worker_rss_mb: f64,
    /// Wall time of the point, pool start to drained, seconds.
    pub elapsed_secs: f64,
    /// Messages applied, duplicates, ignored, dead-lettered, and retries.
    pub applied: u64,
    /// Messages acknowledged as duplicates.
    pub duplicates: u64,
    /// Messages acknowledged with nothing to do.
    pub ignored: u64,
    /// Messages sent to a DLQ.
    pub dead_lettered: u64,
    /// Retries (in process and by visibility).
    pub retried: u64,
    /// Dedupe and state calls refused by the throttling downstream.
    pub throttled_calls: u64,
    /// Faults injected by [`Faulty`].
    pub faults_injected: u64,
    /// Most dedupe and state calls in flight at once.
    pub peak_store_calls_in_flight: usize,
    /// With adaptive concurrency: the sum of the per-queue limits at the end.
    pub limit_final: Option<usize>,
    /// With adaptive concurrency: the sum of the limits, averaged over the run.
    pub limit_mean: Option<f64>,
}

/// A whole run: the options and one report per concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The backend.
    pub backend: BenchBackend,
    /// Messages per point.
    pub messages: usize,
    /// Messages left waiting.
    pub backlog: usize,
    /// SQS latency, ms.
    pub sqs_latency_ms: f64,
    /// DynamoDB latency, ms.
    pub ddb_latency_ms: f64,
    /// Jitter share.
    pub jitter: f64,
    /// Fault rate.
    pub fault_rate: f64,
    /// Throttling downstream's capacity.
    pub throttle_above: Option<usize>,
    /// Adaptive concurrency.
    pub adaptive: Option<AdaptiveOptions>,
    /// Messages per queue in the mix.
    pub mix: MixCounts,
    /// One per concurrency.
    pub points: Vec<PointReport>,
}

/// How the mix splits over the queues.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MixCounts {
    /// Subscription queue.
    pub subscription: usize,
    /// Payment queue.
    pub payment: usize,
    /// Customer queue.
    pub customer: usize,
}

/// The default pollers per queue for `concurrency` permits: enough that every permit can
/// be in a full receive batch of 10.
pub fn default_pollers(concurrency: usize) -> usize {
    concurrency.div_ceil(10).max(1)
}

/// Run every concurrency point, calling `on_point` as each finishes.
pub async fn run(
    options: &BenchOptions,
    mut on_point: impl FnMut(&PointReport),
) -> Result<BenchReport, BenchError> {
    if options.messages == 0 || options.concurrency.is_empty() {
        return Err(BenchError::Invalid(
            "need at least one message and one concurrency".to_owned(),
        ));
    }
    if let Some(&bad) = options.concurrency.iter().find(|&&c| c == 0) {
        return Err(BenchError::Invalid(format!(
            "concurrency {bad}: must be at least 1"
        )));
    }
    let mix = mix::build(options.messages, options.tenants, options.seed)?;
    let temp;
    let data_root = match (&options.data_dir, options.backend) {
        (Some(dir), _) => Some(dir.clone()),
        (None, BenchBackend::Local) => {
            temp = tempfile::Builder::new()
                .prefix("stripe-worker-bench-")
                .tempdir()?;
            Some(temp.path().to_path_buf())
        }
        (None, BenchBackend::Memory) => None,
    };
    let mut points = Vec::new();
    for &concurrency in &options.concurrency {
        let config = point_config(options, concurrency, &mix)?;
        let point = match options.backend {
            BenchBackend::Memory => {
                let queues = PerDomain::from_fn(|d| MemoryQueue::new(local_queue_spec(d, &config)));
                let dedupe = MemoryDedupe::new();
                let state = dedupe.state();
                let stores = (Arc::new(dedupe), Arc::new(state));
                run_point(options, &config, &mix, queues, stores).await?
            }
            BenchBackend::Local => {
                let dir = data_root
                    .as_ref()
                    .map(|root| root.join(format!("c{concurrency}")))
                    .ok_or_else(|| BenchError::Invalid("no data directory".to_owned()))?;
                std::fs::create_dir_all(&dir)?;
                let db = SqliteDb::open(&dir.join(crate::app::DATABASE_FILE))?;
                let queues =
                    PerDomain::from_fn(|d| SqliteQueue::open(&db, local_queue_spec(d, &config)));
                let stores = (
                    Arc::new(SqliteDedupe::new(&db)),
                    Arc::new(SqliteState::new(&db)),
                );
                run_point(options, &config, &mix, queues, stores).await?
            }
        };
        on_point(&point);
        points.push(point);
    }
    Ok(BenchReport {
        backend: options.backend,
        messages: options.messages,
        backlog: options.backlog,
        sqs_latency_ms: ms(options.sqs.mean),
        ddb_latency_ms: ms(options.ddb.mean),
        jitter: options.sqs.jitter.max(options.ddb.jitter),
        fault_rate: options.fault_rate,
        throttle_above: options.throttle_above,
        adaptive: options.adaptive,
        mix: MixCounts {
            subscription: mix.count(Domain::Subscription),
            payment: mix.count(Domain::Payment),
            customer: mix.count(Domain::Customer),
        },
        points,
    })
}

/// The worker configuration of one point.
fn point_config(
    options: &BenchOptions,
    concurrency: usize,
    mix: &mix::Mix,
) -> Result<Config, BenchError> {
    let mut config = Config::default();
    // Short long-polls, so pollers of a drained queue give their permits back soon.
    config.worker.wait_time_secs = 1;
    crate::config::apply_env(&mut config, options.config_env.iter().cloned())?;
    let w = &mut config.worker;
    w.max_in_flight = concurrency;
    w.max_in_flight_per_queue = concurrency;
    w.pollers_per_queue = options
        .pollers
        .unwrap_or_else(|| default_pollers(concurrency));
    if let Some(adaptive) = options.adaptive {
        w.adaptive_concurrency = true;
        w.min_in_flight_per_queue = adaptive.min_in_flight.min(concurrency);
        w.adaptive_latency_threshold_ms = adaptive.latency_threshold_ms;
    }
    config.tenants.tenants = mix.tenants.clone();
    config.validate()?;
    Ok(config)
}

/// A store as the benchmark's worker sees it: a capacity, latency, and faults, over the
/// real store. (The processor reports the errors it meets to the adaptive limit.)
type StoreStack<T> = Capacity<Latent<Faulty<Arc<T>>>>;

fn store_stack<T>(
    inner: Arc<T>,
    options: &BenchOptions,
    gate: &Arc<Gate>,
    salt: u64,
) -> StoreStack<T> {
    Capacity::new(
        Latent::new(
            Faulty::new(inner, options.fault_rate, options.seed ^ salt),
            options.ddb,
            options.seed ^ (salt << 8),
        ),
        Arc::clone(gate),
    )
}

/// Fill the queues, wrap the backend, run the pool until `messages` complete, measure.
async fn run_point<Q, D, S>(
    options: &BenchOptions,
    config: &Config,
    mix: &mix::Mix,
    queues: PerDomain<Q>,
    (dedupe, state): (Arc<D>, Arc<S>),
) -> Result<PointReport, BenchError>
where
    Q: Queue,
    D: DedupeStore,
    S: StateStore,
{
    for (domain, body) in &mix.messages {
        queues.get(*domain).send(body, Duration::ZERO).await?;
    }
    for (domain, body) in mix.messages.iter().cycle().take(options.backlog) {
        queues.get(*domain).send(body, Duration::ZERO).await?;
    }

    let seed = options.seed;
    let completions = Completions::new();
    let mut salt = 0u64;
    let queues = Arc::new(PerDomain::from_fn({
        let mut slots = [
            Some(queues.subscription),
            Some(queues.payment),
            Some(queues.customer),
        ];
        let completions = &completions;
        move |domain| {
            let index = Domain::ALL.iter().position(|d| *d == domain).unwrap_or(0);
            // Each domain appears once in `from_fn`, so its slot is still full.
            let queue = slots[index].take().expect("one call per domain");
            salt += 1;
            Tracked::new(
                Latent::new(queue, options.sqs, seed ^ (0x5150 + salt)),
                Arc::clone(completions),
                mix.count(domain),
            )
        }
    }));
    let gate = Gate::new(options.throttle_above.unwrap_or(usize::MAX));
    let dedupe = Arc::new(store_stack(dedupe, options, &gate, 1));
    let state = Arc::new(store_stack(state, options, &gate, 2));
    let stacked = Backend {
        queues: Arc::clone(&queues),
        dedupe: Arc::clone(&dedupe),
        state: Arc::clone(&state),
        bus: Arc::new(()),
    };
    let worker = Worker::build(config, &stacked, None, system_clock());
    let stats = Arc::clone(worker.stats());
    let settings = worker.pool_settings().clone();
    let limits = worker.limits().clone();
    let shutdown = CancellationToken::new();

    tracing::info!(
        concurrency = config.worker.max_in_flight,
        messages = options.messages,
        backlog = options.backlog,
        "queues filled; starting the pool"
    );
    let baseline_rss = sys::current_rss_bytes().unwrap_or(0);
    let cpu_before = sys::cpu_time();
    let started = Instant::now();
    let pool = tokio::spawn(worker.run(shutdown.clone()));

    let mut peak_rss = baseline_rss;
    let (mut limit_sum, mut samples) = (0.0, 0u32);
    let mut last_progress = (0usize, Instant::now());
    let mut stalled = false;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        peak_rss = peak_rss.max(sys::current_rss_bytes().unwrap_or(0));
        if settings.adaptive.enabled {
            limit_sum += limit_total(&limits) as f64;
            samples += 1;
        }
        let done = completions.completed();
        if done >= options.messages {
            break;
        }
        if done != last_progress.0 {
            last_progress = (done, Instant::now());
        } else if last_progress.1.elapsed() >= options.stall_timeout {
            stalled = true;
            break;
        }
    }
    shutdown.cancel();
    pool.await.map_err(|e| BenchError::Pool(e.to_string()))?;
    let elapsed = started.elapsed();
    let cpu = sys::cpu_time().saturating_sub(cpu_before);
    peak_rss = peak_rss.max(sys::current_rss_bytes().unwrap_or(0));

    let summary = completions.summary();
    let done = summary.completed.max(1) as f64;
    let store_calls = {
        let d = dedupe.inner().counts();
        let s = state.inner().counts();
        Op::STORE
            .iter()
            .map(|&op| d.get(op) + s.get(op))
            .sum::<u64>()
    };
    let settle_calls: u64 = Domain::ALL
        .iter()
        .map(|&d| {
            let counts = queues.get(d).inner().counts();
            counts.get(Op::ChangeVisibility) + counts.get(Op::DeadLetter)
        })
        .sum();
    let waited = |counts: &crate::backend::doubles::latency::CallCounts, ops: &[Op]| -> Duration {
        ops.iter().map(|&op| counts.waited(op)).sum()
    };
    let store_waited =
        waited(dedupe.inner().counts(), &Op::STORE) + waited(state.inner().counts(), &Op::STORE);
    let (mut receive_waited, mut receives, mut settle_waited) =
        (Duration::ZERO, 0u64, Duration::ZERO);
    for d in Domain::ALL {
        let counts = queues.get(d).inner().counts();
        receive_waited += counts.waited(Op::Receive);
        receives += counts.get(Op::Receive);
        settle_waited += waited(counts, &[Op::ChangeVisibility, Op::DeadLetter]);
    }
    // A message waits for one receive (the mean one); its share of the store and settle
    // delays is their total over the messages.
    let realized_path = receive_waited / u32::try_from(receives.max(1)).unwrap_or(u32::MAX)
        + (store_waited + settle_waited).div_f64(done);
    let realized_bound = model::bound(settings.max_in_flight, realized_path);
    let path_calls = PathCalls {
        receive: 1.0,
        store: store_calls as f64 / done,
        settle: settle_calls as f64 / done,
    };
    let path = model::critical_path(path_calls, options.sqs.mean, options.ddb.mean);
    let concurrency = settings.max_in_flight;
    let bound = model::bound(concurrency, path);
    let worker = stats.snapshot();
    let faults = dedupe.inner().inner().injected() + state.inner().inner().injected();
    Ok(PointReport {
        concurrency,
        pollers_per_queue: settings.pollers_per_queue,
        completed: summary.completed,
        stalled,
        events_per_sec: summary.steady_rate,
        path_calls,
        critical_path_ms: ms(path),
        bound_events_per_sec: bound,
        efficiency: bound.map(|b| summary.steady_rate / b),
        realized_path_ms: ms(realized_path),
        realized_efficiency: realized_bound.map(|b| summary.steady_rate / b),
        p50_ms: ms(summary.p50),
        p99_ms: ms(summary.p99),
        processing_p50_ms: worker.p50_ms,
        processing_p99_ms: worker.p99_ms,
        cpu_us_per_event: cpu.as_secs_f64() * 1e6 / done,
        baseline_rss_mb: mb(baseline_rss),
        peak_rss_mb: mb(peak_rss),
        worker_rss_mb: mb(peak_rss.saturating_sub(baseline_rss)),
        elapsed_secs: elapsed.as_secs_f64(),
        applied: worker.applied,
        duplicates: worker.duplicates,
        ignored: worker.ignored,
        dead_lettered: worker.dead_lettered,
        retried: worker.retried,
        throttled_calls: gate.throttled(),
        faults_injected: faults,
        peak_store_calls_in_flight: gate.peak(),
        limit_final: settings.adaptive.enabled.then(|| limit_total(&limits)),
        limit_mean: (samples > 0).then(|| limit_sum / f64::from(samples)),
    })
}

fn limit_total(limits: &ConcurrencyLimits) -> usize {
    Domain::ALL.iter().map(|&d| limits.current(d)).sum()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
