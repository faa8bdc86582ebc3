//! The commands that keep the state equal to Stripe: `import`, `verify`, `sweep`.
//! Arguments and bodies; the library functions are in [`crate::reconcile`].

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use super::ops::{bar, interruptible, print};
use super::{BackendArgs, StripeApiOptions};
use crate::backend::{Backend, Bus, ReconcileStore, StateStore};
use crate::clock::system_clock;
use crate::config::Config;
use crate::handlers::standard_handlers;
use crate::ops::parse_time;
use crate::reconcile::import::Reconciler;
use crate::reconcile::kinds::{ListedKind, Projector, select};
use crate::reconcile::sweep::{Sweeper, thin_destinations};
use crate::reconcile::verify::VerifyOptions;
use crate::stripe::api::StripeApiClient;
use crate::tenant::TenantConfig;

/// `import` options.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The tenant whose Stripe account to read (its API key is used).
    #[arg(long)]
    pub tenant: String,
    /// Only these record kinds (comma-separated; default: every kind the handlers keep).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Stripe API options.
    #[command(flatten)]
    pub stripe_api: StripeApiOptions,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `verify` options.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Where the backend is.
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The tenant whose Stripe account to compare with.
    #[arg(long)]
    pub tenant: String,
    /// Only these record kinds (comma-separated; default: every kind the handlers keep).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Fetch this many stored records at random instead of listing every object (cheap;
    /// does not find objects missing from the store).
    #[arg(long)]
    pub sample: Option<usize>,
    /// Write Stripe's version of every object that differs (as `import` would).
    #[arg(long)]
    pub repair: bool,
    /// Stripe API options.
    #[command(flatten)]
    pub stripe_api: StripeApiOptions,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `sweep` options.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Where the backend is (the dedupe store asked, the bus events are published to).
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The tenant whose Stripe account to read (its API key is used). A tenant with an
    /// event destination in `[tenants.destinations]` also has its API v2 event list read
    /// (thin events of v2 types are only there; API v2 needs a secret key).
    #[arg(long)]
    pub tenant: String,
    /// Events created at or after this time, RFC 3339. Stripe keeps 30 days of events;
    /// an older time is passed as given, with a warning.
    #[arg(long)]
    pub since: String,
    /// Stripe API options.
    #[command(flatten)]
    pub stripe_api: StripeApiOptions,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

fn kinds(names: &[String]) -> anyhow::Result<Vec<&'static ListedKind>> {
    select(names).map_err(|e| anyhow::anyhow!("--kinds: {e}"))
}

/// The reconciler over `backend`'s state store and (for checkpoints) its dedupe store.
fn reconciler<'a, Q, D, S, B>(
    backend: &'a Backend<Q, D, S, B>,
    api: &'a StripeApiClient,
    projector: &'a Projector,
) -> Reconciler<'a, S, D> {
    Reconciler {
        api,
        state: backend.state.as_ref(),
        checkpoints: backend.dedupe.as_ref(),
        projector,
        clock: system_clock(),
    }
}

/// `import`.
pub async fn import<Q, D: ReconcileStore, S: StateStore, B>(
    backend: Backend<Q, D, S, B>,
    tenants: &TenantConfig,
    args: &ImportArgs,
) -> anyhow::Result<ExitCode> {
    let kinds = kinds(&args.kinds)?;
    let api = args.stripe_api.client_for(tenants, &args.tenant)?;
    let projector = Projector::default();
    let reconciler = reconciler(&backend, &api, &projector);
    let progress = bar("{spinner} import {msg}: {pos} objects");
    let outcome = interruptible(
        async { Ok(reconciler.import(&args.tenant, &kinds, &progress).await?) },
        "the objects imported so far are stored and each kind's place is checkpointed; \
         run the same import again to go on from there",
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

/// `verify`: exit 0 when equal, [`super::exit::DIFFERENCES`] when the state differs (also
/// after a repair, which fixed what it reports).
pub async fn verify<Q, D: ReconcileStore, S: StateStore, B>(
    backend: Backend<Q, D, S, B>,
    tenants: &TenantConfig,
    args: &VerifyArgs,
) -> anyhow::Result<ExitCode> {
    let kinds = kinds(&args.kinds)?;
    let api = args.stripe_api.client_for(tenants, &args.tenant)?;
    let projector = Projector::default();
    let reconciler = reconciler(&backend, &api, &projector);
    let options = VerifyOptions {
        sample: args.sample,
        repair: args.repair,
    };
    let progress = bar("{spinner} verify: {pos} objects checked");
    let outcome = interruptible(
        async {
            Ok(reconciler
                .verify(&args.tenant, &kinds, &options, &progress)
                .await?)
        },
        "nothing is left half-done: a repair writes whole records; run verify again",
    )
    .await?;
    match outcome {
        Ok(report) => {
            print(&report, args.json)?;
            Ok(if report.equal() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::exit::DIFFERENCES)
            })
        }
        Err(code) => Ok(code),
    }
}

/// `sweep`.
pub async fn sweep<Q, D: ReconcileStore, S, B: Bus>(
    backend: Backend<Q, D, S, B>,
    config: &Config,
    args: &SweepArgs,
) -> anyhow::Result<ExitCode> {
    let since = parse_time(&args.since).context("--since")?;
    anyhow::ensure!(
        config.tenants.is_known(&args.tenant),
        "tenant `{}` is not configured: the worker would dead-letter its events as unknown_tenant",
        args.tenant
    );
    let tenants = &config.tenants;
    let sweeper = Sweeper {
        api: Arc::new(args.stripe_api.client_for(tenants, &args.tenant)?),
        dedupe: Arc::clone(&backend.dedupe),
        bus: Arc::clone(&backend.bus),
        handlers: standard_handlers(),
        clock: system_clock(),
        thin_destinations: thin_destinations(tenants),
    };
    let progress = bar("{spinner} sweep: {pos} events listed");
    let outcome = interruptible(
        async { Ok(sweeper.sweep(&args.tenant, since, None, &progress).await?) },
        "the events published so far are on the bus; run the sweep again to finish \
         (what was published is applied once)",
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
