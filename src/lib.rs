//! stripe-worker library.
