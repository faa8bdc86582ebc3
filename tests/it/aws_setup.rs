//! `setup` and `connect` against the local AWS emulator (moto, started by
//! `tests/run.sh`): idempotent creation, the wiring of queues, rules, archive and tables,
//! and events put on the bus arriving in the domain queues as EventBridge envelopes.

use crate::aws_support;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_support::{sdk_config, test_patterns, unique};
use serde_json::{Value, json};
use stripe_worker::backend::aws::{
    AwsNames, AwsSettings, ResourceKind, SetupOptions, SetupStatus, connect, setup,
};
use stripe_worker::backend::{BackendError, Bus, BusEntry, PerDomain, Queue};
use stripe_worker::domain::Domain;

const SECOND: Duration = Duration::from_secs(1);

async fn queue_attributes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> HashMap<QueueAttributeName, String> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("get_queue_attributes")
        .attributes
        .unwrap_or_default()
}

#[tokio::test]
async fn setup_creates_everything_once_and_is_idempotent() {
    let config = sdk_config().await;
    let names = AwsNames::new(unique("setup"));
    let opts = SetupOptions {
        visibility_timeout: Duration::from_secs(45),
        ..SetupOptions::default()
    };

    let first = setup(&config, &names, &test_patterns(), &opts)
        .await
        .unwrap();
    // Bus, archive, two tables, and per domain a queue, a DLQ and a rule.
    assert_eq!(first.items.len(), 4 + 3 * 3, "{first}");
    assert!(
        first.items.iter().all(|i| i.status == SetupStatus::Created),
        "{first}"
    );
    let text = first.to_string();
    assert!(
        text.contains(&format!("created  event bus          {}", names.bus())),
        "{text}"
    );
    assert!(text.ends_with("13 created, 0 already existed"), "{text}");

    let second = setup(&config, &names, &test_patterns(), &opts)
        .await
        .unwrap();
    assert_eq!(second.items.len(), first.items.len());
    assert!(
        second
            .items
            .iter()
            .all(|i| i.status == SetupStatus::Existed),
        "{second}"
    );
    assert_eq!(second.created().count(), 0);
    assert_eq!(second.bus_arn, first.bus_arn);
    for d in Domain::ALL {
        assert_eq!(second.queue_urls.get(d), first.queue_urls.get(d));
    }
    let names_of = |kind: ResourceKind| -> Vec<String> {
        second
            .items
            .iter()
            .filter(|i| i.kind == kind)
            .map(|i| i.name.clone())
            .collect()
    };
    assert_eq!(names_of(ResourceKind::Queue).len(), 3);
    assert_eq!(
        names_of(ResourceKind::Table),
        vec![names.dedupe_table(), names.state_table()]
    );

    // Queues: redrive into the DLQ after 5 receives, visibility as asked, and a policy
    // that lets only the domain's rule send.
    let sqs = aws_sdk_sqs::Client::new(&config);
    let events = aws_sdk_eventbridge::Client::new(&config);
    for d in Domain::ALL {
        let urls = first.queue_urls.get(d);
        assert!(urls.queue.ends_with(&names.queue(d)));
        assert!(urls.dlq.ends_with(&names.dlq(d)));
        let dlq = queue_attributes(&sqs, &urls.dlq).await;
        let main = queue_attributes(&sqs, &urls.queue).await;
        assert_eq!(main[&QueueAttributeName::VisibilityTimeout], "45");
        let redrive: Value =
            serde_json::from_str(&main[&QueueAttributeName::RedrivePolicy]).unwrap();
        assert_eq!(
            redrive["deadLetterTargetArn"],
            Value::String(dlq[&QueueAttributeName::QueueArn].clone())
        );
        assert_eq!(
            redrive["maxReceiveCount"].to_string().trim_matches('"'),
            "5"
        );

        let rule = events
            .describe_rule()
            .name(names.rule(d))
            .event_bus_name(names.bus())
            .send()
            .await
            .unwrap();
        let pattern: Value = serde_json::from_str(rule.event_pattern.as_deref().unwrap()).unwrap();
        assert_eq!(&pattern, test_patterns().get(d));
        let policy: Value = serde_json::from_str(&main[&QueueAttributeName::Policy]).unwrap();
        let statement = &policy["Statement"][0];
        assert_eq!(statement["Action"], "sqs:SendMessage");
        assert_eq!(
            statement["Condition"]["ArnEquals"]["aws:SourceArn"],
            Value::String(rule.arn.clone().unwrap())
        );

        let targets = events
            .list_targets_by_rule()
            .rule(names.rule(d))
            .event_bus_name(names.bus())
            .send()
            .await
            .unwrap()
            .targets
            .unwrap_or_default();
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].arn, main[&QueueAttributeName::QueueArn]);
    }

    let archive = events
        .describe_archive()
        .archive_name(names.archive())
        .send()
        .await
        .unwrap();
    assert_eq!(
        archive.event_source_arn.as_deref(),
        Some(first.bus_arn.as_str())
    );
    assert_eq!(archive.retention_days, Some(90));

    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    for table in [names.dedupe_table(), names.state_table()] {
        let ttl = dynamodb
            .describe_time_to_live()
            .table_name(&table)
            .send()
            .await
            .unwrap()
            .time_to_live_description
            .unwrap();
        assert_eq!(ttl.attribute_name.as_deref(), Some("expires_at"), "{table}");
        assert_eq!(
            ttl.time_to_live_status,
            Some(aws_sdk_dynamodb::types::TimeToLiveStatus::Enabled),
            "{table}"
        );
    }
}

