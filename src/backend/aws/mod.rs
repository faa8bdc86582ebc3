//! AWS backends: [`SqsQueue`] (SQS), [`DynamoDedupe`] and [`DynamoState`] (DynamoDB) and
//! [`EventBridgeBus`] (EventBridge), plus [`setup()`](setup::setup) that creates the
//! resources they run on.
//!
//! Clients come from one [`SdkConfig`] loaded by [`load_sdk_config`] with the standard
//! credential chain. `AWS_ENDPOINT_URL` (every service) and `AWS_ENDPOINT_URL_SQS`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, `AWS_ENDPOINT_URL_EVENTBRIDGE` (one service) are read by
//! `aws-config` and the service clients themselves, which is how the tests point
//! everything at a local emulator.
//!
//! These backends never loop around a call; they map each failure to [`BackendError`]
//! so the one layer that retries that remote can decide ([`crate::retry`]): the SDK
//! (standard retry mode) for SQS and EventBridge calls, the worker for DynamoDB (whose
//! client has the SDK's retries off), and [`crate::backend::publish_all`] for entries a
//! successful `PutEvents` call rejected, which the SDK cannot see.

mod dynamodb;
mod error;
mod eventbridge;
pub mod replay;
pub mod setup;
mod sqs;

pub use dynamodb::{DynamoDedupe, DynamoState, schema};
pub use error::one_line;
pub use eventbridge::{EventBridgeBus, entry_size};
pub use setup::{
    ResourceKind, SetupItem, SetupOptions, SetupReport, SetupStatus, setup, setup_tables,
};
pub use sqs::{DEFAULT_DLQ_HOLD, QueueUrls, SqsQueue};

use aws_config::{BehaviorVersion, SdkConfig};

use crate::backend::{Backend, BackendError, PerDomain};
use crate::domain::Domain;

/// Load the SDK configuration from the environment: region, the standard credential
/// chain (environment, profile, SSO, web identity, container and instance metadata) and
/// endpoint overrides (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_<SERVICE>`), with the
/// default [`SdkTimeouts`].
pub async fn load_sdk_config() -> SdkConfig {
    load_sdk_config_with(SdkTimeouts::default()).await
}

/// [`load_sdk_config`] with the given timeouts.
pub async fn load_sdk_config_with(timeouts: SdkTimeouts) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts.to_timeout_config())
        .load()
        .await
}

/// Every SDK call's time limits, so that an endpoint that accepts a connection and never
/// answers fails the call (transient, retried by the SDK within `operation`) instead of
/// hanging the command. `read` is the wait for a response; it must outlast the longest
/// long poll (`wait_time_secs`, at most 20 s), which the configuration checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdkTimeouts {
    /// Establishing a TCP (and TLS) connection.
    pub connect: std::time::Duration,
    /// Waiting for a response once a request is sent.
    pub read: std::time::Duration,
    /// One call, every SDK retry included.
    pub operation: std::time::Duration,
}

impl Default for SdkTimeouts {
    fn default() -> Self {
        SdkTimeouts {
            connect: std::time::Duration::from_secs(3),
            read: std::time::Duration::from_secs(25),
            operation: std::time::Duration::from_secs(60),
        }
    }
}

impl SdkTimeouts {
    /// The SDK's form: each attempt is bounded by `read` plus a connect, the whole call
    /// by `operation`.
    pub fn to_timeout_config(self) -> aws_config::timeout::TimeoutConfig {
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(self.connect)
            .read_timeout(self.read)
            .operation_attempt_timeout(self.connect + self.read)
            .operation_timeout(self.operation)
            .build()
    }
}

/// The names of every AWS resource the worker uses, derived from one prefix so that
/// several deployments (or test runs) can share an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsNames {
    /// Prepended to every name, e.g. `stripe-worker` or `ai-nexus-dev-stripe`.
    pub prefix: String,
}

impl Default for AwsNames {
    fn default() -> Self {
        AwsNames::new(AwsNames::DEFAULT_PREFIX)
    }
}

impl AwsNames {
    /// The prefix used when none is configured.
    pub const DEFAULT_PREFIX: &'static str = "stripe-worker";

    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        AwsNames {
            prefix: prefix.into(),
        }
    }

    /// The custom event bus: `<prefix>-event-bus`.
    pub fn bus(&self) -> String {
        format!("{}-event-bus", self.prefix)
    }

    /// A domain's queue: `<prefix>-<domain>-events`.
    pub fn queue(&self, domain: Domain) -> String {
        format!("{}-{}-events", self.prefix, domain.as_str())
    }

    /// A domain's dead-letter queue: `<prefix>-<domain>-events-dlq`.
    pub fn dlq(&self, domain: Domain) -> String {
        format!("{}-dlq", self.queue(domain))
    }

    /// The rule routing a domain's events into its queue: `<prefix>-<domain>_events-rule`.
    pub fn rule(&self, domain: Domain) -> String {
        format!("{}-{}_events-rule", self.prefix, domain.as_str())
    }

    /// The archive of the bus: `<prefix>-events-archive`.
    pub fn archive(&self) -> String {
        format!("{}-events-archive", self.prefix)
    }

    /// The dedupe table: `<prefix>-dedupe`.
    pub fn dedupe_table(&self) -> String {
        format!("{}-dedupe", self.prefix)
    }

    /// The billing state table: `<prefix>-state`.
    pub fn state_table(&self) -> String {
        format!("{}-state", self.prefix)
    }
}

