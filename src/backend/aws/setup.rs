//! Creating the AWS resources the worker runs on, idempotently: the event bus and its
//! archive, per domain a queue with a dead-letter queue and a rule routing into it, and
//! the DynamoDB tables with TTL enabled.
//!
//! Running it again converges settings (queue attributes, rule patterns, targets) and
//! reports every resource as already existing.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Value, json};

use super::AwsNames;
use super::dynamodb::schema;
use super::error::{from_sdk, service_code};
use super::sqs::QueueUrls;
use crate::backend::{BackendError, BackendResult, PerDomain};
use crate::domain::Domain;

/// Settings of the created resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupOptions {
    /// After this many receives a message goes to the DLQ (`maxReceiveCount`).
    pub max_receive_count: u32,
    /// The queues' default visibility timeout.
    pub visibility_timeout: Duration,
    /// How long the bus archive keeps events.
    pub archive_retention_days: u32,
    /// How long the dead-letter queues keep messages (SQS allows up to 14 days).
    pub dlq_retention: Duration,
    /// How long to wait for a new table to become active.
    pub table_wait: Duration,
}

impl Default for SetupOptions {
    fn default() -> Self {
        SetupOptions {
            max_receive_count: 5,
            visibility_timeout: Duration::from_secs(60),
            archive_retention_days: 90,
            dlq_retention: Duration::from_secs(14 * 24 * 60 * 60),
            table_wait: Duration::from_secs(120),
        }
    }
}

/// What kind of resource a [`SetupItem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// The custom EventBridge bus.
    EventBus,
    /// The archive of the bus.
    Archive,
    /// A domain queue.
    Queue,
    /// A domain dead-letter queue.
    DeadLetterQueue,
    /// A domain rule (with its queue target).
    Rule,
    /// A DynamoDB table (with TTL).
    Table,
}

impl ResourceKind {
    fn label(self) -> &'static str {
        match self {
            ResourceKind::EventBus => "event bus",
            ResourceKind::Archive => "archive",
            ResourceKind::Queue => "queue",
            ResourceKind::DeadLetterQueue => "dead-letter queue",
            ResourceKind::Rule => "rule",
            ResourceKind::Table => "table",
        }
    }
}

/// Whether setup created a resource or found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetupStatus {
    /// It did not exist and was created.
    Created,
    /// It existed; its settings were brought in line where setup manages them.
    Existed,
}

/// One resource setup handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupItem {
    /// What it is.
    pub kind: ResourceKind,
    /// Its name.
    pub name: String,
    /// Created or found.
    pub status: SetupStatus,
}

/// What [`setup`] did, resource by resource, plus the addresses the backends need.
#[derive(Debug, Clone)]
pub struct SetupReport {
    /// Every resource, in the order handled.
    pub items: Vec<SetupItem>,
    /// The bus ARN.
    pub bus_arn: String,
    /// Queue and DLQ URLs per domain (for [`super::AwsSettings::queue_urls`]).
    pub queue_urls: PerDomain<QueueUrls>,
}

impl SetupReport {
    /// The resources that were created.
    pub fn created(&self) -> impl Iterator<Item = &SetupItem> {
        self.items
            .iter()
            .filter(|i| i.status == SetupStatus::Created)
    }

    /// The resources that already existed.
    pub fn existed(&self) -> impl Iterator<Item = &SetupItem> {
        self.items
            .iter()
            .filter(|i| i.status == SetupStatus::Existed)
    }
}

impl fmt::Display for SetupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            let status = match item.status {
                SetupStatus::Created => "created",
                SetupStatus::Existed => "exists ",
            };
            writeln!(f, "{status}  {:<17}  {}", item.kind.label(), item.name)?;
        }
        let created = self.created().count();
        write!(
            f,
            "{created} created, {} already existed",
            self.items.len() - created
        )
    }
}

