//! The reconciliation scenarios (`import`, `verify --repair`, `sweep`, same-second ties)
//! against the Stripe double served over HTTP, written once over the backend seams and run
//! on SQLite (`reconcile`) and on the AWS emulator (`reconcile_aws`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use stripe_worker::backend::publish_entries;
use stripe_worker::backend::{
    Backend, Bus, DedupeStore, Queue, ReconcileStore, StateRecord, StateStore,
};
use stripe_worker::clock::{Clock, system_clock};
use stripe_worker::config::Config;
use stripe_worker::demo::ExpectedState;
use stripe_worker::demo::generator::{GeneratedStream, GeneratorConfig, generate};
use stripe_worker::event::envelope::{
    partner_v2_event_entry, rfc3339_millis, webhook_snapshot_entry,
};
use stripe_worker::handlers::standard_handlers;
use stripe_worker::reconcile::import::Reconciler;
use stripe_worker::reconcile::kinds::{LISTED, Projector, select};
use stripe_worker::reconcile::sweep::{Sweeper, V1_LIST, V2_LIST, thin_destinations};
use stripe_worker::reconcile::verify::VerifyOptions;
use stripe_worker::stripe::api::{ApiKey, StripeApiClient, StripeApiConfig};
use stripe_worker::stripe::double::{DoubleServer, ServeOptions, StripeDouble};
use stripe_worker::stripe::hydrate::Hydrator;

/// The generator's first tenant, the one every scenario uses.
pub const TENANT: &str = "tenant-1";
const KEY: &str = "rk_test_reconcile";

/// A configuration that knows [`TENANT`]. The receive wait is 0 so a drain notices an
/// empty queue at once instead of long-polling (the default is for production).
pub fn config() -> Config {
    let mut config = Config::default();
    config.worker.wait_time_secs = 0;
    config.tenants.tenants = vec![TENANT.to_owned()];
    config
}

/// The event destination (thin payloads) of [`TENANT`] in [`config_with_destination`].
pub const DESTINATION: &str = "ed_test_reconcile";

/// [`config`], with [`TENANT`]'s events also arriving through [`DESTINATION`].
pub fn config_with_destination() -> Config {
    let mut config = config();
    config
        .tenants
        .destinations
        .insert(DESTINATION.to_owned(), TENANT.to_owned());
    config
}

/// A generated stream of about `events` events for [`TENANT`].
pub fn stream(events: usize, seed: u64) -> GeneratedStream {
    generate(&GeneratorConfig {
        events,
        tenants: 1,
        seed,
    })
}

/// The double holding `stream`'s final objects and every event, served over HTTP.
/// `throttle_every` > 0 answers every n-th request with a 429.
pub async fn serve(
    stream: &GeneratedStream,
    throttle_every: u64,
) -> (Arc<StripeDouble>, DoubleServer) {
    let double = Arc::new(StripeDouble::new());
    double
        .put_all(stream.final_objects.clone())
        .expect("final objects have ids");
    for e in &stream.events {
        double
            .put_event(&e.tenant, e.event.clone())
            .expect("events have ids");
    }
    let server = double
        .serve(ServeOptions {
            keys: [(KEY.to_owned(), TENANT.to_owned())].into(),
            throttle_every,
            retry_after_secs: None,
            refuse_v2: false,
        })
        .await
        .expect("serve the double");
    (double, server)
}

/// The real client against the served double, with the default settings (pacing,
/// retries, timeouts) except `requests_per_sec` when given.
pub fn client(server: &DoubleServer, requests_per_sec: Option<f64>) -> Arc<StripeApiClient> {
    let mut config = StripeApiConfig {
        base_url: server.base_url(),
        keys: [(TENANT.to_owned(), ApiKey::new(KEY).expect("key"))].into(),
        ..StripeApiConfig::default()
    };
    if let Some(rate) = requests_per_sec {
        config.requests_per_sec = rate;
    }
    Arc::new(StripeApiClient::new(config).expect("client"))
}

