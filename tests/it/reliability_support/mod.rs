//! Shared pieces of the reliability tests: the stream a worker child process drains, the
//! worker command line, and the audit of the worker's "applied" log lines, which is how the
//! tests prove that no (tenant, handler, event) was applied twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use stripe_worker::demo::generator::{GeneratedStream, GeneratorConfig, generate};
use stripe_worker::event::envelope;
use stripe_worker::worker::APPLIED_LOG_TARGET;

pub mod inproc;

/// The prefix of the reliability tests' own environment variables
/// (`STRIPE_WORKER_CRASH_KILLS`, ...).
pub const TEST_KNOB_PREFIX: &str = "STRIPE_WORKER_CRASH_";

/// The worker binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_stripe-worker");

/// The log filter of every child worker: errors, and the one line per applied event.
pub fn worker_log_filter() -> String {
    format!("error,{APPLIED_LOG_TARGET}=debug")
}

/// The partner destination of a tenant in these tests.
pub fn destination(tenant: &str) -> String {
    format!("ed_rely_{}", tenant.replace('-', "_"))
}

/// A destination no tenant is mapped to: its events end in the DLQ as `unknown_tenant`.
pub const UNMAPPED_DESTINATION: &str = "ed_rely_nobody";

/// A generated stream written as JSON-lines EventBridge envelopes for `publish --file`.
pub struct StreamFile {
    /// The generator's stream (events and the expected state).
    pub stream: GeneratedStream,
    /// The tenants of the stream.
    pub tenants: Vec<String>,
    /// The envelopes file.
    pub path: PathBuf,
    /// How many of them must end in a DLQ with `unknown_tenant`.
    pub expected_dead_letters: usize,
}

/// Generate `events` events and write every one by webhook, every `partner_every`-th also
/// by partner snapshot (a cross-source duplicate), plus `poison` partner envelopes from an
/// unmapped destination.
pub fn write_stream(
    dir: &Path,
    events: usize,
    seed: u64,
    partner_every: usize,
    poison: usize,
) -> StreamFile {
    let stream = generate(&GeneratorConfig {
        events,
        tenants: 2,
        seed,
    });
    let mut tenants: Vec<String> = stream.events.iter().map(|e| e.tenant.clone()).collect();
    tenants.sort();
    tenants.dedup();
    let path = dir.join("events.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    let mut write = |entry: &stripe_worker::backend::BusEntry, id: String| {
        let env = envelope::envelope_json(entry, &id, 0, "us-east-1", None).unwrap();
        writeln!(file, "{env}").unwrap();
    };
    for (i, generated) in stream.events.iter().enumerate() {
        let webhook =
            envelope::webhook_snapshot_entry(&generated.event, &generated.tenant, 0, None).unwrap();
        write(&webhook, format!("rely-{i}"));
        if i % partner_every == 0 {
            let partner =
                envelope::partner_snapshot_entry(&generated.event, &destination(&generated.tenant))
                    .unwrap();
            write(&partner, format!("rely-{i}-p"));
        }
    }
    // Customer events from an unmapped destination: routed, then dead-lettered.
    let customers: Vec<_> = stream
        .events
        .iter()
        .filter(|g| g.event["type"].as_str() == Some("customer.created"))
        .take(poison)
        .collect();
    assert_eq!(customers.len(), poison, "the stream has enough customers");
    for (i, generated) in customers.iter().enumerate() {
        let entry =
            envelope::partner_snapshot_entry(&generated.event, UNMAPPED_DESTINATION).unwrap();
        write(&entry, format!("rely-poison-{i}"));
    }
    drop(file);
    StreamFile {
        stream,
        tenants,
        path,
        expected_dead_letters: poison,
    }
}

/// The timeouts and concurrency of a test worker.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Queue visibility timeout.
    pub visibility_secs: u64,
    /// Dedupe lease.
    pub lease_secs: u64,
    /// Messages in flight at most (per queue and in all).
    pub max_in_flight: usize,
}

/// Short timeouts for the embedded backend, whose calls take milliseconds.
pub const LOCAL_TIMING: Timing = Timing {
    visibility_secs: 3,
    lease_secs: 1,
    max_in_flight: 64,
};

