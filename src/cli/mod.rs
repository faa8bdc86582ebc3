//! The command line: parsing (clap) and dispatch to library functions. Each command that
//! touches a backend works on the embedded backend (`--backend local`, the default) and on
//! AWS (`--backend aws`); the code above the backend seams is the same.

mod aws;
pub mod bench;
mod commands;
pub mod config_check;
pub mod health;
pub mod ops;
pub mod progress;
pub mod prometheus;
pub mod reconcile;
pub mod routes;
pub mod serve_api;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::domain::Domain;
pub use crate::telemetry::LogFormat;

/// The version `--version` prints: the package version, the git commit and the build date
/// (see build.rs; `unknown` where the build had no git).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("BUILD_GIT_COMMIT"),
    ", built ",
    env!("BUILD_DATE_UTC"),
    ")"
);

/// Turns Stripe billing events into correct, queryable billing state.
///
/// Events arrive from Stripe webhooks (verified by `ingest`) and Stripe event destinations
/// on Amazon EventBridge, are routed to one queue per domain (subscription, payment,
/// customer), deduplicated, and applied to per-tenant state in order.
///
/// Start with `stripe-worker demo`: the whole pipeline on the embedded backend.
#[derive(Debug, Parser)]
#[command(name = "stripe-worker", version = VERSION, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Pretty, env = "STRIPE_WORKER_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole job on the embedded backend: generate a realistic stream, publish it on
    /// every path with duplicates, shuffling, poison and faults, drain it, check the state.
    Demo(DemoArgs),
    /// Run the worker until stopped (SIGINT/SIGTERM drain in-flight messages first).
    Run(RunArgs),
    /// Run the webhook ingress: verify `Stripe-Signature` and publish events to the bus.
    Ingest(IngestArgs),
    /// Put events on the bus (where the rules route them) or straight on a queue.
    Publish(PublishArgs),
    /// Show one customer's subscriptions and latest invoice.
    Status(StatusArgs),
    /// Serve the read API for other services: a customer's status, one object by id,
    /// subscriptions by status, as JSON, with a bearer token per tenant
    /// (STRIPE_WORKER_API_TOKEN_<TENANT>). See the README, "Read API".
    ServeApi(serve_api::ServeApiArgs),
    /// Billing state as a whole.
    State {
        /// What to do with the state.
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Create the AWS resources (bus, queues and DLQs, rules with the routing patterns,
    /// archive, DynamoDB tables), idempotently. For emulators and dev accounts; Terraform in
    /// deploy/ is the production path and installs the same patterns.
    Setup(SetupArgs),
    /// Show the routing definition or the EventBridge patterns it renders.
    Routes(routes::RoutesArgs),
    /// Test EventBridge event patterns.
    Pattern(routes::PatternArgs),
    /// Load-simulate the worker engine over injected latency, faults and throttling, at
    /// several concurrencies (see the README, "Tuning concurrency").
    Bench(bench::BenchArgs),
    /// Queue depths per domain: visible, in flight, delayed, oldest age, and the DLQs.
    Queues(ops::QueuesArgs),
    /// Dead-letter queues: list with reasons, show, redrive, purge.
    Dlq {
        /// What to do with a dead-letter queue.
        #[command(subcommand)]
        command: ops::DlqCommand,
    },
    /// Replay a time window of archived events through the routing (dedupe applies each
    /// once; --reprocess re-applies).
    Replay(ops::ReplayArgs),
    /// Publish a tenant's events that failed to reach a webhook endpoint
    /// (`delivery_success=false`, webhook endpoints only; `sweep` covers every path).
    Backfill(ops::BackfillArgs),
    /// Import every object the handlers keep from the Stripe API (a new deployment on an
    /// existing account); resumable.
    Import(reconcile::ImportArgs),
    /// Compare the stored state with the Stripe API field by field (exit 3 when they
    /// differ); --repair writes Stripe's version.
    Verify(reconcile::VerifyArgs),
    /// Publish a tenant's events since a time that the worker never applied (listed from
    /// the Stripe API, checked against the dedupe store).
    Sweep(reconcile::SweepArgs),
    /// GET a URL and exit 0 on a 2xx answer, else 1 (container health checks).
    Healthcheck(health::HealthcheckArgs),
    /// The configuration.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script (e.g. `stripe-worker completions bash >
    /// /etc/bash_completion.d/stripe-worker`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the file and the environment (secrets included) and print the effective
    /// configuration, secrets redacted; exit 1 naming the first problem.
    Check(config_check::ConfigCheckArgs),
}

/// Exit codes, the same for every command (as `grep` and `diff` use them).
pub mod exit {
    /// A runtime failure: the backend, a file, the network.
    pub const RUNTIME: u8 = 1;
    /// A usage error: an unknown option, a value out of range, an invalid pattern (clap
    /// exits with this code for what it rejects).
    pub const USAGE: u8 = 2;
    /// The command ran and found differences (`verify`).
    pub const DIFFERENCES: u8 = 3;
    /// Ctrl-C (128 + SIGINT), as shells report it.
    pub const INTERRUPTED: u8 = 130;
}

/// A value parser for a share from 0 to `max` (a usage error, exit 2, outside it).
pub(crate) fn share_up_to(max: f64) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |raw: &str| {
        let value: f64 = raw
            .trim()
            .parse()
            .map_err(|_| format!("`{raw}` is not a number"))?;
        if (0.0..=max).contains(&value) {
            Ok(value)
        } else {
            Err(format!("must be between 0 and {max}"))
        }
    }
}

