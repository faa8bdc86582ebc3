//! Command bodies. Each is generic over the backend seams; [`with_backend!`] opens the
//! backend the arguments name and runs the body on it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::{
    BackendArgs, BackendKind, Command, ConfigCommand, DemoArgs, ExportArgs, IngestArgs,
    IngressOptions, PublishArgs, RunArgs, SetupArgs, StateCommand, StatusArgs, StripeApiOptions,
};
use crate::app::{cancel_when_idle, open_local};
use crate::backend::{Backend, Bus, BusEntry, DedupeStore, Queue, ReconcileStore, StateStore};
use crate::clock::system_clock;
use crate::config::Config;
use crate::demo::runner::{DemoOptions, render_summary, run_demo};
use crate::domain::Domain;
use crate::event::envelope::entry_from_envelope;
use crate::handlers::standard_handlers;
use crate::ingress::config::IngressConfig;
use crate::ingress::server::{IngressState, serve};
use crate::state_view::{customer_status, export_document_with_raw};
use crate::stripe::api::StripeApiClient;
use crate::stripe::hydrate::Hydrator;
use crate::worker::{PoolSettings, Worker};

/// Load the configuration the backend arguments name (file, then environment).
fn load_config(args: &BackendArgs) -> anyhow::Result<Config> {
    Ok(Config::load(args.config.as_deref(), std::env::vars())?)
}

/// How a command opens the embedded backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Create the data directory and database if needed, migrate (`run`, `publish`, ...).
    Create,
    /// Work on what an earlier run left, writing (`dlq redrive`, `replay`): the data
    /// directory must exist.
    Existing,
    /// Only look (`queues`, `dlq list`, `state export`, `status`): the data directory must
    /// exist and is opened read-only.
    ReadOnly,
}

/// Open the embedded backend in `args.data_dir` as `access` says.
pub(super) fn open_embedded(
    args: &BackendArgs,
    config: &Config,
    access: Access,
) -> anyhow::Result<crate::app::LocalBackend> {
    let dir = &args.data_dir;
    let opened = match access {
        Access::Create => open_local(dir, config, system_clock()),
        Access::Existing => {
            crate::app::existing_database(dir).and_then(|_| open_local(dir, config, system_clock()))
        }
        Access::ReadOnly => crate::app::open_local_read_only(dir, config, system_clock()),
    };
    opened.with_context(|| format!("opening the embedded backend in {}", dir.display()))
}

/// Open the backend `$args` names with `$config` (the embedded one as `$access` says), bind
/// it to `$backend`, evaluate `$body`.
macro_rules! with_backend {
    ($args:expr, $config:expr, $access:expr, |$backend:ident| $body:expr) => {
        match $args.backend {
            BackendKind::Local => {
                let $backend = open_embedded(&$args, $config, $access)?;
                $body.await
            }
            BackendKind::Aws => {
                let sdk = super::aws::sdk_config($config.aws.sdk_timeouts()).await?;
                let names = crate::backend::aws::AwsNames::new($args.prefix.clone());
                let $backend = crate::backend::aws::connect(&sdk, &names, &Default::default())
                    .await
                    .with_context(|| {
                        format!(
                            "connecting to the AWS backend with prefix `{}`",
                            $args.prefix
                        )
                    })?;
                $body.await
            }
        }
    };
}

