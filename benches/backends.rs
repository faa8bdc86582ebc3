//! Benchmarks of the I/O side: `process_one` on the memory backends (the engine's own
//! cost per message) and the SQLite backend's operations. `cargo bench --bench backends`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use stripe_worker::app::{local_queue_spec, memory_backend};
use stripe_worker::backend::doubles::memory::{MemoryDedupe, MemoryState};
use stripe_worker::backend::sqlite::{SqliteDb, SqliteQueue, SqliteState};
use stripe_worker::backend::{
    DedupeKey, EventWrite, Marker, Queue, Receipt, ReceivedMessage, StateRecord, StateStore,
};
use stripe_worker::bench::mix::{Mix, build};
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::domain::Domain;
use stripe_worker::worker::{Processor, Worker};
use tokio::runtime::Runtime;

const MIX_SIZE: usize = 20_000;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn message(body: &str) -> ReceivedMessage {
    ReceivedMessage {
        message_id: "m".into(),
        receipt: Receipt("r".into()),
        body: body.to_owned(),
        receive_count: 1,
        sent_at_ms: 0,
        attributes: Default::default(),
    }
}

/// The processor of the worker `run` builds, on fresh memory backends.
fn processor(mix: &Mix) -> Arc<Processor<MemoryDedupe, MemoryState>> {
    let mut config = Config::default();
    config.tenants.tenants = mix.tenants.clone();
    let backend = memory_backend(&config, system_clock());
    Arc::clone(Worker::build(&config, &backend, None, system_clock()).processor())
}

fn process_one(c: &mut Criterion) {
    let rt = runtime();
    let mix = build(MIX_SIZE, 3, 7).expect("mix");
    let messages: Vec<(Domain, ReceivedMessage)> = mix
        .messages
        .iter()
        .map(|(d, body)| (*d, message(body)))
        .collect();
    let mut group = c.benchmark_group("process_one_memory");
    // Each message of the mix once, on fresh stores: the applied path (claim, handler,
    // puts, complete). Stores are renewed, outside the timing, when the mix is used up.
    group.bench_function("applied", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    let p = processor(&mix);
                    let n = (iters - done).min(messages.len() as u64) as usize;
                    let start = Instant::now();
                    for (domain, m) in &messages[..n] {
                        std::hint::black_box(p.process_one(*domain, m).await);
                    }
                    total += start.elapsed();
                    done += n as u64;
                }
                total
            })
        })
    });
    // Every message already applied: decode, tenant, claim says done.
    group.bench_function("duplicate", |b| {
        let p = processor(&mix);
        rt.block_on(async {
            for (domain, m) in &messages {
                p.process_one(*domain, m).await;
            }
        });
        let mut i = 0usize;
        b.iter(|| {
            let (domain, m) = &messages[i % messages.len()];
            i += 1;
            rt.block_on(p.process_one(*domain, m))
        })
    });
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = SqliteDb::open(&dir.path().join("bench.sqlite")).expect("open");
    let config = Config::default();
    let queue = SqliteQueue::open(&db, local_queue_spec(Domain::Payment, &config));
    let state = SqliteState::new(&db);
    let mix = build(100, 1, 7).expect("mix");
    let body = mix.messages[0].1.clone();
    let mut group = c.benchmark_group("sqlite");
    group.sample_size(20);

    group.bench_function("queue_send", |b| {
        b.iter(|| rt.block_on(queue.send(&body, Duration::ZERO)))
    });
    // Receive a batch of 10 and delete it: one worker round trip per 10 messages.
    group.bench_function("queue_receive10_delete10", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                for _ in 0..iters * 10 {
                    queue.send(&body, Duration::ZERO).await.expect("send");
                }
                let start = Instant::now();
                for _ in 0..iters {
                    let got = queue.receive(10, Duration::ZERO).await.expect("receive");
                    let receipts: Vec<Receipt> = got.into_iter().map(|m| m.receipt).collect();
                    queue.delete_batch(&receipts).await.expect("delete");
                }
                start.elapsed()
            })
        })
    });
    let mut n = 0u64;
    // One event's apply: its marker and one record in one transaction, what the worker
    // commits per message.
    group.bench_function("state_apply", |b| {
        b.iter(|| {
            n += 1;
            let key = DedupeKey {
                tenant: "tenant-1".into(),
                handler: "bench".into(),
                dedupe_id: format!("evt_{n}"),
            };
            let records = [StateRecord {
                tenant: "tenant-1".into(),
                kind: "subscription".into(),
                id: format!("sub_{}", n % 1000),
                customer: Some("cus_1".into()),
                as_of_ms: n as i64,
                tiebreak: format!("evt_{n}"),
                doc: json!({"status": "active", "items": [1, 2, 3]}),
            }];
            rt.block_on(state.apply(&EventWrite {
                key: &key,
                marker: Marker::IfAbsent,
                now_ms: 1_700_000_000_000,
                retention: Duration::from_secs(7 * 86_400),
                records: &records,
            }))
            .expect("apply")
        })
    });
    let mut as_of = 0i64;
    group.bench_function("state_put_if_newer", |b| {
        b.iter(|| {
            as_of += 1;
            let record = StateRecord {
                tenant: "tenant-1".into(),
                kind: "subscription".into(),
                id: format!("sub_{}", as_of % 1000),
                customer: Some("cus_1".into()),
                as_of_ms: as_of,
                tiebreak: format!("evt_{as_of}"),
                doc: json!({"status": "active", "items": [1, 2, 3]}),
            };
            rt.block_on(state.put_if_newer(&record))
        })
    });
    group.finish();
}

criterion_group!(benches, process_one, sqlite);
criterion_main!(benches);
