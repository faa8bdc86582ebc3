//! The messages a run processes: a realistic event mix from the demo generator, wrapped
//! in the envelopes EventBridge delivers and routed by the standard rules, each message
//! with its own Stripe event id so that every one is applied (not a duplicate).

use serde_json::Value;

use super::BenchError;
use crate::backend::local_bus::LOCAL_REGION;
use crate::demo::generator::{GeneratorConfig, generate};
use crate::domain::Domain;
use crate::event::envelope::{envelope_json, webhook_snapshot_entry};
use crate::routing::Router;

/// Distinct stories the generator writes at most; longer runs repeat them under new
/// event ids (generating a million events would cost more than the run it feeds).
const MAX_GENERATED: usize = 50_000;

/// Message bodies by the domain queue they are routed to.
#[derive(Debug, Clone)]
pub struct Mix {
    /// `(queue, body)` in generation order.
    pub messages: Vec<(Domain, String)>,
    /// The tenants the events belong to (the worker must know them).
    pub tenants: Vec<String>,
}

impl Mix {
    /// How many messages go to `domain`'s queue.
    pub fn count(&self, domain: Domain) -> usize {
        self.messages.iter().filter(|(d, _)| *d == domain).count()
    }
}

/// `messages` routed webhook-snapshot messages of `tenants` tenants, from `seed`.
pub fn build(messages: usize, tenants: usize, seed: u64) -> Result<Mix, BenchError> {
    let stream = generate(&GeneratorConfig {
        events: messages.clamp(1, MAX_GENERATED),
        tenants,
        seed,
    });
    let mut names: Vec<String> = stream.events.iter().map(|e| e.tenant.clone()).collect();
    names.sort();
    names.dedup();
    let router = Router::standard();
    let mut out = Vec::with_capacity(messages);
    let mut round = 0usize;
    while out.len() < messages {
        let before = out.len();
        for (i, generated) in stream.events.iter().enumerate() {
            if out.len() == messages {
                break;
            }
            let mut event = generated.event.clone();
            if round > 0 {
                let id = event["id"].as_str().unwrap_or("evt").to_owned();
                event["id"] = Value::String(format!("{id}_r{round}"));
            }
            let created_ms = event["created"].as_i64().unwrap_or(0) * 1000;
            let entry = webhook_snapshot_entry(&event, &generated.tenant, created_ms + 500, None)?;
            let delivery = format!("bench-{round}-{i}");
            let envelope = envelope_json(&entry, &delivery, created_ms + 600, LOCAL_REGION, None)?;
            let body = envelope.to_string();
            // With the standard rules an event lands in at most one queue; the ones no
            // rule matches are not worker load.
            if let Some(domain) = router.route(&envelope).into_iter().next() {
                out.push((domain, body));
            }
        }
        if out.len() == before {
            return Err(BenchError::Invalid(
                "the generated stream has no routable events".to_owned(),
            ));
        }
        round += 1;
    }
    Ok(Mix {
        messages: out,
        tenants: names,
    })
}