/// Where the backend is: the embedded SQLite files, or AWS.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// `local`: SQLite files in --data-dir. `aws`: SQS, DynamoDB and EventBridge, found by
    /// --prefix, with the standard AWS credential chain and AWS_ENDPOINT_URL.
    #[arg(long, value_enum, default_value_t = BackendKind::Local, env = "STRIPE_WORKER_BACKEND")]
    pub backend: BackendKind,
    /// Directory of the embedded backend's files.
    #[arg(
        long,
        default_value = "stripe-worker-data",
        env = "STRIPE_WORKER_DATA_DIR"
    )]
    pub data_dir: PathBuf,
    /// Name prefix of the AWS resources (e.g. `ai-nexus-dev-stripe`).
    #[arg(long, default_value = "stripe-worker", env = "STRIPE_WORKER_PREFIX")]
    pub prefix: String,
    /// A TOML configuration file (see the README's configuration table).
    #[arg(long, env = "STRIPE_WORKER_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `setup` options: the backend arguments (`--backend aws --prefix P`).
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print one JSON document (every resource, created or found, and the queue URLs)
    /// instead of the lines.
    #[arg(long)]
    pub json: bool,
}

/// Which backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The embedded SQLite backend.
    Local,
    /// SQS, DynamoDB and EventBridge.
    Aws,
}

/// `demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// About how many Stripe events to generate.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// How many tenants share the stream (at least 1).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..))]
    pub tenants: u16,
    /// Seed for the generator, shuffling, duplicates and faults.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Keep the SQLite files here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Share of dedupe, state and Stripe API calls that fail transiently, 0 to 0.5.
    #[arg(long, default_value_t = 0.02, value_parser = share_up_to(0.5))]
    pub fault_rate: f64,
    /// Generate, publish, drain and check the stream this many events at a time, each
    /// chunk with tenants of its own: memory stays flat however many events (soaks).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_events: Option<u64>,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Exit 0 once every queue has stayed empty for --idle-secs (for scripts and tests).
    #[arg(long)]
    pub until_idle: bool,
    /// With --until-idle: how long the queues must stay empty.
    #[arg(long, default_value_t = 3)]
    pub idle_secs: u64,
    /// Only these domains' queues (default: all).
    #[arg(long, value_delimiter = ',')]
    pub domains: Vec<Domain>,
    /// Also run the webhook ingress in this process.
    #[arg(long)]
    pub ingest: bool,
    /// Ingress options (with --ingest).
    #[command(flatten)]
    pub ingress: IngressOptions,
    /// Stripe API options (for thin events).
    #[command(flatten)]
    pub stripe_api: StripeApiOptions,
    /// Serve `/healthz` and `/readyz` on this address (e.g. `0.0.0.0:9090`); off by default.
    #[arg(long, env = "STRIPE_WORKER_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Sweep every tenant with an API key for missed events this often (e.g. `15m`),
    /// from a watermark kept in the backend; off by default.
    #[arg(long, value_parser = bench::parse_duration, env = "STRIPE_WORKER_SWEEP_EVERY")]
    pub sweep_every: Option<std::time::Duration>,
    /// Also serve Prometheus `/metrics` on the admin address (for teams without an
    /// OpenTelemetry collector).
    #[arg(long, requires = "admin_listen", env = "STRIPE_WORKER_PROMETHEUS")]
    pub prometheus: bool,
    /// Also serve the read API (`serve-api`'s routes and tokens) on the admin address.
    #[arg(long, requires = "admin_listen", env = "STRIPE_WORKER_ADMIN_API")]
    pub admin_api: bool,
    /// The read API's tokens (with --admin-api).
    #[command(flatten)]
    pub api_tokens: serve_api::ApiTokenOptions,
    /// Log a progress line (rates, in flight, backlog) this often, in seconds; 0 turns it off.
    #[arg(long, default_value_t = 60, env = "STRIPE_WORKER_PROGRESS_SECS")]
    pub progress_secs: u64,
}