/// The tenant's records.
pub async fn records<S: StateStore>(state: &S) -> Vec<StateRecord> {
    state.export(Some(TENANT)).await.expect("export")
}

/// The part of `stream`'s model an import can see: the kinds Stripe lists
/// ([`LISTED`]), without the deleted catalogue objects and tax ids (the API lists none
/// and no other object names them; deleted customers are fetched because others do).
pub fn importable(stream: &GeneratedStream) -> ExpectedState {
    let mut model = stream.expected.clone();
    for kinds in model.tenants.values_mut() {
        kinds.retain(|kind, _| LISTED.iter().any(|k| k.kind == kind.as_str()));
        for (kind, objects) in kinds.iter_mut() {
            if ["product", "price", "coupon", "tax_id"].contains(&kind.as_str()) {
                objects.retain(|_, facts| facts.get("deleted") != Some(&json!(true)));
            }
        }
    }
    model
}

/// Fail with the first mismatches between the stored state and `stream`'s model.
pub async fn assert_state_is_the_streams<S: StateStore>(
    state: &S,
    stream: &GeneratedStream,
    what: &str,
) {
    assert_state_is(state, &stream.expected, what).await;
}

/// Fail with the first mismatches between the stored state and `model`.
pub async fn assert_state_is<S: StateStore>(state: &S, model: &ExpectedState, what: &str) {
    let mismatches = model.compare(&records(state).await);
    let first: Vec<String> = mismatches.iter().take(8).map(ToString::to_string).collect();
    assert!(
        mismatches.is_empty(),
        "{what}: {} mismatches, first: {first:#?}",
        mismatches.len()
    );
}

/// Publish the events `keep` picks as webhook snapshot entries.
pub async fn deliver<B: Bus>(bus: &B, stream: &GeneratedStream, keep: impl Fn(usize) -> bool) {
    let now = stripe_worker::clock::now_ms();
    let entries: Vec<_> = stream
        .events
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, e)| webhook_snapshot_entry(&e.event, &e.tenant, now, None).expect("entry"))
        .collect();
    for chunk in entries.chunks(10) {
        publish_entries(bus, chunk).await.expect("publish");
    }
}

/// Run the worker pool until the queues stay empty, with `hydrator` for thin events and
/// ties.
pub async fn drain<Q: Queue, D: DedupeStore, S: StateStore, B>(
    backend: &Backend<Q, D, S, B>,
    config: &Config,
    hydrator: Option<Arc<dyn Hydrator>>,
) {
    let snapshot = crate::ops_support::drain_with(backend, config, hydrator).await;
    assert_eq!(snapshot.dead_lettered, 0, "nothing is dead-lettered");
}

fn reconciler<'a, S: StateStore, C: ReconcileStore>(
    api: &'a StripeApiClient,
    state: &'a S,
    checkpoints: &'a C,
    projector: &'a Projector,
) -> Reconciler<'a, S, C> {
    Reconciler {
        api,
        state,
        checkpoints,
        projector,
        clock: system_clock(),
    }
}

/// The sweeper over `backend`, reading the double through `server`, with the
/// destinations of `config`.
fn sweeper<Q, D, S, B>(
    backend: &Backend<Q, D, S, B>,
    server: &DoubleServer,
    config: &Config,
) -> Sweeper<D, B> {
    Sweeper {
        api: client(server, None),
        dedupe: Arc::clone(&backend.dedupe),
        bus: Arc::clone(&backend.bus),
        handlers: standard_handlers(),
        clock: system_clock(),
        thin_destinations: thin_destinations(&config.tenants),
    }
}