/// Run one command.
pub async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match command {
        Command::Demo(args) => demo(args).await,
        Command::Run(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, Access::Create, |backend| run_worker(
                backend, &config, &args
            ))
        }
        Command::Ingest(args) => ingest(&load_config(&args.backend)?, &args).await,
        Command::ServeApi(args) => {
            super::serve_api::serve_api(&load_config(&args.backend)?, &args).await
        }
        Command::Publish(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, Access::Create, |backend| publish(
                backend, &args
            ))
        }
        Command::Status(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, Access::ReadOnly, |backend| status(
                backend, &config, &args
            ))
        }
        Command::State {
            command: StateCommand::Export(args),
        } => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, Access::ReadOnly, |backend| export(
                backend, &args
            ))
        }
        Command::Setup(args) => setup(args).await,
        Command::Routes(args) => super::routes::run_routes(args, &mut stdout),
        Command::Pattern(args) => super::routes::run_pattern(args, &mut stdout),
        Command::Bench(args) => super::bench::run_bench(args).await,
        Command::Queues(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, Access::ReadOnly, |backend| {
                super::ops::queues(backend, &args)
            })
        }
        Command::Dlq { command } => {
            if let Some(code) = command.refusal() {
                return Ok(code);
            }
            let config = load_config(command.backend())?;
            with_backend!(command.backend(), &config, command.access(), |backend| {
                super::ops::dlq(backend, &config, &command)
            })
        }
        Command::Replay(args) => super::ops::replay(&args, &load_config(&args.backend)?).await,
        Command::Backfill(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, Access::Create, |backend| {
                super::ops::backfill(backend, &config.tenants, &args)
            })
        }
        Command::Import(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, Access::Create, |backend| {
                super::reconcile::import(backend, &config.tenants, &args)
            })
        }
        Command::Verify(args) => {
            let config = load_config(&args.backend)?;
            // Only a repair writes: a plain verify opens the store read-only.
            let access = if args.repair {
                Access::Existing
            } else {
                Access::ReadOnly
            };
            with_backend!(args.backend, &config, access, |backend| {
                super::reconcile::verify(backend, &config.tenants, &args)
            })
        }
        Command::Sweep(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, Access::Create, |backend| {
                super::reconcile::sweep(backend, &config, &args)
            })
        }
        Command::Healthcheck(args) => super::health::healthcheck(args).await,
        Command::Config {
            command: ConfigCommand::Check(args),
        } => super::config_check::config_check(args),
        Command::Completions { shell } => {
            let mut command = <super::Cli as clap::CommandFactory>::command();
            // Into a buffer first: `generate` panics when its writer fails (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "stripe-worker", &mut script);
            stdout.write_all(&script)?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let report = run_demo(DemoOptions {
        events: args.events,
        tenants: usize::from(args.tenants),
        seed: args.seed,
        data_dir: args.data_dir,
        fault_rate: args.fault_rate,
        progress: !args.json,
        chunk_events: args
            .chunk_events
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        config_env: std::env::vars().collect(),
    })
    .await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        write!(out, "{}", render_summary(&report))?;
    }
    Ok(if report.state_matches {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Cancel `token` on SIGINT or SIGTERM.
pub(super) fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(error) => {
                        tracing::error!(%error, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down: no new receives; draining in-flight messages");
        token.cancel();
    });
}

async fn run_worker<Q: Queue, D: DedupeStore + ReconcileStore, S: StateStore, B: Bus>(
    backend: Backend<Q, D, S, B>,
    config: &Config,
    args: &RunArgs,
) -> anyhow::Result<ExitCode> {
    let api = stripe_api(&args.stripe_api, config)?;
    let worker = Worker::builder(config, &backend, system_clock())
        .hydrator(api.clone().map(|api| api as Arc<dyn Hydrator>))
        .domains(&args.domains)
        .process_settings(|p| p.store = store_spans(&args.backend))
        .build();
    let stats = Arc::clone(worker.stats());
    let settings = worker.pool_settings().clone();
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    if args.until_idle {
        tokio::spawn(cancel_when_idle(
            Arc::clone(&backend.queues),
            Arc::clone(&stats),
            Duration::from_secs(args.idle_secs),
            shutdown.clone(),
        ));
    }
    let ingress = if args.ingest {
        // In one process with the worker, the ingress is ready when the queues answer.
        let ready =
            super::health::ready_check(Arc::clone(&backend.queues), Domain::Subscription, None);
        let server = start_ingress(
            Arc::clone(&backend.bus),
            bus_name(&args.backend),
            ready,
            config,
            &args.ingress,
            shutdown.clone(),
        )
        .await?;
        Some(tokio::spawn(server))
    } else {
        None
    };
    let pollers_running = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let admin = match args.admin_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin endpoints: listening on {addr}"))?;
            let ready = super::health::ready_check(
                Arc::clone(&backend.queues),
                settings
                    .domains
                    .first()
                    .copied()
                    .unwrap_or(Domain::Subscription),
                Some(Arc::clone(&pollers_running)),
            );
            let mut routes = Vec::new();
            if args.prometheus {
                let metrics = super::prometheus::router(
                    Arc::clone(&stats),
                    Arc::clone(&backend.queues),
                    settings.domains.clone(),
                );
                routes.push(("/metrics", metrics));
            }
            if args.admin_api {
                let tokens = args.api_tokens.load(config)?;
                let api = crate::api::router(Arc::clone(&backend.state), tokens);
                routes.push(("/v1/tenants/...", api));
            }
            Some(tokio::spawn(super::health::serve_admin_routes(
                listener,
                ready,
                routes,
                shutdown.clone(),
            )))
        }
        None => None,
    };
    // Scheduled sweeps run beside the pool (joined, not spawned: the backend futures
    // are not provably `Send` for every lifetime) and stop with it.
    let sweeps = match args.sweep_every {
        Some(every) => {
            let Some(api) = api.clone() else {
                anyhow::bail!(
                    "--sweep-every needs a Stripe API key (STRIPE_API_KEY or STRIPE_API_KEY_<TENANT>)"
                );
            };
            let tenants = api.tenants();
            let sweeper = crate::reconcile::sweep::Sweeper {
                api,
                dedupe: Arc::clone(&backend.dedupe),
                bus: Arc::clone(&backend.bus),
                handlers: standard_handlers(),
                clock: system_clock(),
                thin_destinations: crate::reconcile::sweep::thin_destinations(&config.tenants),
            };
            Some(crate::reconcile::sweep::run_scheduled(
                sweeper,
                tenants,
                every,
                shutdown.clone(),
            ))
        }
        None => None,
    };
    tracing::info!("{}", start_line(&args.backend, config, &settings));
    if args.progress_secs > 0 {
        tokio::spawn(super::progress::report_progress(
            Arc::clone(&backend.queues),
            settings.domains.clone(),
            Arc::clone(&stats),
            Duration::from_secs(args.progress_secs),
            shutdown.clone(),
        ));
    }
    pollers_running.store(true, std::sync::atomic::Ordering::Release);
    let pool = worker.run(shutdown.clone());
    match sweeps {
        Some(sweeps) => {
            tokio::join!(pool, sweeps);
        }
        None => pool.await,
    }
    pollers_running.store(false, std::sync::atomic::Ordering::Release);
    if let Some(admin) = admin {
        shutdown.cancel();
        admin.await??;
    }
    if let Some(ingress) = ingress {
        // The pool only ends on shutdown; make sure the ingress is told too, then wait for
        // its in-flight requests.
        shutdown.cancel();
        ingress.await??;
    }
    let summary = stats.snapshot();
    tracing::info!(
        received = summary.received,
        applied = summary.applied,
        duplicates = summary.duplicates,
        ignored = summary.ignored,
        dead_lettered = summary.dead_lettered,
        "worker stopped"
    );
    Ok(ExitCode::SUCCESS)
}

