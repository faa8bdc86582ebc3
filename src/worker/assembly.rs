//! The one place the worker is put together (as zero2prod's `Application::build`): the
//! `run` command, the demo, the bench, the benches and the tests all build it here from a
//! configuration and a backend, and run it with [`Worker::run`], so every one of them
//! exercises the production wiring.
//!
//! [`Worker::build`] takes everything from the configuration; [`Worker::builder`] lets a
//! caller change a part first (other handlers, a shared stats handle, the domains to poll).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::adaptive::ConcurrencyLimits;
use super::pool::{PoolSettings, run_pool};
use super::process::{ProcessSettings, Processor};
use super::stats::WorkerStats;
use crate::backend::{Backend, DedupeStore, PerDomain, Queue, StateStore};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::Domain;
use crate::handlers::{Handler, standard_handlers};
use crate::stripe::hydrate::Hydrator;
use crate::tenant::TenantConfig;

/// A worker ready to run: pollers over the domain queues, and the processor they feed.
/// Clones share the processor, its counters and the limits (a test may run one worker
/// twice, one run after the other).
pub struct Worker<Q, D, S> {
    queues: Arc<PerDomain<Q>>,
    processor: Arc<Processor<D, S>>,
    pool: PoolSettings,
    limits: ConcurrencyLimits,
}

impl<Q, D, S> Clone for Worker<Q, D, S> {
    fn clone(&self) -> Self {
        Worker {
            queues: Arc::clone(&self.queues),
            processor: Arc::clone(&self.processor),
            pool: self.pool.clone(),
            limits: self.limits.clone(),
        }
    }
}

impl<Q: Queue, D: DedupeStore, S: StateStore> Worker<Q, D, S> {
    /// The worker `config` describes over `backend`'s queues and stores, with the
    /// built-in handlers, fetching thin events' objects from `hydrator` (the Stripe API;
    /// `None` dead-letters thin events) and reading time from `clock`.
    pub fn build<B>(
        config: &Config,
        backend: &Backend<Q, D, S, B>,
        hydrator: Option<Arc<dyn Hydrator>>,
        clock: Clock,
    ) -> Self {
        Worker::builder(config, backend, clock)
            .hydrator(hydrator)
            .build()
    }

    /// A [`WorkerBuilder`] with every part taken from `config`, to change some first.
    pub fn builder<B>(
        config: &Config,
        backend: &Backend<Q, D, S, B>,
        clock: Clock,
    ) -> WorkerBuilder<Q, D, S> {
        WorkerBuilder {
            queues: Arc::clone(&backend.queues),
            dedupe: Arc::clone(&backend.dedupe),
            state: Arc::clone(&backend.state),
            handlers: standard_handlers(),
            hydrator: None,
            tenants: config.tenants.clone(),
            process: ProcessSettings::from_config(config),
            pool: PoolSettings::from_config(config),
            clock,
            stats: Arc::new(WorkerStats::default()),
        }
    }

    /// The processor, to process a message directly (tests) or read its counters.
    pub fn processor(&self) -> &Arc<Processor<D, S>> {
        &self.processor
    }

    /// The counters the worker keeps.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        self.processor.stats()
    }

    /// The per-queue concurrency limits, readable while the worker runs (they move when
    /// adaptive concurrency is on).
    pub fn limits(&self) -> &ConcurrencyLimits {
        &self.limits
    }

    /// How the pool polls and drains.
    pub fn pool_settings(&self) -> &PoolSettings {
        &self.pool
    }

    /// Poll and process until `shutdown` is cancelled, then drain: no new receives,
    /// in-flight messages finish within the grace period, the rest are released.
    pub async fn run(self, shutdown: CancellationToken) {
        run_pool(
            self.queues,
            self.processor,
            self.pool,
            self.limits,
            shutdown,
        )
        .await;
    }
}

/// The parts of a [`Worker`], each defaulting to what the configuration says.
pub struct WorkerBuilder<Q, D, S> {
    queues: Arc<PerDomain<Q>>,
    dedupe: Arc<D>,
    state: Arc<S>,
    handlers: Vec<Arc<dyn Handler>>,
    hydrator: Option<Arc<dyn Hydrator>>,
    tenants: TenantConfig,
    process: ProcessSettings,
    pool: PoolSettings,
    clock: Clock,
    stats: Arc<WorkerStats>,
}

impl<Q: Queue, D: DedupeStore, S: StateStore> WorkerBuilder<Q, D, S> {
    /// Run these handlers instead of the built-in ones.
    pub fn handlers(mut self, handlers: Vec<Arc<dyn Handler>>) -> Self {
        self.handlers = handlers;
        self
    }

    /// Fetch objects from `hydrator` (the Stripe API or a double).
    pub fn hydrator(mut self, hydrator: Option<Arc<dyn Hydrator>>) -> Self {
        self.hydrator = hydrator;
        self
    }

    /// Count into `stats` (shared with a progress line, a test, an idle watcher).
    pub fn stats(mut self, stats: Arc<WorkerStats>) -> Self {
        self.stats = stats;
        self
    }

    /// Poll only `domains` (all when empty).
    pub fn domains(mut self, domains: &[Domain]) -> Self {
        if !domains.is_empty() {
            self.pool.domains = domains.to_vec();
        }
        self
    }

    /// Change the processing settings the configuration gave.
    pub fn process_settings(mut self, change: impl FnOnce(&mut ProcessSettings)) -> Self {
        change(&mut self.process);
        self
    }

    /// Change the pool settings the configuration gave.
    pub fn pool_settings(mut self, change: impl FnOnce(&mut PoolSettings)) -> Self {
        change(&mut self.pool);
        self
    }

    /// The worker.
    pub fn build(self) -> Worker<Q, D, S> {
        let limits = ConcurrencyLimits::new(self.pool.max_in_flight_per_queue, &self.pool.adaptive);
        let processor = Processor::new(
            self.handlers,
            self.dedupe,
            self.state,
            self.hydrator,
            self.tenants,
            self.process,
            self.clock,
            self.stats,
        );
        Worker {
            queues: self.queues,
            processor: Arc::new(processor),
            pool: self.pool,
            limits,
        }
    }
}
