//! Drain: SIGTERM to a worker under load (the binary, `run` on the embedded backend) makes
//! it stop receiving, finish or release what it has in flight within the grace period, and
//! exit 0; a second run then finishes the stream with nothing lost or applied twice.

use crate::reliability_support;

use std::time::{Duration, Instant};

use reliability_support::{AppliedLog, LOCAL_TIMING, Worker, write_config, write_stream};
use stripe_worker::app::open_local;
use stripe_worker::backend::{Queue, StateStore};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::domain::Domain;

#[test]
fn sigterm_under_load_drains_and_exits_zero_then_a_rerun_finishes_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stream = write_stream(dir.path(), 2_000, 17, 2, 2);
    let config_path = dir.path().join("config.toml");
    write_config(&config_path, &stream.tenants, LOCAL_TIMING);
    let config = Config::from_file(&config_path).unwrap();
    let mut worker = Worker::new(
        vec!["--data-dir".into(), data.to_str().unwrap().into()],
        config_path.clone(),
        dir.path().join("logs"),
    );
    worker.publish(&stream.path);

    let mut child = worker.command(&["run"]).spawn().unwrap();
    // SIGTERM once the worker is applying, not after a fixed sleep: a fast machine drains
    // the whole stream in a second, a loaded one has not started after two.
    let started = Instant::now();
    while AppliedLog::read(&worker.logs()).total() < 50 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the worker applied nothing in 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let signalled = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // The grace period, plus time to flush deletes and close the database.
    let deadline = Duration::from_secs(config.worker.shutdown_grace_secs + 5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > deadline {
            child.kill().unwrap();
            panic!("the worker did not exit within {deadline:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a drained worker exits 0: {status:?}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let remaining = runtime.block_on(async {
        let backend = open_local(&data, &config, system_clock()).unwrap();
        let mut remaining = 0;
        for domain in Domain::ALL {
            let (main, _) = backend.queues.get(domain).stats().await.unwrap();
            remaining += main.visible + main.in_flight + main.delayed;
        }
        remaining
    });
    assert!(
        remaining > 0,
        "SIGTERM came mid-stream (else the test proves nothing)"
    );
    eprintln!("{remaining} messages left after the drain");

    let rerun = worker
        .command(&["run", "--until-idle", "--idle-secs", "4"])
        .status()
        .unwrap();
    assert!(rerun.success());
    runtime.block_on(async {
        let backend = open_local(&data, &config, system_clock()).unwrap();
        let records = backend.state.export(None).await.unwrap();
        let mismatches = stream.stream.expected.compare(&records);
        assert!(mismatches.is_empty(), "{}", mismatches[0]);
        let mut dead = 0;
        for domain in Domain::ALL {
            let (main, dlq) = backend.queues.get(domain).stats().await.unwrap();
            assert_eq!((main.visible, main.in_flight, main.delayed), (0, 0, 0));
            dead += dlq.visible as usize;
        }
        assert_eq!(dead, stream.expected_dead_letters);
    });
    let applied = AppliedLog::read(&worker.logs());
    assert!(
        applied.doubles().is_empty(),
        "{}",
        applied.describe_doubles()
    );
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
}
