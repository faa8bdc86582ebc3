//! A deterministic generator of realistic Stripe v1 event streams for the demo and tests.
//!
//! Each tenant first sets up its catalogue (products, prices, coupons, a promotion code).
//! Then each customer gets a story: sign-up (through Checkout or a setup intent), now and
//! then a tax id, a subscription that may start with a trial and a promotion code's
//! discount, the entitlements its plan grants, monthly invoices paid by payment intents
//! and charges, now and then a refund with its credit note or a dispute, declines with a
//! retry that recovers or ends in cancellation, card changes, a subscription schedule,
//! cancellations at period end and now and then the customer's deletion. Stories run in
//! parallel on their own clocks; the stream is their merge in time order.
//!
//! While it emits each object version the generator records the facts it means into an
//! [`ExpectedState`], and it keeps each object's last version so the Stripe double can
//! serve thin events. It never calls the handlers: the model is an independent witness.

use std::collections::{BTreeMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::expected::ExpectedState;
use super::shapes::{self, DiscountOf, Payment};

/// The API version every generated event and object is shaped for (item-level billing
/// periods, invoice `parent`, invoice payments).
pub const API_VERSION: &str = "2025-03-31.basil";

/// 2025-06-01T00:00:00Z: the earliest moment a story can start.
const EPOCH: i64 = 1_748_736_000;
const DAY: i64 = 86_400;
/// Stripe's monthly billing period, simplified to 30 days.
const PERIOD: i64 = 30 * DAY;
const TRIAL: i64 = 14 * DAY;
/// Share of stories (outside the first tenant) that reuse another tenant's customer and
/// subscription ids, so that tenant isolation is exercised.
const REUSE_RATE: f64 = 0.25;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// About how many events: the stream has at least this many and overshoots by at most
    /// one customer's story (a few dozen events).
    pub events: usize,
    /// How many tenants (named by [`tenant_name`]); 0 is treated as 1.
    pub tenants: usize,
    /// The seed: the same config always gives the same stream.
    pub seed: u64,
}

/// One generated event and the tenant it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedEvent {
    /// The tenant (also in every object's `metadata.tenant_id`).
    pub tenant: String,
    /// A Stripe v1 `event` with the full object in `data.object`.
    pub event: Value,
}

/// A generated stream, the generator's model of its outcome and the objects' last versions.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedStream {
    /// Every event, oldest first (ties in `created` keep generation order).
    pub events: Vec<GeneratedEvent>,
    /// What the state must be once every event has been applied.
    pub expected: ExpectedState,
    /// `(tenant, object)`: the last version of every object an event carried, as the
    /// Stripe API would serve it now (a deleted customer is its deletion stub). Sorted
    /// by tenant, then object id.
    pub final_objects: Vec<(String, Value)>,
}

/// The name of tenant number `index` (from 0): `tenant-1`, `tenant-2`, ...
pub fn tenant_name(index: usize) -> String {
    format!("tenant-{}", index + 1)
}

/// Generate a stream (pure: the same config gives the same stream).
pub fn generate(cfg: &GeneratorConfig) -> GeneratedStream {
    generate_for_tenants(cfg, 0)
}

/// [`generate`] for tenants numbered from `first_tenant` (`tenant_name(first_tenant)`
/// onwards): streams made for disjoint tenant ranges share no state, so a long run can be
/// generated, applied and checked one chunk at a time.
pub fn generate_for_tenants(cfg: &GeneratorConfig, first_tenant: usize) -> GeneratedStream {
    let tenants = cfg.tenants.max(1);
    let mut generator = Generator::new(cfg.seed, tenants);
    generator.first_tenant = first_tenant;
    while generator.events.len() < cfg.events {
        let tenant = generator.rng.random_range(0..tenants);
        if generator.promotions[tenant].is_none() {
            generator.catalog(tenant);
        } else {
            generator.story(tenant);
        }
    }
    generator.finish()
}

/// A price of a tenant's catalog.
#[derive(Debug, Clone)]
struct Price {
    id: String,
    product: String,
    nickname: &'static str,
    unit_amount: i64,
    created: i64,
}

/// The state of one customer's story: its tenant and its own clock.
struct Story {
    tenant: usize,
    tenant_name: String,
    clock: i64,
}

#[derive(Debug, Clone)]
struct Customer {
    id: String,
    email: String,
    name: String,
    created: i64,
    default_pm: Option<String>,
    delinquent: bool,
    invoice_prefix: String,
    invoices: u32,
}

#[derive(Debug, Clone)]
struct PaymentMethod {
    id: String,
    customer: Option<String>,
    brand: &'static str,
    last4: String,
    exp_month: u32,
    exp_year: u32,
    fingerprint: String,
    email: String,
    name: String,
    created: i64,
}

#[derive(Debug, Clone)]
struct Item {
    id: String,
    price: Price,
    quantity: i64,
    created: i64,
}

#[derive(Debug, Clone)]
struct Subscription {
    id: String,
    customer: String,
    status: &'static str,
    items: Vec<Item>,
    period_start: i64,
    period_end: i64,
    cancel_at_period_end: bool,
    cancel_at: Option<i64>,
    canceled_at: Option<i64>,
    ended_at: Option<i64>,
    cancel_reason: Option<&'static str>,
    trial: Option<(i64, i64)>,
    created: i64,
    latest_invoice: Option<String>,
    default_pm: Option<String>,
    /// The ids of the discounts applied to it.
    discounts: Vec<String>,
}

impl Subscription {
    fn amount(&self) -> i64 {
        self.items
            .iter()
            .map(|i| i.price.unit_amount * i.quantity)
            .sum()
    }
}

#[derive(Debug, Clone)]
struct Invoice {
    id: String,
    number: String,
    customer: String,
    customer_email: String,
    customer_name: String,
    subscription: String,
    status: &'static str,
    billing_reason: &'static str,
    lines: Vec<(String, Item)>,
    amount_due: i64,
    amount_paid: i64,
    attempt_count: i64,
    period_start: i64,
    period_end: i64,
    created: i64,
    finalized_at: Option<i64>,
    paid_at: Option<i64>,
    uncollectible_at: Option<i64>,
    next_payment_attempt: Option<i64>,
}

#[derive(Debug, Clone)]
struct PaymentIntent {
    id: String,
    customer: String,
    amount: i64,
    amount_received: i64,
    status: &'static str,
    failure: Option<Decline>,
    latest_charge: Option<String>,
    payment_method: String,
    created: i64,
}

#[derive(Debug, Clone, Copy)]
struct Decline {
    code: &'static str,
    decline_code: Option<&'static str>,
    message: &'static str,
}

const DECLINES: [Decline; 4] = [
    Decline {
        code: "card_declined",
        decline_code: Some("insufficient_funds"),
        message: "Your card has insufficient funds.",
    },
    Decline {
        code: "card_declined",
        decline_code: Some("generic_decline"),
        message: "Your card was declined.",
    },
    Decline {
        code: "expired_card",
        decline_code: None,
        message: "Your card has expired.",
    },
    Decline {
        code: "processing_error",
        decline_code: None,
        message: "An error occurred while processing your card. Try again in a little bit.",
    },
];

const FIRST_NAMES: [&str; 12] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Leslie",
    "Margaret", "Niklaus",
];
const LAST_NAMES: [&str; 12] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
    "Lamport", "Hamilton", "Wirth",
];
const BRANDS: [(&str, &str); 3] = [("visa", "4242"), ("mastercard", "4444"), ("amex", "8431")];
const ALPHANUMERIC: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Where an object's last version is.
enum Final {
    /// In `data.object` of the event at this index of `Generator::events`.
    Event(usize),
    /// A version no event carried (a deleted customer's stub).
    Stub(Value),
}

