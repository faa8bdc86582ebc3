//! One test run again in a child process of this binary, alone: for the few tests that
//! need a process of their own (a changed environment, the process-wide metric
//! instruments) now that every integration test shares one binary.

use std::process::{Command, Output};

/// Set in the child, so the test runs its body instead of spawning again.
const CHILD_MARKER: &str = "STRIPE_WORKER_TEST_CHILD";

/// Whether this process is a child started by [`command`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD_MARKER).is_some()
}

/// The command that runs `test` (its full path, `module::name`) alone in a child process.
pub fn command(test: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
    command
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD_MARKER, "1");
    command
}

/// Assert that the child ran its one test and it passed (a filter that matches nothing
/// also exits 0, so the count is checked too).
pub fn assert_passed(test: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} in a child process:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Run `test` alone in a child process with `env` added, and assert that it passed.
pub fn run_alone(test: &str, env: &[(&str, &str)]) {
    let output = command(test)
        .envs(env.iter().copied())
        .output()
        .expect("the test binary runs again");
    assert_passed(test, &output);
}
