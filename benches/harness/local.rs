//! A daemon in this process for the examples and probes: loopback, port 0, a temporary data dir,
//! the development keys, and a current-thread runtime for the client.

use std::sync::Arc;

use tally_daemon::config::Config;
use tally_daemon::{Clock, Daemon};
use tally_protocol::message::Role;
use tally_protocol::ClientConfig;

/// A running local daemon and how to reach it as admin. Dropping it stops the daemon and
/// deletes its data dir.
pub struct LocalDaemon {
    /// The daemon (declared first: it stops before its data dir is deleted).
    pub daemon: Daemon,
    /// How an admin client reaches it.
    pub admin: ClientConfig,
    /// The config it started with.
    pub config: Config,
    /// A runtime for the client side.
    pub runtime: tokio::runtime::Runtime,
    /// Its data dir.
    pub dir: tempfile::TempDir,
}

impl LocalDaemon {
    /// Starts a daemon with the shipped config, changed by `adjust`, on `clock`.
    pub fn start(
        clock: Arc<dyn Clock>,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<LocalDaemon> {
        let dir = tempfile::tempdir()?;
        let mut config = Config::loopback_in(dir.path());
        adjust(&mut config);
        let daemon = Daemon::start(config.clone(), clock)?;
        let admin = daemon
            .dev_client_config(Role::Admin)
            .expect("a loopback daemon has development keys");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(LocalDaemon {
            daemon,
            admin,
            config,
            runtime,
            dir,
        })
    }
}

/// The `n`th command-line argument (1 is the first) parsed, or `default` when it is absent.
pub fn arg_or<T>(n: usize, default: T) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(std::env::args()
        .nth(n)
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(default))
}
