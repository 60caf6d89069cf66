//! A daemon for one test: shipped catalogue, port 0, a temporary data dir, a manual clock. It can
//! be restarted on the same data dir to test recovery.

use std::sync::Arc;

use tally_daemon::config::Config;
use tally_daemon::{Daemon, ManualClock, StartOptions};
use tally_protocol::message::Role;
use tally_protocol::{Client, ClientConfig};

/// 2027-01-15T00:00:00Z: a fixed start so tests never depend on the real date.
pub(crate) const T0_MS: u64 = 1_800_000_000_000;

pub(crate) struct TestDaemon {
    daemon: Option<Daemon>,
    pub config: Config,
    pub clock: ManualClock,
    options: StartOptions,
    _dir: tempfile::TempDir,
}

impl TestDaemon {
    pub(crate) fn start() -> TestDaemon {
        Self::start_with(|_| {}, StartOptions::default())
    }

    /// Starts with the shipped config, loopback port 0, two shards, after `adjust`.
    pub(crate) fn start_with(
        adjust: impl FnOnce(&mut Config),
        options: StartOptions,
    ) -> TestDaemon {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut config = Config::loopback_in(dir.path());
        config.server.shards = 2;
        adjust(&mut config);
        let clock = ManualClock::new(T0_MS);
        let daemon = Daemon::start_with(config.clone(), Arc::new(clock.clone()), options.clone())
            .expect("daemon starts");
        TestDaemon {
            daemon: Some(daemon),
            config,
            clock,
            options,
            _dir: dir,
        }
    }

    pub(crate) fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon is running")
    }

    /// Shuts the daemon down cleanly and starts a new one on the same data dir, after `adjust`.
    pub(crate) fn restart_with(&mut self, adjust: impl FnOnce(&mut Config, &mut StartOptions)) {
        self.stop().expect("a clean shutdown");
        self.start_again(adjust);
    }

    /// Shuts the daemon down; says how it went.
    pub(crate) fn stop(&mut self) -> Result<(), tally_daemon::ShutdownError> {
        self.daemon
            .take()
            .expect("the daemon is running")
            .shutdown()
    }

    /// Starts a daemon on the same data dir after [`TestDaemon::stop`], after `adjust`.
    pub(crate) fn start_again(&mut self, adjust: impl FnOnce(&mut Config, &mut StartOptions)) {
        adjust(&mut self.config, &mut self.options);
        let clock = Arc::new(self.clock.clone());
        let daemon = Daemon::start_with(self.config.clone(), clock, self.options.clone())
            .expect("daemon restarts");
        self.daemon = Some(daemon);
    }

    pub(crate) fn restart(&mut self) {
        self.restart_with(|_, _| {});
    }

    pub(crate) fn key(&self, role: Role) -> String {
        let keys = self.daemon().dev_api_keys().expect("development keys");
        match role {
            Role::Admin => keys.admin.clone(),
            Role::Client => keys.client.clone(),
            Role::Monitor => keys.monitor.clone(),
        }
    }

    pub(crate) fn client_config(&self, api_key: String) -> ClientConfig {
        ClientConfig::new(
            self.daemon().local_addr(),
            self.daemon().cert_pem().as_bytes().to_vec(),
            api_key,
        )
    }

    pub(crate) async fn client(&self, role: Role) -> Client {
        let config = self
            .daemon()
            .dev_client_config(role)
            .expect("development keys");
        Client::connect(config).await.expect("client connects")
    }
}

/// Creates `customer` on plan `assistant` (a wallet; `chat` priced by AI model) and loads
/// `units` rate units onto it.
pub(crate) async fn wallet(admin: &Client, customer: &str, units: i64) {
    admin
        .admin()
        .create_customer(customer, "assistant")
        .await
        .unwrap();
    admin
        .admin()
        .top_up(
            customer,
            tally_protocol::message::TopUpAmount::Units(units),
            None,
        )
        .await
        .unwrap();
}
