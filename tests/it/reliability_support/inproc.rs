//! The worker pool in process on the memory backends, every seam wrapped in
//! [`Faulty`], with the worker's log captured so the applied lines can be audited.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stripe_worker::app::{cancel_when_idle, local_queue_spec};
use stripe_worker::backend::doubles::faults::Faulty;
use stripe_worker::backend::doubles::memory::{
    DlqMessage, MemoryArchive, MemoryDedupe, MemoryQueue, MemoryState,
};
use stripe_worker::backend::local_bus::LocalBus;
use stripe_worker::backend::{
    Backend, Bus, BusEntry, DeadLetterOps, PerDomain, Queue, StateRecord, StateStore,
};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::domain::Domain;
use stripe_worker::stripe::hydrate::Hydrator;
use stripe_worker::worker::{APPLIED_LOG_TARGET, Worker, WorkerStats};
use tokio_util::sync::CancellationToken;

use super::AppliedLog;

/// A queue on memory with faults.
pub type FaultyQueue = Faulty<MemoryQueue>;

/// The memory backends, each wrapped in [`Faulty`].
pub struct FaultyBackend {
    /// The domain queues.
    pub queues: Arc<PerDomain<FaultyQueue>>,
    /// The bus routing into them.
    pub bus: Faulty<LocalBus<FaultyQueue, MemoryArchive>>,
    /// The dedupe store.
    pub dedupe: Arc<Faulty<MemoryDedupe>>,
    /// The state store.
    pub state: Arc<Faulty<MemoryState>>,
}

impl FaultyBackend {
    /// Memory backends failing `rate` of calls, `lost_replies` of those after the call
    /// took effect.
    pub fn new(config: &Config, rate: f64, lost_replies: f64, seed: u64) -> Self {
        let mut n = seed;
        let mut next = || {
            n += 1;
            n
        };
        let queues = Arc::new(PerDomain::from_fn(|domain| {
            Faulty::new(
                MemoryQueue::new(local_queue_spec(domain, config)),
                rate,
                next(),
            )
            .with_lost_replies(lost_replies)
        }));
        let bus = LocalBus::new(
            Arc::clone(&queues),
            Arc::new(MemoryArchive::new()),
            system_clock(),
        );
        FaultyBackend {
            bus: Faulty::new(bus, rate, next()).with_lost_replies(lost_replies),
            queues,
            dedupe: Arc::new(
                Faulty::new(MemoryDedupe::new(), rate, next()).with_lost_replies(lost_replies),
            ),
            state: Arc::new(
                Faulty::new(MemoryState::new(), rate, next()).with_lost_replies(lost_replies),
            ),
        }
    }

    /// Publish every entry, re-sending failed calls and failed entries until all are in.
    pub async fn publish(&self, entries: &[BusEntry]) {
        for chunk in entries.chunks(10) {
            let mut pending = chunk.to_vec();
            for _attempt in 0..100 {
                match self.bus.publish(&pending).await {
                    Ok(failures) if failures.failed.is_empty() => {
                        pending.clear();
                        break;
                    }
                    Ok(failures) => {
                        pending = failures
                            .failed
                            .iter()
                            .map(|(i, _)| pending[*i].clone())
                            .collect();
                    }
                    Err(error) => assert!(error.is_retryable(), "{error}"),
                }
            }
            assert!(pending.is_empty(), "publishing kept failing");
        }
    }

    /// Send a raw body straight to a queue, past its faults: a send whose reply was lost
    /// and was sent again would be two messages, and the tests count each body once.
    pub async fn send_raw(&self, domain: Domain, body: &str) {
        self.queues
            .get(domain)
            .inner()
            .send(body, Duration::ZERO)
            .await
            .expect("the memory queue accepts the message");
    }