/// Create (or find) every resource named by `names`. `patterns` is the EventBridge event
/// pattern of each domain's rule. Idempotent: a second run creates nothing and brings
/// queue attributes, rule patterns and targets back to what is asked.
pub async fn setup(
    config: &SdkConfig,
    names: &AwsNames,
    patterns: &PerDomain<Value>,
    opts: &SetupOptions,
) -> BackendResult<SetupReport> {
    let sqs = aws_sdk_sqs::Client::new(config);
    let events = aws_sdk_eventbridge::Client::new(config);
    let dynamodb = aws_sdk_dynamodb::Client::new(config);
    let mut items = Vec::new();

    let (bus_arn, status) = ensure_bus(&events, &names.bus()).await?;
    items.push(item(ResourceKind::EventBus, names.bus(), status));

    let mut urls = Vec::new();
    for domain in Domain::ALL {
        let pattern = patterns.get(domain);
        if !pattern.is_object() {
            return Err(BackendError::Permanent {
                operation: "setup.pattern",
                message: format!("the event pattern for `{domain}` is not a JSON object"),
            });
        }
        let (domain_urls, mut domain_items) =
            ensure_domain(&sqs, &events, names, domain, pattern, opts).await?;
        items.append(&mut domain_items);
        urls.push((domain, domain_urls));
    }

    let status = ensure_archive(&events, &names.archive(), &bus_arn, opts).await?;
    items.push(item(ResourceKind::Archive, names.archive(), status));

    items.append(&mut setup_tables_with(&dynamodb, names, opts).await?);

    let queue_urls = PerDomain::try_from_fn(|domain| {
        urls.iter()
            .find(|(d, _)| *d == domain)
            .map(|(_, u)| u.clone())
            .ok_or_else(|| BackendError::Permanent {
                operation: "setup",
                message: format!("no queue set up for `{domain}`"),
            })
    })?;
    Ok(SetupReport {
        items,
        bus_arn,
        queue_urls,
    })
}

/// Create (or find) only the DynamoDB tables, with TTL enabled: the part of [`setup`]
/// a deployment that manages its queues and bus elsewhere still needs.
pub async fn setup_tables(
    config: &SdkConfig,
    names: &AwsNames,
    opts: &SetupOptions,
) -> BackendResult<Vec<SetupItem>> {
    setup_tables_with(&aws_sdk_dynamodb::Client::new(config), names, opts).await
}

async fn setup_tables_with(
    dynamodb: &aws_sdk_dynamodb::Client,
    names: &AwsNames,
    opts: &SetupOptions,
) -> BackendResult<Vec<SetupItem>> {
    let dedupe = ensure_table(dynamodb, &dedupe_table(&names.dedupe_table())?, opts).await?;
    let state = ensure_table(dynamodb, &state_table(&names.state_table())?, opts).await?;
    Ok(vec![
        item(ResourceKind::Table, names.dedupe_table(), dedupe),
        item(ResourceKind::Table, names.state_table(), state),
    ])
}

fn item(kind: ResourceKind, name: String, status: SetupStatus) -> SetupItem {
    SetupItem { kind, name, status }
}

fn build_error(operation: &'static str, e: impl fmt::Display) -> BackendError {
    BackendError::Permanent {
        operation,
        message: e.to_string(),
    }
}

async fn ensure_bus(
    events: &aws_sdk_eventbridge::Client,
    name: &str,
) -> BackendResult<(String, SetupStatus)> {
    let status = match events.create_event_bus().name(name).send().await {
        Ok(_) => SetupStatus::Created,
        Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => {
            SetupStatus::Existed
        }
        Err(e) => return Err(from_sdk("setup.create_event_bus", e)),
    };
    let out = events
        .describe_event_bus()
        .name(name)
        .send()
        .await
        .map_err(|e| from_sdk("setup.describe_event_bus", e))?;
    let arn = out.arn.ok_or_else(|| BackendError::Permanent {
        operation: "setup.describe_event_bus",
        message: format!("no ARN returned for bus `{name}`"),
    })?;
    Ok((arn, status))
}