#[tokio::test]
async fn setup_again_with_new_patterns_updates_the_rules() {
    let config = sdk_config().await;
    let names = AwsNames::new(unique("repattern"));
    setup(&config, &names, &test_patterns(), &SetupOptions::default())
        .await
        .unwrap();
    let updated = PerDomain::from_fn(
        |d| json!({ "source": ["stripe.webhook"], "detail-type": [format!("v2.{d}")] }),
    );
    let report = setup(&config, &names, &updated, &SetupOptions::default())
        .await
        .unwrap();
    assert_eq!(report.created().count(), 0);
    let events = aws_sdk_eventbridge::Client::new(&config);
    let rule = events
        .describe_rule()
        .name(names.rule(Domain::Customer))
        .event_bus_name(names.bus())
        .send()
        .await
        .unwrap();
    let pattern: Value = serde_json::from_str(rule.event_pattern.as_deref().unwrap()).unwrap();
    assert_eq!(&pattern, updated.get(Domain::Customer));
}

#[tokio::test]
async fn setup_rejects_a_pattern_that_is_not_an_object() {
    let config = sdk_config().await;
    let names = AwsNames::new(unique("badpattern"));
    let patterns = PerDomain::from_fn(|d| match d {
        Domain::Payment => json!(["not", "an", "object"]),
        _ => json!({ "detail-type": ["x"] }),
    });
    let err = setup(&config, &names, &patterns, &SetupOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Permanent { .. }), "{err:?}");
    assert!(err.to_string().contains("payment"), "{err}");
}

#[tokio::test]
async fn events_put_on_the_bus_arrive_in_their_domain_queue_as_envelopes() {
    let config = sdk_config().await;
    let (names, _) = aws_support::setup_prefix(&config, "route").await;
    let backend = connect(&config, &names, &AwsSettings::default())
        .await
        .expect("connect after setup");
    assert_eq!(backend.queues.payment.name(), names.queue(Domain::Payment));

    let detail =
        json!({ "id": "evt_1", "type": "invoice.paid", "data": { "object": { "id": "in_1" } } });
    let entries = vec![
        BusEntry {
            source: "stripe.webhook".into(),
            detail_type: "test.payment".into(),
            detail: detail.to_string(),
            resources: vec![],
        },
        BusEntry {
            source: "stripe.webhook".into(),
            detail_type: "test.subscription".into(),
            detail: json!({ "id": "evt_2" }).to_string(),
            resources: vec![],
        },
        // Matches no rule: accepted by the bus, delivered nowhere.
        BusEntry {
            source: "stripe.webhook".into(),
            detail_type: "unrouted".into(),
            detail: json!({ "id": "evt_3" }).to_string(),
            resources: vec![],
        },
    ];
    let failures = backend.bus.publish(&entries).await.unwrap();
    assert!(failures.failed.is_empty(), "{:?}", failures.failed);

    let payment = backend
        .queues
        .payment
        .receive(10, 2 * SECOND)
        .await
        .unwrap();
    assert_eq!(payment.len(), 1);
    let envelope: Value = serde_json::from_str(&payment[0].body).unwrap();
    assert_eq!(envelope["detail-type"], "test.payment");
    assert_eq!(envelope["source"], "stripe.webhook");
    assert_eq!(envelope["detail"], detail);
    assert!(envelope["id"].is_string());
    assert!(envelope["time"].is_string());

    let subscription = backend
        .queues
        .subscription
        .receive(10, 2 * SECOND)
        .await
        .unwrap();
    assert_eq!(subscription.len(), 1);
    let envelope: Value = serde_json::from_str(&subscription[0].body).unwrap();
    assert_eq!(envelope["detail"]["id"], "evt_2");

    let (customer, _) = backend.queues.customer.stats().await.unwrap();
    assert_eq!(customer.visible + customer.in_flight + customer.delayed, 0);
}

