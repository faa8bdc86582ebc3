//! What `run` says while it runs: one line every `--progress-secs` with the rates since the
//! last line, what is in flight and the backlog; and one loud line when every message of
//! the interval went to the dead-letter queues for one reason (an unknown tenant, a
//! missing API key), where the per-message warnings are limited (see
//! [`WorkerStats::record_dead_letter`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::{PerDomain, Queue};
use crate::domain::Domain;
use crate::worker::{StatsSnapshot, WorkerStats};

/// The backlog as the queues report it: messages waiting in the main queues (visible or
/// delayed) and in the dead-letter queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Waiting in the main queues.
    pub waiting: u64,
    /// In the dead-letter queues.
    pub dead_letters: u64,
}

/// Read the backlog; `None` when a queue does not answer (the line says so).
pub async fn backlog<Q: Queue>(queues: &PerDomain<Q>, domains: &[Domain]) -> Option<Backlog> {
    let mut backlog = Backlog::default();
    for domain in domains {
        let (main, dlq) = queues.get(*domain).stats().await.ok()?;
        backlog.waiting += main.visible + main.delayed;
        backlog.dead_letters += dlq.visible + dlq.delayed + dlq.in_flight;
    }
    Some(backlog)
}

/// One interval's line: rates per second of each outcome, in flight, backlog.
pub fn progress_line(
    before: &StatsSnapshot,
    now: &StatsSnapshot,
    interval: Duration,
    backlog: Option<Backlog>,
) -> String {
    let secs = interval.as_secs_f64().max(0.001);
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs;
    let backlog = match backlog {
        Some(b) => format!(
            "backlog {} waiting, {} dead-lettered in the DLQs",
            b.waiting, b.dead_letters
        ),
        None => "backlog unknown (queue stats failed)".to_owned(),
    };
    format!(
        "progress: {:.1}/s applied, {:.1}/s duplicates, {:.1}/s retried, {:.1}/s dead-lettered; \
         {} in flight; {backlog}",
        rate(before.applied, now.applied),
        rate(before.duplicates, now.duplicates),
        rate(before.retried, now.retried),
        rate(before.dead_lettered, now.dead_lettered),
        now.in_flight,
    )
}

/// Messages that finished in the interval (every outcome but "try again later").
fn finished(s: &StatsSnapshot) -> u64 {
    s.applied + s.duplicates + s.ignored + s.dead_lettered
}

/// When every message that finished in the interval went to a DLQ, all for one reason:
/// that reason and how many.
pub fn dead_letter_storm(before: &StatsSnapshot, now: &StatsSnapshot) -> Option<(String, u64)> {
    let dead = now.dead_lettered.saturating_sub(before.dead_lettered);
    if dead == 0 || finished(now).saturating_sub(finished(before)) != dead {
        return None;
    }
    let grown: BTreeMap<&String, u64> = now
        .dead_letter_reasons
        .iter()
        .map(|(reason, n)| {
            let was = before.dead_letter_reasons.get(reason).copied().unwrap_or(0);
            (reason, n.saturating_sub(was))
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    match grown.into_iter().collect::<Vec<_>>().as_slice() {
        [(reason, n)] => Some(((*reason).clone(), *n)),
        _ => None,
    }
}

/// Log the progress line every `every` until `shutdown`, and the dead-letter storm alarm.
pub async fn report_progress<Q: Queue>(
    queues: Arc<PerDomain<Q>>,
    domains: Vec<Domain>,
    stats: Arc<WorkerStats>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut before = stats.snapshot();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let now = stats.snapshot();
        let backlog = backlog(&queues, &domains).await;
        tracing::info!("{}", progress_line(&before, &now, every, backlog));
        if let Some((reason, count)) = dead_letter_storm(&before, &now) {
            tracing::error!(
                reason = reason.as_str(),
                count,
                "every message of the last {}s ({count}) went to the dead-letter queues as \
                 `{reason}`: fix the cause, then `stripe-worker dlq list` and \
                 `stripe-worker dlq redrive --reason {reason}`",
                every.as_secs()
            );
        }
        before = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(applied: u64, dead: &[(&str, u64)]) -> StatsSnapshot {
        StatsSnapshot {
            applied,
            dead_lettered: dead.iter().map(|(_, n)| n).sum(),
            dead_letter_reasons: dead.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            ..StatsSnapshot::default()
        }
    }

    #[test]
    fn the_line_gives_rates_in_flight_and_backlog() {
        let before = snapshot(10, &[]);
        let now = snapshot(30, &[("unknown_tenant", 4)]);
        let backlog = Backlog {
            waiting: 7,
            dead_letters: 4,
        };
        let line = progress_line(&before, &now, Duration::from_secs(2), Some(backlog));
        assert!(line.contains("10.0/s applied"), "{line}");
        assert!(line.contains("2.0/s dead-lettered"), "{line}");
        assert!(
            line.contains("backlog 7 waiting, 4 dead-lettered"),
            "{line}"
        );
        let unknown = progress_line(&before, &now, Duration::from_secs(2), None);
        assert!(unknown.contains("backlog unknown"), "{unknown}");
    }

    #[test]
    fn a_storm_is_every_finished_message_dead_lettered_for_one_reason() {
        let before = snapshot(5, &[("unknown_tenant", 1)]);
        assert_eq!(
            dead_letter_storm(&before, &snapshot(5, &[("unknown_tenant", 9)])),
            Some(("unknown_tenant".to_owned(), 8))
        );
        // Some applied too: not every message.
        assert_eq!(
            dead_letter_storm(&before, &snapshot(6, &[("unknown_tenant", 9)])),
            None
        );
        // Two reasons: not one cause.
        assert_eq!(
            dead_letter_storm(
                &before,
                &snapshot(5, &[("unknown_tenant", 9), ("no_hydrator", 2)])
            ),
            None
        );
        assert_eq!(dead_letter_storm(&before, &before), None);
    }
}
