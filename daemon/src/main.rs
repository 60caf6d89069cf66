//! `tallyd`: parse the command line, load the config, start the daemon, wait for a signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tally_daemon::config::{Config, DEFAULT_CONFIG_TOML};
use tally_daemon::{Daemon, SystemClock};
use tally_protocol::message::Role;

/// Tally: usage metering and entitlements for AI products.
#[derive(Parser)]
#[command(name = "tallyd", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon.
    Serve {
        /// Config file. Default: ./config.toml if present, else the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed demo customers and drive synthetic traffic (development credentials only), so
        /// `tally top` has something to show.
        #[arg(long)]
        demo: bool,
    },
    /// Validate the config and exit (0 when valid).
    CheckConfig {
        /// Config file. Default: ./config.toml if present, else the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::CheckConfig { config } => {
            let (config, origin) = load(config.as_deref())?;
            println!(
                "{origin} is valid: {} plans, {} shards, data dir {}",
                config.catalogue.plans().count(),
                config.server.shards,
                config.storage.data_dir.display()
            );
            Ok(())
        }
        Command::Serve { config, demo } => {
            let (config, origin) = load(config.as_deref())?;
            tracing::info!(config = %origin, "starting tallyd");
            let daemon = Daemon::start(config, Arc::new(SystemClock)).context("starting tallyd")?;
            if demo {
                let client_config = daemon
                    .dev_client_config(Role::Admin)
                    .context("--demo needs the development API keys (no [auth] keys configured)")?;
                tally_daemon::demo::start(client_config);
            }
            wait_for_signal()?;
            tracing::info!("shutting down");
            daemon.shutdown();
            Ok(())
        }
    }
}

fn load(path: Option<&Path>) -> anyhow::Result<(Config, String)> {
    let default = Path::new("config.toml");
    match path {
        Some(path) => Ok((Config::load(path)?, path.display().to_string())),
        None if default.exists() => Ok((Config::load(default)?, default.display().to_string())),
        None => {
            let origin = "the embedded default config".to_string();
            let config = Config::parse(DEFAULT_CONFIG_TOML, Path::new("."), &origin)?;
            Ok((config, origin))
        }
    }
}

fn wait_for_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    runtime.block_on(async {
        #[cfg(unix)]
        {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                result = tokio::signal::ctrl_c() => result,
                _ = terminate.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await
    })?;
    Ok(())
}
