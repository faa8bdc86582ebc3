//! The load simulator: latency and capacity wrappers, the bench engine over the memory
//! and SQLite backends, adaptive concurrency against a throttling downstream, and the
//! `bench` command. Figures are printed by the benchmark, never asserted here: these
//! tests check that every message is accounted for and the wrappers do what they say.

use std::sync::Arc;
use std::time::Duration;

use stripe_worker::backend::doubles::latency::{Capacity, Gate, LatencySpec, Latent, Op};
use stripe_worker::backend::doubles::memory::MemoryDedupe;
use stripe_worker::backend::{BackendError, Claim, DedupeKey, DedupeStore};
use stripe_worker::bench::{AdaptiveOptions, BenchBackend, BenchOptions, run};
use stripe_worker::config::Config;
use stripe_worker::worker::PoolSettings;

fn key(id: &str) -> DedupeKey {
    DedupeKey {
        tenant: "acme".into(),
        handler: "h".into(),
        dedupe_id: id.into(),
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn latent_delays_every_call_by_its_latency_and_counts_it() {
    let store = Latent::new(
        MemoryDedupe::new(),
        LatencySpec {
            mean: ms(5),
            jitter: 0.0,
        },
        1,
    );
    // Sleeps never end early, so the elapsed time is at least the injected latency.
    let started = tokio::time::Instant::now();
    let claim = store.claim(&key("e1"), 0, ms(60_000)).await.unwrap();
    assert!(started.elapsed() >= ms(5));
    let Claim::Claimed(token) = claim else {
        panic!("first claim must succeed: {claim:?}")
    };
    store.renew(&key("e1"), &token, 0, ms(1000)).await.unwrap();
    assert!(started.elapsed() >= ms(10));
    assert_eq!(store.counts().get(Op::Claim), 1);
    assert_eq!(store.counts().get(Op::Renew), 1);
    assert_eq!(store.counts().get(Op::Put), 0);
}

#[tokio::test]
async fn jitter_never_goes_below_its_spread() {
    let store = Latent::new(
        MemoryDedupe::new(),
        LatencySpec {
            mean: ms(10),
            jitter: 0.5,
        },
        7,
    );
    for i in 0..20 {
        let started = tokio::time::Instant::now();
        store
            .claim(&key(&format!("e{i}")), 0, ms(1000))
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(took >= ms(5), "{took:?}");
    }
    assert_eq!(store.counts().get(Op::Claim), 20);
}

#[tokio::test]
async fn capacity_throttles_the_calls_beyond_it() {
    let gate = Gate::new(2);
    let store = Capacity::new(
        Latent::new(
            MemoryDedupe::new(),
            LatencySpec {
                mean: ms(10),
                jitter: 0.0,
            },
            1,
        ),
        Arc::clone(&gate),
    );
    let keys = [key("a"), key("b"), key("c")];
    // All three are first polled together, before any can finish.
    let (a, b, c) = tokio::join!(
        store.claim(&keys[0], 0, ms(1000)),
        store.claim(&keys[1], 0, ms(1000)),
        store.claim(&keys[2], 0, ms(1000)),
    );
    let throttled = [&a, &b, &c]
        .iter()
        .filter(|r| matches!(r, Err(BackendError::Throttled { .. })))
        .count();
    assert_eq!(throttled, 1, "{a:?} {b:?} {c:?}");
    assert_eq!(gate.throttled(), 1);
    assert_eq!(gate.peak(), 2);
    // Once the calls are done, capacity is free again.
    store.claim(&key("c"), 0, ms(1000)).await.unwrap();
    // The refused call reached nothing: only the two admitted ones were made.
    assert_eq!(store.inner().counts().get(Op::Claim), 3);
}

fn small(messages: usize, concurrency: Vec<usize>) -> BenchOptions {
    BenchOptions {
        messages,
        concurrency,
        tenants: 2,
        stall_timeout: Duration::from_secs(20),
        ..BenchOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_completes_every_message_at_each_concurrency() {
    let mut seen = 0;
    let report = run(&small(400, vec![4, 32]), |_| seen += 1).await.unwrap();
    assert_eq!(seen, 2);
    assert_eq!(report.points.len(), 2);
    assert_eq!(
        report.mix.subscription + report.mix.payment + report.mix.customer,
        400
    );
    for point in &report.points {
        assert!(!point.stalled);
        assert!(point.completed >= 400, "{point:?}");
        assert_eq!(
            point.applied + point.duplicates + point.ignored + point.dead_lettered,
            point.completed as u64,
            "{point:?}"
        );
        assert_eq!(point.dead_lettered, 0);
        // Without latency there is no bound to compare with.
        assert_eq!(point.bound_events_per_sec, None);
        assert!(point.path_calls.store > 0.0);
        assert!(point.events_per_sec > 0.0 && point.cpu_us_per_event > 0.0);
        assert!(point.p99_ms >= point.p50_ms);
    }
    assert_eq!(report.points[0].pollers_per_queue, 1);
    assert_eq!(report.points[1].pollers_per_queue, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_latency_the_bound_follows_the_critical_path() {
    let options = BenchOptions {
        sqs: LatencySpec {
            mean: ms(4),
            jitter: 0.0,
        },
        ddb: LatencySpec {
            mean: ms(1),
            jitter: 0.0,
        },
        ..small(300, vec![16])
    };
    let report = run(&options, |_| {}).await.unwrap();
    let point = &report.points[0];
    let expected = 4.0 + point.path_calls.store * 1.0 + point.path_calls.settle * 4.0;
    assert!(
        // The report gives the path to the nanosecond (six decimals of a millisecond).
        (point.critical_path_ms - expected).abs() < 1e-6,
        "{point:?}"
    );
    let bound = point.bound_events_per_sec.unwrap();
    assert!(
        (bound / (16.0 / (expected / 1000.0)) - 1.0).abs() < 1e-6,
        "{point:?}"
    );
    assert!(point.efficiency.unwrap() > 0.0);
    // Every message waited for a receive and at least a claim.
    assert!(point.p50_ms >= 5.0, "{point:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_and_every_message_still_completes() {
    let options = BenchOptions {
        fault_rate: 0.05,
        ..small(300, vec![16])
    };
    let report = run(&options, |_| {}).await.unwrap();
    let point = &report.points[0];
    assert!(point.completed >= 300 && !point.stalled, "{point:?}");
    assert!(point.faults_injected > 0);
    assert!(point.retried > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_limit_backs_off_a_throttling_downstream() {
    let base = BenchOptions {
        ddb: LatencySpec {
            mean: ms(2),
            jitter: 0.0,
        },
        throttle_above: Some(8),
        ..small(1_500, vec![64])
    };
    // A fixed limit far above the capacity: some messages exhaust their in-process
    // retries and wait out a visibility backoff, so this run may stop at the stall
    // timeout with a few messages still to come. Only its throttles matter here.
    let fixed = run(
        &BenchOptions {
            stall_timeout: Duration::from_secs(3),
            ..base.clone()
        },
        |_| {},
    )
    .await
    .unwrap();
    let adaptive = run(
        &BenchOptions {
            adaptive: Some(AdaptiveOptions {
                min_in_flight: 2,
                latency_threshold_ms: 0,
            }),
            ..base.clone()
        },
        |_| {},
    )
    .await
    .unwrap();
    let (f, a) = (&fixed.points[0], &adaptive.points[0]);
    assert!(a.completed >= 1_500 && !a.stalled, "{a:?}");
    assert_eq!(f.limit_final, None);
    let limit = a.limit_final.unwrap();
    // Three queues of at most 64 each: the limits came down from where a fixed
    // configuration sits, and stayed at or above the minimum.
    assert!((6..3 * 64).contains(&limit), "{a:?}");
    assert!(f.throttled_calls > 0);
    assert!(
        a.throttled_calls < f.throttled_calls,
        "adaptive {} vs fixed {}",
        a.throttled_calls,
        f.throttled_calls
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_backend_runs_under_the_engine() {
    let options = BenchOptions {
        backend: BenchBackend::Local,
        ..small(200, vec![16])
    };
    let report = run(&options, |_| {}).await.unwrap();
    let point = &report.points[0];
    assert!(point.completed >= 200 && !point.stalled, "{point:?}");
    assert_eq!(point.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_left_waiting() {
    let options = BenchOptions {
        backlog: 2_000,
        ..small(200, vec![8])
    };
    let report = run(&options, |_| {}).await.unwrap();
    let point = &report.points[0];
    assert!(point.completed >= 200, "{point:?}");
    assert!(
        point.completed < 2_200,
        "the backlog is not processed: {point:?}"
    );
}

#[test]
fn invalid_options_are_errors() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(run(&small(10, vec![0]), |_| {}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("concurrency 0"), "{err}");
    assert!(rt.block_on(run(&small(0, vec![4]), |_| {})).is_err());
}

#[test]
fn adaptive_knobs_reach_the_pool_settings() {
    let env = vec![
        (
            "STRIPE_WORKER_ADAPTIVE_CONCURRENCY".to_owned(),
            "true".to_owned(),
        ),
        (
            "STRIPE_WORKER_MIN_IN_FLIGHT_PER_QUEUE".to_owned(),
            "8".to_owned(),
        ),
        (
            "STRIPE_WORKER_ADAPTIVE_LATENCY_THRESHOLD_MS".to_owned(),
            "0".to_owned(),
        ),
    ];
    let config = Config::load(None, env).unwrap();
    let settings = PoolSettings::from_config(&config);
    assert!(settings.adaptive.enabled);
    assert_eq!(settings.adaptive.min, 8);
    assert_eq!(settings.adaptive.latency_threshold, None);
    let defaults = PoolSettings::from_config(&Config::default());
    assert!(!defaults.adaptive.enabled);
    assert_eq!(defaults.adaptive.latency_threshold, Some(ms(2000)));
}

#[test]
fn the_bench_command_prints_json() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stripe-worker"))
        .args([
            "bench",
            "--messages",
            "200",
            "--concurrency",
            "8,16",
            "--ddb-latency",
            "1ms",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[1]["concurrency"], 16);
    assert!(points[0]["completed"].as_u64().unwrap() >= 200);
    assert!(points[0]["bound_events_per_sec"].as_f64().unwrap() > 0.0);
    assert_eq!(report["ddb_latency_ms"], 1.0);
}

#[test]
fn the_bench_command_prints_a_table_and_rejects_bad_durations() {
    let bin = env!("CARGO_BIN_EXE_stripe-worker");
    let out = std::process::Command::new(bin)
        .args(["bench", "--messages", "100", "--concurrency", "4"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("events/s") && text.contains("critical path"),
        "{text}"
    );
    let out = std::process::Command::new(bin)
        .args(["bench", "--sqs-latency", "20"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("20"));
}