/// Import alone gives the stream's full state, through injected 429s.
pub async fn import_gives_the_full_state<Q, D, S, B>(backend: &Backend<Q, D, S, B>)
where
    D: ReconcileStore,
    S: StateStore,
{
    let stream = stream(600, 11);
    let (_double, server) = serve(&stream, 9).await;
    let api = client(&server, None);
    let projector = Projector::default();
    let every = select(&[]).expect("all kinds");
    let report = reconciler(
        &api,
        backend.state.as_ref(),
        backend.dedupe.as_ref(),
        &projector,
    )
    .import(TENANT, &every, &indicatif::ProgressBar::hidden())
    .await
    .expect("import");
    assert!(server.throttled() > 0, "the double answered some 429s");
    let model = importable(&stream);
    assert_state_is(backend.state.as_ref(), &model, "after import").await;
    let imported: u64 = report.imported.values().sum();
    assert_eq!(imported as usize, model.record_count());
    for kind in &LISTED {
        assert_eq!(
            report.imported.get(kind.kind).copied().unwrap_or(0) as usize,
            model.count_of(kind.kind),
            "{}",
            kind.kind
        );
    }
    // Checkpoints are cleared once every kind is done: the next import starts afresh.
    for kind in &LISTED {
        let name = stripe_worker::reconcile::import::checkpoint_name(kind.kind);
        assert_eq!(
            backend
                .dedupe
                .checkpoint(TENANT, &name)
                .await
                .expect("read"),
            None
        );
    }
    // A second import finds nothing newer to write... except that its fetch is newer:
    // every record is rewritten with the same document.
    let before = records(backend.state.as_ref()).await;
    reconciler(
        &api,
        backend.state.as_ref(),
        backend.dedupe.as_ref(),
        &projector,
    )
    .import(TENANT, &every, &indicatif::ProgressBar::hidden())
    .await
    .expect("import again");
    let after = records(backend.state.as_ref()).await;
    let docs = |r: &[StateRecord]| -> BTreeMap<(String, String), Value> {
        r.iter()
            .map(|r| ((r.kind.clone(), r.id.clone()), r.doc.clone()))
            .collect()
    };
    assert_eq!(docs(&before), docs(&after));
}

/// An import that fails half-way (an outage) and is run again goes on from its
/// checkpoints: every object is listed once over both runs, and the state is complete.
pub async fn interrupted_import_resumes<Q, D, S, B>(
    backend: &Backend<Q, D, S, B>,
    scratch: &Backend<Q, D, S, B>,
) where
    D: ReconcileStore,
    S: StateStore,
{
    let stream = stream(2_500, 12);
    let (double, server) = serve(&stream, 0).await;
    // The double has no rate limit and this test is about resuming, not pacing: a higher
    // rate keeps the ~200 per-customer requests of three imports short.
    let api = client(&server, Some(500.0));
    let projector = Projector::default();
    let every = select(&[]).expect("all kinds");
    let hidden = indicatif::ProgressBar::hidden();

    // How many requests a whole import takes, measured on a scratch store.
    let start = server.requests();
    reconciler(
        &api,
        scratch.state.as_ref(),
        scratch.dedupe.as_ref(),
        &projector,
    )
    .import(TENANT, &every, &hidden)
    .await
    .expect("scratch import");
    let whole = server.requests() - start;
    double.reset_listed();

    server.fail_after(whole / 2);
    let failed = reconciler(
        &api,
        backend.state.as_ref(),
        backend.dedupe.as_ref(),
        &projector,
    )
    .import(TENANT, &every, &hidden)
    .await;
    assert!(failed.is_err(), "the outage stops the import");
    server.heal();
    let report = reconciler(
        &api,
        backend.state.as_ref(),
        backend.dedupe.as_ref(),
        &projector,
    )
    .import(TENANT, &every, &hidden)
    .await
    .expect("resumed import");
    assert!(
        !report.resumed.is_empty(),
        "the second run went on from checkpoints"
    );
    assert_state_is(
        backend.state.as_ref(),
        &importable(&stream),
        "after a resumed import",
    )
    .await;

    let mut pages_over_one = 0;
    for (tenant, object) in &stream.final_objects {
        let id = object["id"].as_str().expect("id");
        let listed = double.times_listed(tenant, id);
        let deleted = object.get("deleted") == Some(&json!(true));
        let detached = object["object"] == "payment_method" && object["customer"].is_null();
        match object["object"].as_str() {
            // Unlisted objects, fetched by reference instead.
            _ if deleted || detached => assert_eq!(listed, 0, "{id}"),
            // Customers are walked three times by design: as customers, and to list each
            // one's payment methods and tax ids; a walk page cut by the outage is walked
            // again.
            Some("customer") => {
                assert!((3..=4).contains(&listed), "{id} listed {listed} times");
                pages_over_one += usize::from(listed == 4);
            }
            // Discounts have no list.
            Some("discount") => assert_eq!(listed, 0, "{id}"),
            Some("checkout.session") if object["status"] != "complete" => {}
            _ => assert_eq!(listed, 1, "{id} listed {listed} times"),
        }
    }
    assert!(
        pages_over_one <= 100,
        "at most one customer page walked again"
    );
}

