//! Configuration in layers: built-in defaults, then an optional TOML file, then
//! `STRIPE_WORKER_*` environment variables; validated once at start.
//!
//! Every knob has one name, used in the file (inside its section) and, upper-cased with
//! the `STRIPE_WORKER_` prefix, in the environment: `max_in_flight` in `[worker]` is
//! `STRIPE_WORKER_MAX_IN_FLIGHT`. The README's configuration table lists them all.

mod env;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::tenant::TenantConfig;

pub use env::{apply_env, with_deprecated_alias};

/// A configuration problem, reported at start with the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (the OS error is the source, shown once after this).
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    /// An environment variable is unknown or its value does not parse.
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    /// A value is out of its allowed range.
    #[error("invalid configuration: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The fewest receives a message may have before the DLQ: one crash and one retry.
pub const MIN_RECEIVE_COUNT: u32 = 3;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Worker pool and queue behaviour.
    pub worker: WorkerConfig,
    /// Dedupe leases and retention.
    pub dedupe: DedupeConfig,
    /// Retries of transient failures.
    pub retry: RetryConfig,
    /// Which tenant each event belongs to.
    pub tenants: TenantConfig,
    /// Fetching objects from the Stripe API.
    pub hydrate: HydrateConfig,
    /// AWS SDK call limits.
    pub aws: AwsConfig,
}

/// AWS SDK call limits (see [`crate::backend::aws::SdkTimeouts`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// Establishing a connection to an AWS endpoint, milliseconds.
    pub aws_connect_timeout_ms: u64,
    /// Waiting for a response, milliseconds; more than the long poll (`wait_time_secs`).
    pub aws_read_timeout_ms: u64,
    /// One SDK call with its retries, milliseconds.
    pub aws_operation_timeout_ms: u64,
}

impl Default for AwsConfig {
    fn default() -> Self {
        let d = crate::backend::aws::SdkTimeouts::default();
        let ms = |t: Duration| u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
        AwsConfig {
            aws_connect_timeout_ms: ms(d.connect),
            aws_read_timeout_ms: ms(d.read),
            aws_operation_timeout_ms: ms(d.operation),
        }
    }
}

impl AwsConfig {
    /// The SDK timeouts these settings give.
    pub fn sdk_timeouts(&self) -> crate::backend::aws::SdkTimeouts {
        crate::backend::aws::SdkTimeouts {
            connect: Duration::from_millis(self.aws_connect_timeout_ms),
            read: Duration::from_millis(self.aws_read_timeout_ms),
            operation: Duration::from_millis(self.aws_operation_timeout_ms),
        }
    }
}

/// Worker pool and queue behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Concurrent long-polls per domain queue.
    pub pollers_per_queue: usize,
    /// Messages in flight per domain queue at most.
    pub max_in_flight_per_queue: usize,
    /// Messages in flight across all queues at most.
    pub max_in_flight: usize,
    /// Messages per receive, 1 to 10 (the SQS limit).
    pub receive_batch_size: usize,
    /// Long-poll wait, 0 to 20 seconds (the SQS limit).
    pub wait_time_secs: u64,
    /// The queues' visibility timeout; also sets the in-process retry budget and the
    /// heartbeat (every half of it).
    pub visibility_timeout_secs: u64,
    /// Receives before a failing message goes to the DLQ (the redrive policy's
    /// `maxReceiveCount`). A crash of the worker processing a message costs it the one
    /// receive, so a message survives `max_receive_count - 1` crashes.
    pub max_receive_count: u32,
    /// On SIGTERM, how long in-flight messages may take to finish before they are released.
    pub shutdown_grace_secs: u64,
    /// How long a delete may wait for others to fill a batch of 10.
    pub ack_flush_ms: u64,
    /// Let each queue's in-flight limit adapt (AIMD) between `min_in_flight_per_queue` and
    /// `max_in_flight_per_queue`: cut on throttling and slow windows, grow otherwise.
    pub adaptive_concurrency: bool,
    /// With `adaptive_concurrency`: the lowest a queue's limit goes, and where it starts.
    pub min_in_flight_per_queue: usize,
    /// With `adaptive_concurrency`: a window of completions whose mean processing time is
    /// above this many milliseconds cuts the limit; 0 reacts to throttling only.
    pub adaptive_latency_threshold_ms: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            pollers_per_queue: 2,
            max_in_flight_per_queue: 64,
            max_in_flight: 128,
            receive_batch_size: 10,
            wait_time_secs: 20,
            visibility_timeout_secs: 30,
            max_receive_count: 5,
            shutdown_grace_secs: 20,
            ack_flush_ms: 10,
            adaptive_concurrency: false,
            min_in_flight_per_queue: 4,
            adaptive_latency_threshold_ms: 2_000,
        }
    }
}

