//! `load_sdk_config` honours the per-service endpoint variables over `AWS_ENDPOINT_URL`
//! (through `aws-config`). Its own test binary with one test, because it changes the
//! process environment.

mod aws_support;

use stripe_worker::backend::StateStore;
use stripe_worker::backend::aws::{DynamoState, load_sdk_config};

#[tokio::test]
async fn per_service_endpoint_variables_override_the_global_one() {
    let emulator = aws_support::require_emulator();
    // SAFETY: this binary holds this one test on a current-thread runtime, so no other
    // thread reads the environment while it changes.
    unsafe {
        // Port 9 (discard): nothing answers there.
        std::env::set_var("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
        std::env::set_var("AWS_ENDPOINT_URL_SQS", &emulator);
        std::env::set_var("AWS_MAX_ATTEMPTS", "1");
    }
    let config = load_sdk_config().await;

    // SQS follows its own variable to the emulator.
    aws_sdk_sqs::Client::new(&config)
        .list_queues()
        .send()
        .await
        .expect("SQS reaches the emulator through AWS_ENDPOINT_URL_SQS");

    // DynamoDB follows the global one, where nothing listens: a transient failure.
    let state = DynamoState::new(
        aws_sdk_dynamodb::Client::new(&config),
        "t-unreachable",
        "t-unreachable-dedupe",
    );
    let err = state
        .get("acme", "invoice", "in_1")
        .await
        .expect_err("nothing listens on the global endpoint");
    assert!(err.is_retryable() && !err.is_throttle(), "{err:?}");
}
