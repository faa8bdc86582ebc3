//! Decoding every envelope shape from fixture files, the builder -> envelope -> decoder
//! round trip for each path, and properties: the decoder never panics.

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};
use stripe_worker::backend::BusEntry;
use stripe_worker::event::envelope::{
    PARTNER_SOURCE_PREFIX, WEBHOOK_DETAIL_TYPE, WEBHOOK_SOURCE, api_path, entry_from_envelope,
    envelope_json, partner_snapshot_entry, partner_thin_entry, webhook_snapshot_entry,
    webhook_thin_entry,
};
use stripe_worker::event::{
    DecodeError, EventObject, NormalisedEvent, ObjectRef, PayloadStyle, SourceKind, decode_message,
};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const DESTINATION: &str = "ed_test_61Ra4b";
const AWS_ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
/// `received_at` of the webhook fixtures.
const RECEIVED_AT_MS: i64 = 1_709_836_077_250;
/// `time` of every envelope fixture.
const ENVELOPE_TIME_MS: i64 = 1_709_836_078_000;
/// `created` of every fixture event.
const CREATED_MS: i64 = 1_709_836_076_000;

/// Every reason code the decoder may give.
const REASONS: [&str; 9] = [
    "too_large",
    "invalid_utf8",
    "invalid_json",
    "not_an_event",
    "missing_field",
    "wrong_type",
    "invalid_value",
    "unsupported_shape",
    "missing_object",
];

fn fixture_path(dir: &str, name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(name)
}

fn raw(name: &str) -> Vec<u8> {
    std::fs::read(fixture_path("envelopes", name)).expect("fixture readable")
}

fn envelope(name: &str) -> Value {
    serde_json::from_slice(&raw(name)).expect("fixture is JSON")
}

fn stripe(name: &str) -> Value {
    let bytes = std::fs::read(fixture_path("stripe", name)).expect("fixture readable");
    serde_json::from_slice(&bytes).expect("fixture is JSON")
}

fn decode_fixture(name: &str) -> Result<NormalisedEvent, DecodeError> {
    decode_message(&raw(name))
}

fn partner() -> SourceKind {
    SourceKind::Partner {
        destination: DESTINATION.into(),
    }
}

/// The v1 event inside the webhook snapshot fixture, without what the ingress added.
fn subscription_event() -> Value {
    let mut event = envelope("webhook_snapshot.json")["detail"].clone();
    let map = event.as_object_mut().unwrap();
    for added in ["tenant_id", "received_at", "payload_style", "traceparent"] {
        map.remove(added);
    }
    event
}

fn wrap(entry: &BusEntry, id: &str) -> Value {
    envelope_json(entry, id, ENVELOPE_TIME_MS, REGION, Some(AWS_ACCOUNT)).unwrap()
}

// ---------------------------------------------------------------------------------------
// One fixture per shape, every normalised field asserted.
// ---------------------------------------------------------------------------------------

#[test]
fn webhook_snapshot_fixture() {
    let e = decode_fixture("webhook_snapshot.json").unwrap();
    let expected = NormalisedEvent {
        dedupe_id: "evt_1SubUpdatedA1b2C3d4".into(),
        event_id: "evt_1SubUpdatedA1b2C3d4".into(),
        event_type: "customer.subscription.updated".into(),
        created_ms: CREATED_MS,
        livemode: false,
        source: SourceKind::Webhook,
        payload_style: PayloadStyle::Snapshot,
        object: EventObject::Full {
            object: stripe("subscription.json"),
        },
        tenant_hint: Some("acme".into()),
        connect_account: None,
        replay_name: None,
        aws_account: Some(AWS_ACCOUNT.into()),
        api_version: Some("2025-03-31.basil".into()),
        traceparent: Some(TRACEPARENT.into()),
    };
    assert_eq!(e, expected);
}

