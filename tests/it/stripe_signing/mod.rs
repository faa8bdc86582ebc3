//! `Stripe-Signature` values computed the way Stripe documents it, independently of the
//! library, so a bug in `stripe_worker::ingress::signature` cannot hide itself in a test.
//! Shared by the test binaries that send signed webhooks (`mod stripe_signing;`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The hex HMAC-SHA256 of `"{t}.{body}"` keyed by the whole `whsec_...` string.
pub fn v1(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// `t=<t>,v1=<hex>`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", v1(secret, t, body))
}

/// [`sign`] at the current time.
pub fn sign_now(secret: &str, body: &[u8]) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    sign(secret, i64::try_from(t).expect("a plausible clock"), body)
}