/// The DLQ, the queue with its redrive policy, the rule, the queue policy admitting only
/// that rule, and the rule's target, in the order each needs the one before.
async fn ensure_domain(
    sqs: &aws_sdk_sqs::Client,
    events: &aws_sdk_eventbridge::Client,
    names: &AwsNames,
    domain: Domain,
    pattern: &Value,
    opts: &SetupOptions,
) -> BackendResult<(QueueUrls, Vec<SetupItem>)> {
    let mut items = Vec::new();
    let dlq_name = names.dlq(domain);
    let queue_name = names.queue(domain);
    let rule_name = names.rule(domain);
    let bus_name = names.bus();

    let mut dlq_attributes = HashMap::new();
    dlq_attributes.insert(
        QueueAttributeName::MessageRetentionPeriod,
        opts.dlq_retention.as_secs().to_string(),
    );
    let (dlq_url, status) = ensure_queue(sqs, &dlq_name, &dlq_attributes).await?;
    items.push(item(ResourceKind::DeadLetterQueue, dlq_name, status));
    let dlq_arn = queue_arn(sqs, &dlq_url).await?;

    let mut attributes = HashMap::new();
    attributes.insert(
        QueueAttributeName::VisibilityTimeout,
        opts.visibility_timeout.as_secs().to_string(),
    );
    attributes.insert(
        QueueAttributeName::RedrivePolicy,
        json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": opts.max_receive_count,
        })
        .to_string(),
    );
    let (queue_url, status) = ensure_queue(sqs, &queue_name, &attributes).await?;
    items.push(item(ResourceKind::Queue, queue_name, status));
    let arn = queue_arn(sqs, &queue_url).await?;

    let rule_status = match events
        .describe_rule()
        .name(&rule_name)
        .event_bus_name(&bus_name)
        .send()
        .await
    {
        Ok(_) => SetupStatus::Existed,
        Err(e) if service_code(&e) == Some("ResourceNotFoundException") => SetupStatus::Created,
        Err(e) => return Err(from_sdk("setup.describe_rule", e)),
    };
    // PutRule creates or updates, so the pattern always converges to the one given.
    let rule = events
        .put_rule()
        .name(&rule_name)
        .event_bus_name(&bus_name)
        .event_pattern(pattern.to_string())
        .state(RuleState::Enabled)
        .description(format!(
            "Routes {domain} billing events to {}",
            names.queue(domain)
        ))
        .send()
        .await
        .map_err(|e| from_sdk("setup.put_rule", e))?;
    let rule_arn = rule.rule_arn.ok_or_else(|| BackendError::Permanent {
        operation: "setup.put_rule",
        message: format!("no ARN returned for rule `{rule_name}`"),
    })?;

    // Only this rule may send to the queue: EventBridge presents the rule ARN as
    // aws:SourceArn.
    let policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AllowDomainRule",
            "Effect": "Allow",
            "Principal": { "Service": "events.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": arn,
            "Condition": { "ArnEquals": { "aws:SourceArn": rule_arn } },
        }],
    });
    sqs.set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| from_sdk("setup.set_queue_policy", e))?;

    let target = Target::builder()
        .id(format!("{domain}-queue"))
        .arn(&arn)
        .build()
        .map_err(|e| build_error("setup.put_targets", e))?;
    let out = events
        .put_targets()
        .rule(&rule_name)
        .event_bus_name(&bus_name)
        .targets(target)
        .send()
        .await
        .map_err(|e| from_sdk("setup.put_targets", e))?;
    if out.failed_entry_count > 0 {
        let reason = out
            .failed_entries
            .unwrap_or_default()
            .into_iter()
            .map(|f| {
                format!(
                    "{}: {}",
                    f.error_code.unwrap_or_default(),
                    f.error_message.unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(BackendError::Permanent {
            operation: "setup.put_targets",
            message: format!("rule `{rule_name}`: {reason}"),
        });
    }
    items.push(item(ResourceKind::Rule, rule_name, rule_status));

    Ok((
        QueueUrls {
            queue: queue_url,
            dlq: dlq_url,
        },
        items,
    ))
}

/// Find or create a queue, then set `attributes` either way so they converge.
async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &HashMap<QueueAttributeName, String>,
) -> BackendResult<(String, SetupStatus)> {
    let existing = match sqs.get_queue_url().queue_name(name).send().await {
        Ok(out) => out.queue_url,
        Err(e) if is_missing_queue(service_code(&e)) => None,
        Err(e) => return Err(from_sdk("setup.get_queue_url", e)),
    };
    match existing {
        Some(url) => {
            sqs.set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes.clone()))
                .send()
                .await
                .map_err(|e| from_sdk("setup.set_queue_attributes", e))?;
            Ok((url, SetupStatus::Existed))
        }
        None => {
            let out = sqs
                .create_queue()
                .queue_name(name)
                .set_attributes(Some(attributes.clone()))
                .send()
                .await
                .map_err(|e| from_sdk("setup.create_queue", e))?;
            let url = out.queue_url.ok_or_else(|| BackendError::Permanent {
                operation: "setup.create_queue",
                message: format!("no URL returned for queue `{name}`"),
            })?;
            Ok((url, SetupStatus::Created))
        }
    }
}

