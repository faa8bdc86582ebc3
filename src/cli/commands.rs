//! Command bodies. Each is generic over the backend seams; [`with_backend!`] opens the
//! backend the arguments name and runs the body on it.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{
    BackendArgs, BackendKind, Command, DemoArgs, ExportArgs, IngestArgs, IngressOptions,
    PublishArgs, RunArgs, SetupArgs, StateCommand, StatusArgs, StripeApiOptions,
};
use crate::app::{cancel_when_idle, open_local};
use crate::backend::{Backend, Bus, BusEntry, DedupeStore, Queue, ReconcileStore, StateStore};
use crate::clock::system_clock;
use crate::config::Config;
use crate::demo::runner::{DemoOptions, publish_chunks, render_summary, run_demo};
use crate::domain::Domain;
use crate::event::envelope::entry_from_envelope;
use crate::handlers::standard_handlers;
use crate::hydrate::Hydrator;
use crate::ingress::config::IngressConfig;
use crate::ingress::server::{IngressState, serve};
use crate::state_view::{customer_status, export_document};
use crate::stripe_api::StripeApiClient;
use crate::worker::{PoolSettings, ProcessSettings, Processor, WorkerStats, run_pool};

/// Load the configuration the backend arguments name (file, then environment).
fn load_config(args: &BackendArgs) -> anyhow::Result<Config> {
    Ok(Config::load(args.config.as_deref(), std::env::vars())?)
}

