//! The webhook ingress on the in-memory backend, to load-test the HTTP path (signature
//! check, envelope, publish through the local bus and its routing) without SQLite. Compare
//! with `stripe-worker ingest`, which publishes to the embedded SQLite backend.
//!
//! ```sh
//! STRIPE_WEBHOOK_SECRET=whsec_... cargo bench --bench ingress_memory -- 127.0.0.1:8090
//! wrk -t2 -c64 -d20s -s post.lua http://127.0.0.1:8090/webhooks/stripe
//! ```
//!
//! Secrets come from the environment as for `ingest` (`STRIPE_WEBHOOK_SECRET`,
//! `STRIPE_WEBHOOK_SECRET_<TENANT>`). The signature tolerance is a day, so one pre-signed
//! request can be replayed for the whole run. A consumer deletes what the bus routes, so
//! memory stays flat. Stops on Ctrl-C or SIGTERM and prints the counters.

use std::sync::Arc;
use std::time::Duration;

use stripe_worker::app::memory_backend;
use stripe_worker::backend::{Queue, Receipt};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::domain::Domain;
use stripe_worker::ingress::{IngressConfig, IngressState, serve};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the listen address is the first other argument.
    let listen = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let backend = memory_backend(&Config::default(), system_clock());
    let mut config = IngressConfig::from_env(None)?;
    config.tolerance = Duration::from_secs(86_400);
    let state = IngressState::new(config, Arc::clone(&backend.bus))?;
    let counters = state.counters();
    let shutdown = CancellationToken::new();

    for domain in Domain::ALL {
        let queues = Arc::clone(&backend.queues);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let queue = queues.get(domain);
            while !shutdown.is_cancelled() {
                let Ok(messages) = queue.receive(10, Duration::from_millis(200)).await else {
                    continue;
                };
                if messages.is_empty() {
                    continue;
                }
                let receipts: Vec<Receipt> = messages.into_iter().map(|m| m.receipt).collect();
                if let Err(error) = queue.delete_batch(&receipts).await {
                    eprintln!("delete failed: {error}");
                }
            }
        });
    }

    let signal = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        signal.cancel();
    });

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("ingress on the memory backend listening on {listen}");
    serve(listener, state, shutdown).await?;
    let snapshot = counters.snapshot();
    let routed = backend.bus.routed();
    eprintln!(
        "accepted {} requests, {} entries published, {} publish retries; routed {routed:?}",
        snapshot.accepted, snapshot.entries_published, snapshot.publish_retries
    );
    Ok(())
}