#[test]
fn webhook_thin_fixture() {
    let e = decode_fixture("webhook_thin.json").unwrap();
    let expected = NormalisedEvent {
        dedupe_id: "evt_1SubUpdatedA1b2C3d4".into(),
        event_id: "evt_1SubUpdatedA1b2C3d4".into(),
        event_type: "customer.subscription.updated".into(),
        created_ms: CREATED_MS,
        livemode: false,
        source: SourceKind::Webhook,
        payload_style: PayloadStyle::Thin,
        object: EventObject::Reference(ObjectRef {
            id: "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into(),
            object_type: "subscription".into(),
            url: Some("/v1/subscriptions/sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into()),
            customer: Some("cus_QXg1o8vcGmoR32".into()),
        }),
        tenant_hint: Some("acme".into()),
        connect_account: None,
        replay_name: None,
        aws_account: Some(AWS_ACCOUNT.into()),
        api_version: None,
        traceparent: Some(TRACEPARENT.into()),
    };
    assert_eq!(e, expected);
}

#[test]
fn partner_snapshot_fixture() {
    let e = decode_fixture("partner_snapshot.json").unwrap();
    let expected = NormalisedEvent {
        dedupe_id: "evt_1InvPaidE5f6G7h8".into(),
        event_id: "evt_1InvPaidE5f6G7h8".into(),
        event_type: "invoice.paid".into(),
        created_ms: CREATED_MS,
        livemode: true,
        source: partner(),
        payload_style: PayloadStyle::Snapshot,
        object: EventObject::Full {
            object: stripe("invoice.json"),
        },
        tenant_hint: None,
        connect_account: Some("acct_1ConnectGlobex".into()),
        replay_name: None,
        aws_account: Some(AWS_ACCOUNT.into()),
        api_version: Some("2025-03-31.basil".into()),
        traceparent: None,
    };
    assert_eq!(e, expected);
}

#[test]
fn partner_thin_fixture() {
    let e = decode_fixture("partner_thin.json").unwrap();
    let expected = NormalisedEvent {
        dedupe_id: "evt_1SubUpdatedA1b2C3d4".into(),
        event_id: "evt_thin_1SubUpdatedA1b2C3d4".into(),
        event_type: "customer.subscription.updated".into(),
        created_ms: CREATED_MS,
        livemode: false,
        source: partner(),
        payload_style: PayloadStyle::Thin,
        object: EventObject::Reference(ObjectRef {
            id: "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into(),
            object_type: "subscription".into(),
            url: Some("/v1/subscriptions/sub_1Pgc6rB7WZ01zgkWNy0Cn5nw".into()),
            customer: None,
        }),
        tenant_hint: None,
        connect_account: Some("acct_1ConnectGlobex".into()),
        replay_name: None,
        aws_account: Some(AWS_ACCOUNT.into()),
        api_version: None,
        traceparent: None,
    };
    assert_eq!(e, expected);
}

#[test]
fn partner_thin_null_related_object_fixture_is_permanent_missing_object() {
    let err = decode_fixture("partner_thin_null_related_object.json").unwrap_err();
    assert_eq!(
        err,
        DecodeError::MissingObject {
            event_id: "evt_thin_1InvPaidE5f6G7h8".into(),
            event_type: "v1.invoice.paid".into(),
            field: "detail.related_object".into(),
        }
    );
    assert_eq!(err.reason(), "missing_object");
}

#[test]
fn v2_native_event_without_related_object_fixture_decodes() {
    let e = decode_fixture("partner_v2_native_null_related_object.json").unwrap();
    let expected = NormalisedEvent {
        dedupe_id: "evt_test_65Rping".into(),
        event_id: "evt_test_65Rping".into(),
        event_type: "v2.core.event_destination.ping".into(),
        created_ms: CREATED_MS,
        livemode: false,
        source: partner(),
        payload_style: PayloadStyle::Thin,
        object: EventObject::Full {
            object: Value::Null,
        },
        tenant_hint: None,
        connect_account: None,
        replay_name: None,
        aws_account: Some(AWS_ACCOUNT.into()),
        api_version: None,
        traceparent: None,
    };
    assert_eq!(e, expected);
}

#[test]
fn bare_event_fixture() {
    let e = decode_fixture("bare_event.json").unwrap();
    let expected = NormalisedEvent {
        dedupe_id: "evt_3PaymentIntentI9j0".into(),
        event_id: "evt_3PaymentIntentI9j0".into(),
        event_type: "payment_intent.created".into(),
        created_ms: CREATED_MS,
        livemode: false,
        source: SourceKind::Bare,
        payload_style: PayloadStyle::Snapshot,
        object: EventObject::Full {
            object: stripe("payment_intent.json"),
        },
        tenant_hint: None,
        connect_account: Some("acct_1ConnectGlobex".into()),
        replay_name: None,
        aws_account: None,
        api_version: Some("2024-06-20".into()),
        traceparent: None,
    };
    assert_eq!(e, expected);
}

#[test]
fn replayed_fixture() {
    let e = decode_fixture("replayed.json").unwrap();
    let expected = NormalisedEvent {
        dedupe_id: "evt_1CusUpdatedK1l2".into(),
        event_id: "evt_1CusUpdatedK1l2".into(),
        event_type: "customer.updated".into(),
        created_ms: CREATED_MS,
        livemode: false,
        source: partner(),
        payload_style: PayloadStyle::Snapshot,
        object: EventObject::Full {
            object: stripe("customer.json"),
        },
        tenant_hint: None,
        connect_account: None,
        replay_name: Some("stripe-worker-replay-20240308".into()),
        aws_account: Some(AWS_ACCOUNT.into()),
        api_version: Some("2025-03-31.basil".into()),
        traceparent: None,
    };
    assert_eq!(e, expected);
}

#[test]
fn real_stripe_envelopes_decode() {
    let bytes =
        std::fs::read(fixture_path("stripe", "eventbridge_snapshot_envelope.json")).unwrap();
    let e = decode_message(&bytes).unwrap();
    assert_eq!(e.dedupe_id, "evt_test_123");
    assert_eq!(e.event_type, "customer.created");
    assert_eq!(e.created_ms, 1_709_836_076_000);
    assert!(e.livemode);
    assert_eq!(
        e.source,
        SourceKind::Partner {
            destination: "ed_123".into()
        }
    );
    assert_eq!(e.payload_style, PayloadStyle::Snapshot);
    assert_eq!(e.api_version.as_deref(), Some("2023-10-16"));
    assert_eq!(e.aws_account.as_deref(), Some("506417113029"));
    assert_eq!(
        e.object,
        EventObject::Full {
            object: json!({"id": "cus_123", "object": "customer"})
        }
    );

    let bytes = std::fs::read(fixture_path("stripe", "eventbridge_thin_envelope.json")).unwrap();
    let e = decode_message(&bytes).unwrap();
    assert_eq!(e.dedupe_id, "evt_test_789");
    assert_eq!(e.event_type, "v2.core.event_destination.ping");
    assert_eq!(e.connect_account.as_deref(), Some("acct_123"));
    assert_eq!(e.payload_style, PayloadStyle::Thin);
    assert_eq!(
        e.object,
        EventObject::Reference(ObjectRef {
            id: "ed_123".into(),
            object_type: "v2.core.event_destination".into(),
            url: Some("/v2/core/event_destinations/ed_123".into()),
            customer: None,
        })
    );

    let bytes = std::fs::read(fixture_path("stripe", "event.json")).unwrap();
    let e = decode_message(&bytes).unwrap();
    assert_eq!(e.source, SourceKind::Bare);
    assert_eq!(e.event_type, "plan.created");
    assert_eq!(e.api_version, None);
    assert_eq!(e.created_ms, 1_234_567_890_000);
}

// ---------------------------------------------------------------------------------------
// The builders reproduce the fixtures byte-for-byte in meaning.
// ---------------------------------------------------------------------------------------

#[test]
fn builders_reproduce_the_fixtures() {
    let event = subscription_event();

    let entry = webhook_snapshot_entry(&event, "acme", RECEIVED_AT_MS, Some(TRACEPARENT)).unwrap();
    let fixture = envelope("webhook_snapshot.json");
    assert_eq!(wrap(&entry, fixture["id"].as_str().unwrap()), fixture);

    let entry = webhook_thin_entry(&event, "acme", RECEIVED_AT_MS, Some(TRACEPARENT)).unwrap();
    let fixture = envelope("webhook_thin.json");
    assert_eq!(wrap(&entry, fixture["id"].as_str().unwrap()), fixture);

    let fixture = envelope("partner_snapshot.json");
    let entry = partner_snapshot_entry(&fixture["detail"], DESTINATION).unwrap();
    assert_eq!(wrap(&entry, fixture["id"].as_str().unwrap()), fixture);

    let mut connect_event = event.clone();
    connect_event["account"] = json!("acct_1ConnectGlobex");
    let entry = partner_thin_entry(&connect_event, DESTINATION).unwrap();
    let fixture = envelope("partner_thin.json");
    assert_eq!(wrap(&entry, fixture["id"].as_str().unwrap()), fixture);
}

#[test]
fn entry_from_envelope_inverts_envelope_json_for_every_fixture() {
    for name in [
        "webhook_snapshot.json",
        "webhook_thin.json",
        "partner_snapshot.json",
        "partner_thin.json",
        "partner_thin_null_related_object.json",
        "partner_v2_native_null_related_object.json",
    ] {
        let fixture = envelope(name);
        let entry = entry_from_envelope(&fixture).unwrap();
        assert_eq!(
            wrap(&entry, fixture["id"].as_str().unwrap()),
            fixture,
            "{name}"
        );
    }
    // The replay name is delivery metadata: re-publishing drops it.
    let replayed = envelope("replayed.json");
    let again = wrap(&entry_from_envelope(&replayed).unwrap(), "id");
    assert!(again.get("replay-name").is_none());
    assert_eq!(again["detail"], replayed["detail"]);
}

// ---------------------------------------------------------------------------------------
// Round trip for every path over every object type the worker handles.
// ---------------------------------------------------------------------------------------

/// (fixture, event type, the customer a flat thin event should name)
fn handled_objects() -> Vec<(&'static str, &'static str, Option<&'static str>)> {
    vec![
        (
            "subscription.json",
            "customer.subscription.updated",
            Some("cus_QXg1o8vcGmoR32"),
        ),
        ("invoice.json", "invoice.paid", Some("cus_QXg1o8vcGmoR32")),
        ("invoice_payment.json", "invoice_payment.paid", None),
        ("payment_intent.json", "payment_intent.succeeded", None),
        ("charge.json", "charge.succeeded", None),
        (
            "customer.json",
            "customer.updated",
            Some("cus_QXg1o8vcGmoR32"),
        ),
        ("checkout_session.json", "checkout.session.completed", None),
        ("setup_intent.json", "setup_intent.succeeded", None),
        ("payment_method.json", "payment_method.attached", None),
    ]
}

fn v1_event(object: Value, event_type: &str, account: Option<&str>) -> Value {
    json!({
        "id": "evt_1RoundTrip",
        "object": "event",
        "account": account,
        "api_version": "2025-03-31.basil",
        "created": 1_709_836_076,
        "data": {"object": object},
        "livemode": true,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": event_type,
    })
}

#[test]
fn round_trip_every_path_and_object() {
    for (file, event_type, flat_customer) in handled_objects() {
        let object = stripe(file);
        let id = object["id"].as_str().unwrap().to_owned();
        let object_type = object["object"].as_str().unwrap().to_owned();
        let url = api_path(&object_type, &id);
        assert!(url.is_some(), "{file}: no api path for {object_type}");
        let event = v1_event(object.clone(), event_type, Some("acct_1Rt"));

        let through = |entry: BusEntry| {
            let body = wrap(&entry, "3f1e-envelope-id").to_string();
            decode_message(body.as_bytes()).unwrap_or_else(|e| panic!("{file}: {e}"))
        };

        let e = through(webhook_snapshot_entry(&event, "acme", RECEIVED_AT_MS, None).unwrap());
        assert_eq!(e.dedupe_id, "evt_1RoundTrip", "{file}");
        assert_eq!(e.event_type, event_type);
        assert_eq!(e.source, SourceKind::Webhook);
        assert_eq!(e.payload_style, PayloadStyle::Snapshot);
        assert_eq!(e.tenant_hint.as_deref(), Some("acme"));
        assert_eq!(e.connect_account.as_deref(), Some("acct_1Rt"));
        assert_eq!(
            e.object,
            EventObject::Full {
                object: object.clone()
            }
        );
        assert_eq!(e.created_ms, CREATED_MS);

        let e = through(webhook_thin_entry(&event, "acme", RECEIVED_AT_MS, None).unwrap());
        assert_eq!(e.dedupe_id, "evt_1RoundTrip", "{file}");
        assert_eq!(e.event_type, event_type);
        assert_eq!(e.source, SourceKind::Webhook);
        assert_eq!(e.payload_style, PayloadStyle::Thin);
        assert_eq!(e.tenant_hint.as_deref(), Some("acme"));
        assert_eq!(e.connect_account.as_deref(), Some("acct_1Rt"));
        assert_eq!(
            e.object,
            EventObject::Reference(ObjectRef {
                id: id.clone(),
                object_type: object_type.clone(),
                url: url.clone(),
                customer: flat_customer.map(str::to_owned),
            }),
            "{file}"
        );

        let e = through(partner_snapshot_entry(&event, DESTINATION).unwrap());
        assert_eq!(e.dedupe_id, "evt_1RoundTrip", "{file}");
        assert_eq!(e.event_type, event_type);
        assert_eq!(e.source, partner());
        assert_eq!(e.payload_style, PayloadStyle::Snapshot);
        assert_eq!(e.tenant_hint, None);
        assert_eq!(e.connect_account.as_deref(), Some("acct_1Rt"));
        assert_eq!(
            e.object,
            EventObject::Full {
                object: object.clone()
            }
        );

        let e = through(partner_thin_entry(&event, DESTINATION).unwrap());
        assert_eq!(e.dedupe_id, "evt_1RoundTrip", "{file}");
        assert_eq!(e.event_id, "evt_thin_1RoundTrip");
        assert_eq!(e.event_type, event_type);
        assert_eq!(e.source, partner());
        assert_eq!(e.payload_style, PayloadStyle::Thin);
        assert_eq!(e.tenant_hint, None);
        assert_eq!(e.connect_account.as_deref(), Some("acct_1Rt"));
        assert_eq!(e.created_ms, CREATED_MS);
        assert_eq!(
            e.object,
            EventObject::Reference(ObjectRef {
                id,
                object_type,
                url,
                customer: None,
            }),
            "{file}"
        );
    }
}

#[test]
fn round_trip_bare_event() {
    let event = v1_event(stripe("charge.json"), "charge.succeeded", None);
    let e = decode_message(event.to_string().as_bytes()).unwrap();
    assert_eq!(e.dedupe_id, "evt_1RoundTrip");
    assert_eq!(e.source, SourceKind::Bare);
    assert_eq!(e.payload_style, PayloadStyle::Snapshot);
    assert_eq!(e.connect_account, None);
}

#[test]
fn a_tenant_id_outside_the_webhook_path_is_not_trusted() {
    let mut fixture = envelope("partner_snapshot.json");
    fixture["detail"]["tenant_id"] = json!("acme");
    let e = decode_message(fixture.to_string().as_bytes()).unwrap();
    assert_eq!(e.tenant_hint, None);
    // The same detail on the webhook source is trusted.
    fixture["source"] = json!(WEBHOOK_SOURCE);
    fixture["detail-type"] = json!(WEBHOOK_DETAIL_TYPE);
    let e = decode_message(fixture.to_string().as_bytes()).unwrap();
    assert_eq!(e.tenant_hint.as_deref(), Some("acme"));
    assert!(
        PARTNER_SOURCE_PREFIX.ends_with('/'),
        "the destination follows the prefix directly"
    );
}

// ---------------------------------------------------------------------------------------
// Properties: never panic, and every error has a known reason.
// ---------------------------------------------------------------------------------------

fn check_no_panic(body: &[u8]) {
    if let Err(err) = decode_message(body) {
        assert!(REASONS.contains(&err.reason()), "{err}");
        assert!(!err.to_string().is_empty());
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z_.]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("event"),
            Just("v2.core.event"),
            Just("thin"),
            Just("snapshot"),
            Just("stripe.webhook"),
            Just("aws.partner/stripe.com/ed_1"),
            Just("v1.invoice.paid"),
            Just("2024-03-07T18:27:56.000Z"),
        ]
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    let keys = prop_oneof![
        prop::sample::select(vec![
            "id",
            "object",
            "type",
            "created",
            "livemode",
            "data",
            "detail",
            "detail-type",
            "source",
            "related_object",
            "snapshot_event",
            "payload_style",
            "object_id",
            "object_type",
            "tenant_id",
            "url",
            "account",
            "context",
            "replay-name",
        ])
        .prop_map(str::to_owned),
        "[a-z]{1,6}",
    ];
    leaf.prop_recursive(6, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The fixture bodies, for mutation.
fn fixture_names() -> Vec<&'static str> {
    vec![
        "webhook_snapshot.json",
        "webhook_thin.json",
        "partner_snapshot.json",
        "partner_thin.json",
        "partner_thin_null_related_object.json",
        "partner_v2_native_null_related_object.json",
        "bare_event.json",
        "replayed.json",
    ]
}

/// Every (path of an object member) in a JSON value, for replacing one by a random value.
fn member_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = v {
        for (k, child) in map {
            prefix.push(k.clone());
            out.push(prefix.clone());
            member_paths(child, prefix, out);
            prefix.pop();
        }
    }
}