/// Part of the stream delivered, then `sweep`: the state equals the whole stream's.
pub async fn sweep_recovers_dropped_events<Q: Queue, D, S, B: Bus>(backend: &Backend<Q, D, S, B>)
where
    D: DedupeStore + ReconcileStore,
    S: StateStore,
{
    let stream = stream(800, 13);
    let (_double, server) = serve(&stream, 0).await;
    let config = config();
    // Drop 30% of the events, spread over the stream.
    deliver(backend.bus.as_ref(), &stream, |i| i % 10 >= 3).await;
    drain(backend, &config, None).await;
    let partial = stream
        .expected
        .compare(&records(backend.state.as_ref()).await);
    assert!(
        !partial.is_empty(),
        "dropping events leaves the state wrong"
    );

    let since = stream
        .events
        .iter()
        .filter_map(|e| e.event["created"].as_i64())
        .min()
        .expect("events")
        * 1000;
    let sweeper = sweeper(backend, &server, &config);
    let report = sweeper
        .sweep(TENANT, since, None, &indicatif::ProgressBar::hidden())
        .await
        .expect("sweep");
    assert_eq!(report.listed as usize, stream.events.len());
    let dropped_handled = stream
        .events
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            i % 10 < 3
                && standard_handlers()
                    .iter()
                    .any(|h| h.handles(e.event["type"].as_str().unwrap_or("")))
        })
        .count();
    assert_eq!(report.missing as usize, dropped_handled);
    assert_eq!(report.published, report.missing);
    // No event destination configured: the v1 list alone.
    assert_eq!(report.lists.keys().collect::<Vec<_>>(), [V1_LIST]);
    drain(backend, &config, None).await;
    assert_state_is_the_streams(backend.state.as_ref(), &stream, "after sweep").await;

    // A second sweep finds nothing missing.
    let again = sweeper
        .sweep(TENANT, since, None, &indicatif::ProgressBar::hidden())
        .await
        .expect("sweep again");
    assert_eq!((again.missing, again.published), (0, 0));
}

