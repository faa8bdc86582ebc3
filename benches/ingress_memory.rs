//! Load test of the webhook ingress on the in-memory backend: the HTTP path (signature check,
//! envelope, publish through the local bus and its routing) without SQLite. Compare with
//! `stripe-worker ingest`, which publishes to the embedded SQLite backend.
//!
//! ```sh
//! cargo bench --bench ingress_memory                    # 20,000 requests, 64 connections
//! cargo bench --bench ingress_memory -- 100000 128      # REQUESTS CONNECTIONS
//! cargo bench --bench ingress_memory -- --serve 127.0.0.1:8090   # for wrk and friends
//! ```
//!
//! The built-in client sends genuinely signed requests (each with its own event id) over
//! keep-alive connections from the same process, so the figure is a lower bound: client and
//! server share the machine's cores. Under `cargo test --all-targets` (no `--bench`
//! argument) it runs a small load once to prove the path works.
//!
//! With `--serve`, secrets come from the environment as for `ingest`
//! (`STRIPE_WEBHOOK_SECRET`, `STRIPE_WEBHOOK_SECRET_<TENANT>`), the signature tolerance is a
//! day so one pre-signed request can be replayed for the whole run, and it stops on Ctrl-C
//! or SIGTERM and prints the counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use stripe_worker::app::{MemoryBackend, memory_backend};
use stripe_worker::backend::PerDomain;
use stripe_worker::backend::doubles::memory::{MemoryArchive, MemoryQueue};
use stripe_worker::backend::local_bus::LocalBus;
use stripe_worker::backend::{Queue, Receipt};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::domain::Domain;
use stripe_worker::ingress::{IngressConfig, IngressState, WebhookSecret, serve, signature_header};
use stripe_worker::tenant::TenantConfig;
use tokio_util::sync::CancellationToken;

/// The shipped binary's allocator, so the figure is the one `stripe-worker ingest` gets.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "whsec_ingress_load_test";
const FIXTURE: &str = "tests/fixtures/ingress/subscription_updated_event.json";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test` runs the binary without it.
    let measuring = args.iter().any(|a| a == "--bench");
    if let Some(at) = args.iter().position(|a| a == "--serve") {
        let listen = args.get(at + 1).context("--serve needs an address")?;
        return serve_for_external_load(listen).await;
    }
    let numbers: Vec<usize> = args
        .iter()
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse().with_context(|| format!("not a count: {a}")))
        .collect::<anyhow::Result<_>>()?;
    let (requests, connections) = match (numbers.first(), numbers.get(1), measuring) {
        (Some(&r), c, _) => (r, c.copied().unwrap_or(64)),
        (None, _, true) => (20_000, 64),
        (None, _, false) => (200, 8),
    };
    if requests == 0 || connections == 0 {
        bail!("REQUESTS and CONNECTIONS must be positive");
    }
    drive_load(requests, connections).await
}

/// Serve on an ephemeral port, send `requests` signed webhooks over `connections`
/// keep-alive connections, and print requests/s.
async fn drive_load(requests: usize, connections: usize) -> anyhow::Result<()> {
    let config = IngressConfig::from_vars(
        [("STRIPE_WEBHOOK_SECRET".into(), SECRET.into())],
        None,
        &TenantConfig::default(),
    )?;
    let (backend, state) = ingress_on_memory(config)?;
    let counters = state.counters();
    let shutdown = CancellationToken::new();
    let consumers = drain_queues(&backend.queues, &shutdown);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks/stripe", listener.local_addr()?);
    let server = tokio::spawn(serve(listener, state, shutdown.clone()));

    let template: serde_json::Value = serde_json::from_slice(&std::fs::read(FIXTURE)?)?;
    let secret = WebhookSecret::new(SECRET)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..connections)
        .map(|_| {
            let (client, url, template, secret, next) = (
                client.clone(),
                url.clone(),
                template.clone(),
                secret.clone(),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= requests {
                        return anyhow::Ok(());
                    }
                    let (body, signature) = signed_request(&template, &secret, n)?;
                    let response = client
                        .post(&url)
                        .header("Stripe-Signature", signature)
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send()
                        .await?;
                    if !response.status().is_success() {
                        bail!("request {n} answered {}", response.status());
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await??;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    server.await??;
    for consumer in consumers {
        consumer.await?;
    }

    let snapshot = counters.snapshot();
    if snapshot.accepted != requests as u64 {
        bail!("{requests} sent but {} accepted", snapshot.accepted);
    }
    let routed = backend.bus.routed();
    let routed = routed.subscription + routed.payment + routed.customer;
    if routed != snapshot.entries_published {
        bail!(
            "{} entries published but {routed} routed",
            snapshot.entries_published
        );
    }
    println!(
        "ingress_memory: {requests} requests over {connections} connections in {:.2} s: \
         {:.0} req/s ({} entries published, {routed} routed; client in the same process)",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64(),
        snapshot.entries_published,
    );
    Ok(())
}

/// A memory backend and an ingress publishing to its bus. The signature tolerance is a
/// day, so one pre-signed request can be replayed for a whole run.
fn ingress_on_memory(
    mut config: IngressConfig,
) -> anyhow::Result<(
    MemoryBackend,
    IngressState<LocalBus<MemoryQueue, MemoryArchive>>,
)> {
    config.tolerance = Duration::from_secs(86_400);
    let backend = memory_backend(&Config::default(), system_clock());
    let state = IngressState::new(config, Arc::clone(&backend.bus))?;
    Ok((backend, state))
}

/// The fixture with event id `n` and a fresh signature.
fn signed_request(
    template: &serde_json::Value,
    secret: &WebhookSecret,
    n: usize,
) -> anyhow::Result<(Vec<u8>, String)> {
    let mut event = template.clone();
    event["id"] = format!("evt_load_{n:010}").into();
    let body = serde_json::to_vec(&event)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let signature = signature_header(&body, secret, i64::try_from(now)?);
    Ok((body, signature))
}

/// One consumer per domain queue that deletes what the bus routes, so memory stays flat.
fn drain_queues(
    queues: &Arc<PerDomain<MemoryQueue>>,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    Domain::ALL
        .into_iter()
        .map(|domain| {
            let queues = Arc::clone(queues);
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let queue = queues.get(domain);
                while !shutdown.is_cancelled() {
                    let Ok(messages) = queue.receive(10, Duration::from_millis(200)).await else {
                        continue;
                    };
                    let receipts: Vec<Receipt> = messages.into_iter().map(|m| m.receipt).collect();
                    if !receipts.is_empty()
                        && let Err(error) = queue.delete_batch(&receipts).await
                    {
                        eprintln!("delete failed: {error}");
                    }
                }
            })
        })
        .collect()
}

/// Serve on `listen` until Ctrl-C or SIGTERM, for an external load tool.
async fn serve_for_external_load(listen: &str) -> anyhow::Result<()> {
    let (backend, state) =
        ingress_on_memory(IngressConfig::from_env(None, &TenantConfig::default())?)?;
    let counters = state.counters();
    let shutdown = CancellationToken::new();
    let _consumers = drain_queues(&backend.queues, &shutdown);

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

    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("ingress on the memory backend listening on {listen}");
    serve(listener, state, shutdown).await?;
    let snapshot = counters.snapshot();
    eprintln!(
        "accepted {} requests, {} entries published, {} publish retries; routed {:?}",
        snapshot.accepted,
        snapshot.entries_published,
        snapshot.publish_retries,
        backend.bus.routed()
    );
    Ok(())
}
