//! The deployment's IAM policies against the binary, on the AWS emulator with IAM
//! enforcement on: each role runs with exactly the actions the Terraform module grants it
//! (read from `deploy/terraform/iam.tf`), and must start, become ready and do its job.
//!
//! Enforcement is switched on for the whole emulator, so this test runs its own `moto_server`
//! (the one `tests/run.sh` installed, `MOTO_SERVER`) instead of the shared one.
//!
//! moto checks the resource of SQS calls (the queue's ARN) and evaluates every other
//! service's calls against `*`; so SQS statements are rendered with the real queue ARNs,
//! and the statements of other services with `*`. `sqs:GetQueueUrl` names its queue by
//! `QueueName`, which moto does not map to an ARN (it evaluates it against `*` too), so a
//! statement granting it is rendered twice: as written with the ARNs, and `GetQueueUrl` on
//! `*`. AWS authorises `TransactWriteItems` item by item (`dynamodb:PutItem`,
//! `dynamodb:ConditionCheckItem`); moto checks the operation's own name instead, so a
//! statement granting both is rendered with `dynamodb:TransactWriteItems` added. Likewise
//! AWS authorises SQS's batch calls by their single action (`ChangeMessageVisibilityBatch`
//! by `sqs:ChangeMessageVisibility`, and `DeleteMessageBatch`, `SendMessageBatch`), which
//! moto names by the batch operation: a statement granting the single action is rendered
//! with the batch one added. The actions are otherwise the module's, exactly.

use crate::stripe_signing;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_stripe-worker");
const SECRET: &str = "whsec_iam_test_0123456789";
const API_TOKEN: &str = "iam-test-read-token-0123456789abcdef";
const REGION: &str = "us-east-1";

/// The `moto_server` executable: `MOTO_SERVER`, which `tests/run.sh` exports.
fn moto_server() -> String {
    match std::env::var("MOTO_SERVER") {
        Ok(path) if Path::new(&path).exists() => path,
        _ => panic!(
            "MOTO_SERVER is not set to a moto_server executable: this test starts its own AWS \
             emulator with IAM enforcement. Run it with `bash tests/run.sh`."
        ),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A process killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Credentials of one IAM user.
#[derive(Clone)]
struct Keys {
    id: String,
    secret: String,
}

struct Emulator {
    _process: Child,
    endpoint: String,
    http: reqwest::Client,
}

impl Emulator {
    async fn start() -> Emulator {
        let port = free_port();
        let process = Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let emulator = Emulator {
            _process: Child(process),
            endpoint: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(r) = emulator
                .http
                .get(format!("{}/moto-api/", emulator.endpoint))
                .send()
                .await
                && r.status().is_success()
            {
                return emulator;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("moto_server did not answer on {}", emulator.endpoint);
    }

    /// One IAM query-API call, while enforcement is still off (moto does not check the
    /// signature then; the credential scope names the service).
    async fn iam(&self, params: &[(&str, &str)]) -> String {
        let mut form: Vec<(&str, &str)> = vec![("Version", "2010-05-08")];
        form.extend_from_slice(params);
        let response = self
            .http
            .post(format!("{}/", self.endpoint))
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/iam/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .form(&form)
            .send()
            .await
            .expect("IAM call");
        let status = response.status();
        let text = response.text().await.expect("IAM answer");
        assert!(status.is_success(), "IAM {params:?}: {status} {text}");
        text
    }

    /// A user with `policy` inline, and its access key.
    async fn user(&self, name: &str, policy: &Value) -> Keys {
        self.iam(&[("Action", "CreateUser"), ("UserName", name)])
            .await;
        self.iam(&[
            ("Action", "PutUserPolicy"),
            ("UserName", name),
            ("PolicyName", "module"),
            ("PolicyDocument", &policy.to_string()),
        ])
        .await;
        let created = self
            .iam(&[("Action", "CreateAccessKey"), ("UserName", name)])
            .await;
        Keys {
            id: xml_field(&created, "AccessKeyId"),
            secret: xml_field(&created, "SecretAccessKey"),
        }
    }

    /// From now on every call must be signed by a user whose policies allow it.
    async fn enforce_iam(&self) {
        let r = self
            .http
            .post(format!("{}/moto-api/reset-auth", self.endpoint))
            .body("0")
            .send()
            .await
            .expect("reset-auth");
        assert!(r.status().is_success(), "reset-auth: {}", r.status());
    }

    /// An SQS client signing with `keys`, with the binary's timeouts.
    async fn sqs(&self, keys: &Keys) -> aws_sdk_sqs::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                &keys.id,
                &keys.secret,
                None,
                None,
                "aws_iam test",
            ))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            )
            .load()
            .await;
        aws_sdk_sqs::Client::new(&config)
    }

    /// The binary's environment with `keys`.
    fn command(&self, keys: &Keys, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &keys.id)
            .env("AWS_SECRET_ACCESS_KEY", &keys.secret)
            .env("AWS_REGION", REGION)
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "warn,stripe_worker=info");
        command
    }
}