struct Generator {
    rng: StdRng,
    /// Every id generated so far, so fresh ids are unique across the whole stream.
    used: HashSet<String>,
    /// Ids in use per tenant, so a reused id never collides within its new tenant.
    tenant_ids: Vec<HashSet<String>>,
    /// The number of tenant 0 in [`tenant_name`].
    first_tenant: usize,
    /// `(tenant, customer id, subscription id)` of stories whose ids others may reuse.
    shareable: Vec<(usize, String, String)>,
    catalogs: Vec<Vec<Price>>,
    /// Per tenant, once its catalogue is on the stream: the coupon (as embedded in
    /// promotion codes and discounts) and the promotion code customers redeem.
    promotions: Vec<Option<(Value, String)>>,
    /// `(created, generation sequence, event)`, sorted at the end.
    events: Vec<(i64, u64, GeneratedEvent)>,
    expected: ExpectedState,
    /// The last version of each object: where its latest event is in `events`, or a stub
    /// the API serves instead. An index rather than a copy keeps generation cheap.
    finals: BTreeMap<(String, String), Final>,
}

impl Generator {
    fn new(seed: u64, tenants: usize) -> Self {
        let mut generator = Generator {
            rng: StdRng::seed_from_u64(seed),
            used: HashSet::new(),
            tenant_ids: vec![HashSet::new(); tenants],
            first_tenant: 0,
            shareable: Vec::new(),
            catalogs: Vec::new(),
            promotions: vec![None; tenants],
            events: Vec::new(),
            expected: ExpectedState::new(),
            finals: BTreeMap::new(),
        };
        for _ in 0..tenants {
            let catalog = [("Starter", 900), ("Pro", 2900), ("Team seat", 1200)]
                .into_iter()
                .map(|(nickname, unit_amount)| Price {
                    id: generator.fresh_id("price_", 24),
                    product: generator.fresh_id("prod_", 14),
                    nickname,
                    unit_amount,
                    created: EPOCH - 90 * DAY,
                })
                .collect();
            generator.catalogs.push(catalog);
        }
        generator
    }

    fn finish(mut self) -> GeneratedStream {
        // Resolve the final versions before sorting moves the events they index.
        let final_objects = std::mem::take(&mut self.finals)
            .into_iter()
            .map(|((tenant, _), last)| {
                let object = match last {
                    Final::Event(index) => self.object_at(index).cloned().unwrap_or(Value::Null),
                    Final::Stub(object) => object,
                };
                (tenant, object)
            })
            .collect();
        self.events
            .sort_by_key(|(created, seq, _)| (*created, *seq));
        GeneratedStream {
            events: self.events.into_iter().map(|(_, _, e)| e).collect(),
            expected: self.expected,
            final_objects,
        }
    }

    /// `data.object` of the event at `index` (before sorting).
    fn object_at(&self, index: usize) -> Option<&Value> {
        self.events
            .get(index)
            .and_then(|(_, _, e)| e.event.get("data"))
            .and_then(|data| data.get("object"))
    }