fn replace_at(v: &mut Value, path: &[String], new: Value) {
    let mut cur = v;
    for k in &path[..path.len() - 1] {
        cur = &mut cur[k.as_str()];
    }
    cur[path[path.len() - 1].as_str()] = new;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn never_panics_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check_no_panic(&body);
    }

    #[test]
    fn never_panics_on_arbitrary_json(value in arb_json()) {
        check_no_panic(value.to_string().as_bytes());
    }

    #[test]
    fn never_panics_on_arbitrary_json_inside_an_envelope(detail in arb_json(), source in prop_oneof![
        Just("stripe.webhook"), Just("aws.partner/stripe.com/ed_1"), Just("x")]) {
        let body = json!({"source": source, "detail-type": "t", "detail": detail});
        check_no_panic(body.to_string().as_bytes());
    }

    #[test]
    fn never_panics_when_one_fixture_field_is_replaced(
        which in 0usize..8,
        pick in any::<prop::sample::Index>(),
        value in arb_json(),
    ) {
        let mut doc = envelope(fixture_names()[which]);
        let mut paths = Vec::new();
        member_paths(&doc, &mut Vec::new(), &mut paths);
        let path = pick.get(&paths).clone();
        replace_at(&mut doc, &path, value);
        check_no_panic(doc.to_string().as_bytes());
    }

    #[test]
    fn truncated_or_corrupted_fixtures_fail_cleanly(
        which in 0usize..8,
        cut in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut body = raw(fixture_names()[which]);
        body.truncate(body.trim_ascii_end().len());
        let at = cut.index(body.len());
        // Truncation: never panics, and a strict prefix of an object is never valid.
        let err = decode_message(&body[..at]).unwrap_err();
        prop_assert!(REASONS.contains(&err.reason()));
        // One corrupted byte: whatever happens, no panic.
        let mut corrupted = body.clone();
        corrupted[at] = byte;
        check_no_panic(&corrupted);
    }
}