/// How [`connect`] builds the backends, beyond the resource names.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// Queue URLs per domain. `None` resolves them by name (`GetQueueUrl`) at connect
    /// time, which needs `sqs:GetQueueUrl`; given URLs skip that call.
    pub queue_urls: Option<PerDomain<QueueUrls>>,
    /// The most bytes one `PutEvents` request may carry, counted as EventBridge does.
    pub max_publish_request_bytes: usize,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            queue_urls: None,
            max_publish_request_bytes: EventBridgeBus::DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// The AWS backend bundle.
pub type AwsBackend = Backend<SqsQueue, DynamoDedupe, DynamoState, EventBridgeBus>;

/// Build the AWS backends for `names`: one SQS queue (with its DLQ) per domain, the
/// dedupe and state tables and the event bus. Queue URLs are resolved by name unless
/// `settings` gives them; a missing queue is a [`BackendError::Permanent`].
pub async fn connect(
    config: &SdkConfig,
    names: &AwsNames,
    settings: &AwsSettings,
) -> Result<AwsBackend, BackendError> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let dynamodb = store_client(config);

    let queues = match &settings.queue_urls {
        Some(urls) => {
            PerDomain::from_fn(|domain| SqsQueue::new(sqs.clone(), urls.get(domain).clone()))
        }
        None => {
            let (subscription, payment, customer) = futures::try_join!(
                resolve_domain(&sqs, names, Domain::Subscription),
                resolve_domain(&sqs, names, Domain::Payment),
                resolve_domain(&sqs, names, Domain::Customer),
            )?;
            PerDomain {
                subscription,
                payment,
                customer,
            }
        }
    };

    let bus = connect_bus(config, names, settings);

    Ok(Backend {
        queues: std::sync::Arc::new(queues),
        dedupe: std::sync::Arc::new(DynamoDedupe::new(dynamodb.clone(), names.dedupe_table())),
        state: std::sync::Arc::new(DynamoState::new(
            dynamodb,
            names.state_table(),
            names.dedupe_table(),
        )),
        bus: std::sync::Arc::new(bus),
    })
}

/// The DynamoDB client of the stores, with the SDK's retries off: the worker retries a
/// store call itself, within the message's budget and counting every throttle for its
/// concurrency limit (see [`crate::retry`]); with the SDK retrying too, one step was up to
/// 3 x 5 calls. Other commands make one call per store operation and report a failure;
/// each of them is safe to run again (`import` and `sweep` resume from checkpoints).
fn store_client(config: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(config)
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// The event bus alone, for the ingress: no queue URL is resolved and no table touched,
/// so a caller allowed only `events:PutEvents` (and `events:DescribeEventBus` for
/// readiness) can start.
pub fn connect_bus(config: &SdkConfig, names: &AwsNames, settings: &AwsSettings) -> EventBridgeBus {
    EventBridgeBus::new(aws_sdk_eventbridge::Client::new(config), names.bus())
        .with_max_request_bytes(settings.max_publish_request_bytes)
}

async fn resolve_domain(
    sqs: &aws_sdk_sqs::Client,
    names: &AwsNames,
    domain: Domain,
) -> Result<SqsQueue, BackendError> {
    SqsQueue::resolve(sqs.clone(), &names.queue(domain), &names.dlq(domain)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        let names = AwsNames::new("ai-nexus-dev-stripe");
        assert_eq!(names.bus(), "ai-nexus-dev-stripe-event-bus");
        assert_eq!(
            names.queue(Domain::Payment),
            "ai-nexus-dev-stripe-payment-events"
        );
        assert_eq!(
            names.dlq(Domain::Payment),
            "ai-nexus-dev-stripe-payment-events-dlq"
        );
        assert_eq!(
            names.rule(Domain::Subscription),
            "ai-nexus-dev-stripe-subscription_events-rule"
        );
        assert_eq!(names.archive(), "ai-nexus-dev-stripe-events-archive");
        assert_eq!(names.dedupe_table(), "ai-nexus-dev-stripe-dedupe");
        assert_eq!(names.state_table(), "ai-nexus-dev-stripe-state");
        assert_eq!(AwsNames::default().prefix, "stripe-worker");
    }
}
