//! The worker engine: [`Worker::build`] assembles it from a configuration and a backend;
//! [`Processor::process_one`] turns a message into an [`Outcome`]; the pool polls the
//! domain queues and acts on outcomes.

mod acker;
pub mod adaptive;
mod assembly;
mod lease;
mod outcome;
mod pool;
mod process;
mod retry;
mod stats;

use std::ops::Deref;
use std::sync::Arc;

pub use assembly::{Worker, WorkerBuilder};
pub use outcome::Outcome;
pub use pool::PoolSettings;
pub use process::{
    APPLIED_LOG_TARGET, ProcessSettings, Processed, Processor, REPROCESS_REPLAY_PREFIX,
    wants_reprocess,
};
pub use retry::RetryPolicy;
pub use stats::{StatsSnapshot, WorkerStats};

use crate::backend::PerDomain;
use crate::domain::Domain;

/// One domain's queue out of a shared [`PerDomain`] set: a cheap, owned handle.
pub struct DomainQueue<Q> {
    queues: Arc<PerDomain<Q>>,
    domain: Domain,
}

impl<Q> DomainQueue<Q> {
    /// The handle for `domain`'s queue.
    pub fn new(queues: Arc<PerDomain<Q>>, domain: Domain) -> Self {
        DomainQueue { queues, domain }
    }

    /// The domain this queue serves.
    pub fn domain(&self) -> Domain {
        self.domain
    }
}

impl<Q> Clone for DomainQueue<Q> {
    fn clone(&self) -> Self {
        DomainQueue {
            queues: Arc::clone(&self.queues),
            domain: self.domain,
        }
    }
}

impl<Q> Deref for DomainQueue<Q> {
    type Target = Q;

    fn deref(&self) -> &Q {
        self.queues.get(self.domain)
    }
}
