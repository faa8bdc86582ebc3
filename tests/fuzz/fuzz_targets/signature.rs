//! `Stripe-Signature` parsing and verification: any header and body never panic, a forged
//! header never verifies, and a header the signer made always does.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use stripe_worker::ingress::{WebhookSecret, signature_header, verify};

fuzz_target!(|data: &[u8]| {
    let secret = WebhookSecret::new("whsec_fuzz").expect("a valid secret");
    // The first line is the header, the rest the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let header = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    let now = 1_700_000_000;
    let tolerance = Duration::from_secs(300);
    if let Ok(t) = verify(&header, body, std::slice::from_ref(&secret), now, tolerance) {
        // Only a header made with the secret verifies: the fuzzer cannot forge HMACs, so an
        // accepted header must be the signer's own for this body.
        assert_eq!(
            signature_header(body, &secret, t),
            header.trim(),
            "forged header accepted"
        );
    }
    let t = now - i64::from(data.first().copied().unwrap_or(0));
    let signed = signature_header(body, &secret, t);
    assert_eq!(
        verify(&signed, body, &[secret], now, tolerance).ok(),
        Some(t)
    );
});