/// What `run` says at start: where it works, for whom, and the limits it works within.
fn start_line(backend: &BackendArgs, config: &Config, settings: &PoolSettings) -> String {
    let location = match backend.backend {
        BackendKind::Local => format!("backend local, data dir {}", backend.data_dir.display()),
        BackendKind::Aws => format!("backend aws, prefix {}", backend.prefix),
    };
    let tenants = config.tenants.known_tenants();
    let tenants = if tenants.is_empty() {
        "tenants none (every event will be dead-lettered as unknown_tenant)".to_owned()
    } else {
        format!("tenants {}", Vec::from_iter(tenants).join(","))
    };
    let domains: Vec<&str> = settings.domains.iter().map(|d| d.as_str()).collect();
    let adaptive = if settings.adaptive.enabled {
        format!(
            "adaptive on (from {} per queue)",
            config.worker.min_in_flight_per_queue
        )
    } else {
        "adaptive off".to_owned()
    };
    format!(
        "worker started: {location}; {tenants}; domains {}; in flight {} per queue, {} in \
         all; {} pollers per queue, batch {}; visibility {}s; lease {}s; {adaptive}",
        domains.join(","),
        settings.max_in_flight_per_queue,
        settings.max_in_flight,
        settings.pollers_per_queue,
        settings.receive_batch_size,
        settings.visibility_timeout.as_secs(),
        config.dedupe.lease_secs,
    )
}