/// Dedupe leases and retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupeConfig {
    /// For handlers that act outside the store only (none of the built-in ones): how long
    /// a claim holds before another worker may take it over. Renewed every third of it
    /// while the handler runs, so a crashed worker's claim ends at most this long after
    /// the crash. At most half the visibility timeout, so it has ended by the time the
    /// message is visible again.
    pub lease_secs: u64,
    /// How long an applied event is remembered. Stripe retries webhooks for 3 days, so at
    /// least 7 days are required.
    pub retention_days: u64,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        DedupeConfig {
            lease_secs: 15,
            retention_days: 7,
        }
    }
}

/// Retries of transient failures, first in process, then by visibility timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// First in-process retry delay.
    pub initial_delay_ms: u64,
    /// Growth factor between in-process retries.
    pub multiplier: f32,
    /// Longest in-process retry delay.
    pub max_delay_ms: u64,
    /// In-process retries per message receive at most.
    pub max_attempts: usize,
    /// Visibility backoff after a failed receive: this times 2^(receive count - 1)...
    pub visibility_backoff_base_secs: u64,
    /// ...capped here.
    pub visibility_backoff_max_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_delay_ms: 50,
            multiplier: 2.0,
            max_delay_ms: 2_000,
            max_attempts: 4,
            visibility_backoff_base_secs: 2,
            visibility_backoff_max_secs: 300,
        }
    }
}

/// When the worker fetches the current object from the Stripe API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HydrateMode {
    /// Only for thin events, which carry no object.
    #[default]
    Thin,
    /// For every event: strict current-state semantics at the cost of an API call each.
    Always,
}

/// Fetching objects from the Stripe API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HydrateConfig {
    /// `thin` or `always`.
    pub mode: HydrateMode,
}

