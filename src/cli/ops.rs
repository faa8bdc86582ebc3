//! The operations commands: `queues`, `dlq list|show|redrive|purge`, `replay`, `backfill`.
//! Arguments and bodies; the library functions are in [`crate::ops`]. Every command prints
//! a table, or one JSON document with `--json`; long work shows a progress bar on stderr;
//! Ctrl-C stops a command at once without losing a message (exit code 130).

use std::future::Future;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::commands::Access;
use super::{BackendArgs, BackendKind, StripeApiOptions};
use crate::backend::{Backend, Bus, DeadLetterOps, Queue, RedriveFilter};
use crate::clock::now_ms;
use crate::config::Config;
use crate::domain::Domain;
use crate::ops::{backfill, dlq, parse_time, queues, replay};

/// The exit code after Ctrl-C (128 + SIGINT), as shells report it.
pub const INTERRUPTED: u8 = super::exit::INTERRUPTED;

/// `queues` options.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered messages with their reasons, event ids, types and tenants.
    List(DlqListArgs),
    /// Show one dead-lettered message in full.
    Show(DlqShowArgs),
    /// Move dead-lettered messages back to their queue (after fixing the cause).
    Redrive(DlqRedriveArgs),
    /// Delete every message in a dead-letter queue.
    Purge(DlqPurgeArgs),
}

impl DlqCommand {
    /// How the subcommand opens the embedded backend: listing and showing only look.
    pub(super) fn access(&self) -> Access {
        match self {
            DlqCommand::List(_) | DlqCommand::Show(_) => Access::ReadOnly,
            DlqCommand::Redrive(_) | DlqCommand::Purge(_) => Access::Existing,
        }
    }

    /// A usage error to refuse before anything is opened: a purge without `--yes`.
    pub(super) fn refusal(&self) -> Option<ExitCode> {
        match self {
            DlqCommand::Purge(args) if !args.yes => {
                eprintln!(
                    "error: a purge deletes every message in the {} dead-letter queue and \
                     cannot be undone: pass --yes",
                    args.domain
                );
                Some(ExitCode::from(super::exit::USAGE))
            }
            _ => None,
        }
    }

    /// The backend arguments of whichever subcommand this is.
    pub fn backend(&self) -> &BackendArgs {
        match self {
            DlqCommand::List(a) => &a.backend,
            DlqCommand::Show(a) => &a.backend,
            DlqCommand::Redrive(a) => &a.backend,
            DlqCommand::Purge(a) => &a.backend,
        }
    }
}

/// `dlq list` options.
#[derive(Debug, Args)]
pub struct DlqListArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The domain whose dead-letter queue to read.
    #[arg(long)]
    pub domain: Domain,
    /// At most this many messages.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `dlq show` options.
#[derive(Debug, Args)]
pub struct DlqShowArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The domain whose dead-letter queue to read.
    #[arg(long)]
    pub domain: Domain,
    /// The message id (as `dlq list` shows it).
    pub id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `dlq redrive` options.
#[derive(Debug, Args)]
pub struct DlqRedriveArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The domain whose dead-letter queue to redrive.
    #[arg(long)]
    pub domain: Domain,
    /// Only messages dead-lettered for this reason (e.g. `unknown_tenant`).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only messages carrying this event type (e.g. `customer.subscription.updated`).
    #[arg(long)]
    pub event_type: Option<String>,
    /// Only list what would move.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `dlq purge` options.
#[derive(Debug, Args)]
pub struct DlqPurgeArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The domain whose dead-letter queue to empty.
    #[arg(long)]
    pub domain: Domain,
    /// Really delete (required: a purge cannot be undone).
    #[arg(long)]
    pub yes: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `replay` options.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Window start, RFC 3339 (e.g. 2025-06-01T10:00:00Z).
    #[arg(long)]
    pub from: String,
    /// Window end (exclusive), RFC 3339.
    #[arg(long)]
    pub to: String,
    /// Only this domain's queue (default: every domain).
    #[arg(long)]
    pub domain: Option<Domain>,
    /// The replay's name (default: generated).
    #[arg(long)]
    pub name: Option<String>,
    /// Re-apply events already applied (the replay is named `reprocess-...`, which the
    /// worker honours; safe because state writes are ordered by as-of).
    #[arg(long)]
    pub reprocess: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `backfill` options.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Where the backend is (the bus events are published to).
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The tenant whose Stripe account to read (its API key is used).
    #[arg(long)]
    pub tenant: String,
    /// Events created at or after this time, RFC 3339 (at most 30 days ago).
    #[arg(long)]
    pub since: String,
    /// Stripe API options.
    #[command(flatten)]
    pub stripe_api: StripeApiOptions,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Print `value` as pretty JSON or with its `Display`.
pub(super) fn print<T: Serialize + std::fmt::Display>(value: &T, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    } else {
        write!(out, "{value}")?;
    }
    Ok(())
}

