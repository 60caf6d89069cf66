//! `tallyd`: parse the command line, load the config, start the daemon, wait for a signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use tally_daemon::config::{env_overrides, Config, DEFAULT_CONFIG_TOML};
use tally_daemon::{Daemon, SystemClock};
use tally_protocol::message::Role;

/// mimalloc instead of glibc's malloc: the hot path allocates small short-lived buffers on
/// several threads, where glibc spent more time than the daemon's own code (docs/performance.md);
/// large blocks get mappings of their own (`allocator`: what stays resident is what is in use).
#[global_allocator]
static ALLOCATOR: tally_daemon::allocator::TallyAllocator = tally_daemon::allocator::TallyAllocator;

/// Tally: usage metering and entitlements for AI products.
#[derive(Parser)]
#[command(name = "tallyd", version)]
struct Cli {
    /// Log lines as human-readable text or one JSON object per line (filter with RUST_LOG).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Start the daemon.
    Serve {
        /// Config file. Default: ./config.toml if present, else the embedded defaults.
        /// `TALLY__SECTION__KEY` environment variables override its keys.
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
    let cli = Cli::parse();
    let memory_setup = tally_daemon::memory::configure_for_mimalloc();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if let Err(e) = memory_setup {
        tracing::warn!(error = %e, "could not turn transparent huge pages off; resident memory may be larger");
    }
    match cli.command {
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
            let signals = Signals::install()?;
            let daemon = Daemon::start(config, Arc::new(SystemClock)).context("starting tallyd")?;
            if demo {
                let client_config = daemon
                    .dev_client_config(Role::Admin)
                    .context("--demo needs the development API keys (no [auth] keys configured)")?;
                tally_daemon::demo::start(client_config);
            }
            signals.wait()?;
            tracing::info!("shutting down");
            daemon.shutdown();
            Ok(())
        }
    }
}

/// The config file (or the embedded defaults) with `TALLY__…` environment overrides applied.
fn load(path: Option<&Path>) -> anyhow::Result<(Config, String)> {
    let default = Path::new("config.toml");
    let overrides = env_overrides();
    let path = path.or(default.exists().then_some(default));
    match path {
        Some(path) => Ok((
            Config::load_with_overrides(path, &overrides)?,
            path.display().to_string(),
        )),
        None => {
            let origin = "the embedded default config".to_string();
            let config = Config::parse_with_overrides(
                DEFAULT_CONFIG_TOML,
                Path::new("."),
                &origin,
                &overrides,
            )?;
            Ok((config, origin))
        }
    }
}

/// SIGTERM and SIGINT handlers, installed before the daemon starts: a signal sent as soon as it
/// listens (by a supervisor, a test) or while it recovers must stop it gracefully, not kill it
/// with the default action.
struct Signals {
    runtime: tokio::runtime::Runtime,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the signal runtime")?;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let _entered = runtime.enter();
            let terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
            let interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
            Ok(Signals {
                runtime,
                terminate,
                interrupt,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals { runtime })
    }

    /// Blocks until SIGTERM or SIGINT (Ctrl-C), including one that arrived before the call.
    fn wait(mut self) -> anyhow::Result<()> {
        #[cfg(unix)]
        self.runtime.block_on(async {
            tokio::select! {
                _ = self.terminate.recv() => {}
                _ = self.interrupt.recv() => {}
            }
        });
        #[cfg(not(unix))]
        self.runtime.block_on(tokio::signal::ctrl_c())?;
        Ok(())
    }
}
