//! Keeping the state equal to Stripe on the embedded (SQLite) backend, against the Stripe
//! double served over HTTP: import, an interrupted import resumed, sweep after dropped
//! events, verify and repair, same-second ties. The same scenarios run on the AWS
//! emulator in `tests/reconcile_aws.rs`.

mod reconcile_support;

use reconcile_support as scenario;
use stripe_worker::app::{LocalBackend, open_local};
use stripe_worker::clock::system_clock;

/// A fresh embedded backend in its own directory (kept alive by the returned guard).
fn local() -> (tempfile::TempDir, LocalBackend) {
    let dir = tempfile::tempdir().expect("temp dir");
    let backend =
        open_local(dir.path(), &scenario::config(), system_clock()).expect("open backend");
    (dir, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_an_empty_store_gives_the_full_state() {
    let (_dir, backend) = local();
    scenario::import_gives_the_full_state(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_and_lists_each_object_once() {
    let (_dir, backend) = local();
    let (_scratch_dir, scratch) = local();
    scenario::interrupted_import_resumes(&backend, &scratch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_delivery_then_sweep_gives_the_full_state() {
    let (_dir, backend) = local();
    scenario::sweep_recovers_dropped_events(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_differences_and_repair_fixes_them() {
    let (_dir, backend) = local();
    scenario::verify_and_repair(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_second_pair_ends_with_the_fetched_object_in_either_order() {
    let mut dirs = Vec::new();
    scenario::same_second_ties(async || {
        let (dir, backend) = local();
        dirs.push(dir);
        backend
    })
    .await;
}
