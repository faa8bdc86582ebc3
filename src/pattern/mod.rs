//! EventBridge event pattern matching (stub).
