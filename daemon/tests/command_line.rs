//! The `tallyd` command line as operators use it: `--log-format json`, `TALLY__…` environment
//! overrides, and a config error that names every bad key.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};

use support::{folder_with_config, Tallyd};

fn tallyd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tallyd"));
    command.env_remove("RUST_LOG");
    command
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = folder_with_config("sync", "");
    let mut command = tallyd();
    command
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info");
    let mut daemon = Tallyd::start_command(dir.path(), command, Stdio::piped());
    let mut stderr = daemon.child.stderr.take().unwrap();
    assert_eq!(daemon.terminate().code(), Some(0));
    let mut logs = String::new();
    stderr.read_to_string(&mut logs).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["level"].is_string() && l["fields"].is_object()));
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["fields"]["message"].as_str())
        .collect();
    for expected in ["tallyd is listening", "tallyd stopped"] {
        assert!(
            messages.contains(&expected),
            "{expected} missing from {messages:?}"
        );
    }
}

#[test]
fn environment_variables_override_the_config_file() {
    let dir = folder_with_config("sync", "");
    let output = tallyd()
        .args(["check-config", "--config"])
        .arg(dir.path().join("config.toml"))
        .env("TALLY__SERVER__SHARDS", "3")
        .env("TALLY__STORAGE__DATA_DIR", "elsewhere")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8(output.stdout).unwrap();
    assert!(said.contains("3 shards"), "{said}");
    assert!(said.contains("elsewhere"), "{said}");

    let output = tallyd()
        .args(["check-config", "--config"])
        .arg(dir.path().join("config.toml"))
        .env("TALLY__SERVER__LISTEN", "nowhere")
        .env("TALLY__STORAGE__DURABILITY", "sometimes")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8(output.stderr).unwrap();
    for expected in [
        "TALLY__SERVER__LISTEN",
        "server.listen",
        "storage.durability",
    ] {
        assert!(error.contains(expected), "{expected} missing from {error}");
    }
}
