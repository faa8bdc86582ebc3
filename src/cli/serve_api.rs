//! `serve-api`: the read API ([`crate::api`]) alone, on its own address, over the state
//! store only. On AWS it reads the state table and its indexes (`dynamodb:GetItem`,
//! `dynamodb:Query`: the module's API policy) and touches no queue or bus; on the
//! embedded backend it opens the SQLite file read-only beside a running worker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{BackendArgs, BackendKind};
use crate::api::ApiTokens;
use crate::backend::StateStore;
use crate::config::Config;
use crate::ingress::{ReadyCheck, probe_router};

/// `serve-api` options.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  \
    export STRIPE_WORKER_TENANTS=acme STRIPE_WORKER_API_TOKEN_ACME=$(openssl rand -hex 32)\n  \
    stripe-worker serve-api --listen 127.0.0.1:8090 &\n  \
    curl -H \"Authorization: Bearer $STRIPE_WORKER_API_TOKEN_ACME\" \\\n    \
    http://127.0.0.1:8090/v1/tenants/acme/customers/cus_123/status\n\n\
    Routes: /v1/tenants/{tenant}/customers/{id}/status, /v1/tenants/{tenant}/objects/{kind}/{id},\n\
    /v1/tenants/{tenant}/subscriptions?status=active&limit=10&starting_after=sub_...\n\
    (see the README, \"Read API\").")]
pub struct ServeApiArgs {
    /// Where the backend is (only its state store is used).
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Address to listen on.
    #[arg(
        long,
        default_value = "127.0.0.1:8090",
        env = "STRIPE_WORKER_API_LISTEN"
    )]
    pub listen: SocketAddr,
    /// Where the tokens are.
    #[command(flatten)]
    pub tokens: ApiTokenOptions,
}

/// The read API's bearer tokens: `STRIPE_WORKER_API_TOKEN` (the default tenant's;
/// comma-separated while rolling a token), `STRIPE_WORKER_API_TOKEN_<TENANT>`, or one file
/// per tenant in --api-tokens-dir. At least 32 characters each; never logged.
#[derive(Debug, Clone, Args)]
pub struct ApiTokenOptions {
    /// Directory with one file per tenant holding its read-API tokens, one per line (how
    /// Kubernetes and ECS mount secrets).
    #[arg(long, env = "STRIPE_WORKER_API_TOKENS_DIR")]
    pub api_tokens_dir: Option<PathBuf>,
}

impl ApiTokenOptions {
    /// Load the tokens; none configured is an error (the API never serves unauthenticated).
    pub fn load(&self, config: &Config) -> anyhow::Result<ApiTokens> {
        Ok(ApiTokens::from_env(
            self.api_tokens_dir.as_deref(),
            &config.tenants,
        )?)
    }
}

/// Readiness of the read API: the store answers a read (of a key no tenant can have:
/// `~` is not allowed in tenant names), with the read permission the API has anyway.
pub fn store_ready_check<S: StateStore>(store: Arc<S>) -> ReadyCheck {
    Arc::new(move || {
        let store = Arc::clone(&store);
        Box::pin(async move {
            store
                .get("~ready", "~", "~")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}

/// Run `serve-api` until SIGINT or SIGTERM, then finish in-flight requests.
pub async fn serve_api(config: &Config, args: &ServeApiArgs) -> anyhow::Result<ExitCode> {
    // Tokens first: a start without them fails before any backend is touched.
    let tokens = args.tokens.load(config)?;
    let shutdown = CancellationToken::new();
    super::commands::cancel_on_signal(shutdown.clone());
    match args.backend.backend {
        BackendKind::Local => {
            let dir = &args.backend.data_dir;
            let db = crate::app::existing_database(dir)
                .and_then(|file| crate::backend::sqlite::SqliteDb::open_read_only(&file))
                .with_context(|| format!("opening the embedded backend in {}", dir.display()))?;
            let store = Arc::new(crate::backend::sqlite::SqliteState::new(&db));
            serve(store, tokens, args.listen, shutdown).await
        }
        BackendKind::Aws => {
            let sdk = super::aws::sdk_config(config.aws.sdk_timeouts()).await?;
            let names = crate::backend::aws::AwsNames::new(args.backend.prefix.clone());
            let store = Arc::new(crate::backend::aws::DynamoState::new(
                aws_sdk_dynamodb::Client::new(&sdk),
                names.state_table(),
                names.dedupe_table(),
            ));
            serve(store, tokens, args.listen, shutdown).await
        }
    }
}

async fn serve<S: StateStore>(
    store: Arc<S>,
    tokens: ApiTokens,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("read API: listening on {listen}"))?;
    tracing::info!(addr = %listener.local_addr()?, tenants = ?tokens.tenants(), "read API listening (/v1/tenants/..., /healthz, /readyz)");
    let ready = store_ready_check(Arc::clone(&store));
    let app = crate::api::router(store, tokens).merge(probe_router(Some(ready), shutdown.clone()));
    crate::ingress::server::serve_router(
        listener,
        app,
        crate::ingress::config::DEFAULT_HEADER_READ_TIMEOUT,
        shutdown,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