/// `ingest` options.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Where the backend is (the bus events are published to).
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Ingress options.
    #[command(flatten)]
    pub ingress: IngressOptions,
}

/// The webhook ingress's options. Secrets come from `STRIPE_WEBHOOK_SECRET` (the default
/// tenant's; comma-separated while rotating), `STRIPE_WEBHOOK_SECRET_<TENANT>`, or one file
/// per tenant in --webhook-secrets-dir; they are never logged.
#[derive(Debug, Clone, Args)]
pub struct IngressOptions {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "STRIPE_WORKER_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// Directory with one file per tenant holding its webhook secrets, one per line (how
    /// Kubernetes and ECS mount secrets).
    #[arg(long, env = "STRIPE_WORKER_WEBHOOK_SECRETS_DIR")]
    pub webhook_secrets_dir: Option<PathBuf>,
    /// Which entries a verified event becomes: snapshot, thin or both.
    #[arg(long, default_value = "snapshot", env = "STRIPE_WORKER_PUBLISH_STYLES")]
    pub publish_styles: String,
    /// Largest accepted signature age (either way), seconds.
    #[arg(long, default_value_t = 300, env = "STRIPE_WORKER_TOLERANCE_SECS")]
    pub tolerance_secs: u64,
    /// Largest accepted body, bytes (larger: 413).
    #[arg(long, default_value_t = 1024 * 1024, env = "STRIPE_WORKER_MAX_BODY_BYTES")]
    pub max_body_bytes: usize,
    /// A connection that has not sent a request's headers in this many seconds is closed.
    #[arg(long, default_value_t = 10, env = "STRIPE_WORKER_HEADER_READ_TIMEOUT_SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// A request whose body has not arrived in this many seconds is answered 408.
    #[arg(long, default_value_t = 10, env = "STRIPE_WORKER_BODY_READ_TIMEOUT_SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_secs: u64,
}

/// Where thin events' objects are fetched from. Keys come from `STRIPE_API_KEY` (the
/// default tenant's), `STRIPE_API_KEY_<TENANT>`, or one file per tenant in
/// --stripe-keys-dir.
#[derive(Debug, Clone, Args)]
pub struct StripeApiOptions {
    /// The Stripe API base URL (tests point it at a local double) [default:
    /// https://api.stripe.com]. `STRIPE_API_BASE_URL` is read as a deprecated alias.
    #[arg(long, env = "STRIPE_WORKER_STRIPE_API_BASE")]
    pub stripe_api_base: Option<String>,
    /// Directory with one file per tenant holding its restricted API key.
    #[arg(long, env = "STRIPE_WORKER_STRIPE_KEYS_DIR")]
    pub stripe_keys_dir: Option<PathBuf>,
    /// Stripe API calls per second per API key, for everything this process calls
    /// (Stripe allows 100 a second in live mode and 25 in test mode per account).
    #[arg(
        long,
        default_value_t = crate::stripe::api::pace::DEFAULT_REQUESTS_PER_SEC,
        env = "STRIPE_WORKER_STRIPE_API_RATE"
    )]
    pub stripe_api_rate: f64,
}