/// Run `work` until it ends or Ctrl-C; on Ctrl-C drop it (every operation is safe to
/// drop at any await) and say what state things are in.
pub(super) async fn interruptible<T>(
    work: impl Future<Output = anyhow::Result<T>>,
    on_interrupt: &str,
) -> anyhow::Result<Result<T, ExitCode>> {
    tokio::select! {
        result = work => result.map(Ok),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: {on_interrupt}");
            Ok(Err(ExitCode::from(INTERRUPTED)))
        }
    }
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub(super) fn bar(template: &str) -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// `queues`.
pub async fn queues<Q: Queue, D, S, B>(
    backend: Backend<Q, D, S, B>,
    args: &QueuesArgs,
) -> anyhow::Result<ExitCode> {
    let report = queues::queue_report(&backend.queues).await?;
    print(&report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `dlq ...`.
pub async fn dlq<Q: Queue + DeadLetterOps, D, S, B>(
    backend: Backend<Q, D, S, B>,
    config: &Config,
    command: &DlqCommand,
) -> anyhow::Result<ExitCode> {
    let tenants = &config.tenants;
    match command {
        DlqCommand::List(args) => {
            let queue = backend.queues.get(args.domain);
            let listing = dlq::list(queue, args.domain, args.limit, tenants).await?;
            print(&listing, args.json)?;
        }
        DlqCommand::Show(args) => {
            let queue = backend.queues.get(args.domain);
            match dlq::show(queue, args.domain, &args.id, tenants).await {
                Ok(detail) => print(&detail, args.json)?,
                Err(e @ crate::ops::OpsError::NotFound { .. }) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
        DlqCommand::Redrive(args) => {
            let queue = backend.queues.get(args.domain);
            let filter = RedriveFilter {
                ids: Vec::new(),
                error_kind: args.reason.clone(),
                event_type: args.event_type.clone(),
            };
            let progress = bar("{spinner} redriving: {pos} messages moved");
            let work = async {
                Ok(dlq::redrive(
                    queue,
                    args.domain,
                    &filter,
                    args.dry_run,
                    tenants,
                    &progress,
                )
                .await?)
            };
            let report = match interruptible(
                work,
                "messages already moved are in the queue, the rest are still in the \
                 dead-letter queue (a message moved at the moment of the interrupt may be in \
                 both; dedupe applies it once); run the redrive again to finish",
            )
            .await?
            {
                Ok(report) => report,
                Err(code) => return Ok(code),
            };
            print(&report, args.json)?;
        }
        DlqCommand::Purge(args) => {
            if let Some(code) = command.refusal() {
                return Ok(code);
            }
            let queue = backend.queues.get(args.domain);
            let report = match interruptible(
                async { Ok(dlq::purge(queue, args.domain).await?) },
                "some messages may be deleted already; run the purge again to finish",
            )
            .await?
            {
                Ok(report) => report,
                Err(code) => return Ok(code),
            };
            print(&report, args.json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `replay`: on AWS an EventBridge replay from the archive, on the embedded backend a
/// re-publish of the archived envelopes.
pub async fn replay(args: &ReplayArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let request = replay::ReplayRequest {
        from_ms: parse_time(&args.from).context("--from")?,
        to_ms: parse_time(&args.to).context("--to")?,
        domain: args.domain,
        name: args.name.clone(),
        reprocess: args.reprocess,
    };
    let progress = bar("{spinner} replaying {wide_bar} {pos}/{len}");
    let outcome = match args.backend.backend {
        BackendKind::Local => {
            let backend = super::commands::open_embedded(&args.backend, config, Access::Existing)?;
            interruptible(
                async {
                    Ok(replay::replay_local(&backend.bus, &request, now_ms(), &progress).await?)
                },
                "the envelopes replayed so far are on their queues; replaying the window \
                 again is harmless (dedupe)",
            )
            .await?
        }
        BackendKind::Aws => {
            let sdk = super::aws::sdk_config(config.aws.sdk_timeouts()).await?;
            let client = aws_sdk_eventbridge::Client::new(&sdk);
            let names = crate::backend::aws::AwsNames::new(args.backend.prefix.clone());
            interruptible(
                async {
                    Ok(replay::replay_aws(
                        &client,
                        &names,
                        &request,
                        now_ms(),
                        Duration::from_secs(1),
                        &progress,
                    )
                    .await?)
                },
                "the replay runs on EventBridge and continues without this command \
                 (`aws events describe-replay` follows it, `cancel-replay` stops it)",
            )
            .await?
        }
    };
    match outcome {
        Ok(report) => {
            print(&report, args.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

/// `backfill`.
pub async fn backfill<Q, D, S, B: Bus>(
    backend: Backend<Q, D, S, B>,
    tenants: &crate::tenant::TenantConfig,
    args: &BackfillArgs,
) -> anyhow::Result<ExitCode> {
    let since = parse_time(&args.since).context("--since")?;
    let api = args.stripe_api.client_for(tenants, &args.tenant)?;
    let progress = bar("{spinner} backfill: {pos} events published");
    let outcome = interruptible(
        async {
            Ok(backfill::backfill(
                &api,
                backend.bus.as_ref(),
                &args.tenant,
                since,
                now_ms(),
                &progress,
            )
            .await?)
        },
        "the events published so far are on the bus; run the backfill again to finish \
         (dedupe makes the overlap harmless)",
    )
    .await?;
    match outcome {
        Ok(report) => {
            print(&report, args.json)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}
