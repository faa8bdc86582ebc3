//! Crash safety: the worker binary is killed with SIGKILL at random points while it drains
//! a stream, restarted each time, on the embedded backend and on AWS (the local emulator).
//! At the end the state must equal the generator's expected state, the worker's "applied"
//! log must show no (tenant, handler, event) applied twice, and nothing may be left but
//! the expected dead letters (events from an unmapped destination, `unknown_tenant`): no
//! healthy event may reach a DLQ.
//!
//! The worker runs with the default `max_receive_count` (5: a message survives 4 crashes),
//! and every event is hydrated from a slow Stripe API double, so most kills land while
//! messages are being processed, not between them.
//!
//! `STRIPE_WORKER_CRASH_KILLS` sets the total number of kills (default 16), split between
//! the two backends; `STRIPE_WORKER_CRASH_VISIBILITY_SECS` the visibility timeout (default:
//! a few seconds, so a killed worker's messages come back quickly; 30 is the default of
//! the worker itself).

use crate::reliability_support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Child;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reliability_support::{AppliedLog, StreamFile, Timing, Worker, write_config, write_stream};
use serde_json::Value;
use stripe_worker::app::open_local;
use stripe_worker::backend::aws::{AwsNames, SetupOptions, connect, load_sdk_config, setup};
use stripe_worker::backend::dlq_attributes::ERROR_KIND;
use stripe_worker::backend::{DeadLetterOps, PerDomain, Queue, StateRecord, StateStore};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::domain::Domain;
use stripe_worker::event::decode_message;
use stripe_worker::handlers::standard_handlers;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The embedded backend: a visibility timeout of seconds (the default is 30 s) so that
/// the messages of a killed worker come back within the test's kill phase, long enough
/// that a message is received at most a couple of times during it.
fn local_timing() -> Timing {
    timing(5, 64)
}

/// The emulator, whose calls take far longer under load than SQLite's (a single Python
/// process on a shared machine): a longer visibility timeout and fewer messages in
/// flight, so processing stays well inside the timeout between heartbeats.
fn aws_timing() -> Timing {
    timing(20, 8)
}

/// The visibility timeout (`STRIPE_WORKER_CRASH_VISIBILITY_SECS`, else `default_secs`),
/// the lease at half of it (the most validation allows), and the in-flight limits.
fn timing(default_secs: u64, max_in_flight: usize) -> Timing {
    let visibility_secs = visibility_secs(default_secs);
    Timing {
        visibility_secs,
        lease_secs: visibility_secs / 2,
        max_in_flight,
    }
}

fn visibility_secs(default: u64) -> u64 {
    std::env::var("STRIPE_WORKER_CRASH_VISIBILITY_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kills across both backends; `STRIPE_WORKER_CRASH_KILLS` raises it.
fn total_kills() -> usize {
    std::env::var("STRIPE_WORKER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

/// SIGKILL the worker `kills` times at random points (each after a random run time),
/// then run it once more until idle.
fn kill_and_restart(worker: &mut Worker, kills: usize, seed: u64, run_ms: std::ops::Range<u64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..kills {
        let mut child: Child = worker
            .command(&["run", "--until-idle", "--idle-secs", "2"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(run_ms.clone())));
        child.kill().unwrap(); // SIGKILL: no drain, no flush, no release.
        child.wait().unwrap();
    }
    let last = worker
        .command(&["run", "--until-idle", "--idle-secs", "3"])
        .status()
        .unwrap();
    assert!(last.success(), "the final worker run exits 0 once idle");
}

/// The Stripe API as the worker sees it: each object's final version, after a random
/// delay, so that processing takes long enough for kills to land in the middle of it.
struct SlowStripe {
    /// (tenant, object id) to the object.
    objects: HashMap<(String, String), Value>,
    /// API key to tenant.
    tenants: HashMap<String, String>,
    delay_ms: std::ops::Range<u64>,
    rng: Mutex<StdRng>,
}

fn api_key(tenant: &str) -> String {
    format!("rk_test_crash_{}", tenant.replace('-', "_"))
}

impl Respond for SlowStripe {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let tenant = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|key| self.tenants.get(key));
        let id = request.url.path().rsplit('/').next().unwrap_or_default();
        let delay = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            Duration::from_millis(rng.random_range(self.delay_ms.clone()))
        };
        match tenant.and_then(|t| self.objects.get(&(t.clone(), id.to_owned()))) {
            Some(object) => ResponseTemplate::new(200)
                .set_body_json(object)
                .set_delay(delay),
            None => ResponseTemplate::new(404).set_body_json(serde_json::json!({
                "error": {"type": "invalid_request_error", "code": "resource_missing"}
            })),
        }
    }
}

/// Start the slow Stripe API double for `stream` on `runtime`, write the tenants' keys to
/// `dir`, and point the worker at both; the worker hydrates every event from it.
fn serve_stripe_api(
    runtime: &tokio::runtime::Runtime,
    stream: &StreamFile,
    dir: &Path,
    config_path: &Path,
    worker: &mut Worker,
) -> MockServer {
    let keys_dir = dir.join("stripe-keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let mut tenants = HashMap::new();
    for tenant in &stream.tenants {
        std::fs::write(keys_dir.join(tenant), api_key(tenant)).unwrap();
        tenants.insert(api_key(tenant), tenant.clone());
    }
    let objects = stream
        .stream
        .final_objects
        .iter()
        .map(|(tenant, object)| {
            let id = object["id"].as_str().unwrap().to_owned();
            ((tenant.clone(), id), object.clone())
        })
        .collect();
    let server = runtime.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(SlowStripe {
                objects,
                tenants,
                delay_ms: 20..400,
                rng: Mutex::new(StdRng::seed_from_u64(3)),
            })
            .mount(&server)
            .await;
        server
    });
    // Every event hydrated (the current object, not the snapshot): the final state is the
    // same, and each message spends its time in the middle of processing.
    let mut config = std::fs::read_to_string(config_path).unwrap();
    config.push_str("[hydrate]\nmode = \"always\"\n");
    std::fs::write(config_path, config).unwrap();
    worker
        .env
        .push(("STRIPE_API_BASE_URL".to_owned(), server.uri()));
    worker.env.push((
        "STRIPE_WORKER_STRIPE_KEYS_DIR".to_owned(),
        keys_dir.to_str().unwrap().to_owned(),
    ));
    server
}

