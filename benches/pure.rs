//! Benchmarks of the pure hot paths: decoding each payload shape, routing an envelope,
//! verifying a webhook signature. `cargo bench --bench pure`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use stripe_worker::event::decode_message;
use stripe_worker::ingress::signature::DEFAULT_TOLERANCE;
use stripe_worker::ingress::{WebhookSecret, signature_header, verify};
use stripe_worker::routing::Router;

/// Every envelope fixture: one per payload shape the worker decodes.
fn envelopes() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/envelopes");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read(&path).expect("fixture readable"))
        })
        .collect();
    out.sort();
    out
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_message");
    for (name, body) in envelopes() {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(&name, |b| b.iter(|| decode_message(black_box(&body))));
    }
    group.finish();
}

fn route(c: &mut Criterion) {
    let router = Router::standard();
    let mut group = c.benchmark_group("router_route");
    for (name, body) in envelopes() {
        let envelope: Value = serde_json::from_slice(&body).expect("fixture is JSON");
        group.bench_function(&name, |b| b.iter(|| router.route(black_box(&envelope))));
    }
    group.finish();
}

fn signature(c: &mut Criterion) {
    let secret = WebhookSecret::new("whsec_bench_secret_0123456789").expect("valid secret");
    let rotated = WebhookSecret::new("whsec_bench_secret_previous").expect("valid secret");
    let body = envelopes()
        .into_iter()
        .find(|(name, _)| name == "webhook_snapshot")
        .map(|(_, body)| body)
        .expect("webhook_snapshot fixture");
    let t = 1_700_000_000;
    let header = signature_header(&body, &secret, t);
    let mut group = c.benchmark_group("signature_verify");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("one_secret", |b| {
        let secrets = [secret.clone()];
        b.iter(|| {
            verify(
                black_box(&header),
                black_box(&body),
                &secrets,
                t,
                DEFAULT_TOLERANCE,
            )
        })
    });
    group.bench_function("two_secrets_rotating", |b| {
        let secrets = [rotated.clone(), secret.clone()];
        b.iter(|| {
            verify(
                black_box(&header),
                black_box(&body),
                &secrets,
                t,
                DEFAULT_TOLERANCE,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, decode, route, signature);
criterion_main!(benches);
