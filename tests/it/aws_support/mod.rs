//! Shared helpers for the tests that run against the local AWS emulator started by
//! `tests/run.sh`.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use stripe_worker::backend::QueueSpec;
use stripe_worker::backend::aws::{
    AwsNames, QueueUrls, SetupOptions, SqsQueue, load_sdk_config, setup_tables,
};

/// The emulator's endpoint; panics with instructions when the tests were not started by
/// `tests/run.sh` (these tests never skip silently).
pub fn require_emulator() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => panic!(
            "AWS_ENDPOINT_URL is not set: the AWS backend tests run against a local AWS \
             emulator. Run them with `bash tests/run.sh`, which installs and starts moto \
             and sets the environment."
        ),
    }
}

/// SDK configuration pointing at the emulator (through `AWS_ENDPOINT_URL`).
pub async fn sdk_config() -> SdkConfig {
    require_emulator();
    load_sdk_config().await
}

/// A name prefix no other test (or earlier run against the same emulator) uses.
pub fn unique(label: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t-{label}-{}", &id[..10])
}

/// Create a queue and its `<name>-dlq` as `spec` says (redrive after
/// `max_receive_count` receives) and return the [`SqsQueue`] on them.
pub async fn make_queue(config: &SdkConfig, spec: &QueueSpec) -> SqsQueue {
    let client = aws_sdk_sqs::Client::new(config);
    let dlq_url = client
        .create_queue()
        .queue_name(format!("{}-dlq", spec.name))
        .send()
        .await
        .expect("create DLQ")
        .queue_url
        .expect("DLQ URL");
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("DLQ ARN")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("DLQ ARN attribute");
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": spec.max_receive_count,
    });
    let queue_url = client
        .create_queue()
        .queue_name(&spec.name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            spec.visibility_timeout.as_secs().to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue URL");
    SqsQueue::new(
        client,
        QueueUrls {
            queue: queue_url,
            dlq: dlq_url,
        },
    )
}

/// A queue spec with a fresh name.
pub fn queue_spec(label: &str, visibility: Duration, max_receive_count: u32) -> QueueSpec {
    QueueSpec {
        name: unique(label),
        visibility_timeout: visibility,
        max_receive_count,
    }
}

/// Fresh dedupe and state tables (created as `setup` creates them) under a new prefix.
pub async fn make_tables(config: &SdkConfig, label: &str) -> AwsNames {
    let names = AwsNames::new(unique(label));
    setup_tables(config, &names, &SetupOptions::default())
        .await
        .expect("create tables in the emulator");
    names
}

/// Milliseconds since the epoch, by this machine's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The dead-letter queue of `queue`, as a queue of its own (to read what was sent there).
pub fn dlq_of(config: &SdkConfig, queue: &SqsQueue) -> SqsQueue {
    SqsQueue::new(
        aws_sdk_sqs::Client::new(config),
        QueueUrls {
            queue: queue.urls().dlq.clone(),
            dlq: queue.urls().dlq.clone(),
        },
    )
}

/// A queue at the given URLs.
pub fn queue_at(config: &SdkConfig, urls: &QueueUrls) -> SqsQueue {
    SqsQueue::new(aws_sdk_sqs::Client::new(config), urls.clone())
}

/// Run the whole [`stripe_worker::backend::aws::setup()`] under a fresh prefix, with the
/// rule of each domain matching detail-type `test.<domain>`.
pub async fn setup_prefix(
    config: &SdkConfig,
    label: &str,
) -> (AwsNames, stripe_worker::backend::aws::SetupReport) {
    let names = AwsNames::new(unique(label));
    let report = stripe_worker::backend::aws::setup(
        config,
        &names,
        &test_patterns(),
        &SetupOptions::default(),
    )
    .await
    .expect("setup against the emulator");
    (names, report)
}

/// One pattern per domain: detail-type `test.<domain>`.
pub fn test_patterns() -> stripe_worker::backend::PerDomain<serde_json::Value> {
    stripe_worker::backend::PerDomain::from_fn(
        |d| serde_json::json!({ "detail-type": [format!("test.{d}")] }),
    )
}

/// Create every resource under a fresh prefix with the real routing patterns (a 5 s
/// visibility timeout, so interrupted work comes back quickly) and connect to them.
pub async fn deployment(
    label: &str,
) -> (SdkConfig, AwsNames, stripe_worker::backend::aws::AwsBackend) {
    use stripe_worker::backend::aws::{AwsSettings, connect, setup};
    let sdk = sdk_config().await;
    let names = AwsNames::new(unique(label));
    let options = SetupOptions {
        visibility_timeout: Duration::from_secs(5),
        table_wait: Duration::from_secs(30),
        ..SetupOptions::default()
    };
    let patterns =
        stripe_worker::backend::PerDomain::from_fn(stripe_worker::routing::domain_pattern);
    setup(&sdk, &names, &patterns, &options)
        .await
        .expect("setup against the emulator");
    let backend = connect(&sdk, &names, &AwsSettings::default())
        .await
        .expect("connect");
    (sdk, names, backend)
}
