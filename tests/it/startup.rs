//! Start-up refusals: development credentials off loopback, a missing data dir that may not be
//! created, a foreign folder, a data dir another daemon holds, and development credentials reused
//! across restarts.

use std::sync::Arc;

use tally_daemon::config::Config;
use tally_daemon::{Daemon, ManualClock, StartError};

fn config_in(dir: &std::path::Path) -> Config {
    let mut config = Config::loopback_in(dir);
    config.server.shards = 1;
    config
}

#[test]
fn development_credentials_are_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.server.listen = "0.0.0.0:0".parse().unwrap();
    let refused = Daemon::start(config, Arc::new(ManualClock::new(0)));
    assert!(matches!(
        refused,
        Err(StartError::DevelopmentCredentialsOffLoopback { .. })
    ));
}

#[test]
fn a_missing_data_dir_is_not_created_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.storage.data_dir = dir.path().join("typo");
    config.storage.create_if_missing = false;
    let refused = Daemon::start(config, Arc::new(ManualClock::new(0)));
    let Err(StartError::DataDir(refusal)) = refused else {
        panic!("expected a data dir error")
    };
    assert!(refusal.to_string().contains("does not exist"), "{refusal}");
    assert!(!dir.path().join("typo").exists());
}

#[test]
fn development_credentials_are_created_once_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start(config_in(dir.path()), Arc::new(ManualClock::new(0))).unwrap();
    let (cert, keys) = (first.cert_pem().to_string(), first.dev_api_keys().cloned());
    first.shutdown().expect("a clean shutdown");
    let second = Daemon::start(config_in(dir.path()), Arc::new(ManualClock::new(0))).unwrap();
    assert_eq!(second.cert_pem(), cert);
    assert_eq!(second.dev_api_keys().cloned(), keys);
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let first = Daemon::start(config_in(dir.path()), Arc::new(ManualClock::new(0))).unwrap();
    let refused = Daemon::start(config_in(dir.path()), Arc::new(ManualClock::new(0)));
    let Err(StartError::DataDir(refusal)) = refused else {
        panic!("expected the data dir to be refused as in use")
    };
    let message = refusal.to_string();
    assert!(message.contains("in use by another tallyd"), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    first.shutdown().expect("a clean shutdown");
    // Once the first has stopped, the data dir is free again.
    Daemon::start(config_in(dir.path()), Arc::new(ManualClock::new(0))).unwrap();
}

#[test]
fn a_folder_that_is_not_a_tally_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.storage.data_dir = dir.path().to_path_buf();
    std::fs::write(dir.path().join("postgresql.conf"), "not ours").unwrap();
    let refused = Daemon::start(config, Arc::new(ManualClock::new(0)));
    let Err(StartError::DataDir(refusal)) = refused else {
        panic!("expected a foreign folder to be refused")
    };
    assert!(refusal.to_string().contains("postgresql.conf"), "{refusal}");
    assert!(!dir.path().join("store").exists(), "nothing was created");
}