    fn random_chars(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(ALPHANUMERIC[self.rng.random_range(0..ALPHANUMERIC.len())]))
            .collect()
    }

    /// A Stripe-looking id never generated before in this stream.
    fn fresh_id(&mut self, prefix: &str, len: usize) -> String {
        loop {
            let id = format!("{prefix}{}", self.random_chars(len));
            if self.used.insert(id.clone()) {
                return id;
            }
        }
    }

    /// A fresh id for an object of `story`'s tenant.
    fn object_id(&mut self, story: &Story, prefix: &str, len: usize) -> String {
        let id = self.fresh_id(prefix, len);
        self.tenant_ids[story.tenant].insert(id.clone());
        id
    }

    /// Customer and subscription ids for a new story: usually fresh, sometimes borrowed
    /// from another tenant's story (never twice into the same tenant).
    fn story_ids(&mut self, story: &Story) -> (String, String) {
        if !self.shareable.is_empty() && self.rng.random_bool(REUSE_RATE) {
            let pick = self.rng.random_range(0..self.shareable.len());
            let (owner, customer, subscription) = &self.shareable[pick];
            let ids = &self.tenant_ids[story.tenant];
            if *owner != story.tenant && !ids.contains(customer) && !ids.contains(subscription) {
                let (customer, subscription) = (customer.clone(), subscription.clone());
                self.tenant_ids[story.tenant].insert(customer.clone());
                self.tenant_ids[story.tenant].insert(subscription.clone());
                return (customer, subscription);
            }
        }
        let customer = self.object_id(story, "cus_", 14);
        let subscription = self.object_id(story, "sub_", 24);
        self.shareable
            .push((story.tenant, customer.clone(), subscription.clone()));
        (customer, subscription)
    }

    /// Move the story's clock forward to at least `at`.
    fn wait_until(story: &mut Story, at: i64) {
        story.clock = story.clock.max(at);
    }

    /// Put one event on the stream at the story's next tick and remember the object's
    /// latest version. Every event advances the clock, so each object's events have
    /// strictly increasing `created`.
    /// An object without an id (an entitlement summary) is not kept: no API serves it.
    fn emit(&mut self, story: &mut Story, event_type: &str, object: Value) {
        story.clock += self.rng.random_range(1..=90);
        let created = story.clock;
        let object_id = object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let has_id = !object_id.is_empty();
        let key = (story.tenant_name.clone(), object_id);
        let mut data = Map::new();
        if event_type.ends_with(".updated") && has_id {
            let previous = match self.finals.get(&key) {
                Some(Final::Event(index)) => self.object_at(*index),
                Some(Final::Stub(stub)) => Some(stub),
                None => None,
            };
            if let Some(previous) = previous {
                let changed = previous_attributes(previous, &object);
                data.insert("previous_attributes".to_owned(), changed);
            }
        }
        data.insert("object".to_owned(), object);
        let api_request = matches!(
            event_type,
            "customer.created"
                | "customer.updated"
                | "customer.deleted"
                | "payment_method.attached"
                | "payment_method.detached"
                | "setup_intent.created"
        );
        let request_id = if api_request {
            Value::String(format!("req_{}", self.random_chars(14)))
        } else {
            Value::Null
        };
        let mut event = json!({
            "id": format!("evt_{}", self.random_chars(24)),
            "object": "event",
            "api_version": API_VERSION,
            "created": created,
            "data": null,
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": request_id, "idempotency_key": null},
            "type": event_type,
        });
        // Moved in after the macro: `json!` would re-serialize (deep-copy) a `Value`.
        event["data"] = Value::Object(data);
        if has_id {
            self.finals.insert(key, Final::Event(self.events.len()));
        }
        let seq = self.events.len() as u64;
        self.events.push((
            created,
            seq,
            GeneratedEvent {
                tenant: story.tenant_name.clone(),
                event,
            },
        ));
    }

    // ----- one customer's story -----

    fn story(&mut self, tenant: usize) {
        let mut story = Story {
            tenant,
            tenant_name: tenant_name(self.first_tenant + tenant),
            clock: EPOCH + self.rng.random_range(0..30 * DAY),
        };
        let (customer_id, subscription_id) = self.story_ids(&story);

        let first = FIRST_NAMES[self.rng.random_range(0..FIRST_NAMES.len())];
        let last = LAST_NAMES[self.rng.random_range(0..LAST_NAMES.len())];
        let n: u32 = self.rng.random_range(1..1000);
        let mut customer = Customer {
            id: customer_id,
            email: format!(
                "{}.{}{n}@example.com",
                first.to_lowercase(),
                last.to_lowercase()
            ),
            name: format!("{first} {last}"),
            created: story.clock,
            default_pm: None,
            delinquent: false,
            invoice_prefix: self.random_chars(8).to_uppercase(),
            invoices: 0,
        };
        self.emit_customer(&mut story, "customer.created", &customer);
        let tax_id = if self.rng.random_bool(0.2) {
            Some(self.tax_id(&mut story, &customer.id))
        } else {
            None
        };

        // Some visitors abandon a first checkout before signing up for good.
        if self.rng.random_bool(0.1) {
            let session = self.checkout_json(&story, None, None, "expired", "unpaid", 0);
            self.emit(&mut story, "checkout.session.expired", session);
        }

        let via_checkout = self.rng.random_bool(0.6);
        let trial = self.rng.random_bool(0.4);
        let mut pm = self.new_payment_method(&story, &customer);
        let mut session_id = None;
        if via_checkout {
            session_id = Some(self.object_id(&story, "cs_test_", 58));
            self.emit_payment_method(&mut story, "payment_method.attached", &pm);
        } else {
            let setup_id = self.object_id(&story, "seti_", 24);
            let created = story.clock;
            let json = setup_intent_json(
                &story,
                &setup_id,
                &customer.id,
                None,
                "requires_payment_method",
                created,
            );
            self.emit(&mut story, "setup_intent.created", json);
            self.emit_payment_method(&mut story, "payment_method.attached", &pm);
            let json = setup_intent_json(
                &story,
                &setup_id,
                &customer.id,
                Some(&pm.id),
                "succeeded",
                created,
            );
            self.emit(&mut story, "setup_intent.succeeded", json);
            self.expected
                .setup_intent(&story.tenant_name, &setup_id, "succeeded");
            customer.default_pm = Some(pm.id.clone());
            self.emit_customer(&mut story, "customer.updated", &customer);
        }

        let mut sub = self.new_subscription(&story, subscription_id, &customer, &pm, trial);
        self.emit_subscription(&mut story, "customer.subscription.created", &sub);
        let discount = if self.rng.random_bool(0.2) {
            self.apply_discount(&mut story, &mut sub)
        } else {
            None
        };

        // The first invoice: free during a trial, else paid at sign-up (Checkout and the
        // API both confirm the first payment before the subscription turns active).
        let mut canceled = false;
        if trial {
            self.zero_invoice(&mut story, &mut customer, &mut sub);
        } else {
            self.bill(
                &mut story,
                &mut customer,
                &mut sub,
                &pm,
                "subscription_create",
                false,
            );
            sub.status = "active";
            self.emit_subscription(&mut story, "customer.subscription.updated", &sub);
        }
        if let Some(session_id) = session_id {
            let payment_status = if trial { "no_payment_required" } else { "paid" };
            let total = if trial { 0 } else { sub.amount() };
            let json = self.checkout_json(
                &story,
                Some((&session_id, &customer)),
                Some(&sub.id),
                "complete",
                payment_status,
                total,
            );
            self.emit(&mut story, "checkout.session.completed", json);
            self.expected
                .checkout_session(&story.tenant_name, &session_id, Some(&sub.id));
        }
        self.entitlements(&mut story, &sub);

        let cycles = self.rng.random_range(1..=4);
        for cycle in 0..cycles {
            if cycle == 3
                && let Some(discount) = &discount
            {
                // The coupon's three months are over.
                self.end_discount(&mut story, &mut sub, discount.clone());
            }
            // Renewal: a new period starts and its invoice is billed.
            Self::wait_until(&mut story, sub.period_end);
            sub.period_start = sub.period_end;
            sub.period_end = sub.period_start + PERIOD;
            sub.status = if sub.status == "past_due" {
                "past_due"
            } else {
                "active"
            };
            self.emit_subscription(&mut story, "customer.subscription.updated", &sub);
            let fails = self.rng.random_bool(0.25);
            if !self.bill(
                &mut story,
                &mut customer,
                &mut sub,
                &pm,
                "subscription_cycle",
                fails,
            ) {
                canceled = true;
                break;
            }

            if self.rng.random_bool(0.1) {
                let n: u32 = self.rng.random_range(1..1000);
                customer.email = format!("{}.{n}@example.org", first.to_lowercase());
                self.emit_customer(&mut story, "customer.updated", &customer);
            }
            if self.rng.random_bool(0.1) {
                pm = self.replace_card(&mut story, &mut customer, &mut sub, pm);
            }
            if cycle == 0 && self.rng.random_bool(0.1) {
                self.schedule(&mut story, &sub);
            }
        }

        if !canceled && self.rng.random_bool(0.25) {
            sub.cancel_at_period_end = true;
            sub.cancel_at = Some(sub.period_end);
            sub.cancel_reason = Some("cancellation_requested");
            self.emit_subscription(&mut story, "customer.subscription.updated", &sub);
            Self::wait_until(&mut story, sub.period_end);
            self.end_subscription(&mut story, &mut sub);
            canceled = true;
        }

        if canceled && self.rng.random_bool(0.3) {
            // Cards are detached and tax ids deleted before the customer is deleted.
            pm.customer = None;
            self.emit_payment_method(&mut story, "payment_method.detached", &pm);
            if let Some(tax_id) = tax_id {
                self.delete_tax_id(&mut story, tax_id);
            }
            self.emit_customer(&mut story, "customer.deleted", &customer);
            // The API serves only a stub for a deleted customer.
            self.finals.insert(
                (story.tenant_name.clone(), customer.id.clone()),
                Final::Stub(json!({"id": customer.id, "object": "customer", "deleted": true})),
            );
        }
    }

    fn new_payment_method(&mut self, story: &Story, customer: &Customer) -> PaymentMethod {
        let (brand, last4) = BRANDS[self.rng.random_range(0..BRANDS.len())];
        PaymentMethod {
            id: self.object_id(story, "pm_", 24),
            customer: Some(customer.id.clone()),
            brand,
            last4: last4.to_owned(),
            exp_month: self.rng.random_range(1..=12),
            exp_year: self.rng.random_range(2026..=2031),
            fingerprint: self.random_chars(16),
            email: customer.email.clone(),
            name: customer.name.clone(),
            created: story.clock,
        }
    }

    fn new_subscription(
        &mut self,
        story: &Story,
        id: String,
        customer: &Customer,
        pm: &PaymentMethod,
        trial: bool,
    ) -> Subscription {
        let catalog = self.catalogs[story.tenant].clone();
        let mut items = Vec::new();
        let first = if self.rng.random_bool(0.5) { 0 } else { 1 };
        let mut picks = vec![(catalog[first].clone(), 1)];
        if self.rng.random_bool(0.3) {
            picks.push((catalog[2].clone(), self.rng.random_range(2..=10)));
        }
        for (price, quantity) in picks {
            items.push(Item {
                id: self.object_id(story, "si_", 14),
                price,
                quantity,
                created: story.clock,
            });
        }
        let start = story.clock;
        let (status, period_end, trial) = if trial {
            ("trialing", start + TRIAL, Some((start, start + TRIAL)))
        } else {
            ("incomplete", start + PERIOD, None)
        };
        Subscription {
            id,
            customer: customer.id.clone(),
            status,
            items,
            period_start: start,
            period_end,
            cancel_at_period_end: false,
            cancel_at: None,
            canceled_at: None,
            ended_at: None,
            cancel_reason: None,
            trial,
            created: start,
            latest_invoice: None,
            default_pm: Some(pm.id.clone()),
            discounts: Vec::new(),
        }
    }

    fn new_invoice(
        &mut self,
        story: &Story,
        customer: &mut Customer,
        sub: &Subscription,
        reason: &'static str,
        amount: i64,
    ) -> Invoice {
        customer.invoices += 1;
        let lines = sub
            .items
            .iter()
            .map(|item| (self.fresh_id("il_", 24), item.clone()))
            .collect();
        Invoice {
            id: self.object_id(story, "in_", 24),
            number: format!("{}-{:04}", customer.invoice_prefix, customer.invoices),
            customer: customer.id.clone(),
            customer_email: customer.email.clone(),
            customer_name: customer.name.clone(),
            subscription: sub.id.clone(),
            status: "draft",
            billing_reason: reason,
            lines,
            amount_due: amount,
            amount_paid: 0,
            attempt_count: 0,
            period_start: sub.period_start,
            period_end: sub.period_end,
            created: story.clock,
            finalized_at: None,
            paid_at: None,
            uncollectible_at: None,
            next_payment_attempt: None,
        }
    }

    /// A trial's first invoice: nothing to pay, paid on finalisation.
    fn zero_invoice(&mut self, story: &mut Story, customer: &mut Customer, sub: &mut Subscription) {
        let mut invoice = self.new_invoice(story, customer, sub, "subscription_create", 0);
        sub.latest_invoice = Some(invoice.id.clone());
        self.emit_invoice(story, "invoice.created", &invoice);
        invoice.status = "open";
        invoice.finalized_at = Some(story.clock);
        self.emit_invoice(story, "invoice.finalized", &invoice);
        invoice.status = "paid";
        invoice.paid_at = Some(story.clock);
        self.emit_invoice(story, "invoice.paid", &invoice);
    }

    /// Bill one invoice for `sub`'s current period. A first decline sets the subscription
    /// past due and a retry three days later either recovers it or, after a second
    /// decline, the invoice is written off and the subscription canceled. Returns whether
    /// the subscription is still alive.
    fn bill(
        &mut self,
        story: &mut Story,
        customer: &mut Customer,
        sub: &mut Subscription,
        pm: &PaymentMethod,
        reason: &'static str,
        first_attempt_fails: bool,
    ) -> bool {
        let amount = sub.amount();
        let mut invoice = self.new_invoice(story, customer, sub, reason, amount);
        sub.latest_invoice = Some(invoice.id.clone());
        self.emit_invoice(story, "invoice.created", &invoice);
        story.clock += self.rng.random_range(600..3600);
        invoice.status = "open";
        invoice.finalized_at = Some(story.clock);
        self.emit_invoice(story, "invoice.finalized", &invoice);

        let mut intent = PaymentIntent {
            id: self.object_id(story, "pi_", 24),
            customer: customer.id.clone(),
            amount,
            amount_received: 0,
            status: "requires_confirmation",
            failure: None,
            latest_charge: None,
            payment_method: pm.id.clone(),
            created: story.clock,
        };
        self.emit_payment_intent(story, "payment_intent.created", &intent);

        if !first_attempt_fails {
            self.attempt(story, &mut invoice, &mut intent, pm, None);
            return true;
        }

        let decline = DECLINES[self.rng.random_range(0..DECLINES.len())];
        self.attempt(story, &mut invoice, &mut intent, pm, Some(decline));
        sub.status = "past_due";
        self.emit_subscription(story, "customer.subscription.updated", sub);
        customer.delinquent = true;
        self.emit_customer(story, "customer.updated", customer);

        story.clock += 3 * DAY;
        if self.rng.random_bool(0.6) {
            self.attempt(story, &mut invoice, &mut intent, pm, None);
            sub.status = "active";
            self.emit_subscription(story, "customer.subscription.updated", sub);
            customer.delinquent = false;
            self.emit_customer(story, "customer.updated", customer);
            true
        } else {
            let decline = DECLINES[self.rng.random_range(0..DECLINES.len())];
            self.attempt(story, &mut invoice, &mut intent, pm, Some(decline));
            story.clock += 2 * DAY;
            invoice.status = "uncollectible";
            invoice.uncollectible_at = Some(story.clock);
            invoice.next_payment_attempt = None;
            self.emit_invoice(story, "invoice.marked_uncollectible", &invoice);
            sub.cancel_reason = Some("payment_failed");
            self.end_subscription(story, sub);
            false
        }
    }

    /// One payment attempt: a charge, the payment intent's outcome and the invoice's.
    fn attempt(
        &mut self,
        story: &mut Story,
        invoice: &mut Invoice,
        intent: &mut PaymentIntent,
        pm: &PaymentMethod,
        decline: Option<Decline>,
    ) {
        let charge_id = self.object_id(story, "ch_", 24);
        let charge_created = story.clock;
        intent.latest_charge = Some(charge_id.clone());
        invoice.attempt_count += 1;
        match decline {
            None => {
                let balance = self.fresh_id("txn_", 24);
                let json = charge_json(
                    story,
                    &charge_id,
                    intent,
                    pm,
                    None,
                    Some(&balance),
                    charge_created,
                );
                self.emit(story, "charge.succeeded", json);
                self.expected
                    .charge(&story.tenant_name, &charge_id, "succeeded");
                intent.status = "succeeded";
                intent.amount_received = intent.amount;
                intent.failure = None;
                self.emit_payment_intent(story, "payment_intent.succeeded", intent);

                let paid_at = story.clock;
                let inpay_id = self.object_id(story, "inpay_", 24);
                let json = json!({
                    "id": inpay_id,
                    "object": "invoice_payment",
                    "amount_paid": intent.amount,
                    "amount_requested": intent.amount,
                    "created": invoice.finalized_at.unwrap_or(invoice.created),
                    "currency": "usd",
                    "invoice": invoice.id,
                    "is_default": true,
                    "livemode": false,
                    "payment": {"type": "payment_intent", "payment_intent": intent.id},
                    "status": "paid",
                    "status_transitions": {"canceled_at": null, "paid_at": paid_at},
                });
                self.emit(story, "invoice_payment.paid", json);
                self.expected
                    .invoice_payment(&story.tenant_name, &inpay_id, &invoice.id, "paid");

                invoice.status = "paid";
                invoice.amount_paid = invoice.amount_due;
                invoice.paid_at = Some(story.clock);
                invoice.next_payment_attempt = None;
                self.emit_invoice(story, "invoice.paid", invoice);
                self.emit_invoice(story, "invoice.payment_succeeded", invoice);
                let payment = (charge_id.as_str(), intent.id.as_str(), intent.amount);
                if self.rng.random_bool(0.04) {
                    self.refund(story, invoice, payment);
                } else if self.rng.random_bool(0.03) {
                    self.dispute(story, payment);
                }
            }
            Some(decline) => {
                let json = charge_json(
                    story,
                    &charge_id,
                    intent,
                    pm,
                    Some(decline),
                    None,
                    charge_created,
                );
                self.emit(story, "charge.failed", json);
                self.expected
                    .charge(&story.tenant_name, &charge_id, "failed");
                intent.status = "requires_payment_method";
                intent.failure = Some(decline);
                self.emit_payment_intent(story, "payment_intent.payment_failed", intent);
                invoice.next_payment_attempt = Some(story.clock + 3 * DAY);
                self.emit_invoice(story, "invoice.payment_failed", invoice);
            }
        }
    }

    fn end_subscription(&mut self, story: &mut Story, sub: &mut Subscription) {
        story.clock += 1;
        sub.status = "canceled";
        sub.canceled_at = Some(story.clock);
        sub.ended_at = Some(story.clock);
        self.emit_subscription(story, "customer.subscription.deleted", sub);
        // Its plan's features go with it.
        self.entitlements(story, sub);
    }

    /// A new card becomes the default and the old one is detached.
    fn replace_card(
        &mut self,
        story: &mut Story,
        customer: &mut Customer,
        sub: &mut Subscription,
        mut old: PaymentMethod,
    ) -> PaymentMethod {
        let new = self.new_payment_method(story, customer);
        self.emit_payment_method(story, "payment_method.attached", &new);
        customer.default_pm = Some(new.id.clone());
        self.emit_customer(story, "customer.updated", customer);
        sub.default_pm = Some(new.id.clone());
        self.emit_subscription(story, "customer.subscription.updated", sub);
        old.customer = None;
        self.emit_payment_method(story, "payment_method.detached", &old);
        new
    }

    // ----- the catalogue and the customer's terms -----

    /// A tenant's catalogue, set up before its first customer: a product and a price per
    /// plan, a coupon with the promotion code customers redeem, and a launch coupon that
    /// was deleted again.
    fn catalog(&mut self, tenant: usize) {
        let mut story = Story {
            tenant,
            tenant_name: tenant_name(self.first_tenant + tenant),
            clock: EPOCH - 90 * DAY,
        };
        let name = story.tenant_name.clone();
        for price in self.catalogs[tenant].clone() {
            let product = shapes::product(
                &price.product,
                &name,
                price.nickname,
                &price.id,
                story.clock,
            );
            self.emit(&mut story, "product.created", product.clone());
            let json = merge(
                price_json(&price),
                json!({"metadata": {"tenant_id": name}, "lookup_key": price.nickname.to_lowercase().replace(' ', "_")}),
            );
            self.emit(&mut story, "price.created", json);
            self.expected
                .price(&name, &price.id, &price.product, price.unit_amount);
            if price.nickname == "Team seat" {
                let described = merge(
                    product,
                    json!({"description": "Billed per seat", "updated": story.clock}),
                );
                self.emit(&mut story, "product.updated", described);
            }
            self.expected
                .product(&name, &price.product, price.nickname, false);
        }

        let coupon_id = self.object_id(&story, "", 8);
        let coupon = shapes::coupon(&coupon_id, &name, 20.0, 3, story.clock);
        self.emit(&mut story, "coupon.created", coupon.clone());
        self.expected.coupon(&name, &coupon_id, Some(20.0), false);
        let promo_id = self.object_id(&story, "promo_", 24);
        let code = format!("WELCOME{}", self.random_chars(4).to_uppercase());
        let promo = shapes::promotion_code(&promo_id, &name, &code, &coupon, story.clock);
        self.emit(&mut story, "promotion_code.created", promo);
        self.expected
            .promotion_code(&name, &promo_id, &code, &coupon_id);

        let launch_id = self.object_id(&story, "", 8);
        let launch = shapes::coupon(&launch_id, &name, 50.0, 1, story.clock);
        self.emit(&mut story, "coupon.created", launch.clone());
        self.emit(&mut story, "coupon.deleted", launch);
        // The API serves only a stub for a deleted coupon, so only `deleted` is certain.
        self.expected.coupon(&name, &launch_id, None, true);
        self.finals.insert(
            (name, launch_id.clone()),
            Final::Stub(json!({"id": launch_id, "object": "coupon", "deleted": true})),
        );
        self.promotions[tenant] = Some((coupon, promo_id));
    }

    /// A German VAT id, verified (or not) a moment after it is added; the last version.
    fn tax_id(&mut self, story: &mut Story, customer: &str) -> Value {
        let id = self.object_id(story, "txi_", 24);
        let value = format!("DE{}", self.rng.random_range(100_000_000..1_000_000_000u64));
        let created = story.clock;
        let json = shapes::tax_id(&id, customer, &value, "pending", created);
        self.emit(story, "customer.tax_id.created", json);
        let status = if self.rng.random_bool(0.8) {
            "verified"
        } else {
            "unverified"
        };
        let json = shapes::tax_id(&id, customer, &value, status, created);
        self.emit(story, "customer.tax_id.updated", json.clone());
        self.expected
            .tax_id(&story.tenant_name, &id, customer, Some(status));
        json
    }

    /// A tax id deleted with its customer: the API no longer serves it.
    fn delete_tax_id(&mut self, story: &mut Story, tax_id: Value) {
        let id = tax_id["id"].as_str().unwrap_or_default().to_owned();
        let customer = tax_id["customer"].as_str().unwrap_or_default().to_owned();
        self.emit(story, "customer.tax_id.deleted", tax_id);
        self.expected
            .tax_id(&story.tenant_name, &id, &customer, None);
        self.finals.insert(
            (story.tenant_name.clone(), id.clone()),
            Final::Stub(json!({"id": id, "object": "tax_id", "deleted": true})),
        );
    }

    /// The tenant's promotion code redeemed on `sub`: its discount, for three periods.
    fn apply_discount(&mut self, story: &mut Story, sub: &mut Subscription) -> Option<Value> {
        let (coupon, promotion_code) = self.promotions[story.tenant].clone()?;
        let id = self.object_id(story, "di_", 24);
        let json = shapes::discount(&DiscountOf {
            id: &id,
            customer: &sub.customer,
            subscription: &sub.id,
            coupon: &coupon,
            promotion_code: &promotion_code,
            start: story.clock,
            end: story.clock + 3 * PERIOD,
        });
        self.emit(story, "customer.discount.created", json.clone());
        self.expected
            .discount(&story.tenant_name, &id, &sub.customer, &sub.id, false);
        sub.discounts.push(id);
        self.emit_subscription(story, "customer.subscription.updated", sub);
        Some(json)
    }

    /// A discount's end: removed from the subscription.
    fn end_discount(&mut self, story: &mut Story, sub: &mut Subscription, discount: Value) {
        let id = discount["id"].as_str().unwrap_or_default().to_owned();
        self.emit(story, "customer.discount.deleted", discount);
        self.expected
            .discount(&story.tenant_name, &id, &sub.customer, &sub.id, true);
        sub.discounts.retain(|d| *d != id);
        self.emit_subscription(story, "customer.subscription.updated", sub);
    }

    /// The customer's active features: those of `sub`'s plans while it lives, none once
    /// it is canceled.
    fn entitlements(&mut self, story: &mut Story, sub: &Subscription) {
        let mut keys: Vec<&'static str> = Vec::new();
        if sub.status != "canceled" {
            for item in &sub.items {
                keys.extend(features_of(item.price.nickname));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let features: Vec<(String, String, &str)> = keys
            .iter()
            .map(|key| {
                (
                    self.fresh_id("ent_test_", 24),
                    format!("feat_test_{key}"),
                    *key,
                )
            })
            .collect();
        let json = shapes::entitlement_summary(&sub.customer, &features);
        self.emit(
            story,
            "entitlements.active_entitlement_summary.updated",
            json,
        );
        self.expected
            .entitlement_summary(&story.tenant_name, &sub.customer, &keys);
    }

    /// A schedule made from `sub` for its current period, then released.
    fn schedule(&mut self, story: &mut Story, sub: &Subscription) {
        let id = self.object_id(story, "sub_sched_", 24);
        let created = story.clock;
        let phase = (sub.period_start, sub.period_end);
        let name = story.tenant_name.clone();
        let json =
            shapes::subscription_schedule(&id, &name, &sub.customer, &sub.id, phase, None, created);
        self.emit(story, "subscription_schedule.created", json);
        let released_at = story.clock + 1;
        let json = shapes::subscription_schedule(
            &id,
            &name,
            &sub.customer,
            &sub.id,
            phase,
            Some(released_at),
            created,
        );
        self.emit(story, "subscription_schedule.released", json);
        self.expected
            .subscription_schedule(&name, &id, &sub.customer, "released");
    }

    /// A refund of a paid invoice's charge, with the credit note that records it.
    fn refund(
        &mut self,
        story: &mut Story,
        invoice: &Invoice,
        (charge, intent, amount): (&str, &str, i64),
    ) {
        let name = story.tenant_name.clone();
        let payment = Payment {
            tenant: &name,
            charge,
            payment_intent: intent,
            amount,
        };
        let id = self.object_id(story, "re_", 24);
        let created = story.clock;
        self.emit(
            story,
            "refund.created",
            shapes::refund(&id, &payment, "pending", created),
        );
        let note = self.object_id(story, "cn_", 24);
        let json = shapes::credit_note(
            &note,
            &name,
            &format!("{}-CN-01", invoice.number),
            &invoice.customer,
            &invoice.id,
            &id,
            amount,
            story.clock,
        );
        self.emit(story, "credit_note.created", json);
        self.emit(
            story,
            "refund.updated",
            shapes::refund(&id, &payment, "succeeded", created),
        );
        self.expected.refund(&name, &id, charge, "succeeded");
        self.expected
            .credit_note(&name, &note, &invoice.id, "issued");
    }

    /// A dispute of a charge: opened, answered with evidence, then won or lost.
    fn dispute(&mut self, story: &mut Story, (charge, intent, amount): (&str, &str, i64)) {
        let name = story.tenant_name.clone();
        let payment = Payment {
            tenant: &name,
            charge,
            payment_intent: intent,
            amount,
        };
        let id = self.object_id(story, "du_", 24);
        let created = story.clock;
        let json = shapes::dispute(&id, &payment, "needs_response", created);
        self.emit(story, "charge.dispute.created", json);
        let json = shapes::dispute(&id, &payment, "under_review", created);
        self.emit(story, "charge.dispute.updated", json);
        let outcome = if self.rng.random_bool(0.6) {
            "won"
        } else {
            "lost"
        };
        let json = shapes::dispute(&id, &payment, outcome, created);
        self.emit(story, "charge.dispute.closed", json);
        self.expected.dispute(&name, &id, charge, outcome);
    }

    // ----- emitting objects and recording the model -----

    fn emit_customer(&mut self, story: &mut Story, event_type: &str, c: &Customer) {
        let json = json!({
            "id": c.id,
            "object": "customer",
            "address": null,
            "balance": 0,
            "created": c.created,
            "currency": "usd",
            "default_source": null,
            "delinquent": c.delinquent,
            "description": null,
            "discount": null,
            "email": c.email,
            "invoice_prefix": c.invoice_prefix,
            "invoice_settings": {
                "custom_fields": null,
                "default_payment_method": c.default_pm,
                "footer": null,
                "rendering_options": null,
            },
            "livemode": false,
            "metadata": {"tenant_id": story.tenant_name},
            "name": c.name,
            "next_invoice_sequence": c.invoices + 1,
            "phone": null,
            "preferred_locales": ["en"],
            "shipping": null,
            "tax_exempt": "none",
            "test_clock": null,
        });
        self.emit(story, event_type, json);
        let deleted = event_type == "customer.deleted";
        let email = (!deleted).then_some(c.email.as_str());
        self.expected
            .customer(&story.tenant_name, &c.id, email, deleted);
    }

    fn emit_payment_method(&mut self, story: &mut Story, event_type: &str, pm: &PaymentMethod) {
        let json = json!({
            "id": pm.id,
            "object": "payment_method",
            "allow_redisplay": "always",
            "billing_details": {
                "address": {"city": null, "country": "US", "line1": null, "line2": null,
                            "postal_code": "94103", "state": null},
                "email": pm.email,
                "name": pm.name,
                "phone": null,
                "tax_id": null,
            },
            "card": {
                "brand": pm.brand,
                "checks": {"address_line1_check": null, "address_postal_code_check": "pass",
                           "cvc_check": "pass"},
                "country": "US",
                "display_brand": pm.brand,
                "exp_month": pm.exp_month,
                "exp_year": pm.exp_year,
                "fingerprint": pm.fingerprint,
                "funding": "credit",
                "generated_from": null,
                "last4": pm.last4,
                "networks": {"available": [pm.brand], "preferred": null},
                "regulated_status": "unregulated",
                "three_d_secure_usage": {"supported": true},
                "wallet": null,
            },
            "created": pm.created,
            "customer": pm.customer,
            "livemode": false,
            "metadata": {"tenant_id": story.tenant_name},
            "type": "card",
        });
        self.emit(story, event_type, json);
        self.expected
            .payment_method(&story.tenant_name, &pm.id, pm.customer.as_deref());
    }

    fn emit_subscription(&mut self, story: &mut Story, event_type: &str, s: &Subscription) {
        let items: Vec<Value> = s
            .items
            .iter()
            .map(|item| {
                let mut item_json = json!({
                    "id": item.id,
                    "object": "subscription_item",
                    "created": item.created,
                    "current_period_end": s.period_end,
                    "current_period_start": s.period_start,
                    "discounts": [],
                    "metadata": {},
                    "price": null,
                    "quantity": item.quantity,
                    "subscription": s.id,
                    "tax_rates": [],
                });
                item_json["price"] = price_json(&item.price);
                item_json
            })
            .collect();
        let json = json!({
            "id": s.id,
            "object": "subscription",
            "application": null,
            "application_fee_percent": null,
            "automatic_tax": {"enabled": false, "liability": null, "disabled_reason": null},
            "billing_cycle_anchor": s.trial.map_or(s.created, |(_, end)| end),
            "billing_mode": {"type": "classic"},
            "cancel_at": s.cancel_at,
            "cancel_at_period_end": s.cancel_at_period_end,
            "canceled_at": s.canceled_at,
            "cancellation_details": {"comment": null, "feedback": null, "reason": s.cancel_reason},
            "collection_method": "charge_automatically",
            "created": s.created,
            "currency": "usd",
            "customer": s.customer,
            "days_until_due": null,
            "default_payment_method": s.default_pm,
            "default_source": null,
            "default_tax_rates": [],
            "description": null,
            "discounts": s.discounts,
            "ended_at": s.ended_at,
            "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
            "items": {
                "object": "list",
                "data": [],
                "has_more": false,
                "total_count": s.items.len(),
                "url": format!("/v1/subscription_items?subscription={}", s.id),
            },
        });
        // Split in two: one `json!` this large exceeds the macro recursion limit.
        let rest = json!({
            "latest_invoice": s.latest_invoice,
            "livemode": false,
            "metadata": {"tenant_id": story.tenant_name},
            "next_pending_invoice_item_invoice": null,
            "on_behalf_of": null,
            "pause_collection": null,
            "payment_settings": {
                "payment_method_options": null,
                "payment_method_types": null,
                "save_default_payment_method": "on_subscription",
            },
            "pending_invoice_item_interval": null,
            "pending_setup_intent": null,
            "pending_update": null,
            "schedule": null,
            "start_date": s.created,
            "status": s.status,
            "test_clock": null,
            "transfer_data": null,
            "trial_end": s.trial.map(|(_, end)| end),
            "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
            "trial_start": s.trial.map(|(start, _)| start),
        });
        let mut json = merge(json, rest);
        json["items"]["data"] = Value::Array(items);
        self.emit(story, event_type, json);
        self.expected.subscription(
            &story.tenant_name,
            &s.id,
            s.status,
            &s.customer,
            s.status == "canceled",
            s.period_end,
        );
    }

    fn emit_invoice(&mut self, story: &mut Story, event_type: &str, i: &Invoice) {
        let lines: Vec<Value> = i
            .lines
            .iter()
            .map(|(line_id, item)| {
                json!({
                    "id": line_id,
                    "object": "line_item",
                    "amount": item.price.unit_amount * item.quantity,
                    "currency": "usd",
                    "description": format!("{} × {} (at ${:.2} / month)", item.quantity,
                        item.price.nickname, item.price.unit_amount as f64 / 100.0),
                    "discount_amounts": [],
                    "discountable": true,
                    "discounts": [],
                    "invoice": i.id,
                    "livemode": false,
                    "metadata": {},
                    "parent": {
                        "type": "subscription_item_details",
                        "invoice_item_details": null,
                        "subscription_item_details": {
                            "invoice_item": null,
                            "proration": false,
                            "proration_details": {"credited_items": null},
                            "subscription": i.subscription,
                            "subscription_item": item.id,
                        },
                    },
                    "period": {"end": i.period_end, "start": i.period_start},
                    "pretax_credit_amounts": [],
                    "pricing": {
                        "type": "price_details",
                        "price_details": {"price": item.price.id, "product": item.price.product},
                        "unit_amount_decimal": item.price.unit_amount.to_string(),
                    },
                    "quantity": item.quantity,
                    "taxes": [],
                })
            })
            .collect();
        let finalized = i.finalized_at.is_some();
        let json = json!({
            "id": i.id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "Demo SaaS",
            "amount_due": i.amount_due,
            "amount_overpaid": 0,
            "amount_paid": i.amount_paid,
            "amount_remaining": i.amount_due - i.amount_paid,
            "amount_shipping": 0,
            "attempt_count": i.attempt_count,
            "attempted": i.attempt_count > 0,
            "auto_advance": i.status == "draft" || i.status == "open",
            "automatic_tax": {"enabled": false, "liability": null, "status": null,
                              "disabled_reason": null, "provider": null},
            "billing_reason": i.billing_reason,
            "collection_method": "charge_automatically",
            "created": i.created,
            "currency": "usd",
            "customer": i.customer,
            "customer_email": i.customer_email,
            "customer_name": i.customer_name,
            "default_payment_method": null,
            "description": null,
            "discounts": [],
            "due_date": null,
            "effective_at": i.finalized_at,
            "ending_balance": if finalized { json!(0) } else { Value::Null },
            "hosted_invoice_url": finalized.then(|| format!("https://invoice.stripe.com/i/acct_demo/test_{}", i.id)),
            "invoice_pdf": finalized.then(|| format!("https://pay.stripe.com/invoice/acct_demo/test_{}/pdf", i.id)),
            "issuer": {"type": "self"},
            "last_finalization_error": null,
            "lines": {
                "object": "list",
                "data": [],
                "has_more": false,
                "total_count": i.lines.len(),
                "url": format!("/v1/invoices/{}/lines", i.id),
            },
        });
        // Split in two: one `json!` this large exceeds the macro recursion limit.
        let rest = json!({
            "livemode": false,
            "metadata": {"tenant_id": story.tenant_name},
            "next_payment_attempt": i.next_payment_attempt,
            "number": finalized.then(|| i.number.clone()),
            "parent": {
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": {"metadata": {}, "subscription": i.subscription},
            },
            "period_end": i.period_end,
            "period_start": i.period_start,
            "starting_balance": 0,
            "status": i.status,
            "status_transitions": {
                "finalized_at": i.finalized_at,
                "marked_uncollectible_at": i.uncollectible_at,
                "paid_at": i.paid_at,
                "voided_at": null,
            },
            "subtotal": i.amount_due,
            "subtotal_excluding_tax": i.amount_due,
            "test_clock": null,
            "total": i.amount_due,
            "total_discount_amounts": [],
            "total_excluding_tax": i.amount_due,
            "total_pretax_credit_amounts": [],
            "total_taxes": [],
            "webhooks_delivered_at": i.created,
        });
        let mut json = merge(json, rest);
        json["lines"]["data"] = Value::Array(lines);
        self.emit(story, event_type, json);
        self.expected.invoice(
            &story.tenant_name,
            &i.id,
            i.status,
            i.amount_paid,
            Some(&i.subscription),
        );
    }

    fn emit_payment_intent(&mut self, story: &mut Story, event_type: &str, p: &PaymentIntent) {
        let last_error = p.failure.map(|d| {
            json!({
                "type": "card_error",
                "code": d.code,
                "decline_code": d.decline_code,
                "doc_url": format!("https://stripe.com/docs/error-codes/{}", d.code.replace('_', "-")),
                "message": d.message,
                "payment_method": {"id": p.payment_method, "object": "payment_method"},
            })
        });
        let mut json = json!({
            "id": p.id,
            "object": "payment_intent",
            "amount": p.amount,
            "amount_capturable": 0,
            "amount_details": {"tip": {}},
            "amount_received": p.amount_received,
            "application": null,
            "application_fee_amount": null,
            "automatic_payment_methods": null,
            "canceled_at": null,
            "cancellation_reason": null,
            "capture_method": "automatic",
            "client_secret": format!("{}_secret_{}", p.id, p.id.get(3..).unwrap_or_default()),
            "confirmation_method": "automatic",
            "created": p.created,
            "currency": "usd",
            "customer": p.customer,
            "description": "Subscription update",
            "last_payment_error": null,
            "latest_charge": p.latest_charge,
            "livemode": false,
            "metadata": {"tenant_id": story.tenant_name},
            "next_action": null,
            "on_behalf_of": null,
            "payment_method": p.payment_method,
            "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
            "payment_method_types": ["card"],
            "processing": null,
            "receipt_email": null,
            "review": null,
            "setup_future_usage": "off_session",
            "shipping": null,
            "statement_descriptor": null,
            "statement_descriptor_suffix": null,
            "status": p.status,
            "transfer_data": null,
            "transfer_group": null,
        });
        json["last_payment_error"] = last_error.unwrap_or(Value::Null);
        self.emit(story, event_type, json);
        self.expected
            .payment_intent(&story.tenant_name, &p.id, p.status);
    }

    /// A checkout session: `completed` names the session and its customer; an
    /// abandoned session gets a fresh id and never had a customer.
    fn checkout_json(
        &mut self,
        story: &Story,
        completed: Option<(&str, &Customer)>,
        subscription: Option<&str>,
        status: &str,
        payment_status: &str,
        amount_total: i64,
    ) -> Value {
        let id = match completed {
            Some((id, _)) => id.to_owned(),
            None => self.object_id(story, "cs_test_", 58),
        };
        let customer = completed.map(|(_, c)| c);
        let created = story.clock.saturating_sub(self.rng.random_range(60..900));
        let reference = format!("user_{}", self.random_chars(10));
        let head = json!({
            "id": id,
            "object": "checkout.session",
            "adaptive_pricing": {"enabled": false},
            "after_expiration": null,
            "allow_promotion_codes": null,
            "amount_subtotal": amount_total,
            "amount_total": amount_total,
            "automatic_tax": {"enabled": false, "liability": null, "status": null, "provider": null},
            "billing_address_collection": null,
            "cancel_url": "https://demo.example.com/pricing",
            "client_reference_id": reference,
            "client_secret": null,
            "consent": null,
            "consent_collection": null,
            "created": created,
            "currency": "usd",
            "custom_fields": [],
            "custom_text": {"after_submit": null, "shipping_address": null, "submit": null,
                            "terms_of_service_acceptance": null},
            "customer": customer.map(|c| c.id.clone()),
            "customer_creation": "always",
            "customer_details": customer.map(|c| json!({
                "address": null, "email": c.email, "name": c.name, "phone": null,
                "tax_exempt": "none", "tax_ids": [],
            })),
            "customer_email": null,
            "discounts": [],
            "expires_at": created + DAY,
            "invoice": null,
            "invoice_creation": null,
        });
        // Split in two: one `json!` this large exceeds the macro recursion limit.
        let rest = json!({
            "livemode": false,
            "locale": null,
            "metadata": {"tenant_id": story.tenant_name},
            "mode": "subscription",
            "payment_intent": null,
            "payment_link": null,
            "payment_method_collection": "always",
            "payment_method_configuration_details": null,
            "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
            "payment_method_types": ["card"],
            "payment_status": payment_status,
            "phone_number_collection": {"enabled": false},
            "recovered_from": null,
            "saved_payment_method_options": null,
            "setup_intent": null,
            "shipping_address_collection": null,
            "shipping_cost": null,
            "shipping_options": [],
            "status": status,
            "submit_type": null,
            "subscription": subscription,
            "success_url": "https://demo.example.com/welcome",
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": null,
        });
        merge(head, rest)
    }
}

/// The entitlement features a plan grants (their lookup keys).
fn features_of(nickname: &str) -> &'static [&'static str] {
    match nickname {
        "Starter" => &["api"],
        "Pro" => &["api", "audit_log", "sso"],
        _ => &["team_workspace"],
    }
}