fn is_missing_queue(code: Option<&str>) -> bool {
    matches!(code, Some(c) if c == "QueueDoesNotExist" || c.ends_with("NonExistentQueue"))
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> BackendResult<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| from_sdk("setup.get_queue_arn", e))?;
    out.attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| BackendError::Permanent {
            operation: "setup.get_queue_arn",
            message: format!("no ARN returned for queue `{url}`"),
        })
}

async fn ensure_archive(
    events: &aws_sdk_eventbridge::Client,
    name: &str,
    bus_arn: &str,
    opts: &SetupOptions,
) -> BackendResult<SetupStatus> {
    let retention = i32::try_from(opts.archive_retention_days).unwrap_or(i32::MAX);
    match events
        .create_archive()
        .archive_name(name)
        .event_source_arn(bus_arn)
        .retention_days(retention)
        .description("Every event on the stripe-worker bus, for replay")
        .send()
        .await
    {
        Ok(_) => Ok(SetupStatus::Created),
        Err(e) if service_code(&e) == Some("ResourceAlreadyExistsException") => {
            Ok(SetupStatus::Existed)
        }
        Err(e) => Err(from_sdk("setup.create_archive", e)),
    }
}

/// A table to create: its name, key schema and indexes.
struct TableSpec {
    name: String,
    attributes: Vec<AttributeDefinition>,
    keys: Vec<KeySchemaElement>,
    indexes: Vec<GlobalSecondaryIndex>,
}

fn attribute(name: &str) -> BackendResult<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| build_error("setup.create_table", e))
}

fn key(name: &str, key_type: KeyType) -> BackendResult<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(|e| build_error("setup.create_table", e))
}

fn dedupe_table(name: &str) -> BackendResult<TableSpec> {
    Ok(TableSpec {
        name: name.to_owned(),
        attributes: vec![attribute(schema::DEDUPE_KEY)?],
        keys: vec![key(schema::DEDUPE_KEY, KeyType::Hash)?],
        indexes: vec![],
    })
}

/// A global secondary index projecting every attribute (the readers want whole records).
fn index(name: &str, hash: &str, range: &str) -> BackendResult<GlobalSecondaryIndex> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash)?)
        .key_schema(key(range, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| build_error("setup.create_table", e))
}

fn state_table(name: &str) -> BackendResult<TableSpec> {
    Ok(TableSpec {
        name: name.to_owned(),
        attributes: vec![
            attribute(schema::STATE_PARTITION_KEY)?,
            attribute(schema::STATE_SORT_KEY)?,
            attribute(schema::STATE_CUSTOMER_KEY)?,
            attribute(schema::STATE_KIND_STATUS_KEY)?,
            attribute(schema::STATE_ID)?,
        ],
        keys: vec![
            key(schema::STATE_PARTITION_KEY, KeyType::Hash)?,
            key(schema::STATE_SORT_KEY, KeyType::Range)?,
        ],
        indexes: vec![
            index(
                schema::STATE_CUSTOMER_INDEX,
                schema::STATE_CUSTOMER_KEY,
                schema::STATE_SORT_KEY,
            )?,
            index(
                schema::STATE_KIND_STATUS_INDEX,
                schema::STATE_KIND_STATUS_KEY,
                schema::STATE_ID,
            )?,
        ],
    })
}

