//! Running the real `tallyd` binary from a test: a temp folder with the shipped config on port 0,
//! start and wait for its address file, connect as admin with the development credentials, stop
//! it with SIGKILL or SIGTERM.

// Each test binary uses a different part of this module.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tally_protocol::{Client, ClientConfig};

pub(crate) struct Tallyd {
    pub child: Child,
    dir: PathBuf,
}

impl Tallyd {
    pub(crate) fn start(dir: &Path) -> Tallyd {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tallyd"));
        // TALLYD_LOG=info shows the daemon's own account of a failing test.
        command.env(
            "RUST_LOG",
            std::env::var("TALLYD_LOG").unwrap_or_else(|_| "warn".into()),
        );
        Tallyd::start_command(dir, command, Stdio::inherit())
    }

    /// Starts `command` (tallyd with any options and environment) as `serve --config
    /// <dir>/config.toml`, with its stderr going to `stderr`.
    pub(crate) fn start_command(dir: &Path, mut command: Command, stderr: Stdio) -> Tallyd {
        let addr_file = dir.join("tally-data").join("tallyd.addr");
        let _ = std::fs::remove_file(&addr_file);
        let child = command
            .args(["serve", "--config"])
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("tallyd starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !addr_file.exists() {
            assert!(
                Instant::now() < deadline,
                "tallyd did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Tallyd {
            child,
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) async fn client(&self) -> Client {
        let data = self.dir.join("tally-data");
        let addr = std::fs::read_to_string(data.join("tallyd.addr")).unwrap();
        let cert = std::fs::read(data.join("dev/cert.pem")).unwrap();
        let keys: HashMap<String, String> = std::fs::read_to_string(data.join("dev/api-keys.toml"))
            .unwrap()
            .lines()
            .filter_map(|line| line.split_once(" = "))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        let mut config =
            ClientConfig::new(addr.trim().parse().unwrap(), cert, keys["admin"].clone());
        config.request_timeout = Duration::from_secs(2);
        // A killed daemon stays down until the test restarts it: calls stop waiting soon.
        config.reconnect.call_wait = Duration::from_secs(2);
        Client::connect(config).await.expect("client connects")
    }

    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }
}

/// A test that fails half-way must not leave a daemon running.
impl Drop for Tallyd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Tallyd {
    /// Sends SIGTERM and waits (up to 30 s) for the process to exit; returns how it exited.
    pub(crate) fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(sent.success(), "SIGTERM delivered");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tallyd did not exit within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A temp folder with the shipped config.toml on port 0, in `durability` mode, plus `extra`.
pub(crate) fn folder_with_config(durability: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml"))
        .unwrap()
        .replace("listen = \"127.0.0.1:7070\"", "listen = \"127.0.0.1:0\"")
        .replace("listen = \"127.0.0.1:7072\"", "listen = \"127.0.0.1:0\"")
        .replace(
            "http_listen = \"127.0.0.1:7071\"",
            "http_listen = \"127.0.0.1:0\"",
        )
        .replace(
            "durability = \"sync\"",
            &format!("durability = \"{durability}\""),
        )
        + extra;
    std::fs::write(dir.path().join("config.toml"), config).unwrap();
    dir
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