/// A worker configuration for fast crash recovery: a short visibility timeout, so the
/// messages of a killed worker come back within seconds (the lease, for handlers acting
/// outside the store, at most half of it as validation requires). Everything else, the
/// receives before the DLQ (`max_receive_count`) included, keeps its default.
pub fn write_config(path: &Path, tenants: &[String], timing: Timing) {
    let Timing {
        visibility_secs,
        lease_secs,
        max_in_flight,
    } = timing;
    let mut toml = format!(
        "[worker]\nwait_time_secs = 1\nvisibility_timeout_secs = {visibility_secs}\n\
         shutdown_grace_secs = 10\nmax_in_flight = {max_in_flight}\n\
         max_in_flight_per_queue = {max_in_flight}\n[dedupe]\nlease_secs = {lease_secs}\n\
         [retry]\nvisibility_backoff_base_secs = 1\n[tenants]\n"
    );
    toml.push_str(&format!("tenants = {tenants:?}\n[tenants.destinations]\n"));
    for t in tenants {
        toml.push_str(&format!("{} = \"{t}\"\n", destination(t)));
    }
    std::fs::write(path, toml).unwrap();
}

/// Runs the worker binary with one backend's arguments, each run logging to its own file.
pub struct Worker {
    /// `--backend ...` and its location arguments.
    pub backend_args: Vec<String>,
    /// The configuration file.
    pub config: PathBuf,
    /// Where each run's log goes.
    pub log_dir: PathBuf,
    /// Extra environment of every run.
    pub env: Vec<(String, String)>,
    runs: usize,
}

impl Worker {
    /// A worker over these backend arguments.
    pub fn new(backend_args: Vec<String>, config: PathBuf, log_dir: PathBuf) -> Self {
        std::fs::create_dir_all(&log_dir).unwrap();
        Worker {
            backend_args,
            config,
            log_dir,
            env: Vec::new(),
            runs: 0,
        }
    }

    /// A command running `args` (a subcommand and its options) on the backend, with JSON
    /// logs to a new file in the log directory and stdout discarded.
    pub fn command(&mut self, args: &[&str]) -> Command {
        self.runs += 1;
        let log = std::fs::File::create(self.log_dir.join(format!("run-{:04}.jsonl", self.runs)))
            .unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--log-format")
            .arg("json")
            .args(args)
            .args(&self.backend_args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", worker_log_filter())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        // The tests' own knobs share the worker's prefix, whose variables must all be
        // configuration keys: keep them from the worker.
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with(TEST_KNOB_PREFIX)) {
            cmd.env_remove(name);
        }
        cmd
    }

    /// Publish the envelopes file on the bus; panics unless it succeeds.
    pub fn publish(&mut self, file: &Path) {
        let status = self
            .command(&["publish", "--file", file.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "publish failed; logs in {:?}",
            self.log_dir
        );
    }

    /// Every log file written so far.
    pub fn logs(&self) -> Vec<PathBuf> {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(&self.log_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        logs.sort();
        logs
    }
}

/// The applied lines of the worker logs, counted per (tenant, handler, dedupe id).
#[derive(Debug, Default)]
pub struct AppliedLog {
    /// Applied lines per key.
    pub counts: BTreeMap<(String, String, String), usize>,
    /// Lines that were not JSON (a SIGKILL can cut the last line of a log short).
    pub unparsable: usize,
    /// Error lines, for diagnosis.
    pub errors: Vec<String>,
    /// The applied lines per key, for diagnosis.
    pub lines: BTreeMap<(String, String, String), Vec<String>>,
}

impl AppliedLog {
    /// Read the applied lines of these JSON log files.
    pub fn read(paths: &[PathBuf]) -> AppliedLog {
        let mut log = AppliedLog::default();
        for path in paths {
            let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
            log.add_lines(&text);
        }
        log
    }

    /// Count the applied lines of one JSON log text.
    pub fn add_lines(&mut self, text: &str) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                self.unparsable += 1;
                continue;
            };
            if value["level"] == "ERROR" {
                self.errors.push(line.to_owned());
            }
            if value["target"] != APPLIED_LOG_TARGET {
                continue;
            }
            let fields = &value["fields"];
            let field = |name: &str| {
                fields[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("applied line without {name}: {line}"))
                    .to_owned()
            };
            let key = (field("tenant"), field("handler"), field("dedupe_id"));
            self.lines
                .entry(key.clone())
                .or_default()
                .push(line.to_owned());
            *self.counts.entry(key).or_default() += 1;
        }
    }

    /// The keys applied more than once.
    pub fn doubles(&self) -> Vec<(&(String, String, String), usize)> {
        self.counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k, *n))
            .collect()
    }

    /// The log lines of the first few keys applied more than once.
    pub fn describe_doubles(&self) -> String {
        self.doubles()
            .iter()
            .take(3)
            .map(|(key, _)| format!("{key:?}:\n  {}", self.lines[*key].join("\n  ")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every applied line.
    pub fn total(&self) -> usize {
        self.counts.values().sum()
    }
}
