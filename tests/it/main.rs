//! The integration tests, one binary (as svix-server and others do): each module below was
//! a test binary of its own, and every one of them linked the whole crate and the AWS SDK.
//! One binary links once. The shared helpers are ordinary modules here.
//!
//! Tests that need the AWS emulator read `AWS_ENDPOINT_URL` (set by `tests/run.sh`, which
//! starts moto); run one module with `cargo test --test it <module>::`.

// Helpers shared by several modules.
mod aws_support;
mod child_process;
#[macro_use]
mod conformance;
mod ops_support;
mod reconcile_support;
mod reliability_support;
mod stripe_signing;

mod aws_e2e;
mod aws_endpoint_env;
mod aws_iam;
mod aws_setup;
mod backend_aws;
mod backend_memory;
mod backend_sqlite;
mod bench;
mod cli;
mod crash;
mod decode;
mod deploy_patterns;
mod generator;
mod handlers;
mod ingress;
mod ingress_e2e;
mod ops;
mod ops_aws;
mod read_api;
mod reconcile;
mod reconcile_aws;
mod reliability_drain;
mod reliability_faults;
mod reliability_ordering;
mod reliability_poison;
mod reliability_props;
mod reliability_tenants;
mod routing;
mod stripe_api;
mod telemetry;
mod timeouts;
mod worker;