/// `verify` finds the differences of a partial delivery and of a change it missed,
/// `--repair` fixes them, and a second `verify` finds none.
pub async fn verify_and_repair<Q: Queue, D, S, B: Bus>(backend: &Backend<Q, D, S, B>)
where
    D: DedupeStore + ReconcileStore,
    S: StateStore,
{
    let stream = stream(600, 14);
    let (double, server) = serve(&stream, 0).await;
    let config = config();
    deliver(backend.bus.as_ref(), &stream, |i| i % 10 >= 3).await;
    drain(backend, &config, None).await;
    // A change Stripe has and no event told us: a planted difference.
    let (_, sub) = stream
        .final_objects
        .iter()
        .find(|(_, o)| o["object"] == "subscription" && o["status"] == "active")
        .expect("an active subscription");
    let mut changed = sub.clone();
    changed["status"] = json!("past_due");
    double.put(TENANT, changed).expect("id");
    let sub_id = sub["id"].as_str().expect("id").to_owned();

    let api = client(&server, None);
    let projector = Projector::default();
    let every = select(&[]).expect("all kinds");
    let hidden = indicatif::ProgressBar::hidden();
    let r = reconciler(
        &api,
        backend.state.as_ref(),
        backend.dedupe.as_ref(),
        &projector,
    );
    let check = r
        .verify(TENANT, &every, &VerifyOptions::default(), &hidden)
        .await
        .expect("verify");
    assert!(!check.equal());
    assert!(check.checked as usize >= importable(&stream).record_count());
    assert_eq!(check.repaired, 0, "no repair without --repair");
    assert!(
        check
            .differences
            .iter()
            .any(|d| d.id == sub_id && d.field == "status" && d.stripe == "past_due"),
        "the planted difference is listed field by field"
    );

    let repair = VerifyOptions {
        repair: true,
        ..VerifyOptions::default()
    };
    let repaired = r
        .verify(TENANT, &every, &repair, &hidden)
        .await
        .expect("repair");
    assert!(repaired.repaired > 0);
    let again = r
        .verify(TENANT, &every, &VerifyOptions::default(), &hidden)
        .await
        .expect("verify again");
    assert!(
        again.equal(),
        "after repair: {:?}",
        &again.differences[..again.differences.len().min(5)]
    );
    let stored = backend
        .state
        .get(TENANT, "subscription", &sub_id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.doc["status"], "past_due");

    // A sample fetches stored records one by one and finds them equal too.
    let sample = VerifyOptions {
        sample: Some(20),
        ..VerifyOptions::default()
    };
    let sampled = r
        .verify(TENANT, &every, &sample, &hidden)
        .await
        .expect("sample");
    assert_eq!(sampled.checked, 20);
    assert!(sampled.equal());
}

/// A `customer.subscription.updated` event for `sub_tie` created at `created`.
fn subscription_event(id: &str, status: &str, created: i64) -> Value {
    json!({
        "id": id, "object": "event", "type": "customer.subscription.updated",
        "created": created, "livemode": false, "api_version": "2025-03-31.basil",
        "data": {"object": {"id": "sub_tie", "object": "subscription", "customer": "cus_tie",
            "status": status, "created": created - 100, "cancel_at_period_end": false,
            "items": {"object": "list", "data": []}}}
    })
}