/// Create the table if missing, wait until it is active, then make sure TTL is on.
async fn ensure_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    opts: &SetupOptions,
) -> BackendResult<SetupStatus> {
    let status = match dynamodb
        .create_table()
        .table_name(&spec.name)
        .set_attribute_definitions(Some(spec.attributes.clone()))
        .set_key_schema(Some(spec.keys.clone()))
        .set_global_secondary_indexes((!spec.indexes.is_empty()).then(|| spec.indexes.clone()))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
    {
        Ok(_) => SetupStatus::Created,
        Err(e) if service_code(&e) == Some("ResourceInUseException") => SetupStatus::Existed,
        Err(e) => return Err(from_sdk("setup.create_table", e)),
    };
    wait_active(dynamodb, &spec.name, opts.table_wait).await?;
    if status == SetupStatus::Existed {
        add_missing_indexes(dynamodb, spec, opts).await?;
    }

    let ttl = dynamodb
        .describe_time_to_live()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(|e| from_sdk("setup.describe_time_to_live", e))?;
    let ttl_status = ttl
        .time_to_live_description
        .and_then(|d| d.time_to_live_status);
    // Enabling TTL twice is an error, so only ask when it is off.
    if !matches!(
        ttl_status,
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
    ) {
        let spec_ttl = TimeToLiveSpecification::builder()
            .attribute_name(schema::TTL_ATTRIBUTE)
            .enabled(true)
            .build()
            .map_err(|e| build_error("setup.update_time_to_live", e))?;
        dynamodb
            .update_time_to_live()
            .table_name(&spec.name)
            .time_to_live_specification(spec_ttl)
            .send()
            .await
            .map_err(|e| from_sdk("setup.update_time_to_live", e))?;
    }
    Ok(status)
}

/// Add the indexes of `spec` that an existing table lacks (one created by an earlier
/// version), so running setup again converges the table too. One `UpdateTable` per
/// index, each waited for: DynamoDB builds one new index of a table at a time.
async fn add_missing_indexes(
    dynamodb: &aws_sdk_dynamodb::Client,
    spec: &TableSpec,
    opts: &SetupOptions,
) -> BackendResult<()> {
    use aws_sdk_dynamodb::types::{CreateGlobalSecondaryIndexAction, GlobalSecondaryIndexUpdate};
    const OP: &str = "setup.update_table";
    let existing: Vec<String> = dynamodb
        .describe_table()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(|e| from_sdk("setup.describe_table", e))?
        .table
        .and_then(|t| t.global_secondary_indexes)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.index_name)
        .collect();
    for index in &spec.indexes {
        if existing.iter().any(|name| name == index.index_name()) {
            continue;
        }
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(index.index_name())
            .set_key_schema(Some(index.key_schema().to_vec()))
            .set_projection(index.projection().cloned())
            .build()
            .map_err(|e| build_error(OP, e))?;
        dynamodb
            .update_table()
            .table_name(&spec.name)
            .set_attribute_definitions(Some(spec.attributes.clone()))
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await
            .map_err(|e| from_sdk(OP, e))?;
        wait_active(dynamodb, &spec.name, opts.table_wait).await?;
    }
    Ok(())
}

async fn wait_active(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    limit: Duration,
) -> BackendResult<()> {
    let started = Instant::now();
    loop {
        let out = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| from_sdk("setup.describe_table", e))?;
        let active = out.table.is_some_and(|t| {
            t.table_status == Some(TableStatus::Active)
                && t.global_secondary_indexes
                    .unwrap_or_default()
                    .iter()
                    .all(|i| i.index_status == Some(aws_sdk_dynamodb::types::IndexStatus::Active))
        });
        if active {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(BackendError::Transient {
                operation: "setup.describe_table",
                message: format!("table `{table}` not active after {limit:?}"),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_prints_one_line_per_resource_and_a_total() {
        let urls = QueueUrls {
            queue: "q".into(),
            dlq: "d".into(),
        };
        let report = SetupReport {
            items: vec![
                item(
                    ResourceKind::EventBus,
                    "p-event-bus".into(),
                    SetupStatus::Created,
                ),
                item(ResourceKind::Table, "p-state".into(), SetupStatus::Existed),
            ],
            bus_arn: "arn".into(),
            queue_urls: PerDomain::from_fn(|_| urls.clone()),
        };
        let text = report.to_string();
        assert!(text.contains("created  event bus"));
        assert!(text.contains("exists   table"));
        assert!(text.ends_with("1 created, 1 already existed"));
    }

    #[test]
    fn missing_queue_codes_are_recognised() {
        assert!(is_missing_queue(Some(
            "AWS.SimpleQueueService.NonExistentQueue"
        )));
        assert!(is_missing_queue(Some("QueueDoesNotExist")));
        assert!(!is_missing_queue(Some("AccessDenied")));
        assert!(!is_missing_queue(None));
    }
}
