//! The worker's admin port (`run --admin-listen ADDR`: `/healthz`, `/readyz`, optionally
//! `/metrics` and the read API) and the `healthcheck URL` command, which lets an ECS
//! health check probe it from the distroless image (no curl there).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::backend::{PerDomain, Queue};
use crate::domain::Domain;
use crate::ingress::{ReadyCheck, probe_router};

/// `healthcheck` options.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The URL to GET, e.g. `http://127.0.0.1:9090/healthz`.
    pub url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}

/// GET the URL: exit 0 on a 2xx answer, 1 on anything else (other status, no answer).
pub async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .build()?;
    match client.get(&args.url).send().await {
        Ok(response) if response.status().is_success() => Ok(ExitCode::SUCCESS),
        Ok(response) => {
            eprintln!("{}: {}", args.url, response.status());
            Ok(ExitCode::from(1))
        }
        Err(error) => {
            eprintln!("{}: {error}", args.url);
            Ok(ExitCode::from(1))
        }
    }
}

/// Readiness: the backend answers (a queue stats call on `domain`'s queue, the cheapest
/// call to it) and, when `running` is given, it is set (the worker's pollers run).
pub fn ready_check<Q: Queue>(
    queues: Arc<PerDomain<Q>>,
    domain: Domain,
    running: Option<Arc<AtomicBool>>,
) -> ReadyCheck {
    Arc::new(move || {
        let queues = Arc::clone(&queues);
        let stopped = running.as_ref().is_some_and(|r| !r.load(Ordering::Acquire));
        Box::pin(async move {
            if stopped {
                return Err("the pollers are not running".to_owned());
            }
            queues
                .get(domain)
                .stats()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    })
}

/// Readiness of the ingress alone on AWS: the event bus answers `DescribeEventBus` (the
/// ingress role's one read, next to `PutEvents`).
pub fn bus_ready_check(bus: Arc<crate::backend::aws::EventBridgeBus>) -> ReadyCheck {
    Arc::new(move || {
        let bus = Arc::clone(&bus);
        Box::pin(async move { bus.describe().await.map_err(|e| e.to_string()) })
    })
}

/// Serve `/healthz` and `/readyz` (and `metrics`' routes, e.g. Prometheus `/metrics`) on
/// `listener` until `shutdown`; `/readyz` answers 503 from the moment shutdown starts.
pub async fn serve_admin(
    listener: tokio::net::TcpListener,
    ready: ReadyCheck,
    metrics: Option<axum::Router>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let routes = metrics.map(|m| ("/metrics", m)).into_iter().collect();
    serve_admin_routes(listener, ready, routes, shutdown).await
}

/// [`serve_admin`] with any further routes (Prometheus `/metrics`, the read API), each
/// with the path it is logged as.
pub async fn serve_admin_routes(
    listener: tokio::net::TcpListener,
    ready: ReadyCheck,
    routes: Vec<(&'static str, axum::Router)>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        let paths: Vec<&str> = ["/healthz", "/readyz"]
            .into_iter()
            .chain(routes.iter().map(|(path, _)| *path))
            .collect();
        tracing::info!(%addr, "admin endpoints listening ({})", paths.join(", "));
    }
    let mut app = probe_router(Some(ready), shutdown.clone());
    for (_, routes) in routes {
        app = app.merge(routes);
    }
    crate::ingress::server::serve_router(
        listener,
        app,
        crate::ingress::config::DEFAULT_HEADER_READ_TIMEOUT,
        shutdown,
    )
    .await
}
