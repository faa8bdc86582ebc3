//! Fault injection: with 20% of every backend call failing (queue, dedupe, state, bus),
//! a third of those failures *after* the call took effect (a timeout whose request
//! arrived, a lost acknowledgement), and the Stripe API double failing as often, every
//! event is applied exactly once and only poison reaches the DLQ.

use crate::{child_process, reliability_support};

use std::sync::Arc;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use reliability_support::inproc::{FaultyBackend, LogCapture, fast_config};
use reliability_support::{UNMAPPED_DESTINATION, destination};
use stripe_worker::backend::dlq_attributes::ERROR_KIND;
use stripe_worker::demo::generator::{GeneratorConfig, generate};
use stripe_worker::domain::Domain;
use stripe_worker::event::envelope;
use stripe_worker::stripe::double::StripeDouble;

const FAULT_RATE: f64 = 0.2;
const LOST_REPLY_SHARE: f64 = 0.33;

const TEST_NAME: &str =
    "reliability_faults::with_a_fifth_of_all_calls_failing_every_event_is_applied_exactly_once";

#[test]
fn with_a_fifth_of_all_calls_failing_every_event_is_applied_exactly_once() {
    // Alone in a process: the applied lines are captured by a thread's own subscriber, and
    // another test's thread can make tracing cache the `applied` call site as disabled
    // before that subscriber exists (lines then go missing).
    if !child_process::is_child() {
        child_process::run_alone(TEST_NAME, &[]);
        return;
    }
    let capture = LogCapture::default();
    let _guard = capture.install();
    // One thread: every task of the pool logs into the capture.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stream = generate(&GeneratorConfig {
            events: 600,
            tenants: 2,
            seed: 31,
        });
        let mut tenants: Vec<String> = stream.events.iter().map(|e| e.tenant.clone()).collect();
        tenants.sort();
        tenants.dedup();
        let destinations: Vec<(String, String)> = tenants
            .iter()
            .map(|t| (destination(t), t.clone()))
            .collect();
        let config = fast_config(&tenants, &destinations);
        let backend = FaultyBackend::new(&config, FAULT_RATE, LOST_REPLY_SHARE, 77);

        let double = StripeDouble::with_transient_failures(FAULT_RATE, 5);
        for (tenant, object) in &stream.final_objects {
            double.put(tenant, object.clone()).unwrap();
        }
        let double = Arc::new(double);

        // Every event by webhook; every third also as a partner snapshot, every fifth as a
        // partner thin event (fetched from the double): duplicates across all sources.
        let mut entries = Vec::new();
        for (i, g) in stream.events.iter().enumerate() {
            entries.push(envelope::webhook_snapshot_entry(&g.event, &g.tenant, 0, None).unwrap());
            if i % 3 == 0 {
                entries.push(
                    envelope::partner_snapshot_entry(&g.event, &destination(&g.tenant)).unwrap(),
                );
            }
            // Thin only where the API serves the object by id (not discounts, not
            // entitlement summaries), as Stripe sends them.
            if i % 5 == 0 && envelope::retrievable(&g.event["data"]["object"]) {
                entries
                    .push(envelope::partner_thin_entry(&g.event, &destination(&g.tenant)).unwrap());
            }
        }
        entries.shuffle(&mut rand::rngs::StdRng::seed_from_u64(9));
        // Poison: events from an unmapped destination, and two undecodable bodies.
        let strays: Vec<_> = stream
            .events
            .iter()
            .filter(|g| g.event["type"] == "customer.created")
            .take(3)
            .map(|g| envelope::partner_snapshot_entry(&g.event, UNMAPPED_DESTINATION).unwrap())
            .collect();
        entries.extend(strays);
        backend.publish(&entries).await;
        backend.send_raw(Domain::Payment, "{\"detail\": {").await;
        backend.send_raw(Domain::Customer, "not json").await;

        let stats = backend
            .run_until_idle(&config, Some(Arc::clone(&double) as _))
            .await;

        let (faults, lost_replies) = backend.faults();
        let worker = stats.snapshot();
        eprintln!(
            "faults injected: {faults} ({lost_replies} lost replies) + {} Stripe API; \
             received {}, applied {}, duplicates {}, retried {}, dead-lettered {}",
            double.injected_failures(),
            worker.received,
            worker.applied,
            worker.duplicates,
            worker.retried,
            worker.dead_lettered
        );
        assert!(faults > 500 && lost_replies > 100, "faults were injected");

        let mismatches = stream.expected.compare(&backend.export().await);
        assert!(
            mismatches.is_empty(),
            "{} mismatches, first: {}",
            mismatches.len(),
            mismatches[0]
        );
        assert_eq!(backend.left_in_queues().await, (0, 0, 0));
        let mut kinds: Vec<String> = backend
            .dead_letters()
            .await
            .iter()
            .map(|(_, m)| m.attributes[ERROR_KIND].clone())
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "invalid_json",
                "invalid_json",
                "unknown_tenant",
                "unknown_tenant",
                "unknown_tenant"
            ],
            "only poison is dead-lettered, each once"
        );
        let applied = capture.applied();
        assert!(
            applied.total() > stream.events.len() / 2,
            "{} applied lines for {} events",
            applied.total(),
            stream.events.len()
        );
        assert!(
            applied.doubles().is_empty(),
            "{} keys applied twice:\n{}",
            applied.doubles().len(),
            applied.describe_doubles()
        );
    });
}