fn xml_field(xml: &str, tag: &str) -> String {
    let start = xml
        .find(&format!("<{tag}>"))
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + tag.len()
        + 2;
    let end = xml[start..].find('<').expect("closing tag") + start;
    xml[start..end].to_owned()
}

/// One `statement { ... }` of an `aws_iam_policy_document`: its actions and the
/// expression of its resources, as written in the Terraform file.
#[derive(Debug)]
struct Statement {
    actions: Vec<String>,
    resources: String,
}

/// The statements of the `data "aws_iam_policy_document"` of each role in `text`.
fn policy_documents(text: &str) -> BTreeMap<String, Vec<Statement>> {
    let mut documents = BTreeMap::new();
    let marker = "data \"aws_iam_policy_document\" \"";
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let after = &rest[at + marker.len()..];
        let name = after[..after.find('"').expect("name")].to_owned();
        let body = block(after);
        // The roles' documents; the others (trust policies) have no resources.
        if ["worker", "ingress", "operator", "api"].contains(&name.as_str()) {
            documents.insert(name, statements(body));
        }
        rest = &after[body.len()..];
    }
    documents
}

/// The text between the first `{` of `text` and its matching `}`.
fn block(text: &str) -> &str {
    let open = text.find('{').expect("a block");
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced braces");
}

fn statements(document: &str) -> Vec<Statement> {
    let mut out = Vec::new();
    let mut rest = document;
    while let Some(at) = rest.find("statement {") {
        let body = block(&rest[at..]);
        let actions = attribute(body, "actions");
        out.push(Statement {
            actions: actions
                .trim_matches(|c| c == '[' || c == ']')
                .split(',')
                .map(|a| a.trim().trim_matches('"').to_owned())
                .filter(|a| !a.is_empty())
                .collect(),
            resources: attribute(body, "resources"),
        });
        rest = &rest[at + body.len()..];
    }
    out
}

