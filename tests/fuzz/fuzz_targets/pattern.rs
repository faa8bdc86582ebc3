//! EventBridge pattern parsing and matching: any pattern text and any event never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stripe_worker::pattern::EventPattern;

fuzz_target!(|data: &[u8]| {
    // The pattern, a NUL byte, then the event.
    let text = String::from_utf8_lossy(data);
    let (pattern, event) = text.split_once('\0').unwrap_or((&text, "{}"));
    let Ok(pattern) = EventPattern::from_json_str(pattern) else {
        return;
    };
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(event) {
        let first = pattern.matches(&event);
        assert_eq!(first, pattern.matches(&event), "matching is deterministic");
    }
});
