//! Crash safety on the embedded backend: the worker process is killed with SIGKILL at
//! random points while it drains a stream, restarted each time, and at the end the state
//! must equal the generator's expected state with nothing left in the queues or DLQs.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use stripe_worker::app::open_local;
use stripe_worker::backend::{Queue, StateStore};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::demo::generator::{GeneratorConfig, generate};
use stripe_worker::domain::Domain;
use stripe_worker::event::envelope;

const BIN: &str = env!("CARGO_BIN_EXE_stripe-worker");

/// How many times the worker is killed; `STRIPE_WORKER_CRASH_KILLS` raises it.
fn kills() -> usize {
    std::env::var("STRIPE_WORKER_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

fn write_config(path: &Path, tenants: &[String]) {
    let mut toml = String::from(
        "[worker]\nwait_time_secs = 1\nvisibility_timeout_secs = 2\nmax_receive_count = 50\n\
         [dedupe]\nlease_secs = 2\n[retry]\nvisibility_backoff_base_secs = 1\n[tenants]\n",
    );
    toml.push_str(&format!("tenants = {tenants:?}\n[tenants.destinations]\n"));
    for t in tenants {
        toml.push_str(&format!("ed_crash_{} = \"{t}\"\n", t.replace('-', "_")));
    }
    std::fs::write(path, toml).unwrap();
}

#[test]
fn killing_the_worker_at_random_points_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_path = dir.path().join("config.toml");
    let stream = generate(&GeneratorConfig {
        events: 1_500,
        tenants: 2,
        seed: 11,
    });
    let mut tenants: Vec<String> = stream.events.iter().map(|e| e.tenant.clone()).collect();
    tenants.sort();
    tenants.dedup();
    write_config(&config_path, &tenants);

    // Every event by webhook, a third also by partner snapshot: duplicates across sources.
    let lines = dir.path().join("events.jsonl");
    let mut file = std::fs::File::create(&lines).unwrap();
    for (i, generated) in stream.events.iter().enumerate() {
        let mut entries = vec![
            envelope::webhook_snapshot_entry(&generated.event, &generated.tenant, 0, None).unwrap(),
        ];
        if i % 3 == 0 {
            let destination = format!("ed_crash_{}", generated.tenant.replace('-', "_"));
            entries.push(envelope::partner_snapshot_entry(&generated.event, &destination).unwrap());
        }
        for entry in entries {
            let env = envelope::envelope_json(&entry, &format!("crash-{i}"), 0, "us-east-1", None)
                .unwrap();
            writeln!(file, "{env}").unwrap();
        }
    }
    drop(file);

    let worker_args = |extra: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(extra)
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    };
    let published = worker_args(&["publish", "--file", lines.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(published.success());

    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..kills() {
        let mut child = worker_args(&["run", "--until-idle", "--idle-secs", "1"])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
        child.kill().unwrap(); // SIGKILL: no drain, no flush.
        child.wait().unwrap();
    }
    let last = worker_args(&["run", "--until-idle", "--idle-secs", "2"])
        .status()
        .unwrap();
    assert!(last.success(), "the final worker run exits 0 once idle");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let config = Config::from_file(&config_path).unwrap();
        let backend = open_local(&data, &config, system_clock()).unwrap();
        let records = backend.state.export(None).await.unwrap();
        let mismatches = stream.expected.compare(&records);
        assert!(
            mismatches.is_empty(),
            "{} mismatches, first: {}",
            mismatches.len(),
            mismatches[0]
        );
        for domain in Domain::ALL {
            let (main, dlq) = backend.queues.get(domain).stats().await.unwrap();
            assert_eq!(
                (main.visible, main.in_flight, main.delayed, dlq.visible),
                (0, 0, 0, 0),
                "{domain}"
            );
        }
    });
}