/// Open the backend `$args` names with `$config`, bind it to `$backend`, evaluate `$body`.
macro_rules! with_backend {
    ($args:expr, $config:expr, |$backend:ident| $body:expr) => {
        match $args.backend {
            BackendKind::Local => {
                let $backend =
                    open_local(&$args.data_dir, $config, system_clock()).with_context(|| {
                        format!(
                            "opening the embedded backend in {}",
                            $args.data_dir.display()
                        )
                    })?;
                $body.await
            }
            BackendKind::Aws => {
                let sdk = crate::backend::aws::load_sdk_config().await;
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
            with_backend!(args.backend, &config, |backend| run_worker(
                backend, &config, &args
            ))
        }
        Command::Ingest(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, |backend| ingest(
                backend, &config, &args
            ))
        }
        Command::Publish(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, |backend| publish(backend, &args))
        }
        Command::Status(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, |backend| status(backend, &args))
        }
        Command::State {
            command: StateCommand::Export(args),
        } => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, |backend| export(backend, &args))
        }
        Command::Setup(args) => setup(args).await,
        Command::Routes(args) => super::routes::run_routes(args, &mut stdout),
        Command::Pattern(args) => super::routes::run_pattern(args, &mut stdout),
        Command::Bench(args) => super::bench::run_bench(args).await,
        Command::Queues(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, |backend| super::ops::queues(
                backend, &args
            ))
        }
        Command::Dlq { command } => {
            let config = load_config(command.backend())?;
            with_backend!(command.backend(), &config, |backend| super::ops::dlq(
                backend, &config, &command
            ))
        }
        Command::Replay(args) => super::ops::replay(&args, &load_config(&args.backend)?).await,
        Command::Backfill(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, |backend| super::ops::backfill(
                backend, &args
            ))
        }
        Command::Import(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, |backend| super::reconcile::import(
                backend, &args
            ))
        }
        Command::Verify(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, |backend| super::reconcile::verify(
                backend, &args
            ))
        }
        Command::Sweep(args) => {
            let config = load_config(&args.backend)?;
            with_backend!(args.backend, &config, |backend| super::reconcile::sweep(
                backend, &config, &args
            ))
        }
        Command::Healthcheck(args) => super::health::healthcheck(args).await,
    }
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (0.0..=0.5).contains(&args.fault_rate),
        "--fault-rate must be between 0 and 0.5"
    );
    anyhow::ensure!(args.tenants >= 1, "--tenants must be at least 1");
    let report = run_demo(DemoOptions {
        events: args.events,
        tenants: args.tenants,
        seed: args.seed,
        data_dir: args.data_dir,
        fault_rate: args.fault_rate,
        progress: !args.json,
        chunk_events: args
            .chunk_events
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_summary(&report));
    }
    Ok(if report.state_matches {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Cancel `token` on SIGINT or SIGTERM.
fn cancel_on_signal(token: CancellationToken) {
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
    let stats = Arc::new(WorkerStats::default());
    let api = stripe_api(&args.stripe_api)?;
    let processor = Arc::new(Processor::new(
        standard_handlers(),
        Arc::clone(&backend.dedupe),
        Arc::clone(&backend.state),
        api.clone().map(|api| api as Arc<dyn Hydrator>),
        config.tenants.clone(),
        ProcessSettings::from_config(config),
        system_clock(),
        Arc::clone(&stats),
    ));
    let mut settings = PoolSettings::from_config(config);
    if !args.domains.is_empty() {
        settings.domains = args.domains.clone();
    }
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
        let server = start_ingress(&backend, config, &args.ingress, shutdown.clone()).await?;
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
            Some(tokio::spawn(super::health::serve_admin(
                listener,
                ready,
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
    tracing::info!(domains = ?settings.domains, "worker started");
    pollers_running.store(true, std::sync::atomic::Ordering::Release);
    let pool = run_pool(
        Arc::clone(&backend.queues),
        processor,
        settings,
        shutdown.clone(),
    );
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

async fn publish<Q: Queue, D, S, B: Bus>(
    backend: Backend<Q, D, S, B>,
    args: &PublishArgs,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
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
                eprintln!(
                    "{}:{line_no}: not a valid EventBridge envelope: {error}",
                    args.file.display()
                );
            }
        }
    }
    publish_chunks(backend.bus.as_ref(), &entries).await?;
    match args.to_queue {
        Some(domain) => println!("sent {sent_raw} messages to the {domain} queue"),
        None => println!(
            "published {} events; {invalid} invalid lines skipped",
            entries.len()
        ),
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn status<Q, D, S: StateStore, B>(
    backend: Backend<Q, D, S, B>,
    args: &StatusArgs,
) -> anyhow::Result<ExitCode> {
    let records = backend
        .state
        .by_customer(&args.tenant, &args.customer)
        .await?;
    if records.is_empty() {
        eprintln!(
            "no billing state for customer {} of tenant {}",
            args.customer, args.tenant
        );
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
    println!(
        "{}",
        serde_json::to_string_pretty(&export_document(&records))?
    );
    Ok(ExitCode::SUCCESS)
}

/// The Stripe API client (thin events, ties, scheduled sweeps), when any tenant has an
/// API key.
fn stripe_api(options: &StripeApiOptions) -> anyhow::Result<Option<Arc<StripeApiClient>>> {
    let config = options.client_config()?;
    if config.keys.is_empty() {
        tracing::info!(
            "no Stripe API key configured: thin events will be dead-lettered as no_hydrator"
        );
        return Ok(None);
    }
    Ok(Some(Arc::new(StripeApiClient::new(config)?)))
}

/// Bind the ingress and return the server future, which ends after `shutdown` once its
/// in-flight requests are answered.
async fn start_ingress<Q: Queue, D, S, B: Bus>(
    backend: &Backend<Q, D, S, B>,
    config: &Config,
    options: &IngressOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<impl std::future::Future<Output = std::io::Result<()>> + use<Q, D, S, B>> {
    let mut ingress = IngressConfig::from_env(options.webhook_secrets_dir.as_deref())?;
    ingress.listen = options.listen;
    ingress.tolerance = Duration::from_secs(options.tolerance_secs);
    ingress.max_body_bytes = options.max_body_bytes;
    ingress.styles = options
        .publish_styles
        .parse()
        .map_err(|e| anyhow::anyhow!("--publish-styles: {e}"))?;
    if let Some(tenant) = &config.tenants.default_tenant {
        ingress.default_tenant = tenant.clone();
    }
    let ready = super::health::ready_check(Arc::clone(&backend.queues), Domain::Subscription, None);
    let state =
        IngressState::new(ingress.clone(), Arc::clone(&backend.bus))?.with_ready_check(ready);
    let listener = tokio::net::TcpListener::bind(ingress.listen)
        .await
        .with_context(|| format!("listening on {}", ingress.listen))?;
    Ok(serve(listener, state, shutdown))
}

async fn ingest<Q: Queue, D, S, B: Bus>(
    backend: Backend<Q, D, S, B>,
    config: &Config,
    args: &IngestArgs,
) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    start_ingress(&backend, config, &args.ingress, shutdown)
        .await?
        .await?;
    Ok(ExitCode::SUCCESS)
}

async fn setup(args: SetupArgs) -> anyhow::Result<ExitCode> {
    use crate::backend::aws::{AwsNames, SetupOptions, load_sdk_config, setup};
    anyhow::ensure!(
        args.backend == BackendKind::Aws,
        "setup creates AWS resources: pass --backend aws (the embedded backend needs no setup)"
    );
    let config = load_config(&args)?;
    let options = SetupOptions {
        max_receive_count: config.worker.max_receive_count,
        visibility_timeout: config.visibility_timeout(),
        ..SetupOptions::default()
    };
    let patterns = crate::backend::PerDomain::from_fn(crate::routing::domain_pattern);
    let sdk = load_sdk_config().await;
    let report = setup(
        &sdk,
        &AwsNames::new(args.prefix.clone()),
        &patterns,
        &options,
    )
    .await
    .with_context(|| format!("setting up AWS resources with prefix `{}`", args.prefix))?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
