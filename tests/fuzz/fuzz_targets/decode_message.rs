//! Any bytes as a queue message: decoding never panics, and what it accepts resolves to a
//! tenant or a precise error without panicking either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stripe_worker::event::decode_message;
use stripe_worker::tenant::TenantConfig;

fuzz_target!(|data: &[u8]| {
    match decode_message(data) {
        Ok(event) => {
            assert!(
                !event.dedupe_id.is_empty(),
                "an accepted event has a dedupe id"
            );
            let mut tenants = TenantConfig {
                tenants: vec!["acme".to_owned()],
                ..TenantConfig::default()
            };
            tenants
                .destinations
                .insert("ed_fuzz".to_owned(), "acme".to_owned());
            let _ = tenants.resolve(&event);
        }
        Err(error) => {
            assert!(!error.reason().is_empty());
        }
    }
});
