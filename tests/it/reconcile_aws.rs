//! Keeping the state equal to Stripe on the AWS backends (SQS, DynamoDB, EventBridge),
//! against the emulator `tests/run.sh` starts (moto): the scenarios of
//! `reconcile` module, with the checkpoints and the "was this event applied" reads on
//! the DynamoDB dedupe table.

use crate::aws_support;
use crate::reconcile_support as scenario;
use stripe_worker::backend::ReconcileStore;
use stripe_worker::backend::aws::AwsBackend;

async fn backend(label: &str) -> AwsBackend {
    aws_support::deployment(label).await.2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_into_an_empty_store_gives_the_full_state() {
    scenario::import_gives_the_full_state(&backend("rc-import").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_and_lists_each_object_once() {
    let main = backend("rc-resume").await;
    let scratch = backend("rc-scratch").await;
    scenario::interrupted_import_resumes(&main, &scratch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_delivery_then_sweep_gives_the_full_state() {
    scenario::sweep_recovers_dropped_events(&backend("rc-sweep").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_differences_and_repair_fixes_them() {
    scenario::verify_and_repair(&backend("rc-verify").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_same_second_pair_ends_with_the_fetched_object_in_either_order() {
    scenario::same_second_ties(async || backend("rc-ties").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_versions_tie_with_events_of_their_second_in_either_order() {
    scenario::fetched_versions_tie_with_events_of_their_second(async || {
        backend("rc-fetch-ties").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_publishes_thin_events_only_the_v2_list_has() {
    scenario::sweep_reads_the_v2_list(&backend("rc-sweep-v2").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_never_meet_dedupe_keys() {
    let backend = backend("rc-checkpoint").await;
    let dedupe = backend.dedupe.as_ref();
    assert_eq!(
        dedupe.checkpoint("acme", "import:invoice").await.unwrap(),
        None
    );
    dedupe
        .set_checkpoint("acme", "import:invoice", Some("in_1"))
        .await
        .unwrap();
    assert_eq!(
        dedupe
            .checkpoint("acme", "import:invoice")
            .await
            .unwrap()
            .as_deref(),
        Some("in_1")
    );
    // A dedupe key of the same tenant reads as never applied.
    let key = stripe_worker::backend::DedupeKey {
        tenant: "acme".into(),
        handler: "import:invoice".into(),
        dedupe_id: "x".into(),
    };
    assert!(!dedupe.was_applied(&key, 0).await.unwrap());
    dedupe
        .set_checkpoint("acme", "import:invoice", None)
        .await
        .unwrap();
    assert_eq!(
        dedupe.checkpoint("acme", "import:invoice").await.unwrap(),
        None
    );
}