#[tokio::test]
async fn a_message_received_too_often_is_redriven_to_the_dlq_set_up() {
    let config = sdk_config().await;
    let names = AwsNames::new(unique("redrive"));
    let opts = SetupOptions {
        max_receive_count: 1,
        ..SetupOptions::default()
    };
    let report = setup(&config, &names, &test_patterns(), &opts)
        .await
        .unwrap();
    // Queue URLs from the report: no GetQueueUrl needed.
    let settings = AwsSettings {
        queue_urls: Some(report.queue_urls.clone()),
        ..AwsSettings::default()
    };
    let backend = connect(&config, &names, &settings).await.unwrap();
    let queue = &backend.queues.customer;
    queue.send("poison", Duration::ZERO).await.unwrap();
    let first = queue.receive(1, SECOND).await.unwrap();
    assert_eq!(first.len(), 1);
    queue
        .change_visibility_batch(&[(first[0].receipt.clone(), Duration::ZERO)])
        .await
        .unwrap();
    assert!(queue.receive(1, SECOND).await.unwrap().is_empty());
    let (main, dlq) = queue.stats().await.unwrap();
    assert_eq!(main.visible + main.in_flight, 0);
    assert_eq!(dlq.visible, 1);
}

#[tokio::test]
async fn connect_without_setup_is_a_permanent_error() {
    let config = sdk_config().await;
    let names = AwsNames::new(unique("nothing"));
    let Err(err) = connect(&config, &names, &AwsSettings::default()).await else {
        panic!("connect must fail when the queues do not exist");
    };
    assert!(matches!(err, BackendError::Permanent { .. }), "{err:?}");
    assert_eq!(err.operation(), "sqs.get_queue_url");
}

/// A state table created by an earlier version (the customer index only) gets the
/// `by_kind_status` index from a second setup, and records written then are listed by it.
#[tokio::test]
async fn setup_adds_a_missing_index_to_an_existing_state_table() {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
        Projection, ProjectionType, ScalarAttributeType,
    };
    use stripe_worker::backend::aws::{DynamoState, schema, setup_tables};
    use stripe_worker::backend::{StateRecord, StateStore};

    let config = sdk_config().await;
    let names = AwsNames::new(unique("old-table"));
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, key_type| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build()
            .unwrap()
    };
    dynamodb
        .create_table()
        .table_name(names.state_table())
        .attribute_definitions(attribute(schema::STATE_PARTITION_KEY))
        .attribute_definitions(attribute(schema::STATE_SORT_KEY))
        .attribute_definitions(attribute(schema::STATE_CUSTOMER_KEY))
        .key_schema(key(schema::STATE_PARTITION_KEY, KeyType::Hash))
        .key_schema(key(schema::STATE_SORT_KEY, KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(schema::STATE_CUSTOMER_INDEX)
                .key_schema(key(schema::STATE_CUSTOMER_KEY, KeyType::Hash))
                .key_schema(key(schema::STATE_SORT_KEY, KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the old table");

    let items = setup_tables(&config, &names, &SetupOptions::default())
        .await
        .expect("setup converges the existing table");
    let state = items
        .iter()
        .find(|i| i.name == names.state_table())
        .expect("state table item");
    assert_eq!(state.status, SetupStatus::Existed);
    let indexes: Vec<String> = dynamodb
        .describe_table()
        .table_name(names.state_table())
        .send()
        .await
        .expect("describe")
        .table
        .and_then(|t| t.global_secondary_indexes)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.index_name)
        .collect();
    assert!(
        indexes.iter().any(|i| i == schema::STATE_KIND_STATUS_INDEX),
        "{indexes:?}"
    );

    let store = DynamoState::new(dynamodb, names.state_table(), names.dedupe_table());
    let record = StateRecord {
        tenant: "acme".into(),
        kind: "subscription".into(),
        id: "sub_1".into(),
        customer: Some("cus_1".into()),
        as_of_ms: 1,
        tiebreak: "evt_1".into(),
        doc: json!({"status": "trialing"}),
    };
    store.put_if_newer(&record).await.expect("put");
    let listed = store
        .by_kind_status("acme", "subscription", "trialing", None, 10)
        .await
        .expect("query the new index");
    assert_eq!(listed, vec![record]);
}
