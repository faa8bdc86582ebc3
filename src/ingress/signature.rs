//! Stripe webhook signature verification: pure, bytes in and a verdict out.
//!
//! Stripe sends `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...][,v0=<hex>]`.
//! Each `v1` is the lower-case hex HMAC-SHA256 of `"{t}.{raw body}"` keyed by an endpoint
//! secret; during a secret roll Stripe signs with every active secret, so any `v1` matching
//! any configured secret is enough. `v0` (test-mode legacy) and unknown schemes are ignored.

use std::time::Duration;

use hmac::Mac;
use subtle::ConstantTimeEq;

use super::secrets::WebhookSecret;

/// The HTTP header Stripe puts the signature in.
pub const SIGNATURE_HEADER: &str = "stripe-signature";

/// Stripe's recommended default tolerance between the signed timestamp and now.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Length of a hex-encoded HMAC-SHA256.
const HEX_MAC_LEN: usize = 64;

/// Why a header is not a well-formed `Stripe-Signature`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The header is empty.
    Empty,
    /// An item has no `=` (e.g. `v1,t=1`).
    ItemWithoutValue,
    /// There is no `t=` item.
    MissingTimestamp,
    /// There is more than one `t=` item; which to trust would be a guess.
    DuplicateTimestamp,
    /// `t=` is empty, not decimal digits, or out of range.
    InvalidTimestamp,
}

impl Malformed {
    fn as_str(self) -> &'static str {
        match self {
            Malformed::Empty => "empty header",
            Malformed::ItemWithoutValue => "an item has no `=`",
            Malformed::MissingTimestamp => "no `t=` timestamp",
            Malformed::DuplicateTimestamp => "more than one `t=` timestamp",
            Malformed::InvalidTimestamp => "`t=` is not a unix timestamp",
        }
    }
}

/// Why a webhook request's signature was not accepted. Every case is final for that
/// request: Stripe retries on its own schedule, and a retry carries a fresh signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header cannot be parsed.
    #[error("malformed Stripe-Signature header: {}", .0.as_str())]
    Malformed(Malformed),
    /// The header is well-formed but has no `v1` signature (only `v0` or unknown schemes).
    #[error("Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    /// No `v1` signature matches any configured secret.
    #[error("no v1 signature matches the endpoint's secrets")]
    NoMatchingSignature,
    /// The signature matches but the signed timestamp is too far from now (a replay, or a
    /// badly wrong clock).
    #[error("signed timestamp {timestamp} is more than {tolerance_secs} s from now ({now})")]
    TimestampOutsideTolerance {
        timestamp: i64,
        now: i64,
        tolerance_secs: u64,
    },
}

impl SignatureError {
    /// A short, bounded label for metrics and error answers.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Malformed(_) => "malformed_signature_header",
            SignatureError::NoV1Signature => "no_v1_signature",
            SignatureError::NoMatchingSignature => "no_matching_signature",
            SignatureError::TimestampOutsideTolerance { .. } => "timestamp_outside_tolerance",
        }
    }
}

/// A parsed header: the timestamp (as sent, digits only, and as a number) and the `v1`
/// values, borrowed from the header.
struct Parsed<'h> {
    t_digits: &'h str,
    t: i64,
    v1: [Option<&'h str>; MAX_V1],
    v1_count: usize,
}

/// More `v1` values than this are ignored: Stripe sends one per active secret (two while
/// rolling), and a fixed bound keeps parsing allocation-free and cheap for hostile headers.
const MAX_V1: usize = 8;

fn parse(header: &str) -> Result<Parsed<'_>, SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::Malformed(Malformed::Empty));
    }
    let mut t_digits: Option<&str> = None;
    let mut v1 = [None; MAX_V1];
    let mut v1_count = 0;
    for item in header.split(',') {
        let (key, value) = item
            .split_once('=')
            .ok_or(SignatureError::Malformed(Malformed::ItemWithoutValue))?;
        match key.trim() {
            "t" => {
                if t_digits.is_some() {
                    return Err(SignatureError::Malformed(Malformed::DuplicateTimestamp));
                }
                t_digits = Some(value.trim());
            }
            "v1" if v1_count < MAX_V1 => {
                v1[v1_count] = Some(value.trim());
                v1_count += 1;
            }
            // v0, schemes Stripe may add later, and v1 beyond the bound: not checked.
            _ => {}
        }
    }
    let t_digits = t_digits.ok_or(SignatureError::Malformed(Malformed::MissingTimestamp))?;
    // Digits only: no sign, no spaces, so the signed string is exactly what Stripe signed.
    if t_digits.is_empty() || !t_digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed(Malformed::InvalidTimestamp));
    }
    let t = t_digits
        .parse::<i64>()
        .map_err(|_| SignatureError::Malformed(Malformed::InvalidTimestamp))?;
    Ok(Parsed {
        t_digits,
        t,
        v1,
        v1_count,
    })
}

