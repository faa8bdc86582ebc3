//! Every wait has an end: AWS calls against an endpoint that accepts and never answers,
//! `/readyz` when the backend freezes, clients that never finish their headers or body.
//! And a webhook refused before its body is read is still answered, not reset.
//!
//! No timing is asserted beyond "it ends": the bounds given to `timeout` are generous
//! ceilings for a loaded machine, far above the settings under test.

use crate::stripe_signing;

use std::sync::Arc;
use std::time::Duration;

use stripe_worker::app::memory_backend;
use stripe_worker::clock::system_clock;
use stripe_worker::config::Config;
use stripe_worker::ingress::{IngressConfig, IngressState, ReadyCheck, WebhookSecret, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_stripe-worker");
const SECRET: &str = "whsec_timeouts_0123456789";

/// A TCP server that accepts every connection and never sends a byte (keeps them open).
async fn silent_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn aws_commands_end_when_the_endpoint_never_answers() {
    let (endpoint, _silent) = silent_endpoint().await;
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(BIN)
            .args(["queues", "--backend", "aws", "--prefix", "silent"])
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            // The default read timeout (25 s, longer than a 20 s long poll) and operation
            // timeout (60 s) would make this test take minutes; shorter ones are the same
            // code path. The long poll goes to 0 so the read timeout may be short.
            .env("STRIPE_WORKER_WAIT_TIME_SECS", "0")
            .env("STRIPE_WORKER_AWS_READ_TIMEOUT_MS", "1000")
            .env("STRIPE_WORKER_AWS_OPERATION_TIMEOUT_MS", "5000")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the command ended: its AWS calls time out")
    .expect("the command ran");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("timeout") || stderr.contains("timed out"),
        "{stderr}"
    );
}

#[test]
fn the_default_sdk_timeouts_bound_every_call() {
    let config = Config::default();
    let t = config.aws.sdk_timeouts().to_timeout_config();
    assert!(t.connect_timeout().is_some());
    // A receive long-polls up to wait_time_secs: the read timeout must outlast it.
    assert!(t.read_timeout().expect("a read timeout") > Duration::from_secs(20));
    assert!(t.operation_attempt_timeout().is_some());
    assert!(t.operation_timeout().is_some());
}

struct Ingress {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
}

impl Drop for Ingress {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(config: IngressConfig, ready: Option<ReadyCheck>) -> Ingress {
    let backend = memory_backend(&Config::default(), system_clock());
    let mut state = IngressState::new(config, Arc::clone(&backend.bus)).expect("config");
    if let Some(ready) = ready {
        state = state.with_ready_check(ready);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, state, shutdown.clone()));
    Ingress { addr, shutdown }
}

fn config() -> IngressConfig {
    IngressConfig {
        tenants: [(
            "default".to_owned(),
            vec![WebhookSecret::new(SECRET).expect("secret")],
        )]
        .into(),
        ..IngressConfig::default()
    }
}

/// Everything the server sends until it closes the connection (or `limit` passes).
async fn read_all(stream: &mut TcpStream, limit: Duration) -> std::io::Result<String> {
    let mut answer = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut answer))
        .await
        .map_err(|_| std::io::Error::other("no end within the limit"))??;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn readyz_answers_503_when_the_backend_freezes() {
    let frozen: ReadyCheck = Arc::new(|| Box::pin(std::future::pending()));
    let ingress = start(config(), Some(frozen)).await;
    let response = tokio::time::timeout(
        Duration::from_secs(30),
        reqwest::get(format!("http://{}/readyz", ingress.addr)),
    )
    .await
    .expect("/readyz answers although its check never does")
    .expect("a response");
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    // The default is 10 s; 1 s keeps the test short and takes the same path.
    let ingress = start(
        IngressConfig {
            header_read_timeout: Duration::from_secs(1),
            ..config()
        },
        None,
    )
    .await;
    let mut stream = TcpStream::connect(ingress.addr).await.expect("connect");
    stream
        .write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Le")
        .await
        .expect("partial headers");
    // Closed by the server: an end of stream (or a reset), never a hang.
    match read_all(&mut stream, Duration::from_secs(60)).await {
        Ok(text) => assert!(!text.contains("200 OK"), "{text}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408() {
    // The default is 10 s; 1 s keeps the test short and takes the same path.
    let ingress = start(
        IngressConfig {
            body_read_timeout: Duration::from_secs(1),
            ..config()
        },
        None,
    )
    .await;
    let mut stream = TcpStream::connect(ingress.addr).await.expect("connect");
    stream
        .write_all(
            b"POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: t=1,v1=00\r\n\
              Content-Length: 100\r\nConnection: close\r\n\r\n{\"id\":",
        )
        .await
        .expect("headers and some body");
    let answer = read_all(&mut stream, Duration::from_secs(60))
        .await
        .expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_read_timeout"), "{answer}");
}

/// Send the headers, then the body in pieces while the server has already decided, then
/// read the answer: the order in which a client that does not wait for `100 Continue`
/// works. A server that answers and closes without reading the body makes the kernel reset
/// the connection under the client's writes.
async fn headers_then_body(
    addr: std::net::SocketAddr,
    path: &str,
    signature: Option<&str>,
) -> String {
    let body = vec![b'x'; 900 * 1024];
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    if let Some(signature) = signature {
        head.push_str(&format!("Stripe-Signature: {signature}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("headers");
    for piece in body.chunks(16 * 1024) {
        // Time for the server to refuse on the headers alone (as it does for these cases).
        tokio::time::sleep(Duration::from_millis(5)).await;
        stream
            .write_all(piece)
            .await
            .unwrap_or_else(|e| panic!("{path}: the server cut the body off: {e}"));
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer"))
        .unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

#[tokio::test]
async fn a_webhook_refused_before_its_body_is_read_gets_its_answer() {
    let ingress = start(config(), None).await;
    for _ in 0..4 {
        let answer =
            headers_then_body(ingress.addr, "/webhooks/stripe/nobody", Some("t=1,v1=00")).await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        let answer = headers_then_body(ingress.addr, "/webhooks/stripe", None).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("missing_signature_header"), "{answer}");
        let signature = stripe_signing::sign_now("whsec_wrong", b"{}");
        let answer = headers_then_body(ingress.addr, "/webhooks/stripe", Some(&signature)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
}
