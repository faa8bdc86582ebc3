//! SQLite backends (stub).