fn price_json(p: &Price) -> Value {
    json!({
        "id": p.id,
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "created": p.created,
        "currency": "usd",
        "custom_unit_amount": null,
        "livemode": false,
        "lookup_key": null,
        "metadata": {},
        "nickname": p.nickname,
        "product": p.product,
        "recurring": {"interval": "month", "interval_count": 1, "meter": null,
                      "trial_period_days": null, "usage_type": "licensed"},
        "tax_behavior": "unspecified",
        "tiers_mode": null,
        "transform_quantity": null,
        "type": "recurring",
        "unit_amount": p.unit_amount,
        "unit_amount_decimal": p.unit_amount.to_string(),
    })
}

fn setup_intent_json(
    story: &Story,
    id: &str,
    customer: &str,
    payment_method: Option<&str>,
    status: &str,
    created: i64,
) -> Value {
    json!({
        "id": id,
        "object": "setup_intent",
        "application": null,
        "automatic_payment_methods": null,
        "cancellation_reason": null,
        "client_secret": format!("{id}_secret_{}", id.get(5..).unwrap_or_default()),
        "created": created,
        "customer": customer,
        "description": null,
        "flow_directions": null,
        "last_setup_error": null,
        "latest_attempt": null,
        "livemode": false,
        "mandate": null,
        "metadata": {"tenant_id": story.tenant_name},
        "next_action": null,
        "on_behalf_of": null,
        "payment_method": payment_method,
        "payment_method_configuration_details": null,
        "payment_method_options": {"card": {"mandate_options": null, "network": null,
                                            "request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "single_use_mandate": null,
        "status": status,
        "usage": "off_session",
    })
}

fn charge_json(
    story: &Story,
    id: &str,
    intent: &PaymentIntent,
    pm: &PaymentMethod,
    decline: Option<Decline>,
    balance_transaction: Option<&str>,
    created: i64,
) -> Value {
    let succeeded = decline.is_none();
    let outcome = match decline {
        None => json!({
            "advice_code": null, "network_advice_code": null, "network_decline_code": null,
            "network_status": "approved_by_network", "reason": null, "risk_level": "normal",
            "seller_message": "Payment complete.", "type": "authorized",
        }),
        Some(d) => json!({
            "advice_code": "try_again_later", "network_advice_code": null,
            "network_decline_code": null, "network_status": "declined_by_network",
            "reason": d.decline_code.unwrap_or(d.code), "risk_level": "normal",
            "seller_message": "The bank did not return any further details with this decline.",
            "type": "issuer_declined",
        }),
    };
    let head = json!({
        "id": id,
        "object": "charge",
        "amount": intent.amount,
        "amount_captured": if succeeded { intent.amount } else { 0 },
        "amount_refunded": 0,
        "application": null,
        "application_fee": null,
        "application_fee_amount": null,
        "balance_transaction": balance_transaction,
        "billing_details": {
            "address": {"city": null, "country": "US", "line1": null, "line2": null,
                        "postal_code": "94103", "state": null},
            "email": pm.email, "name": pm.name, "phone": null, "tax_id": null,
        },
        "calculated_statement_descriptor": "DEMO SAAS",
        "captured": succeeded,
        "created": created,
        "currency": "usd",
        "customer": intent.customer,
        "description": "Subscription update",
        "disputed": false,
        "failure_balance_transaction": null,
        "failure_code": decline.map(|d| d.code),
        "failure_message": decline.map(|d| d.message),
        "fraud_details": {},
    });
    // Split in two: one `json!` this large exceeds the macro recursion limit.
    let rest = json!({
        "livemode": false,
        "metadata": {"tenant_id": story.tenant_name},
        "on_behalf_of": null,
        "outcome": null,
        "paid": succeeded,
        "payment_intent": intent.id,
        "payment_method": pm.id,
        "payment_method_details": {
            "type": "card",
            "card": {
                "brand": pm.brand, "country": "US", "exp_month": pm.exp_month,
                "exp_year": pm.exp_year, "fingerprint": pm.fingerprint, "funding": "credit",
                "last4": pm.last4, "network": pm.brand,
                "checks": {"address_line1_check": null, "address_postal_code_check": "pass",
                           "cvc_check": "pass"},
            },
        },
        "receipt_email": null,
        "receipt_number": null,
        "receipt_url": succeeded.then(|| format!("https://pay.stripe.com/receipts/payment/{id}")),
        "refunded": false,
        "review": null,
        "shipping": null,
        "source_transfer": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": null,
        "status": if succeeded { "succeeded" } else { "failed" },
        "transfer_data": null,
        "transfer_group": null,
    });
    let mut charge = merge(head, rest);
    charge["outcome"] = outcome;
    charge
}

/// `a` with `b`'s fields added (both objects).
fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Stripe's `previous_attributes` of an `*.updated` event: the old values of the
/// top-level fields that changed.
fn previous_attributes(previous: &Value, current: &Value) -> Value {
    let (Some(previous), Some(current)) = (previous.as_object(), current.as_object()) else {
        return json!({});
    };
    let changed: Map<String, Value> = current
        .iter()
        .filter(|(key, value)| previous.get(*key) != Some(value))
        .map(|(key, _)| {
            (
                key.clone(),
                previous.get(key).cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    Value::Object(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_attributes_lists_old_values_of_changed_fields() {
        let old = json!({"id": "sub_1", "status": "trialing", "x": 1});
        let new = json!({"id": "sub_1", "status": "active", "x": 1, "y": 2});
        assert_eq!(
            previous_attributes(&old, &new),
            json!({"status": "trialing", "y": null})
        );
    }

    #[test]
    fn tiny_streams_still_tell_whole_stories() {
        let stream = generate(&GeneratorConfig {
            events: 1,
            tenants: 0,
            seed: 1,
        });
        assert!(!stream.events.is_empty());
        assert!(stream.events.iter().all(|e| e.tenant == "tenant-1"));
        assert!(
            generate(&GeneratorConfig {
                events: 0,
                tenants: 2,
                seed: 1
            })
            .events
            .is_empty()
        );
    }
}
