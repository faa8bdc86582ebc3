//! Decoding queue message bodies into [`NormalisedEvent`]s.
//!
//! Accepted shapes (the builders in [`super::envelope`] produce the enveloped ones):
//!
//! | shape | envelope source | detail |
//! | --- | --- | --- |
//! | webhook snapshot | `stripe.webhook` | v1 event + `tenant_id`, `received_at`, `payload_style: "snapshot"` |
//! | webhook thin | `stripe.webhook` | flat `{id, type, created, livemode, payload_style: "thin", object_id, object_type, customer_id, ...}` |
//! | partner snapshot | `aws.partner/stripe.com/ed_...` | v1 event (`object: "event"`) |
//! | partner thin | `aws.partner/stripe.com/ed_...` | `v2.core.event` |
//! | bare | none | the body itself is a v1 event (or a `v2.core.event`) |
//!
//! The payload shape is read from the detail itself (`object`, `payload_style`); the source
//! only says which path the event took and whether its `tenant_id` is trusted (webhook
//! path only).
//!
//! Decisions worth knowing:
//! - **Dedupe id**: the `snapshot_event` of a thin v2 event when present, else the Stripe
//!   event id; never the envelope id (a replay gives a new envelope id).
//! - **Thin events without an object**: a `v1.*` thin event (or a flat webhook thin event)
//!   whose `related_object`/`object_id` is null is a [`DecodeError::MissingObject`]: there
//!   is nothing to fetch, and retrying will not change that. A v2-native event (type not
//!   starting with `v1.`, e.g. `v2.core.event_destination.ping`) may have no related object:
//!   it decodes with [`PayloadStyle::Thin`] and `EventObject::Full { object: Value::Null }`
//!   (nothing to fetch); no handler subscribes to v2-native types, so the worker ignores it.
//! - **`traceparent`** is telemetry only: a non-string or oversized one is dropped rather
//!   than failing the event.
//! - Ids and types longer than [`MAX_ID_LEN`] are refused: they end up in dedupe keys and
//!   store keys, which have size limits.
//!
//! Parsing is one pass over the body with typed serde structs: scalar fields are borrowed
//! as raw JSON and typed afterwards (so errors can name the field), and only `data` is
//! built as a [`Value`].

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::envelope::{PARTNER_SOURCE_PREFIX, WEBHOOK_SOURCE, api_path};
use super::{EventObject, NormalisedEvent, ObjectRef, PayloadStyle, SourceKind};

/// The largest body decoded. SQS and EventBridge cap messages far below this; the limit
/// only keeps a hostile producer on another transport from costing unbounded memory.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The longest id, event type or destination accepted (they become parts of store keys).
pub const MAX_ID_LEN: usize = 255;

/// The longest `traceparent` kept (a W3C one is 55 bytes).
const MAX_TRACEPARENT_LEN: usize = 256;

/// How much of an untrusted value is quoted in an error message.
const QUOTE_LEN: usize = 64;

