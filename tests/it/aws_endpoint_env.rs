//! `load_sdk_config` honours the per-service endpoint variables over `AWS_ENDPOINT_URL`
//! (through `aws-config`). The check changes the process environment, which the other
//! tests of this binary read from their threads, so the test re-runs itself alone in a
//! child process that has the variables set.

use stripe_worker::backend::StateStore;
use stripe_worker::backend::aws::{DynamoState, load_sdk_config};

use crate::{aws_support, child_process};

const TEST_NAME: &str = "aws_endpoint_env::per_service_endpoint_variables_override_the_global_one";

#[tokio::test]
async fn per_service_endpoint_variables_override_the_global_one() {
    let emulator = aws_support::require_emulator();
    if !child_process::is_child() {
        child_process::run_alone(
            TEST_NAME,
            &[
                // Port 9 (discard): nothing answers there.
                ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
                ("AWS_ENDPOINT_URL_SQS", &emulator),
                ("AWS_MAX_ATTEMPTS", "1"),
            ],
        );
        return;
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