/// Verify a webhook request: `header` is the `Stripe-Signature` value, `body` the raw
/// request body exactly as received, `secrets` the endpoint's active secrets, `now_unix`
/// the current time in seconds. Returns the signed timestamp `t`.
///
/// The signature is checked before the timestamp, so a forgery is counted as a signature
/// failure whatever its timestamp, and a late but genuine delivery as a timestamp failure.
/// Timestamps are accepted up to `tolerance` away from now in either direction (clock skew).
/// Comparisons are constant-time. No allocation.
pub fn verify(
    header: &str,
    body: &[u8],
    secrets: &[WebhookSecret],
    now_unix: i64,
    tolerance: Duration,
) -> Result<i64, SignatureError> {
    let parsed = parse(header)?;
    if parsed.v1_count == 0 {
        return Err(SignatureError::NoV1Signature);
    }
    let candidates = &parsed.v1[..parsed.v1_count];
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected = expected_hex(secret, parsed.t_digits, body);
        for candidate in candidates.iter().flatten() {
            // Length is public (always 64 for a real signature); compare the rest in
            // constant time, and keep going so timing does not reveal which one matched.
            if candidate.len() == HEX_MAC_LEN {
                matched |= expected.ct_eq(candidate.as_bytes());
            }
        }
    }
    if !bool::from(matched) {
        return Err(SignatureError::NoMatchingSignature);
    }
    let tolerance_secs = tolerance.as_secs();
    let off_by = now_unix.abs_diff(parsed.t);
    if off_by > tolerance_secs {
        return Err(SignatureError::TimestampOutsideTolerance {
            timestamp: parsed.t,
            now: now_unix,
            tolerance_secs,
        });
    }
    Ok(parsed.t)
}

/// The lower-case hex HMAC-SHA256 of `"{t}.{body}"`, on the stack.
fn expected_hex(secret: &WebhookSecret, t_digits: &str, body: &[u8]) -> [u8; HEX_MAC_LEN] {
    let mut mac = secret.mac();
    mac.update(t_digits.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = [0u8; HEX_MAC_LEN];
    // 32 bytes always encode into 64; the error case cannot happen.
    let _ = hex::encode_to_slice(digest, &mut out);
    out
}

/// Build a `Stripe-Signature` value (`t=<t>,v1=<hex>`) for `body` signed with `secret` at
/// unix time `t`.
///
/// For tools that need a genuinely signed request: the load benchmark, local replays,
/// `stripe-worker ingest`-style senders. Tests of [`verify`] compute their signatures with
/// their own HMAC code rather than this function, so a bug here cannot hide a bug there.
pub fn signature_header(body: &[u8], secret: &WebhookSecret, t: i64) -> String {
    let digits = t.to_string();
    let hex = expected_hex(secret, &digits, body);
    // The hex is ASCII by construction.
    let hex = std::str::from_utf8(&hex).unwrap_or_default();
    format!("t={digits},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_are_typed() {
        let m = |h: &str| match parse(h) {
            Err(SignatureError::Malformed(m)) => Some(m),
            _ => None,
        };
        assert_eq!(m(""), Some(Malformed::Empty));
        assert_eq!(m("v1,t=1"), Some(Malformed::ItemWithoutValue));
        assert_eq!(m("t="), Some(Malformed::InvalidTimestamp));
        assert_eq!(m("t=-5,v1=ab"), Some(Malformed::InvalidTimestamp));
        assert_eq!(m("t=1e3,v1=ab"), Some(Malformed::InvalidTimestamp));
        assert_eq!(
            m("t=99999999999999999999,v1=ab"),
            Some(Malformed::InvalidTimestamp)
        );
        assert_eq!(m("v1=ab"), Some(Malformed::MissingTimestamp));
        assert_eq!(m("t=1,t=2,v1=ab"), Some(Malformed::DuplicateTimestamp));
    }

    #[test]
    fn parse_keeps_v1_only() {
        let p = parse("t=12, v0=aa ,v1=bb,v1=cc,x=dd").expect("parses");
        assert_eq!(p.t, 12);
        assert_eq!(p.t_digits, "12");
        assert_eq!(&p.v1[..p.v1_count], &[Some("bb"), Some("cc")]);
    }

    #[test]
    fn hostile_number_of_v1_is_bounded() {
        let header = format!("t=1{}", ",v1=00".repeat(1000));
        let p = parse(&header).expect("parses");
        assert_eq!(p.v1_count, MAX_V1);
    }

    #[test]
    fn signature_header_round_trips_through_verify() {
        let secret = WebhookSecret::new("whsec_roundtrip").expect("valid");
        let header = signature_header(b"{}", &secret, 1_700_000_000);
        assert_eq!(
            verify(&header, b"{}", &[secret], 1_700_000_000, DEFAULT_TOLERANCE),
            Ok(1_700_000_000)
        );
    }
}