    /// Every injected fault: (all, lost replies).
    pub fn faults(&self) -> (u64, u64) {
        let mut all = self.bus.injected() + self.dedupe.injected() + self.state.injected();
        let mut lost =
            self.bus.lost_replies() + self.dedupe.lost_replies() + self.state.lost_replies();
        for domain in Domain::ALL {
            all += self.queues.get(domain).injected();
            lost += self.queues.get(domain).lost_replies();
        }
        (all, lost)
    }

    /// The dead-lettered messages of every queue.
    pub async fn dead_letters(&self) -> Vec<(Domain, DlqMessage)> {
        let mut all = Vec::new();
        for d in Domain::ALL {
            let messages = self.queues.get(d).inner().dlq_peek(10_000).await;
            all.extend(
                messages
                    .expect("peeking a memory DLQ")
                    .into_iter()
                    .map(|m| (d, m)),
            );
        }
        all
    }

    /// (visible, in flight, delayed) summed over the main queues.
    pub async fn left_in_queues(&self) -> (u64, u64, u64) {
        let mut left = (0, 0, 0);
        for domain in Domain::ALL {
            let (main, _) = self.queues.get(domain).inner().stats().await.unwrap();
            left.0 += main.visible;
            left.1 += main.in_flight;
            left.2 += main.delayed;
        }
        left
    }

    /// The whole state, read past the faults.
    pub async fn export(&self) -> Vec<StateRecord> {
        self.state.inner().export(None).await.unwrap()
    }

    /// The worker `run` would build over these queues and stores.
    pub fn worker(
        &self,
        config: &Config,
        hydrator: Option<Arc<dyn Hydrator>>,
    ) -> Worker<FaultyQueue, Faulty<MemoryDedupe>, Faulty<MemoryState>> {
        let backend = Backend {
            queues: Arc::clone(&self.queues),
            dedupe: Arc::clone(&self.dedupe),
            state: Arc::clone(&self.state),
            bus: Arc::new(()),
        };
        Worker::build(config, &backend, hydrator, system_clock())
    }

    /// Run the pool until every queue has been idle for a while; returns the counters.
    pub async fn run_until_idle(
        &self,
        config: &Config,
        hydrator: Option<Arc<dyn Hydrator>>,
    ) -> Arc<WorkerStats> {
        let worker = self.worker(config, hydrator);
        let stats = Arc::clone(worker.stats());
        let shutdown = CancellationToken::new();
        let pool = tokio::spawn(worker.run(shutdown.clone()));
        cancel_when_idle(
            Arc::clone(&self.queues),
            Arc::clone(&stats),
            Duration::from_millis(1500),
            shutdown,
        )
        .await;
        pool.await.unwrap();
        stats
    }
}

/// A configuration for fast retries in process: 2 s visibility and a 1 s lease (the
/// shortest pair the start-up check accepts: a lease at most half the visibility), many
/// receives.
pub fn fast_config(tenants: &[String], destinations: &[(String, String)]) -> Config {
    let mut config = Config::default();
    config.worker.wait_time_secs = 1;
    config.worker.visibility_timeout_secs = 2;
    config.worker.max_receive_count = 100;
    config.worker.ack_flush_ms = 5;
    config.dedupe.lease_secs = 1;
    config.retry.initial_delay_ms = 5;
    config.retry.max_delay_ms = 50;
    config.retry.visibility_backoff_base_secs = 1;
    config.retry.visibility_backoff_max_secs = 2;
    config.tenants.tenants = tenants.to_vec();
    for (destination, tenant) in destinations {
        config
            .tenants
            .destinations
            .insert(destination.clone(), tenant.clone());
    }
    config.validate().unwrap();
    config
}

/// Captured JSON log lines (the applied audit lines and errors).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Capture this thread's logs (use a current-thread runtime so every task logs here)
    /// until the guard is dropped.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
                "error,{APPLIED_LOG_TARGET}=debug"
            )))
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// The applied lines captured so far.
    pub fn applied(&self) -> AppliedLog {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut log = AppliedLog::default();
        log.add_lines(&String::from_utf8_lossy(&bytes));
        log
    }
}