/// Two events for one subscription in the same second, in either order: with the API,
/// the record ends as the fetched object; without, the deterministic tiebreak decides.
pub async fn same_second_ties<Q: Queue, D, S, B: Bus>(
    mut fresh: impl AsyncFnMut() -> Backend<Q, D, S, B>,
) where
    D: DedupeStore,
    S: StateStore,
{
    let created = 1_760_000_000;
    // The larger id carries the older state: the rule alone ends `active`.
    let older = subscription_event("evt_2active", "active", created);
    let newer = subscription_event("evt_1pastdue", "past_due", created);
    let double = Arc::new(StripeDouble::new());
    double
        .put(TENANT, newer["data"]["object"].clone())
        .expect("id");
    let server = double
        .serve(ServeOptions {
            keys: [(KEY.to_owned(), TENANT.to_owned())].into(),
            ..ServeOptions::default()
        })
        .await
        .expect("serve");
    let config = config();
    for (order, with_api) in [(0, true), (1, true), (0, false), (1, false)] {
        let backend = fresh().await;
        let pair = if order == 0 {
            [&older, &newer]
        } else {
            [&newer, &older]
        };
        let hydrator = with_api.then(|| client(&server, None) as Arc<dyn Hydrator>);
        for event in pair {
            let entry = webhook_snapshot_entry(event, TENANT, 0, None).expect("entry");
            publish_entries(backend.bus.as_ref(), &[entry])
                .await
                .expect("publish");
            // One at a time, so the arrival order is the one chosen.
            drain(&backend, &config, hydrator.clone()).await;
        }
        let stored = backend
            .state
            .get(TENANT, "subscription", "sub_tie")
            .await
            .expect("get")
            .expect("stored");
        let want = if with_api { "past_due" } else { "active" };
        assert_eq!(
            stored.doc["status"], want,
            "order {order}, api {with_api}: {stored:?}"
        );
        if with_api {
            // As of the fetch (now), not of the tie: an event delayed in the queues,
            // created after the tie but before the fetch, is older and loses.
            assert!(stored.tiebreak.starts_with("~fetched."), "{stored:?}");
            assert!(stored.as_of_ms > created * 1000, "{stored:?}");
            let delayed = subscription_event("evt_3delayed", "active", created + 2);
            let entry = webhook_snapshot_entry(&delayed, TENANT, 0, None).expect("entry");
            publish_entries(backend.bus.as_ref(), &[entry])
                .await
                .expect("publish");
            drain(&backend, &config, hydrator.clone()).await;
            let after = backend
                .state
                .get(TENANT, "subscription", "sub_tie")
                .await
                .expect("get")
                .expect("stored");
            assert_eq!(after, stored, "order {order}: the delayed event lost");
        }
    }
}

/// A version fetched by `import` is as of its fetch's second, so it ties with an event of
/// that second, in either order: an import meeting the stored event fetches again, and an
/// event meeting the imported record makes the worker fetch again (without an API the
/// fetched version keeps its place by the rule). Every case ends as Stripe's object.
pub async fn fetched_versions_tie_with_events_of_their_second<Q: Queue, D, S, B: Bus>(
    mut fresh: impl AsyncFnMut() -> Backend<Q, D, S, B>,
) where
    D: DedupeStore + ReconcileStore,
    S: StateStore,
{
    let created = 1_760_000_100;
    // The event carries the older state; Stripe has the newer one.
    let stale = subscription_event("evt_2active", "active", created);
    let double = Arc::new(StripeDouble::new());
    double
        .put(
            TENANT,
            subscription_event("evt_1pastdue", "past_due", created)["data"]["object"].clone(),
        )
        .expect("id");
    let server = double
        .serve(ServeOptions {
            keys: [(KEY.to_owned(), TENANT.to_owned())].into(),
            ..ServeOptions::default()
        })
        .await
        .expect("serve");
    let api = client(&server, None);
    let projector = Projector::default();
    let subscriptions = select(&["subscription".to_owned()]).expect("known kind");
    let hidden = indicatif::ProgressBar::hidden();
    let config = config();
    // The import's requests start half-way through the event's second.
    let fetch_clock: Clock = Arc::new(move || created * 1000 + 500);
    let import = async |backend: &Backend<Q, D, S, B>| {
        Reconciler {
            api: &api,
            state: backend.state.as_ref(),
            checkpoints: backend.dedupe.as_ref(),
            projector: &projector,
            clock: Arc::clone(&fetch_clock),
        }
        .import(TENANT, &subscriptions, &hidden)
        .await
        .expect("import")
    };
    let deliver_stale = async |backend: &Backend<Q, D, S, B>,
                               hydrator: Option<Arc<dyn Hydrator>>| {
        let entry = webhook_snapshot_entry(&stale, TENANT, 0, None).expect("entry");
        publish_entries(backend.bus.as_ref(), &[entry])
            .await
            .expect("publish");
        drain(backend, &config, hydrator).await;
    };
    let stored = async |backend: &Backend<Q, D, S, B>| {
        backend
            .state
            .get(TENANT, "subscription", "sub_tie")
            .await
            .expect("get")
            .expect("stored")
    };

    // The event first (no API for the worker: it is stored as it came), then the import.
    let backend = fresh().await;
    deliver_stale(&backend, None).await;
    assert_eq!(stored(&backend).await.doc["status"], "active");
    let report = import(&backend).await;
    assert_eq!(report.ties, 1, "{report:?}");
    let record = stored(&backend).await;
    assert_eq!(record.doc["status"], "past_due", "{record:?}");
    assert!(record.tiebreak.starts_with("~fetched."), "{record:?}");
    assert_eq!(record.as_of_ms, created * 1000, "as of the fetch's second");

    // The import first, then the event of its second.
    for with_api in [true, false] {
        let backend = fresh().await;
        let report = import(&backend).await;
        assert_eq!(report.ties, 0);
        let hydrator = with_api.then(|| Arc::clone(&api) as Arc<dyn Hydrator>);
        deliver_stale(&backend, hydrator).await;
        let record = stored(&backend).await;
        assert_eq!(
            record.doc["status"], "past_due",
            "api {with_api}: {record:?}"
        );
        assert!(record.tiebreak.starts_with("~fetched."), "{record:?}");
        if with_api {
            assert!(
                record.as_of_ms > created * 1000,
                "fetched again: {record:?}"
            );
        } else {
            assert_eq!(record.as_of_ms, created * 1000, "{record:?}");
        }
    }
}