impl Config {
    /// Defaults, then `file` if given, then the environment; validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        apply_env(&mut config, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parse a TOML file; unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Check every value's range, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let w = &self.worker;
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if w.pollers_per_queue == 0 {
            return invalid("pollers_per_queue", "must be at least 1");
        }
        if !(1..=10).contains(&w.receive_batch_size) {
            return invalid("receive_batch_size", "must be 1 to 10 (the SQS limit)");
        }
        if w.wait_time_secs > 20 {
            return invalid("wait_time_secs", "must be 0 to 20 (the SQS limit)");
        }
        if !(1..=43_200).contains(&w.visibility_timeout_secs) {
            return invalid(
                "visibility_timeout_secs",
                "must be 1 to 43200 (the SQS limit)",
            );
        }
        if w.max_in_flight_per_queue == 0 {
            return invalid("max_in_flight_per_queue", "must be at least 1");
        }
        if w.max_in_flight == 0 {
            return invalid("max_in_flight", "must be at least 1");
        }
        // Only adaptive concurrency reads the floor: without it a small
        // max_in_flight_per_queue is fine whatever the (unused) floor says.
        if w.adaptive_concurrency
            && (w.min_in_flight_per_queue == 0
                || w.min_in_flight_per_queue > w.max_in_flight_per_queue)
        {
            return invalid(
                "min_in_flight_per_queue",
                "must be at least 1 and at most max_in_flight_per_queue when \
                 adaptive_concurrency is on",
            );
        }
        if w.max_receive_count < MIN_RECEIVE_COUNT {
            return Err(ConfigError::Invalid {
                key: "max_receive_count",
                message: format!(
                    "is {}, must be at least {MIN_RECEIVE_COUNT}: each crash of a worker costs \
                     the messages it held one receive, and a healthy message must survive a \
                     crash and a retry",
                    w.max_receive_count
                ),
            });
        }
        if self.dedupe.retention_days < 7 {
            return invalid(
                "retention_days",
                "must be at least 7: Stripe retries deliveries for 3 days",
            );
        }
        if self.dedupe.lease_secs == 0 {
            return invalid("lease_secs", "must be at least 1");
        }
        if self.dedupe.lease_secs * 2 > w.visibility_timeout_secs {
            return Err(ConfigError::Invalid {
                key: "lease_secs",
                message: format!(
                    "lease_secs ({}) must be at most half of visibility_timeout_secs ({}): a \
                     crashed worker's claim must end before its message is visible again \
                     (visibility is extended every half timeout), or every crash costs the \
                     message a second receive; lower lease_secs or raise \
                     visibility_timeout_secs",
                    self.dedupe.lease_secs, w.visibility_timeout_secs
                ),
            });
        }
        let a = &self.aws;
        if a.aws_connect_timeout_ms == 0 {
            return invalid("aws_connect_timeout_ms", "must be at least 1");
        }
        if a.aws_read_timeout_ms <= w.wait_time_secs * 1000 {
            return invalid(
                "aws_read_timeout_ms",
                "must be longer than the long poll (wait_time_secs): a receive waits that long for its answer",
            );
        }
        if a.aws_operation_timeout_ms < a.aws_connect_timeout_ms + a.aws_read_timeout_ms {
            return invalid(
                "aws_operation_timeout_ms",
                "must be at least aws_connect_timeout_ms + aws_read_timeout_ms (one attempt)",
            );
        }
        let r = &self.retry;
        if !(r.multiplier >= 1.0 && r.multiplier.is_finite()) {
            return invalid("multiplier", "must be a number >= 1");
        }
        if r.initial_delay_ms == 0 || r.max_delay_ms < r.initial_delay_ms {
            return invalid("max_delay_ms", "must be >= initial_delay_ms, both above 0");
        }
        if r.visibility_backoff_max_secs > 43_200 {
            return invalid("visibility_backoff_max_secs", "must be at most 43200");
        }
        self.tenants.validate().map_err(|e| ConfigError::Invalid {
            key: "tenants",
            message: e.to_string(),
        })
    }

    /// The visibility timeout as a duration.
    pub fn visibility_timeout(&self) -> Duration {
        Duration::from_secs(self.worker.visibility_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn a_file_overrides_defaults_and_unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[worker]\nmax_in_flight = 7\n[hydrate]\nmode = \"always\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(config.worker.max_in_flight, 7);
        assert_eq!(config.hydrate.mode, HydrateMode::Always);

        std::fs::write(&path, "[worker]\nmax_inflight = 7\n").unwrap();
        let err = Config::load(Some(&path), Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_inflight"), "{err}");
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[worker]\nmax_in_flight = 7\n").unwrap();
        let env = vec![
            ("STRIPE_WORKER_MAX_IN_FLIGHT".to_owned(), "9".to_owned()),
            ("STRIPE_WORKER_DEFAULT_TENANT".to_owned(), "acme".to_owned()),
        ];
        let config = Config::load(Some(&path), env).unwrap();
        assert_eq!(config.worker.max_in_flight, 9);
        assert_eq!(config.tenants.default_tenant.as_deref(), Some("acme"));
    }

    #[test]
    fn the_adaptive_floor_only_binds_with_adaptive_concurrency() {
        let mut config = Config::default();
        config.worker.max_in_flight_per_queue = 2;
        config.validate().unwrap();
        config.worker.adaptive_concurrency = true;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("min_in_flight_per_queue"), "{err}");
    }

    #[test]
    fn a_missing_file_names_it_and_shows_the_os_error_once() {
        let err = Config::load(Some(Path::new("/nonexistent/c.toml")), Vec::new()).unwrap_err();
        let shown = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(
            shown.matches("No such file").count(),
            1,
            "the OS error once: {shown}"
        );
        assert!(shown.contains("/nonexistent/c.toml"), "{shown}");
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        type Breaker = fn(&mut Config);
        let cases: [(&str, Breaker); 13] = [
            ("max_receive_count", |c| c.worker.max_receive_count = 2),
            ("lease_secs", |c| c.dedupe.lease_secs = 16),
            ("visibility_timeout_secs", |c| {
                c.worker.visibility_timeout_secs = 20
            }),
            ("aws_read_timeout_ms", |c| {
                c.aws.aws_read_timeout_ms = 20_000
            }),
            ("aws_operation_timeout_ms", |c| {
                c.aws.aws_operation_timeout_ms = 1
            }),
            ("receive_batch_size", |c| c.worker.receive_batch_size = 11),
            ("wait_time_secs", |c| c.worker.wait_time_secs = 21),
            ("retention_days", |c| c.dedupe.retention_days = 3),
            ("visibility_timeout_secs", |c| {
                c.worker.visibility_timeout_secs = 0
            }),
            ("multiplier", |c| c.retry.multiplier = 0.5),
            ("min_in_flight_per_queue", |c| {
                c.worker.adaptive_concurrency = true;
                c.worker.min_in_flight_per_queue = 0
            }),
            ("min_in_flight_per_queue", |c| {
                c.worker.adaptive_concurrency = true;
                c.worker.min_in_flight_per_queue = c.worker.max_in_flight_per_queue + 1
            }),
            ("max_in_flight_per_queue", |c| {
                c.worker.max_in_flight_per_queue = 0
            }),
        ];
        for (key, break_it) in cases {
            let mut config = Config::default();
            break_it(&mut config);
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
    }
}