/// A message is hydrated once each time it is processed, if a handler acts on its event
/// and its tenant is known (not the poison): more fetches than such messages mean that
/// kills cut processing short and messages were processed again.
fn assert_kills_landed_mid_processing(
    runtime: &tokio::runtime::Runtime,
    api: &MockServer,
    stream: &StreamFile,
) {
    let fetches = runtime
        .block_on(api.received_requests())
        .map_or(0, |requests| requests.len());
    let handlers = standard_handlers();
    let handled = std::fs::read_to_string(&stream.path)
        .unwrap()
        .lines()
        .filter_map(|line| decode_message(line.as_bytes()).ok())
        .filter(|event| handlers.iter().any(|h| h.handles(&event.event_type)))
        .count();
    let once = handled - stream.expected_dead_letters;
    eprintln!(
        "{fetches} Stripe API fetches for {once} messages: {} processings cut short by a \
         kill and done again",
        fetches.saturating_sub(once)
    );
    assert!(fetches > once, "no kill landed in the middle of processing");
}

/// What every crash run must end with; every difference is reported at once.
async fn check_end_state<Q: Queue>(
    worker: &Worker,
    stream: &StreamFile,
    records: &[StateRecord],
    queues: &PerDomain<Q>,
    dead_letters_seen: Vec<String>,
) {
    let mut problems = Vec::new();
    let mismatches = stream.stream.expected.compare(records);
    if !mismatches.is_empty() {
        problems.push(format!(
            "{} state mismatches, first: {}",
            mismatches.len(),
            mismatches[0]
        ));
    }
    let mut dead_letters = 0;
    for domain in Domain::ALL {
        let (main, dlq) = queues.get(domain).stats().await.unwrap();
        if (main.visible, main.in_flight, main.delayed) != (0, 0, 0) {
            problems.push(format!("{domain} queue not empty: {main:?}"));
        }
        dead_letters += dlq.visible as usize;
    }
    // Dead-lettering sends before it deletes, so a kill between the two leaves a second copy
    // of the same message in the DLQ (at least once, never lost): count distinct messages.
    let distinct: std::collections::BTreeSet<&String> = dead_letters_seen.iter().collect();
    if dead_letters < stream.expected_dead_letters || distinct.len() > stream.expected_dead_letters
    {
        problems.push(format!(
            "{dead_letters} dead letters, expected {} (unmapped destination only): {dead_letters_seen:#?}",
            stream.expected_dead_letters
        ));
    }
    let applied = AppliedLog::read(&worker.logs());
    if applied.total() == 0 {
        problems.push("the applied log has no lines".to_owned());
    }
    if !applied.doubles().is_empty() {
        problems.push(format!(
            "{} keys applied twice:\n{}",
            applied.doubles().len(),
            applied.describe_doubles()
        ));
    }
    eprintln!(
        "{} applied lines over {} keys, {} cut-short lines, {dead_letters} dead letters",
        applied.total(),
        applied.counts.len(),
        applied.unparsable
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn killing_the_worker_on_the_embedded_backend_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stream = write_stream(dir.path(), 1_500, 11, 3, 3);
    let config_path = dir.path().join("config.toml");
    write_config(&config_path, &stream.tenants, local_timing());
    let mut worker = Worker::new(
        vec!["--data-dir".into(), data.to_str().unwrap().into()],
        config_path.clone(),
        dir.path().join("logs"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let api = serve_stripe_api(&runtime, &stream, dir.path(), &config_path, &mut worker);
    worker.publish(&stream.path);
    let kills = total_kills() - total_kills() / 2;
    kill_and_restart(&mut worker, kills, 5, 300..1_200);
    eprintln!("embedded backend: survived {kills} kills");
    assert_kills_landed_mid_processing(&runtime, &api, &stream);

    runtime.block_on(async {
        let config = Config::from_file(&config_path).unwrap();
        let backend = open_local(&data, &config, system_clock()).unwrap();
        let records = backend.state.export(None).await.unwrap();
        let mut kinds = Vec::new();
        for domain in Domain::ALL {
            for message in backend.queues.get(domain).dlq_peek(100).await.unwrap() {
                kinds.push(message.attributes[ERROR_KIND].clone());
            }
        }
        if let Some(kind) = kinds.iter().find(|k| *k != "unknown_tenant") {
            panic!("dead-lettered as {kind}: only unknown_tenant is expected: {kinds:?}");
        }
        check_end_state(&worker, &stream, &records, &backend.queues, kinds).await;
    });
}

#[test]
fn killing_the_worker_on_aws_loses_and_doubles_nothing() {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|u| !u.is_empty()),
        "AWS_ENDPOINT_URL is not set: this test runs against the local AWS emulator; run it \
         with `bash tests/run.sh`"
    );
    let dir = tempfile::tempdir().unwrap();
    // Shallow queues: a few hundred messages.
    let stream = write_stream(dir.path(), 240, 23, 4, 2);
    let config_path = dir.path().join("config.toml");
    write_config(&config_path, &stream.tenants, aws_timing());
    let prefix = format!(
        "t-crash-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = Config::from_file(&config_path).unwrap();
    let sdk = runtime.block_on(load_sdk_config());
    let names = AwsNames::new(prefix.clone());
    runtime.block_on(async {
        let options = SetupOptions {
            max_receive_count: config.worker.max_receive_count,
            visibility_timeout: config.visibility_timeout(),
            ..SetupOptions::default()
        };
        let patterns = PerDomain::from_fn(stripe_worker::routing::domain_pattern);
        setup(&sdk, &names, &patterns, &options).await.unwrap();
    });
    let mut worker = Worker::new(
        vec!["--backend".into(), "aws".into(), "--prefix".into(), prefix],
        config_path.clone(),
        dir.path().join("logs"),
    );
    let api = serve_stripe_api(&runtime, &stream, dir.path(), &config_path, &mut worker);
    worker.publish(&stream.path);
    let kills = total_kills() / 2;
    kill_and_restart(&mut worker, kills, 7, 1_000..4_000);
    eprintln!("AWS backend: survived {kills} kills");
    assert_kills_landed_mid_processing(&runtime, &api, &stream);
    runtime.block_on(async {
        let backend = connect(&sdk, &names, &Default::default()).await.unwrap();
        let records = backend.state.export(None).await.unwrap();
        let mut seen = Vec::new();
        for domain in Domain::ALL {
            seen.extend(dlq_contents(backend.queues.get(domain)).await);
        }
        check_end_state(&worker, &stream, &records, &backend.queues, seen).await;
    });
}

/// The reason and the start of the body of the messages in an SQS DLQ (received with a
/// visibility timeout of 0, so they stay visible for the count).
async fn dlq_contents(queue: &stripe_worker::backend::aws::SqsQueue) -> Vec<String> {
    let out = queue
        .client()
        .receive_message()
        .queue_url(&queue.urls().dlq)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .message_attribute_names("All")
        .send()
        .await
        .unwrap();
    out.messages()
        .iter()
        .map(|m| {
            let kind = m
                .message_attributes()
                .and_then(|a| a.get(ERROR_KIND))
                .and_then(|v| v.string_value())
                .unwrap_or("(none)");
            let body = m.body().unwrap_or_default();
            format!("{kind}: {}", &body[..body.len().min(160)])
        })
        .collect()
}

/// The audit catches a real double apply: with the dedupe table wiped between two runs of
/// the same stream every event is applied again, and the applied log must say so.
#[test]
fn a_real_double_apply_shows_in_the_applied_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stream = write_stream(dir.path(), 200, 3, 2, 0);
    let config_path = dir.path().join("config.toml");
    write_config(&config_path, &stream.tenants, local_timing());
    let mut worker = Worker::new(
        vec!["--data-dir".into(), data.to_str().unwrap().into()],
        config_path,
        dir.path().join("logs"),
    );
    let run_until_idle = |worker: &mut Worker| {
        let status = worker
            .command(&["run", "--until-idle", "--idle-secs", "1"])
            .status()
            .unwrap();
        assert!(status.success());
    };
    worker.publish(&stream.path);
    run_until_idle(&mut worker);
    let once = AppliedLog::read(&worker.logs());
    assert!(once.total() > 0 && once.doubles().is_empty(), "{once:?}");

    forget_applied_events(&data);
    worker.publish(&stream.path);
    run_until_idle(&mut worker);
    let twice = AppliedLog::read(&worker.logs());
    assert_eq!(
        twice.doubles().len(),
        once.counts.len(),
        "every key applied in the first run shows as applied twice"
    );
}

/// Break exactly-once on purpose: delete what the dedupe store remembers.
fn forget_applied_events(data: &Path) {
    let db = rusqlite::Connection::open(data.join(stripe_worker::app::DATABASE_FILE)).unwrap();
    let forgotten = db.execute("DELETE FROM dedupe", []).unwrap();
    assert!(forgotten > 0);
}
