//! Commet's official SDKs, unmodified, against a real daemon: `tests/sdk/node_sdk.cjs` with
//! `@commet/node` and `tests/sdk/python_sdk.py` with `commet-sdk`, each on a fresh sandbox daemon
//! (the three models, a denied check, an idempotent retry, typed errors, an invoice after a
//! test-clock advance). `scripts/install-sdks.sh` puts the SDKs in `target/sdks`; `.ci/run` runs
//! it and sets `TALLY_REQUIRE_SDKS=1`, so there a missing SDK fails instead of skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

use tally_protocol::message::Role;

use crate::test_daemon::TestDaemon;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The installed SDK at `path`, or `None` (skip) when it is not installed and not required.
fn installed(path: &Path, program: &str) -> Option<PathBuf> {
    let present = path.exists()
        && Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if present {
        return Some(path.to_path_buf());
    }
    assert!(
        std::env::var_os("TALLY_REQUIRE_SDKS").is_none(),
        "{} is missing: run scripts/install-sdks.sh",
        path.display()
    );
    eprintln!(
        "skipped: {} is not installed (scripts/install-sdks.sh installs it)",
        path.display()
    );
    None
}

fn run_against_a_sandbox(program: &str, script: &str, sdk_variable: &str, sdk: &Path) {
    let daemon = TestDaemon::start_with(
        |config| config.sandbox.test_clock = true,
        Default::default(),
    );
    let http = daemon.daemon().http_addr().expect("the API listens");
    let output = Command::new(program)
        .arg(root().join("tests/sdk").join(script))
        .env("TALLY_HTTP", format!("http://{http}"))
        .env("TALLY_ADMIN_KEY", daemon.key(Role::Admin))
        .env(sdk_variable, sdk)
        .env("NODE_ENV", "test")
        .output()
        .expect("the interpreter runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("SDK: every call answered"), "{stdout}");
}

#[test]
fn the_official_node_sdk_works_unmodified() {
    let sdk = root().join("target/sdks/node/node_modules/@commet/node");
    if let Some(sdk) = installed(&sdk, "node") {
        run_against_a_sandbox("node", "node_sdk.cjs", "TALLY_NODE_SDK", &sdk);
    }
}

#[test]
fn the_official_python_sdk_works_unmodified() {
    let sdk = root().join("target/sdks/python");
    if installed(&sdk.join("commet"), "python3").is_some() {
        run_against_a_sandbox("python3", "python_sdk.py", "TALLY_PYTHON_SDK", &sdk);
    }
}