/// The value of `name = ...` in a block: up to the matching `]` for a list, else the line.
fn attribute(body: &str, name: &str) -> String {
    let start = body
        .lines()
        .scan(0usize, |offset, line| {
            let here = *offset;
            *offset += line.len() + 1;
            Some((here, line))
        })
        .find(|(_, line)| {
            line.trim_start()
                .strip_prefix(name)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|(offset, line)| offset + line.find('=').expect("=") + 1)
        .unwrap_or_else(|| panic!("no `{name}` in {body}"));
    let value = body[start..].trim_start();
    if value.starts_with('[') {
        let end = value.find(']').expect("a closed list");
        value[..=end].to_owned()
    } else {
        value.lines().next().unwrap_or_default().trim().to_owned()
    }
}

/// The IAM policy of `statements`, with the queue ARNs of this emulator (see the module
/// documentation for how resources are rendered).
fn render(statements: &[Statement], arns: &BTreeMap<&str, Vec<String>>) -> Value {
    let mut rendered: Vec<Value> = Vec::new();
    for s in statements {
        let sqs_only = s.actions.iter().all(|a| a.starts_with("sqs:"));
        let resources = if sqs_only {
            arns.get(s.resources.as_str())
                .unwrap_or_else(|| panic!("unknown SQS resource expression {}", s.resources))
                .clone()
        } else {
            vec!["*".to_owned()]
        };
        let mut actions = s.actions.clone();
        if ["dynamodb:PutItem", "dynamodb:ConditionCheckItem"]
            .iter()
            .all(|needed| actions.iter().any(|a| a == needed))
        {
            actions.push("dynamodb:TransactWriteItems".to_owned());
        }
        for single in [
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:SendMessage",
        ] {
            if s.actions.iter().any(|a| a == single) {
                actions.push(format!("{single}Batch"));
            }
        }
        rendered.push(json!({"Effect": "Allow", "Action": actions, "Resource": resources}));
        if sqs_only && s.actions.iter().any(|a| a == "sqs:GetQueueUrl") {
            rendered
                .push(json!({"Effect": "Allow", "Action": ["sqs:GetQueueUrl"], "Resource": "*"}));
        }
    }
    json!({"Version": "2012-10-17", "Statement": rendered})
}

async fn wait_ready(url: &str, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(url).await
            && r.status() == 200
        {
            return;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "exited with {status} before {url} was ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{url} never answered 200:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn customer_event(id: &str, customer: &str) -> Vec<u8> {
    json!({
        "id": id, "object": "event", "type": "customer.created", "created": 1_750_000_000,
        "livemode": false, "api_version": "2025-03-31.basil",
        "data": {"object": {"id": customer, "object": "customer", "email": "iam@example.com",
            "invoice_settings": {"default_payment_method": null}}}
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn each_role_runs_with_exactly_the_modules_policy() {
    let emulator = Emulator::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = "iam-test";
    let admin = Keys {
        id: "testing".into(),
        secret: "testing".into(),
    };

    let setup = emulator
        .command(
            &admin,
            &["setup", "--backend", "aws", "--prefix", prefix, "--json"],
        )
        .output()
        .expect("setup runs");
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let report: Value = serde_json::from_slice(&setup.stdout).expect("setup --json");
    assert_eq!(report["existed"], 0, "{report}");
    assert!(
        report["queue_urls"]["customer"]["dlq"]
            .as_str()
            .is_some_and(|url| url.ends_with(&format!("{prefix}-customer-events-dlq"))),
        "{report}"
    );

    // The queue ARNs as the module's locals name them.
    let arn = |name: String| format!("arn:aws:sqs:{REGION}:123456789012:{name}");
    let domains = ["subscription", "payment", "customer"];
    let arns = BTreeMap::from([
        (
            "local.queue_arns",
            domains
                .iter()
                .map(|d| arn(format!("{prefix}-{d}-events")))
                .collect(),
        ),
        (
            "local.dlq_arns",
            domains
                .iter()
                .map(|d| arn(format!("{prefix}-{d}-events-dlq")))
                .collect(),
        ),
        (
            "local.operator_dlq_arns",
            domains
                .iter()
                .map(|d| format!("{prefix}-{d}-events-dlq"))
                .chain([format!("{prefix}-event-delivery-dlq")])
                .map(arn)
                .collect(),
        ),
    ]);
    // What the operator must be able to read: a dead letter in a domain DLQ, and an event
    // EventBridge could not deliver (the module's delivery DLQ, which `setup` does not make).
    let admin_sqs = emulator.sqs(&admin).await;
    let delivery_dlq = admin_sqs
        .create_queue()
        .queue_name(format!("{prefix}-event-delivery-dlq"))
        .send()
        .await
        .expect("create the delivery DLQ")
        .queue_url
        .expect("its URL");
    for (queue, body) in [
        (delivery_dlq.clone(), "{\"undelivered\": true}".to_owned()),
        (
            admin_sqs
                .get_queue_url()
                .queue_name(format!("{prefix}-customer-events-dlq"))
                .send()
                .await
                .expect("the customer DLQ")
                .queue_url
                .expect("its URL"),
            "not an envelope".to_owned(),
        ),
    ] {
        admin_sqs
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .expect("send to a DLQ");
    }
    let iam_tf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/terraform/iam.tf"),
    )
    .expect("iam.tf");
    let documents = policy_documents(&iam_tf);
    let mut keys = BTreeMap::new();
    for role in ["worker", "ingress", "operator", "api"] {
        let policy = render(&documents[role], &arns);
        keys.insert(role, emulator.user(role, &policy).await);
    }
    emulator.enforce_iam().await;

    // Enforcement is on: the ingress role may not read a queue.
    let denied = emulator
        .command(
            &keys["ingress"],
            &["queues", "--backend", "aws", "--prefix", prefix],
        )
        .output()
        .expect("queues runs");
    assert!(
        !denied.status.success(),
        "the ingress role must not see queues"
    );

    // The operator peeks at a DLQ and releases what it peeked: a second look sees the same
    // message (without ChangeMessageVisibility it would stay hidden for the visibility
    // timeout, and the second list would be empty).
    for look in ["first", "second"] {
        let listed = emulator
            .command(
                &keys["operator"],
                &[
                    "dlq",
                    "list",
                    "--backend",
                    "aws",
                    "--prefix",
                    prefix,
                    "--domain",
                    "customer",
                    "--json",
                ],
            )
            .output()
            .expect("dlq list runs");
        assert!(
            listed.status.success(),
            "the operator role lists the DLQ ({look} look): {}",
            String::from_utf8_lossy(&listed.stderr)
        );
        let listing: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
        assert_eq!(
            listing["messages"].as_array().map(Vec::len),
            Some(1),
            "{look} look: {listing}"
        );
    }
    // ... and reads, releases and deletes what EventBridge could not deliver.
    let operator_sqs = emulator.sqs(&keys["operator"]).await;
    let received = operator_sqs
        .receive_message()
        .queue_url(&delivery_dlq)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("the operator role reads the delivery DLQ");
    let message = received.messages().first().expect("the undelivered event");
    let handle = message.receipt_handle().expect("a receipt handle");
    operator_sqs
        .change_message_visibility()
        .queue_url(&delivery_dlq)
        .receipt_handle(handle)
        .visibility_timeout(0)
        .send()
        .await
        .expect("the operator role releases a message it read");
    operator_sqs
        .delete_message()
        .queue_url(&delivery_dlq)
        .receipt_handle(handle)
        .send()
        .await
        .expect("the operator role deletes a message it published again");
    // The worker role may not read it.
    let denied = emulator
        .sqs(&keys["worker"])
        .await
        .receive_message()
        .queue_url(&delivery_dlq)
        .send()
        .await;
    assert!(
        denied.is_err(),
        "the worker role must not read the delivery DLQ"
    );

    // The ingress: starts, is ready, publishes a signed webhook.
    let port = free_port();
    let ingress_log = dir.path().join("ingress.log");
    let mut ingress = Child(
        emulator
            .command(
                &keys["ingress"],
                &["ingest", "--backend", "aws", "--prefix", prefix, "--listen"],
            )
            .arg(format!("127.0.0.1:{port}"))
            .env("STRIPE_WEBHOOK_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&ingress_log).expect("log"))
            .spawn()
            .expect("ingest starts"),
    );
    wait_ready(
        &format!("http://127.0.0.1:{port}/readyz"),
        &mut ingress,
        &ingress_log,
    )
    .await;
    let body = customer_event("evt_iam_1", "cus_iam");
    let answer = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/webhooks/stripe"))
        .header("Stripe-Signature", stripe_signing::sign_now(SECRET, &body))
        .body(body)
        .send()
        .await
        .expect("webhook");
    assert_eq!(
        answer.status(),
        200,
        "{}",
        std::fs::read_to_string(&ingress_log).unwrap_or_default()
    );

    // The worker: starts, is ready, applies the event.
    let admin_port = free_port();
    let worker_log = dir.path().join("worker.log");
    let mut worker = Child(
        emulator
            .command(
                &keys["worker"],
                &[
                    "run",
                    "--backend",
                    "aws",
                    "--prefix",
                    prefix,
                    "--admin-listen",
                ],
            )
            .arg(format!("127.0.0.1:{admin_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&worker_log).expect("log"))
            .spawn()
            .expect("run starts"),
    );
    wait_ready(
        &format!("http://127.0.0.1:{admin_port}/readyz"),
        &mut worker,
        &worker_log,
    )
    .await;

    // The operator reads the state the worker wrote.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let export = emulator
            .command(
                &keys["operator"],
                &[
                    "state",
                    "export",
                    "--backend",
                    "aws",
                    "--prefix",
                    prefix,
                    "--json",
                ],
            )
            .output()
            .expect("state export runs");
        assert!(
            export.status.success(),
            "the operator role exports the state: {}",
            String::from_utf8_lossy(&export.stderr)
        );
        let state: Value = serde_json::from_slice(&export.stdout).expect("JSON");
        if state["tenants"]["default"]["customers"]
            .get("cus_iam")
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not apply the event:\n{}",
            std::fs::read_to_string(&worker_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The read API: starts, is ready, and answers the customer's status and a list (the
    // customer index and the kind-status index) with the api policy alone.
    let api_port = free_port();
    let api_log = dir.path().join("api.log");
    let mut api = Child(
        emulator
            .command(
                &keys["api"],
                &[
                    "serve-api",
                    "--backend",
                    "aws",
                    "--prefix",
                    prefix,
                    "--listen",
                ],
            )
            .arg(format!("127.0.0.1:{api_port}"))
            .env("STRIPE_WORKER_API_TOKEN", API_TOKEN)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&api_log).expect("log"))
            .spawn()
            .expect("serve-api starts"),
    );
    wait_ready(
        &format!("http://127.0.0.1:{api_port}/readyz"),
        &mut api,
        &api_log,
    )
    .await;
    let client = reqwest::Client::new();
    for (path, expected) in [
        ("customers/cus_iam/status", "\"email\""),
        ("subscriptions?status=active", "\"object\":\"list\""),
    ] {
        let answer = client
            .get(format!(
                "http://127.0.0.1:{api_port}/v1/tenants/default/{path}"
            ))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("read API");
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert!(
            status == 200 && body.contains(expected),
            "{path}: {status} {body}\n{}",
            std::fs::read_to_string(&api_log).unwrap_or_default()
        );
    }
}

#[test]
fn the_terraform_policies_are_read_whole() {
    let iam_tf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/terraform/iam.tf"),
    )
    .expect("iam.tf");
    let documents = policy_documents(&iam_tf);
    let ingress = &documents["ingress"];
    let actions: Vec<&str> = ingress
        .iter()
        .flat_map(|s| s.actions.iter().map(String::as_str))
        .collect();
    assert_eq!(actions, ["events:PutEvents", "events:DescribeEventBus"]);
    assert_eq!(documents["worker"].len(), 4);
    assert_eq!(
        documents["worker"][0].actions.len(),
        5,
        "{:?}",
        documents["worker"][0]
    );
    assert_eq!(documents["worker"][0].resources, "local.queue_arns");
}