async fn publish<Q: Queue, D, S, B: Bus>(
    backend: Backend<Q, D, S, B>,
    args: &PublishArgs,
) -> anyhow::Result<ExitCode> {
    // The argument group makes one of the two present.
    let file = args.file.as_ref().or(args.input.as_ref());
    let file = file.map_or(Path::new("-"), PathBuf::as_path);
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let name = if file == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let mut invalid = 0usize;
    let mut entries: Vec<BusEntry> = Vec::new();
    let mut sent_raw = 0usize;
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(domain) = args.to_queue {
            backend
                .queues
                .get(domain)
                .send(line, Duration::ZERO)
                .await?;
            sent_raw += 1;
            continue;
        }
        let parsed = serde_json::from_str::<serde_json::Value>(line)
            .map_err(|e| e.to_string())
            .and_then(|v| entry_from_envelope(&v).map_err(|e| e.to_string()));
        match parsed {
            Ok(entry) => entries.push(entry),
            Err(error) => {
                invalid += 1;
                eprintln!("{name}:{line_no}: not a valid EventBridge envelope: {error}");
            }
        }
    }
    crate::backend::publish_entries(backend.bus.as_ref(), &entries).await?;
    let mut out = std::io::stdout().lock();
    match (args.to_queue, args.json) {
        (Some(domain), false) => writeln!(out, "sent {sent_raw} messages to the {domain} queue")?,
        (Some(domain), true) => writeln!(
            out,
            "{}",
            serde_json::json!({"sent": sent_raw, "queue": domain.as_str()})
        )?,
        (None, false) => writeln!(
            out,
            "published {} events; {invalid} invalid lines skipped",
            entries.len()
        )?,
        (None, true) => writeln!(
            out,
            "{}",
            serde_json::json!({"published": entries.len(), "invalid": invalid})
        )?,
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn status<Q, D, S: StateStore, B>(
    backend: Backend<Q, D, S, B>,
    config: &Config,
    args: &StatusArgs,
) -> anyhow::Result<ExitCode> {
    let records = backend
        .state
        .by_customer(&args.tenant, &args.customer)
        .await?;
    if records.is_empty() {
        // Which is wrong, the tenant or the customer? A tenant of the configuration, or
        // one with any state, is known; only for another name is the store asked (an empty
        // answer for a mistyped tenant costs nothing).
        let known_tenant = config.tenants.is_known(&args.tenant)
            || !backend.state.export(Some(&args.tenant)).await?.is_empty();
        if known_tenant {
            eprintln!(
                "error: no billing state for customer {} of tenant {} (the tenant is known; \
                 check the customer id)",
                args.customer, args.tenant
            );
        } else {
            let known = config.tenants.known_tenants();
            eprintln!(
                "error: unknown tenant {}: no billing state and not in the tenant configuration \
                 (configured: {})",
                args.tenant,
                known.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
        return Ok(ExitCode::from(1));
    }
    let status = customer_status(&records);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
    } else {
        write!(out, "{status}")?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn export<Q, D, S: StateStore, B>(
    backend: Backend<Q, D, S, B>,
    args: &ExportArgs,
) -> anyhow::Result<ExitCode> {
    let records = backend.state.export(args.tenant.as_deref()).await?;
    if let Some(tenant) = &args.tenant
        && records.is_empty()
    {
        eprintln!("error: no billing state for tenant {tenant}");
        return Ok(ExitCode::from(1));
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &export_document_with_raw(&records, args.raw))?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

/// The Stripe API client (thin events, ties, scheduled sweeps), when any tenant has an
/// API key.
fn stripe_api(
    options: &StripeApiOptions,
    config: &Config,
) -> anyhow::Result<Option<Arc<StripeApiClient>>> {
    let api = options.api_config(&config.tenants)?;
    if api.keys.is_empty() {
        tracing::info!(
            "no Stripe API key configured: thin events will be dead-lettered as no_hydrator"
        );
        return Ok(None);
    }
    Ok(Some(Arc::new(StripeApiClient::new(api)?)))
}

/// Bind the ingress on `bus` and return the server future, which ends after `shutdown`
/// once its in-flight requests are answered.
/// The bus events are published to, as the publish span names its destination.
fn bus_name(backend: &BackendArgs) -> String {
    match backend.backend {
        BackendKind::Local => crate::ingress::LOCAL_BUS_NAME.to_owned(),
        BackendKind::Aws => crate::backend::aws::AwsNames::new(backend.prefix.clone()).bus(),
    }
}

/// The `db.*` attributes of the worker's store spans on `backend`.
fn store_spans(backend: &BackendArgs) -> crate::telemetry::trace::StoreSpans {
    use crate::telemetry::trace::StoreSpans;
    match backend.backend {
        BackendKind::Local => StoreSpans::sqlite(),
        BackendKind::Aws => {
            let names = crate::backend::aws::AwsNames::new(backend.prefix.clone());
            StoreSpans::dynamodb(names.dedupe_table(), names.state_table())
        }
    }
}

async fn start_ingress<B: Bus>(
    bus: Arc<B>,
    bus_name: String,
    ready: crate::ingress::ReadyCheck,
    config: &Config,
    options: &IngressOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = std::io::Result<()>> + use<B>> {
    let mut ingress =
        IngressConfig::from_env(options.webhook_secrets_dir.as_deref(), &config.tenants)?;
    ingress.listen = options.listen;
    ingress.tolerance = Duration::from_secs(options.tolerance_secs);
    ingress.max_body_bytes = options.max_body_bytes;
    ingress.header_read_timeout = Duration::from_secs(options.header_read_timeout_secs);
    ingress.body_read_timeout = Duration::from_secs(options.body_read_timeout_secs);
    ingress.styles = options
        .publish_styles
        .parse()
        .map_err(|e| anyhow::anyhow!("--publish-styles: {e}"))?;
    let state = IngressState::new(ingress.clone(), bus)?
        .with_ready_check(ready)
        .with_bus_name(bus_name);
    let listener = tokio::net::TcpListener::bind(ingress.listen)
        .await
        .with_context(|| format!("listening on {}", ingress.listen))?;
    Ok(serve(listener, state, shutdown))
}

/// `ingest`: the ingress alone. On AWS it connects to the event bus only (no queue or
/// table), so the module's ingress policy (`events:PutEvents`, `events:DescribeEventBus`
/// for readiness) is all it needs; on the embedded backend the bus writes into the SQLite
/// queues, so those are what readiness checks.
async fn ingest(config: &Config, args: &IngestArgs) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    let server = match args.backend.backend {
        BackendKind::Local => {
            let backend =
                open_local(&args.backend.data_dir, config, system_clock()).with_context(|| {
                    format!(
                        "opening the embedded backend in {}",
                        args.backend.data_dir.display()
                    )
                })?;
            let ready =
                super::health::ready_check(Arc::clone(&backend.queues), Domain::Subscription, None);
            start_ingress(
                backend.bus,
                bus_name(&args.backend),
                ready,
                config,
                &args.ingress,
                shutdown,
            )
            .await?
            .boxed()
        }
        BackendKind::Aws => {
            use crate::backend::aws::{AwsNames, connect_bus, load_sdk_config_with};
            let sdk = load_sdk_config_with(config.aws.sdk_timeouts()).await;
            let bus = Arc::new(connect_bus(
                &sdk,
                &AwsNames::new(args.backend.prefix.clone()),
                &Default::default(),
            ));
            let ready = super::health::bus_ready_check(Arc::clone(&bus));
            start_ingress(
                bus,
                bus_name(&args.backend),
                ready,
                config,
                &args.ingress,
                shutdown,
            )
            .await?
            .boxed()
        }
    };
    server.await?;
    Ok(ExitCode::SUCCESS)
}

async fn setup(args: SetupArgs) -> anyhow::Result<ExitCode> {
    use crate::backend::aws::{AwsNames, SetupOptions, setup};
    let backend = &args.backend;
    anyhow::ensure!(
        backend.backend == BackendKind::Aws,
        "setup creates AWS resources: pass --backend aws (the embedded backend needs no setup)"
    );
    let config = load_config(backend)?;
    let options = SetupOptions {
        max_receive_count: config.worker.max_receive_count,
        visibility_timeout: config.visibility_timeout(),
        ..SetupOptions::default()
    };
    let patterns = crate::backend::PerDomain::from_fn(crate::routing::domain_pattern);
    let sdk = super::aws::sdk_config(config.aws.sdk_timeouts()).await?;
    let report = setup(
        &sdk,
        &AwsNames::new(backend.prefix.clone()),
        &patterns,
        &options,
    )
    .await
    .with_context(|| format!("setting up AWS resources with prefix `{}`", backend.prefix))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&setup_json(&report))?
        )?;
    } else {
        writeln!(out, "{report}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `setup --json`: every resource with its kind and whether it was created, and the
/// addresses the worker uses.
fn setup_json(report: &crate::backend::aws::SetupReport) -> serde_json::Value {
    use crate::backend::aws::{ResourceKind, SetupStatus};
    let resources: Vec<serde_json::Value> = report
        .items
        .iter()
        .map(|item| {
            let kind = match item.kind {
                ResourceKind::EventBus => "event_bus",
                ResourceKind::Archive => "archive",
                ResourceKind::Queue => "queue",
                ResourceKind::DeadLetterQueue => "dead_letter_queue",
                ResourceKind::Rule => "rule",
                ResourceKind::Table => "table",
            };
            let status = match item.status {
                SetupStatus::Created => "created",
                SetupStatus::Existed => "existed",
            };
            serde_json::json!({"kind": kind, "name": item.name, "status": status})
        })
        .collect();
    let queue_urls: serde_json::Map<String, serde_json::Value> = Domain::ALL
        .iter()
        .map(|&domain| {
            let urls = report.queue_urls.get(domain);
            (
                domain.to_string(),
                serde_json::json!({"queue": urls.queue, "dlq": urls.dlq}),
            )
        })
        .collect();
    serde_json::json!({
        "resources": resources,
        "created": report.created().count(),
        "existed": report.existed().count(),
        "bus_arn": report.bus_arn,
        "queue_urls": queue_urls,
    })
}
