//! Commet's official SDKs, unmodified, against a real daemon: `tests/sdk/node_sdk.cjs` with
//! `@commet/node` and `tests/sdk/python_sdk.py` with `commet-sdk`, each on a fresh sandbox daemon
//! (the three models, a denied check, an idempotent retry, typed errors, an invoice after a
//! test-clock advance), and the SDK's `webhooks.verify` checks the webhooks the daemon delivered
//! meanwhile. `scripts/install-sdks.sh` puts the SDKs in `target/sdks`; `.ci/run` runs
//! it and sets `TALLY_REQUIRE_SDKS=1`, so there a missing SDK fails instead of skipping.

use std::path::{Path, PathBuf};
use std::process::Command;

use tally_daemon::webhooks::delivery::Endpoint;
use tally_protocol::message::Role;

use crate::receiver::Receiver;
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

/// What the webhook receiver's endpoint is keyed with.
const WEBHOOK_SECRET: &str = "whsec_sdk_check_0123456789";

/// Runs `script` with the SDK, then has `verifier` check — with the SDK's own `webhooks.verify`
/// and `verifyAndParse` — the webhooks the daemon delivered meanwhile to a receiver of ours.
fn run_against_a_sandbox(
    program: &str,
    (script, verifier): (&str, &str),
    sdk_variable: &str,
    sdk: &Path,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = runtime.block_on(Receiver::start());
    let daemon = TestDaemon::start_with(
        |config| {
            config.sandbox.test_clock = true;
            config.webhooks.endpoints = vec![Endpoint::configured(
                receiver.url().parse().unwrap(),
                WEBHOOK_SECRET.into(),
                None,
            )];
        },
        Default::default(),
    );
    let http = daemon.daemon().http_addr().expect("the API listens");
    let run = |script: &str, extra: &[(&str, &str)]| {
        let output = Command::new(program)
            .arg(root().join("tests/sdk").join(script))
            .env("TALLY_HTTP", format!("http://{http}"))
            .env("TALLY_ADMIN_KEY", daemon.key(Role::Admin))
            .env(sdk_variable, sdk)
            .env("NODE_ENV", "test")
            .envs(extra.iter().copied())
            .output()
            .expect("the interpreter runs");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        );
        assert!(
            output.status.success(),
            "{script} failed:\n{stdout}\n{stderr}"
        );
        stdout
    };
    let stdout = run(script, &[]);
    assert!(stdout.contains("SDK: every call answered"), "{stdout}");

    // Every customer the script made was announced, and a top-up too.
    let delivered = runtime.block_on(receiver.accepted(3));
    let deliveries: Vec<serde_json::Value> = delivered
        .iter()
        .map(|r| {
            serde_json::json!({
                "body": String::from_utf8(r.body.clone()).unwrap(),
                "signature": r.signature,
                "event": r.event,
            })
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&deliveries).unwrap()).unwrap();
    let path = file.path().to_str().unwrap();
    let receiver_url = receiver.url();
    let stdout = run(
        verifier,
        &[
            ("TALLY_WEBHOOKS", path),
            ("TALLY_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("TALLY_RECEIVER_URL", &receiver_url),
        ],
    );
    assert!(
        stdout.contains(&format!("SDK: {} webhooks verified", deliveries.len())),
        "{stdout}"
    );
}

#[test]
fn the_official_node_sdk_works_unmodified() {
    let sdk = root().join("target/sdks/node/node_modules/@commet/node");
    if let Some(sdk) = installed(&sdk, "node") {
        let scripts = ("node_sdk.cjs", "node_webhooks.cjs");
        run_against_a_sandbox("node", scripts, "TALLY_NODE_SDK", &sdk);
    }
}

#[test]
fn the_official_python_sdk_works_unmodified() {
    let sdk = root().join("target/sdks/python");
    if installed(&sdk.join("commet"), "python3").is_some() {
        let scripts = ("python_sdk.py", "python_webhooks.py");
        run_against_a_sandbox("python3", scripts, "TALLY_PYTHON_SDK", &sdk);
    }
}
