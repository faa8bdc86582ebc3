//! The routing definition (stub).