impl StripeApiOptions {
    /// The API client's configuration: the base URL (option, variable, deprecated alias,
    /// default) and the keys, the unsuffixed `STRIPE_API_KEY` being `tenants`' default
    /// tenant's. A key for a tenant the configuration does not know is reported: its thin
    /// events would be dead-lettered `unknown_tenant` before the key is used.
    pub fn api_config(
        &self,
        tenants: &crate::tenant::TenantConfig,
    ) -> anyhow::Result<crate::stripe::api::StripeApiConfig> {
        let mut config = crate::stripe::api::StripeApiConfig::from_env(
            self.stripe_keys_dir.as_deref(),
            tenants.default_tenant(),
        )?;
        let base = self.stripe_api_base.clone().or_else(|| {
            crate::config::with_deprecated_alias(
                "STRIPE_WORKER_STRIPE_API_BASE",
                "STRIPE_API_BASE_URL",
                std::env::vars(),
            )
        });
        if let Some(base) = base {
            config.base_url = base;
        }
        anyhow::ensure!(
            self.stripe_api_rate.is_finite() && self.stripe_api_rate > 0.0,
            "--stripe-api-rate must be a positive number of calls per second"
        );
        config.requests_per_sec = self.stripe_api_rate;
        let unknown: Vec<&String> = config
            .keys
            .keys()
            .filter(|t| !tenants.is_known(t))
            .collect();
        if !unknown.is_empty() {
            tracing::warn!(
                ?unknown,
                known = ?tenants.known_tenants(),
                "Stripe API keys for tenants the tenant configuration does not know (STRIPE_WORKER_TENANTS): their events are dead-lettered unknown_tenant"
            );
        }
        Ok(config)
    }

    /// A client for commands that act on one tenant's account: an error when the tenant
    /// has no key.
    pub fn client_for(
        &self,
        tenants: &crate::tenant::TenantConfig,
        tenant: &str,
    ) -> anyhow::Result<crate::stripe::api::StripeApiClient> {
        let config = self.api_config(tenants)?;
        anyhow::ensure!(
            config.keys.contains_key(tenant),
            "no Stripe API key for tenant `{tenant}` (STRIPE_API_KEY_<TENANT>, or a file in --stripe-keys-dir)"
        );
        Ok(crate::stripe::api::StripeApiClient::new(config)?)
    }
}

/// `publish` options.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["file", "input"])))]
pub struct PublishArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// A JSON-lines file: one EventBridge envelope per line (as captured from a bus or an
    /// SQS queue), or with --to-queue any message body; `-` reads standard input.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The same as --file: `stripe-worker publish events.jsonl`, or `-` for standard input.
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Send each line as a raw message body straight to this domain's queue, bypassing the
    /// bus and its rules.
    #[arg(long)]
    pub to_queue: Option<Domain>,
    /// Print one JSON object (`published`, `invalid`, or `sent` and `queue`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The Stripe customer id.
    #[arg(long)]
    pub customer: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the whole billing state as one JSON document (for audits and comparisons).
    Export(ExportArgs),
}

/// `state export` options.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print JSON (the only format; accepted for clarity in scripts).
    #[arg(long)]
    pub json: bool,
    /// Keep each record's whole Stripe object (doc field `raw`), left out by default so
    /// the document stays readable.
    #[arg(long)]
    pub raw: bool,
}

/// Parse the command line, run the command, and map errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Inside the runtime: the gRPC exporters spawn their connections on it.
    let telemetry = {
        let _runtime = runtime.enter();
        match crate::telemetry::init(cli.log_format) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let result = runtime.block_on(commands::dispatch(cli.command));
    // Outside `block_on` (shutdown blocks) but with the runtime alive: the last spans and
    // metrics go out before the process ends.
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        // The reader went away (`| head`): what it wanted it has; end quietly, as `cat`.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether `error` comes from writing to a pipe whose reader has gone.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        let kind = cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            });
        kind == Some(std::io::ErrorKind::BrokenPipe)
    })
}