/// Why a message body is not a usable Stripe event. Always permanent: the same bytes fail
/// the same way, so the message goes to the DLQ at once with [`DecodeError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body is {len} bytes, more than the {limit} byte limit")]
    TooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The body is not UTF-8.
    #[error("body is not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// Where the first invalid sequence starts.
        valid_up_to: usize,
    },
    /// The body is not a single JSON value (syntax error, truncation, trailing data,
    /// duplicate keys, nesting beyond serde_json's recursion limit).
    #[error("body is not valid JSON: {message}")]
    InvalidJson {
        /// The parser's message, with line and column.
        message: String,
    },
    /// The body is JSON but not a Stripe event nor an envelope of one.
    #[error("not a Stripe event: {message}")]
    NotAnEvent {
        /// What was found instead.
        message: String,
    },
    /// A required field is absent or null.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field's path, e.g. `detail.created`.
        field: String,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}` must be {expected}")]
    WrongType {
        /// The field's path.
        field: String,
        /// What was expected, e.g. `a string`.
        expected: &'static str,
    },
    /// A field has the right type but an unusable value (bad timestamp, empty id, ...).
    #[error("field `{field}` is invalid: {message}")]
    InvalidValue {
        /// The field's path.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A well-formed message in a shape this worker does not take (unknown envelope
    /// source, unknown `payload_style`).
    #[error("unsupported shape: {message}")]
    UnsupportedShape {
        /// What was not recognised.
        message: String,
    },
    /// An event that must carry or reference an object does not.
    #[error("event {event_id} ({event_type}) has no object: `{field}` is missing or null")]
    MissingObject {
        /// The Stripe event id.
        event_id: String,
        /// The event type.
        event_type: String,
        /// The field that should have held the object or its reference.
        field: String,
    },
}

impl DecodeError {
    /// A short, bounded code used as the DLQ reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::InvalidJson { .. } => "invalid_json",
            DecodeError::NotAnEvent { .. } => "not_an_event",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::WrongType { .. } => "wrong_type",
            DecodeError::InvalidValue { .. } => "invalid_value",
            DecodeError::UnsupportedShape { .. } => "unsupported_shape",
            DecodeError::MissingObject { .. } => "missing_object",
        }
    }
}

/// Decode one message body: an EventBridge envelope (webhook or partner path) or a bare
/// Stripe event. Pure, and never panics, whatever the bytes.
pub fn decode_message(body: &[u8]) -> Result<NormalisedEvent, DecodeError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(DecodeError::TooLarge {
            len: body.len(),
            limit: MAX_BODY_BYTES,
        });
    }
    let text = std::str::from_utf8(body).map_err(|e| DecodeError::InvalidUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    let top = match serde_json::from_str::<Shape<Fields<'_>>>(text) {
        Ok(Shape::Object(fields)) => fields,
        Ok(Shape::Other(kind)) => {
            return Err(DecodeError::NotAnEvent {
                message: format!("the body is {kind}, not a JSON object"),
            });
        }
        Err(e) => {
            return Err(DecodeError::InvalidJson {
                message: e.to_string(),
            });
        }
    };
    if top.source.is_some() || top.detail_type.is_some() || top.detail.is_some() {
        decode_envelope(top)
    } else {
        decode_event(top, Path::BARE, SourceKind::Bare, Envelope::default())
    }
}

/// A JSON value that is either an object of the expected fields or something else, so a
/// wrong type becomes a precise error rather than a serde message.
enum Shape<T> {
    Object(T),
    /// What was found instead, e.g. `an array`.
    Other(&'static str),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Shape<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ShapeVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ShapeVisitor<T> {
            type Value = Shape<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Shape::Object)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Consume the array so the parser stays in step.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Shape::Other("an array"))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Shape::Other("a boolean"))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Shape::Other("a number"))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Shape::Other("a number"))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Shape::Other("a number"))
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Shape::Other("a string"))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Shape::Other("null"))
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Shape::Other("null"))
            }
        }

        deserializer.deserialize_any(ShapeVisitor(PhantomData))
    }
}

/// Every field any accepted shape has at one level: the envelope's, the v1 event's, the
/// v2 event's and the flat thin event's. Scalars stay raw JSON (borrowed from the body)
/// until the shape is known; unknown fields are skipped.
#[derive(serde::Deserialize, Default)]
struct Fields<'a> {
    // EventBridge envelope.
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    #[serde(rename = "detail-type", borrow)]
    detail_type: Option<&'a RawValue>,
    #[serde(borrow)]
    detail: Option<Shape<Box<Fields<'a>>>>,
    #[serde(rename = "replay-name", borrow)]
    replay_name: Option<&'a RawValue>,
    /// The AWS account on an envelope, the Connect account on a v1 event.
    #[serde(borrow)]
    account: Option<&'a RawValue>,
    // Stripe event, v1 and v2.
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    object: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    event_type: Option<&'a RawValue>,
    #[serde(borrow)]
    created: Option<&'a RawValue>,
    #[serde(borrow)]
    livemode: Option<&'a RawValue>,
    #[serde(borrow)]
    api_version: Option<&'a RawValue>,
    data: Option<Value>,
    // v2 only.
    #[serde(borrow)]
    context: Option<&'a RawValue>,
    #[serde(borrow)]
    related_object: Option<Shape<RelatedObject<'a>>>,
    #[serde(borrow)]
    snapshot_event: Option<&'a RawValue>,
    // Added by our ingress.
    #[serde(borrow)]
    tenant_id: Option<&'a RawValue>,
    #[serde(borrow)]
    payload_style: Option<&'a RawValue>,
    #[serde(borrow)]
    traceparent: Option<&'a RawValue>,
    // Flat webhook thin shape.
    #[serde(borrow)]
    object_id: Option<&'a RawValue>,
    #[serde(borrow)]
    object_type: Option<&'a RawValue>,
    #[serde(borrow)]
    customer_id: Option<&'a RawValue>,
}

/// `related_object` of a `v2.core.event`.
#[derive(serde::Deserialize, Default)]
struct RelatedObject<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    object_type: Option<&'a RawValue>,
    #[serde(borrow)]
    url: Option<&'a RawValue>,
}

/// Where a set of fields sits in the body, for error messages.
#[derive(Clone, Copy)]
struct Path(&'static str);

impl Path {
    const BARE: Path = Path("");
    const DETAIL: Path = Path("detail.");

    fn field(self, name: &str) -> String {
        format!("{}{name}", self.0)
    }

    fn missing(self, name: &str) -> DecodeError {
        DecodeError::MissingField {
            field: self.field(name),
        }
    }

    fn wrong(self, name: &str, expected: &'static str) -> DecodeError {
        DecodeError::WrongType {
            field: self.field(name),
            expected,
        }
    }

    fn invalid(self, name: &str, message: impl Into<String>) -> DecodeError {
        DecodeError::InvalidValue {
            field: self.field(name),
            message: message.into(),
        }
    }

    /// An optional string (absent and null are both `None`).
    fn opt_str(self, raw: Option<&RawValue>, name: &str) -> Result<Option<String>, DecodeError> {
        raw.map(|r| {
            serde_json::from_str::<String>(r.get()).map_err(|_| self.wrong(name, "a string"))
        })
        .transpose()
    }

    /// A required string.
    fn req_str(self, raw: Option<&RawValue>, name: &str) -> Result<String, DecodeError> {
        self.opt_str(raw, name)?.ok_or_else(|| self.missing(name))
    }

    /// An optional id-like string: non-empty and at most [`MAX_ID_LEN`] bytes.
    fn opt_id(self, raw: Option<&RawValue>, name: &str) -> Result<Option<String>, DecodeError> {
        let Some(s) = self.opt_str(raw, name)? else {
            return Ok(None);
        };
        if s.is_empty() {
            return Err(self.invalid(name, "must not be empty"));
        }
        if s.len() > MAX_ID_LEN {
            return Err(self.invalid(name, format!("longer than {MAX_ID_LEN} bytes")));
        }
        Ok(Some(s))
    }

    /// A required id-like string.
    fn req_id(self, raw: Option<&RawValue>, name: &str) -> Result<String, DecodeError> {
        self.opt_id(raw, name)?.ok_or_else(|| self.missing(name))
    }

    fn req_bool(self, raw: Option<&RawValue>, name: &str) -> Result<bool, DecodeError> {
        let raw = raw.ok_or_else(|| self.missing(name))?;
        serde_json::from_str::<bool>(raw.get()).map_err(|_| self.wrong(name, "a boolean"))
    }

    /// A required Unix time in seconds (v1 `created`), returned in milliseconds.
    fn req_seconds_as_ms(self, raw: Option<&RawValue>, name: &str) -> Result<i64, DecodeError> {
        let raw = raw.ok_or_else(|| self.missing(name))?;
        let seconds = serde_json::from_str::<i64>(raw.get())
            .map_err(|_| self.wrong(name, "an integer (Unix seconds)"))?;
        seconds
            .checked_mul(1000)
            .ok_or_else(|| self.invalid(name, "timestamp out of range"))
    }

    /// A required RFC 3339 timestamp (v2 `created`), returned in milliseconds.
    fn req_rfc3339_as_ms(self, raw: Option<&RawValue>, name: &str) -> Result<i64, DecodeError> {
        let text = self
            .opt_str(raw, name)
            .map_err(|_| self.wrong(name, "an RFC 3339 timestamp string"))?
            .ok_or_else(|| self.missing(name))?;
        let at = OffsetDateTime::parse(&text, &Rfc3339)
            .map_err(|e| self.invalid(name, format!("not an RFC 3339 timestamp: {e}")))?;
        // Within the years 0..=9999 that `time` parses, milliseconds always fit in an i64.
        i64::try_from(at.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| self.invalid(name, "timestamp out of range"))
    }

    /// `traceparent`, kept only when it is a string of sane length (it is telemetry, never
    /// a reason to fail an event).
    fn traceparent(raw: Option<&RawValue>) -> Option<String> {
        raw.and_then(|r| serde_json::from_str::<String>(r.get()).ok())
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACEPARENT_LEN)
    }
}

/// What the envelope adds to the event.
#[derive(Default)]
struct Envelope {
    replay_name: Option<String>,
    aws_account: Option<String>,
}

/// Quote an untrusted value in an error message, bounded.
fn quote(s: &str) -> String {
    let mut q: String = s.chars().take(QUOTE_LEN).collect();
    if q.len() < s.len() {
        q.push('…');
    }
    format!("{q:?}")
}

fn decode_envelope(top: Fields<'_>) -> Result<NormalisedEvent, DecodeError> {
    let at = Path::BARE;
    let source = at.req_str(top.source, "source")?;
    // Checked for presence and type only: rules matched on it, and the detail says what
    // the event is.
    at.req_str(top.detail_type, "detail-type")?;
    let detail = match top.detail {
        None => return Err(at.missing("detail")),
        Some(Shape::Other(_)) => return Err(at.wrong("detail", "an object")),
        Some(Shape::Object(detail)) => detail,
    };
    let envelope = Envelope {
        replay_name: at.opt_str(top.replay_name, "replay-name")?,
        aws_account: at.opt_str(top.account, "account")?,
    };
    let kind = if source == WEBHOOK_SOURCE {
        SourceKind::Webhook
    } else if let Some(destination) = source.strip_prefix(PARTNER_SOURCE_PREFIX) {
        if destination.is_empty() || destination.len() > MAX_ID_LEN || destination.contains('/') {
            return Err(at.invalid(
                "source",
                format!("bad event destination in {}", quote(&source)),
            ));
        }
        SourceKind::Partner {
            destination: destination.to_owned(),
        }
    } else {
        return Err(DecodeError::UnsupportedShape {
            message: format!(
                "envelope source {} is neither `{WEBHOOK_SOURCE}` nor `{PARTNER_SOURCE_PREFIX}<destination>`",
                quote(&source)
            ),
        });
    };
    decode_event(*detail, Path::DETAIL, kind, envelope)
}

/// The payload shapes, told apart by the event's own fields.
enum Style {
    /// A v1 event carrying `data.object`.
    V1Snapshot,
    /// Our ingress's flat thin shape.
    FlatThin,
    /// A `v2.core.event`.
    V2Thin,
}

fn decode_event(
    f: Fields<'_>,
    at: Path,
    source: SourceKind,
    envelope: Envelope,
) -> Result<NormalisedEvent, DecodeError> {
    let object = at.opt_str(f.object, "object")?;
    let payload_style = at.opt_str(f.payload_style, "payload_style")?;
    let style = match (object.as_deref(), payload_style.as_deref()) {
        (Some("v2.core.event"), _) => Style::V2Thin,
        (Some("event") | None, Some("thin")) => Style::FlatThin,
        (Some("event"), None | Some("snapshot")) | (None, Some("snapshot")) => Style::V1Snapshot,
        (_, Some(other)) if other != "thin" && other != "snapshot" => {
            return Err(DecodeError::UnsupportedShape {
                message: format!(
                    "{} {} is not `snapshot` or `thin`",
                    at.field("payload_style"),
                    quote(other)
                ),
            });
        }
        (Some(other), _) => {
            return Err(DecodeError::NotAnEvent {
                message: format!(
                    "{} is {}, not `event` or `v2.core.event`",
                    at.field("object"),
                    quote(other)
                ),
            });
        }
        (None, _) => {
            return Err(DecodeError::NotAnEvent {
                message: format!(
                    "no `{}` or `{}` field saying what this is",
                    at.field("object"),
                    at.field("payload_style")
                ),
            });
        }
    };
    // Only our ingress publishes with the webhook source, so only there is `tenant_id`
    // trusted; anywhere else it is ignored unread.
    let tenant_hint = match source {
        SourceKind::Webhook => at.opt_id(f.tenant_id, "tenant_id")?,
        _ => None,
    };
    let traceparent = Path::traceparent(f.traceparent);
    let event_id = at.req_id(f.id, "id")?;
    let livemode = at.req_bool(f.livemode, "livemode")?;

    let (event_type, created_ms, payload_style, object, dedupe_id, connect_account, api_version) =
        match style {
            Style::V1Snapshot => {
                let event_type = at.req_id(f.event_type, "type")?;
                let created_ms = at.req_seconds_as_ms(f.created, "created")?;
                let object = snapshot_object(f.data, at, &event_id, &event_type)?;
                (
                    event_type,
                    created_ms,
                    PayloadStyle::Snapshot,
                    EventObject::Full { object },
                    event_id.clone(),
                    at.opt_id(f.account, "account")?,
                    at.opt_str(f.api_version, "api_version")?,
                )
            }
            Style::FlatThin => {
                let event_type = at.req_id(f.event_type, "type")?;
                let created_ms = at.req_seconds_as_ms(f.created, "created")?;
                let object_id = at.opt_id(f.object_id, "object_id")?;
                let object_type = at.opt_id(f.object_type, "object_type")?;
                let customer = at.opt_id(f.customer_id, "customer_id")?;
                let (Some(id), Some(object_type)) = (object_id, object_type) else {
                    return Err(DecodeError::MissingObject {
                        event_id,
                        event_type,
                        field: at.field("object_id"),
                    });
                };
                let url = api_path(&object_type, &id);
                (
                    event_type,
                    created_ms,
                    PayloadStyle::Thin,
                    EventObject::Reference(ObjectRef {
                        id,
                        object_type,
                        url,
                        customer,
                    }),
                    event_id.clone(),
                    at.opt_id(f.account, "account")?,
                    None,
                )
            }
            Style::V2Thin => {
                let v2_type = at.req_id(f.event_type, "type")?;
                let created_ms = at.req_rfc3339_as_ms(f.created, "created")?;
                let snapshot_event = at.opt_id(f.snapshot_event, "snapshot_event")?;
                let object = thin_reference(f.related_object, at, &event_id, &v2_type)?;
                let event_type = match v2_type.strip_prefix("v1.") {
                    Some(v1) if !v1.is_empty() => v1.to_owned(),
                    Some(_) => return Err(at.invalid("type", "`v1.` with no event type")),
                    None => v2_type,
                };
                (
                    event_type,
                    created_ms,
                    PayloadStyle::Thin,
                    object,
                    snapshot_event.unwrap_or_else(|| event_id.clone()),
                    at.opt_id(f.context, "context")?,
                    None,
                )
            }
        };
    Ok(NormalisedEvent {
        dedupe_id,
        event_id,
        event_type,
        created_ms,
        livemode,
        source,
        payload_style,
        object,
        tenant_hint,
        connect_account,
        replay_name: envelope.replay_name,
        aws_account: envelope.aws_account,
        api_version,
        traceparent,
    })
}

/// `data.object` of a v1 snapshot event.
fn snapshot_object(
    data: Option<Value>,
    at: Path,
    event_id: &str,
    event_type: &str,
) -> Result<Value, DecodeError> {
    let missing = || DecodeError::MissingObject {
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        field: at.field("data.object"),
    };
    match data {
        None => Err(missing()),
        Some(Value::Object(mut data)) => match data.remove("object") {
            None | Some(Value::Null) => Err(missing()),
            Some(object @ Value::Object(_)) => Ok(object),
            Some(_) => Err(at.wrong("data.object", "an object")),
        },
        Some(_) => Err(at.wrong("data", "an object")),
    }
}

/// The object a `v2.core.event` points at. See the module documentation for events
/// without one.
fn thin_reference(
    related: Option<Shape<RelatedObject<'_>>>,
    at: Path,
    event_id: &str,
    v2_type: &str,
) -> Result<EventObject, DecodeError> {
    let related = match related {
        Some(Shape::Object(related)) => related,
        Some(Shape::Other(_)) => return Err(at.wrong("related_object", "an object or null")),
        None if v2_type.starts_with("v1.") => {
            return Err(DecodeError::MissingObject {
                event_id: event_id.to_owned(),
                event_type: v2_type.to_owned(),
                field: at.field("related_object"),
            });
        }
        None => {
            return Ok(EventObject::Full {
                object: Value::Null,
            });
        }
    };
    let id = at.req_id(related.id, "related_object.id")?;
    let object_type = at.req_id(related.object_type, "related_object.type")?;
    let url = match at.opt_str(related.url, "related_object.url")? {
        Some(url) => Some(url),
        None => api_path(&object_type, &id),
    };
    Ok(EventObject::Reference(ObjectRef {
        id,
        object_type,
        url,
        customer: None,
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode(v: &Value) -> Result<NormalisedEvent, DecodeError> {
        decode_message(v.to_string().as_bytes())
    }

    fn v1_event() -> Value {
        json!({
            "id": "evt_1", "object": "event", "type": "customer.updated",
            "created": 1_700_000_000, "livemode": false, "api_version": "2025-03-31.basil",
            "data": {"object": {"id": "cus_1", "object": "customer"}},
        })
    }

    fn v2_event() -> Value {
        json!({
            "id": "evt_thin_1", "object": "v2.core.event",
            "type": "v1.customer.subscription.updated",
            "created": "2024-03-07T18:27:56.123Z", "livemode": true, "context": "acct_1",
            "related_object": {"id": "sub_1", "type": "subscription", "url": "/v1/subscriptions/sub_1"},
            "snapshot_event": "evt_1",
        })
    }

    fn envelope(source: &str, detail: Value) -> Value {
        json!({"version": "0", "id": "uuid-1", "detail-type": "t", "source": source,
            "time": "2024-03-07T18:27:56Z", "region": "us-east-1", "resources": [],
            "detail": detail})
    }

    #[test]
    fn errors_before_parsing() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(decode_message(&big).unwrap_err().reason(), "too_large");
        assert_eq!(
            decode_message(b"{\"id\": \"\xff\"}").unwrap_err(),
            DecodeError::InvalidUtf8 { valid_up_to: 8 }
        );
    }

    #[test]
    fn invalid_json_variants() {
        for body in [
            "",
            "{",
            "{\"id\": \"evt_1\"",
            "{} {}",
            "{\"id\": \"a\", \"id\": \"b\"}",
            "nul",
        ] {
            let err = decode_message(body.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), "invalid_json", "{body:?}: {err}");
        }
        // serde_json skips ignored values without recursion, so a deep array is simply
        // "not an object", and a deep unknown field costs nothing.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(
            decode_message(deep.as_bytes()).unwrap_err().reason(),
            "not_an_event"
        );
        let mut ev = v1_event().to_string();
        ev.insert_str(
            1,
            &format!("\"x\":{}{},", "[".repeat(100_000), "]".repeat(100_000)),
        );
        assert_eq!(decode_message(ev.as_bytes()).unwrap().event_id, "evt_1");
        let nested_details = "{\"detail\":".repeat(100_000) + &"}".repeat(100_000);
        assert_eq!(
            decode_message(nested_details.as_bytes())
                .unwrap_err()
                .reason(),
            "invalid_json"
        );
        let truncated = &v1_event().to_string()[..40];
        assert_eq!(
            decode_message(truncated.as_bytes()).unwrap_err().reason(),
            "invalid_json"
        );
        let deep_in_data = format!(
            "{{\"id\":\"evt_1\",\"object\":\"event\",\"data\":{}{}}}",
            "{\"a\":".repeat(1000),
            "1".to_owned() + &"}".repeat(1000)
        );
        assert_eq!(
            decode_message(deep_in_data.as_bytes())
                .unwrap_err()
                .reason(),
            "invalid_json"
        );
    }

    #[test]
    fn non_objects_are_not_events() {
        for body in [
            "[1, [2]]",
            "1",
            "-1.5",
            "\"evt_1\"",
            "true",
            "null",
            "18446744073709551616",
        ] {
            let err = decode_message(body.as_bytes()).unwrap_err();
            assert_eq!(err.reason(), "not_an_event", "{body}: {err}");
        }
        let err = decode(&json!({"id": "cus_1", "object": "customer"})).unwrap_err();
        assert_eq!(err.reason(), "not_an_event");
        assert!(err.to_string().contains("\"customer\""), "{err}");
        assert_eq!(decode(&json!({})).unwrap_err().reason(), "not_an_event");
    }

    #[test]
    fn bare_v1_event() {
        let e = decode(&v1_event()).unwrap();
        assert_eq!(e.dedupe_id, "evt_1");
        assert_eq!(e.event_id, "evt_1");
        assert_eq!(e.event_type, "customer.updated");
        assert_eq!(e.created_ms, 1_700_000_000_000);
        assert!(!e.livemode);
        assert_eq!(e.source, SourceKind::Bare);
        assert_eq!(e.payload_style, PayloadStyle::Snapshot);
        assert_eq!(
            e.object,
            EventObject::Full {
                object: json!({"id": "cus_1", "object": "customer"})
            }
        );
        assert_eq!(e.api_version.as_deref(), Some("2025-03-31.basil"));
        assert_eq!(e.tenant_hint, None);
        assert_eq!(e.connect_account, None);
        assert_eq!(e.replay_name, None);
        assert_eq!(e.aws_account, None);
        assert_eq!(e.traceparent, None);
    }

    #[test]
    fn bare_event_ignores_tenant_id_and_reads_account() {
        let mut ev = v1_event();
        ev["tenant_id"] = json!("evil");
        ev["account"] = json!("acct_9");
        let e = decode(&ev).unwrap();
        assert_eq!(e.tenant_hint, None);
        assert_eq!(e.connect_account.as_deref(), Some("acct_9"));
        // Not even type-checked: it is not read.
        ev["tenant_id"] = json!(42);
        assert!(decode(&ev).is_ok());
    }

    #[test]
    fn webhook_reads_tenant_and_traceparent() {
        let mut ev = v1_event();
        ev["tenant_id"] = json!("acme");
        ev["payload_style"] = json!("snapshot");
        ev["traceparent"] = json!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        let e = decode(&envelope(WEBHOOK_SOURCE, ev.clone())).unwrap();
        assert_eq!(e.source, SourceKind::Webhook);
        assert_eq!(e.tenant_hint.as_deref(), Some("acme"));
        assert!(e.traceparent.is_some());
        assert_eq!(e.aws_account, None);
        ev["tenant_id"] = json!(1);
        assert_eq!(
            decode(&envelope(WEBHOOK_SOURCE, ev)).unwrap_err(),
            DecodeError::WrongType {
                field: "detail.tenant_id".into(),
                expected: "a string"
            }
        );
    }

    #[test]
    fn bad_traceparent_is_dropped_not_fatal() {
        for tp in [json!(7), json!("x".repeat(300)), json!("")] {
            let mut ev = v1_event();
            ev["traceparent"] = tp;
            assert_eq!(decode(&ev).unwrap().traceparent, None);
        }
    }

    #[test]
    fn envelope_field_errors_name_the_field() {
        let cases = [
            (
                json!({"detail-type": "t", "detail": v1_event()}),
                "missing_field",
                "source",
            ),
            (
                json!({"source": 1, "detail-type": "t", "detail": {}}),
                "wrong_type",
                "source",
            ),
            (
                json!({"source": WEBHOOK_SOURCE, "detail": v1_event()}),
                "missing_field",
                "detail-type",
            ),
            (
                json!({"source": WEBHOOK_SOURCE, "detail-type": "t"}),
                "missing_field",
                "detail",
            ),
            (
                json!({"source": WEBHOOK_SOURCE, "detail-type": "t", "detail": "{}"}),
                "wrong_type",
                "detail",
            ),
            (
                json!({"source": WEBHOOK_SOURCE, "detail-type": "t", "detail": v1_event(), "replay-name": 3}),
                "wrong_type",
                "replay-name",
            ),
            (
                json!({"source": "aws.partner/stripe.com/", "detail-type": "t", "detail": v1_event()}),
                "invalid_value",
                "source",
            ),
            (
                json!({"source": "my.app", "detail-type": "t", "detail": v1_event()}),
                "unsupported_shape",
                "my.app",
            ),
        ];
        for (body, reason, needle) in cases {
            let err = decode(&body).unwrap_err();
            assert_eq!(err.reason(), reason, "{body}: {err}");
            assert!(
                err.to_string().contains(needle),
                "{err} should name {needle}"
            );
        }
    }

    #[test]
    fn event_field_errors_name_the_field() {
        let mutate = |f: &dyn Fn(&mut Value)| {
            let mut ev = v1_event();
            f(&mut ev);
            decode(&envelope("aws.partner/stripe.com/ed_1", ev)).unwrap_err()
        };
        let err = mutate(&|e| e["created"] = json!("yesterday"));
        assert_eq!(
            err,
            DecodeError::WrongType {
                field: "detail.created".into(),
                expected: "an integer (Unix seconds)"
            }
        );
        let err = mutate(&|e| e["created"] = json!(1.5));
        assert_eq!(err.reason(), "wrong_type");
        let err = mutate(&|e| e["created"] = json!(i64::MAX));
        assert_eq!(err.reason(), "invalid_value");
        let err = mutate(&|e| {
            e.as_object_mut().unwrap().remove("id");
        });
        assert_eq!(
            err,
            DecodeError::MissingField {
                field: "detail.id".into()
            }
        );
        let err = mutate(&|e| e["id"] = json!(""));
        assert_eq!(err.reason(), "invalid_value");
        let err = mutate(&|e| e["id"] = json!("e".repeat(MAX_ID_LEN + 1)));
        assert_eq!(err.reason(), "invalid_value");
        let err = mutate(&|e| e["livemode"] = json!("yes"));
        assert_eq!(
            err,
            DecodeError::WrongType {
                field: "detail.livemode".into(),
                expected: "a boolean"
            }
        );
        let err = mutate(&|e| e["type"] = Value::Null);
        assert_eq!(
            err,
            DecodeError::MissingField {
                field: "detail.type".into()
            }
        );
        let err = mutate(&|e| e["data"] = json!([]));
        assert_eq!(
            err,
            DecodeError::WrongType {
                field: "detail.data".into(),
                expected: "an object"
            }
        );
        let err = mutate(&|e| e["data"] = json!({"object": "cus_1"}));
        assert_eq!(
            err,
            DecodeError::WrongType {
                field: "detail.data.object".into(),
                expected: "an object"
            }
        );
        let err = mutate(&|e| e["data"] = json!({"object": null}));
        assert_eq!(err.reason(), "missing_object");
        let err = mutate(&|e| {
            e.as_object_mut().unwrap().remove("data");
        });
        assert_eq!(err.reason(), "missing_object");
        let err = mutate(&|e| e["payload_style"] = json!("fat"));
        assert_eq!(err.reason(), "unsupported_shape");
        let err = mutate(&|e| e["object"] = json!(5));
        assert_eq!(
            err,
            DecodeError::WrongType {
                field: "detail.object".into(),
                expected: "a string"
            }
        );
    }

    #[test]
    fn v2_thin_event() {
        let e = decode(&envelope("aws.partner/stripe.com/ed_1", v2_event())).unwrap();
        assert_eq!(e.dedupe_id, "evt_1");
        assert_eq!(e.event_id, "evt_thin_1");
        assert_eq!(e.event_type, "customer.subscription.updated");
        assert_eq!(e.created_ms, 1_709_836_076_123);
        assert!(e.livemode);
        assert_eq!(
            e.source,
            SourceKind::Partner {
                destination: "ed_1".into()
            }
        );
        assert_eq!(e.payload_style, PayloadStyle::Thin);
        assert_eq!(
            e.object,
            EventObject::Reference(ObjectRef {
                id: "sub_1".into(),
                object_type: "subscription".into(),
                url: Some("/v1/subscriptions/sub_1".into()),
                customer: None,
            })
        );
        assert_eq!(e.connect_account.as_deref(), Some("acct_1"));
        assert_eq!(e.api_version, None);
    }

    #[test]
    fn v2_thin_variants() {
        // No snapshot_event: the thin event's own id dedupes.
        let mut ev = v2_event();
        ev.as_object_mut().unwrap().remove("snapshot_event");
        assert_eq!(decode(&ev).unwrap().dedupe_id, "evt_thin_1");
        // No url: derived from the type and id.
        let mut ev = v2_event();
        ev["related_object"].as_object_mut().unwrap().remove("url");
        let EventObject::Reference(r) = decode(&ev).unwrap().object else {
            panic!("expected a reference")
        };
        assert_eq!(r.url.as_deref(), Some("/v1/subscriptions/sub_1"));
        // Offsets are honoured.
        let mut ev = v2_event();
        ev["created"] = json!("2024-03-07T19:27:56+01:00");
        assert_eq!(decode(&ev).unwrap().created_ms, 1_709_836_076_000);
    }

    #[test]
    fn v2_thin_errors() {
        let mut ev = v2_event();
        ev["related_object"] = Value::Null;
        assert_eq!(
            decode(&ev).unwrap_err(),
            DecodeError::MissingObject {
                event_id: "evt_thin_1".into(),
                event_type: "v1.customer.subscription.updated".into(),
                field: "related_object".into(),
            }
        );
        let mut ev = v2_event();
        ev["related_object"] = json!("sub_1");
        assert_eq!(decode(&ev).unwrap_err().reason(), "wrong_type");
        let mut ev = v2_event();
        ev["related_object"] = json!({"type": "subscription"});
        assert_eq!(
            decode(&ev).unwrap_err(),
            DecodeError::MissingField {
                field: "related_object.id".into()
            }
        );
        let mut ev = v2_event();
        ev["created"] = json!(1_709_836_076);
        assert_eq!(decode(&ev).unwrap_err().reason(), "wrong_type");
        let mut ev = v2_event();
        ev["created"] = json!("last tuesday");
        assert_eq!(decode(&ev).unwrap_err().reason(), "invalid_value");
        let mut ev = v2_event();
        ev["type"] = json!("v1.");
        assert_eq!(decode(&ev).unwrap_err().reason(), "invalid_value");
    }

    #[test]
    fn v2_native_event_without_object_decodes() {
        let mut ev = v2_event();
        ev["type"] = json!("v2.core.event_destination.ping");
        ev["related_object"] = Value::Null;
        ev.as_object_mut().unwrap().remove("snapshot_event");
        let e = decode(&ev).unwrap();
        assert_eq!(e.event_type, "v2.core.event_destination.ping");
        assert_eq!(e.payload_style, PayloadStyle::Thin);
        assert_eq!(
            e.object,
            EventObject::Full {
                object: Value::Null
            }
        );
        assert_eq!(e.dedupe_id, "evt_thin_1");
    }

    #[test]
    fn flat_thin_event() {
        let ev = json!({
            "id": "evt_1", "type": "invoice.paid", "created": 5, "livemode": false,
            "tenant_id": "acme", "received_at": "2024-01-01T00:00:00.000Z",
            "payload_style": "thin", "object_id": "in_1", "object_type": "invoice",
            "customer_id": "cus_1", "status": "paid", "account": "acct_1",
            "current_period_start": null, "current_period_end": null,
        });
        let e = decode(&envelope(WEBHOOK_SOURCE, ev.clone())).unwrap();
        assert_eq!(e.dedupe_id, "evt_1");
        assert_eq!(e.created_ms, 5_000);
        assert_eq!(e.payload_style, PayloadStyle::Thin);
        assert_eq!(e.tenant_hint.as_deref(), Some("acme"));
        assert_eq!(e.connect_account.as_deref(), Some("acct_1"));
        assert_eq!(
            e.object,
            EventObject::Reference(ObjectRef {
                id: "in_1".into(),
                object_type: "invoice".into(),
                url: Some("/v1/invoices/in_1".into()),
                customer: Some("cus_1".into()),
            })
        );
        let mut no_object = ev.clone();
        no_object["object_id"] = Value::Null;
        assert_eq!(
            decode(&envelope(WEBHOOK_SOURCE, no_object))
                .unwrap_err()
                .reason(),
            "missing_object"
        );
        // An object type without a known API path decodes, with no url.
        let mut plan = ev;
        plan["object_type"] = json!("plan");
        let EventObject::Reference(r) = decode(&plan).unwrap().object else {
            panic!("expected a reference")
        };
        assert_eq!(r.url, None);
    }

    #[test]
    fn replay_name_and_aws_account_come_from_the_envelope() {
        let mut env = envelope("aws.partner/stripe.com/ed_1", v1_event());
        env["replay-name"] = json!("replay-2024");
        env["account"] = json!("123456789012");
        let e = decode(&env).unwrap();
        assert_eq!(e.replay_name.as_deref(), Some("replay-2024"));
        assert_eq!(e.aws_account.as_deref(), Some("123456789012"));
        // The envelope id never becomes the dedupe id.
        assert_eq!(e.dedupe_id, "evt_1");
        // The Connect account is the detail's, not the envelope's.
        assert_eq!(e.connect_account, None);
    }

    #[test]
    fn escaped_strings_decode() {
        let body = r#"{"id":"evt_\u0031","object":"event","type":"customer.updated","created":1,"livemode":false,"data":{"object":{"id":"cus_\"1"}}}"#;
        let e = decode_message(body.as_bytes()).unwrap();
        assert_eq!(e.event_id, "evt_1");
        assert_eq!(
            e.object,
            EventObject::Full {
                object: json!({"id": "cus_\"1"})
            }
        );
    }

    #[test]
    fn quote_bounds_untrusted_text() {
        let q = quote(&"x".repeat(1000));
        assert!(q.len() < QUOTE_LEN + 10, "{q}");
        assert_eq!(quote("ab"), "\"ab\"");
    }
}
