//! `stripe-worker queues`: per domain, the main queue and its dead-letter queue.

use std::fmt;

use serde::Serialize;

use super::{OpsError, table};
use crate::backend::{PerDomain, Queue, QueueStats};
use crate::domain::Domain;

/// One queue's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueLine {
    /// The domain the queue serves.
    pub domain: Domain,
    /// The queue's name (the DLQ's is `<name>-dlq`).
    pub queue: String,
    /// Whether this is the dead-letter queue.
    pub dead_letter: bool,
    /// The counts ([`Queue::stats`]).
    #[serde(flatten)]
    pub stats: QueueStats,
}

/// Every domain's queue and DLQ, in [`Domain::ALL`] order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueuesReport {
    /// Two lines per domain: the queue, then its DLQ.
    pub queues: Vec<QueueLine>,
}

impl QueuesReport {
    /// The line for a domain's queue (`dead_letter: false`) or DLQ.
    pub fn line(&self, domain: Domain, dead_letter: bool) -> Option<&QueueLine> {
        self.queues
            .iter()
            .find(|l| l.domain == domain && l.dead_letter == dead_letter)
    }
}

/// Ask every domain's queue for its counts.
pub async fn queue_report<Q: Queue>(queues: &PerDomain<Q>) -> Result<QueuesReport, OpsError> {
    let mut lines = Vec::with_capacity(Domain::ALL.len() * 2);
    for domain in Domain::ALL {
        let queue = queues.get(domain);
        let (main, dlq) = queue.stats().await?;
        lines.push(QueueLine {
            domain,
            queue: queue.name().to_owned(),
            dead_letter: false,
            stats: main,
        });
        lines.push(QueueLine {
            domain,
            queue: format!("{}-dlq", queue.name()),
            dead_letter: true,
            stats: dlq,
        });
    }
    Ok(QueuesReport { queues: lines })
}

impl fmt::Display for QueuesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<Vec<String>> = self
            .queues
            .iter()
            .map(|l| {
                vec![
                    l.domain.to_string(),
                    l.queue.clone(),
                    l.stats.visible.to_string(),
                    l.stats.in_flight.to_string(),
                    l.stats.delayed.to_string(),
                    l.stats
                        .oldest_age_secs
                        .map_or_else(|| "-".to_owned(), |s| format!("{s}s")),
                ]
            })
            .collect();
        f.write_str(&table(
            &[
                "DOMAIN",
                "QUEUE",
                "VISIBLE",
                "IN FLIGHT",
                "DELAYED",
                "OLDEST",
            ],
            &rows,
        ))
    }
}