/// A thin `v2.core.event` for `sub_id` of a v1 type, as `GET /v2/core/events` lists it.
fn thin_event(id: &str, sub_id: &str, created_ms: i64, snapshot_event: Option<&str>) -> Value {
    let mut event = json!({
        "id": id, "object": "v2.core.event", "type": "v1.customer.subscription.updated",
        "created": rfc3339_millis(created_ms).expect("time"), "livemode": false,
        "context": null,
        "related_object": {"id": sub_id, "type": "subscription",
                           "url": format!("/v1/subscriptions/{sub_id}")},
    });
    if let Some(snapshot) = snapshot_event {
        event["snapshot_event"] = json!(snapshot);
    }
    event
}

/// A subscription of the v2 scenario.
fn v2_subscription(id: &str, status: &str, created: i64) -> Value {
    json!({"id": id, "object": "subscription", "customer": "cus_v2", "status": status,
           "created": created, "cancel_at_period_end": false,
           "items": {"object": "list", "data": []}})
}

/// A tenant with an event destination: thin events only the v2 list has, 30% of them
/// never delivered, then `sweep`: the v2 list is read over two pages (through 429s) and
/// the missing events are published as the destination delivers them, hydrated by the
/// worker as usual; a thin event of a v1 type in both lists is published once; the
/// state ends as Stripe's, and a second sweep finds nothing missing.
pub async fn sweep_reads_the_v2_list<Q: Queue, D, S, B: Bus>(backend: &Backend<Q, D, S, B>)
where
    D: DedupeStore + ReconcileStore,
    S: StateStore,
{
    let base_ms: i64 = 1_760_000_000_000;
    let since_ms = base_ms - 1_000;
    let double = Arc::new(StripeDouble::new());
    let thin = 150;
    for i in 0..thin {
        let id = format!("sub_v2n{i}");
        let status = if i % 2 == 0 { "active" } else { "past_due" };
        double
            .put(TENANT, v2_subscription(&id, status, base_ms / 1000))
            .expect("id");
        let event = thin_event(&format!("evt_v2n{i}"), &id, base_ms + i * 10, None);
        double.put_v2_event(TENANT, event).expect("id");
    }
    // Before the window: never listed.
    let old = thin_event("evt_v2old", "sub_v2n0", since_ms - 5_000, None);
    double.put_v2_event(TENANT, old).expect("id");
    // A v2-native event no handler acts on.
    double
        .put_v2_event(
            TENANT,
            json!({"id": "evt_v2ping", "object": "v2.core.event",
                   "type": "v2.core.event_destination.ping",
                   "created": rfc3339_millis(base_ms + 5).expect("time"), "livemode": false,
                   "context": null,
                   "related_object": {"id": DESTINATION, "type": "v2.core.event_destination",
                                      "url": format!("/v2/core/event_destinations/{DESTINATION}")}}),
        )
        .expect("id");
    // One change in both lists: the v1 event, and its thin form naming it.
    let both = v2_subscription("sub_v2both", "canceled", base_ms / 1000);
    double.put(TENANT, both.clone()).expect("id");
    double
        .put_event(
            TENANT,
            json!({"id": "evt_1both", "object": "event", "type": "customer.subscription.updated",
                   "created": base_ms / 1000 + 1, "livemode": false,
                   "api_version": "2025-03-31.basil", "data": {"object": both}}),
        )
        .expect("id");
    let both_thin = thin_event(
        "evt_v2both",
        "sub_v2both",
        base_ms + 1_000,
        Some("evt_1both"),
    );
    double.put_v2_event(TENANT, both_thin).expect("id");
    let server = double
        .serve(ServeOptions {
            keys: [(KEY.to_owned(), TENANT.to_owned())].into(),
            throttle_every: 7,
            retry_after_secs: None,
            refuse_v2: false,
        })
        .await
        .expect("serve");
    let config = config_with_destination();
    let hydrator = Some(client(&server, None) as Arc<dyn Hydrator>);

    // 70% of the thin events arrive through the destination.
    let delivered: Vec<_> = (0..thin)
        .filter(|i| i % 10 >= 3)
        .map(|i| {
            let event = double
                .v2_event(TENANT, &format!("evt_v2n{i}"))
                .expect("stored");
            partner_v2_event_entry(&event, DESTINATION).expect("entry")
        })
        .collect();
    for chunk in delivered.chunks(10) {
        publish_entries(backend.bus.as_ref(), chunk)
            .await
            .expect("publish");
    }
    drain(backend, &config, hydrator.clone()).await;

    let sweeper = sweeper(backend, &server, &config);
    let hidden = indicatif::ProgressBar::hidden();
    let report = sweeper
        .sweep(TENANT, since_ms, None, &hidden)
        .await
        .expect("sweep");
    let dropped = (0..thin).filter(|i| i % 10 < 3).count() as u64;
    let v1 = &report.lists[V1_LIST];
    assert_eq!(
        (v1.listed, v1.missing, v1.published),
        (1, 1, 1),
        "{report:#?}"
    );
    let v2 = &report.lists[V2_LIST];
    assert_eq!(v2.listed, thin as u64 + 2, "{report:#?}");
    assert!(v2.pages >= 2, "two pages of 100: {report:#?}");
    assert_eq!(
        (v2.missing, v2.published),
        (dropped, dropped),
        "{report:#?}"
    );
    assert_eq!((v2.unhandled, v2.duplicates), (1, 1), "{report:#?}");
    assert_eq!(
        (report.listed, report.missing, report.published),
        (thin as u64 + 3, dropped + 1, dropped + 1)
    );
    assert_eq!(report.v2_skipped, None);
    assert!(server.throttled() > 0, "the double answered some 429s");

    drain(backend, &config, hydrator).await;
    let mut ids: Vec<String> = (0..thin).map(|i| format!("sub_v2n{i}")).collect();
    ids.push("sub_v2both".to_owned());
    for id in &ids {
        let record = backend
            .state
            .get(TENANT, "subscription", id)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{id} is stored"));
        let want = double.get(TENANT, id).expect("in the double");
        assert_eq!(record.doc["status"], want["status"], "{id}");
    }
    let again = sweeper
        .sweep(TENANT, since_ms, None, &hidden)
        .await
        .expect("sweep again");
    assert_eq!((again.missing, again.published), (0, 0), "{again:#?}");
}
