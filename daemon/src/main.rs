//! `tallyd`: parse the command line, load the config, start the daemon, wait for a signal.
#![forbid(unsafe_code)]

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
static ALLOCATOR: tally_daemon::platform::allocator::TallyAllocator =
    tally_daemon::platform::allocator::TallyAllocator;

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
    let memory_setup = tally_daemon::platform::memory::configure_for_mimalloc();
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
            let mut signals = Signals::install()?;
            let daemon = Daemon::start(config, Arc::new(SystemClock)).context("starting tallyd")?;
            if demo {
                let client_config = daemon
                    .dev_client_config(Role::Admin)
                    .context("--demo needs the development API keys (no [auth] keys configured)")?;
                tally_daemon::demo::start(client_config);
            }
            signals.wait_for_stop(&daemon);
            tracing::info!("shutting down (a second SIGTERM or SIGINT exits at once)");
            let (stopped, shutdown) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("tallyd-shutdown".into())
                .spawn(move || drop(stopped.send(daemon.shutdown())))
                .context("starting the shutdown thread")?;
            match signals.wait_for_either(shutdown) {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => {
                    tracing::error!(error = %e, "exiting with status 1");
                    // Not a return: a store left closing on its thread must not hold the exit.
                    std::process::exit(1)
                }
                None => {
                    tracing::warn!("a second signal: exiting at once with status 1; every acknowledged change was already persisted");
                    std::process::exit(1)
                }
            }
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
/// with the default action. SIGHUP reloads the model prices.
struct Signals {
    runtime: tokio::runtime::Runtime,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
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
            let hangup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
            Ok(Signals {
                runtime,
                terminate,
                interrupt,
                hangup,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals { runtime })
    }

    /// Blocks until SIGTERM or SIGINT (Ctrl-C), including one that arrived before the call;
    /// each SIGHUP meanwhile reloads `daemon`'s model prices.
    fn wait_for_stop(&mut self, daemon: &Daemon) {
        #[cfg(unix)]
        {
            let Signals {
                runtime,
                terminate,
                interrupt,
                hangup,
            } = self;
            runtime.block_on(async {
                loop {
                    tokio::select! {
                        _ = terminate.recv() => break,
                        _ = interrupt.recv() => break,
                        _ = hangup.recv() => {
                            if let Err(e) = daemon.reload_models().await {
                                tracing::error!(error = %e, "SIGHUP");
                            }
                        }
                    }
                }
            });
        }
        #[cfg(not(unix))]
        {
            let _ = daemon;
            let (runtime, received) = self.parts();
            runtime.block_on(received);
        }
    }

    /// Blocks until `done` says how the shutdown ended, or a second signal comes first (`None`).
    fn wait_for_either<T>(&mut self, done: tokio::sync::oneshot::Receiver<T>) -> Option<T> {
        let (runtime, received) = self.parts();
        runtime.block_on(async {
            tokio::select! {
                outcome = done => outcome.ok(),
                () = received => None,
            }
        })
    }

    /// The runtime, and a future that ends at the next signal.
    fn parts(
        &mut self,
    ) -> (
        &tokio::runtime::Runtime,
        impl std::future::Future<Output = ()> + '_,
    ) {
        #[cfg(unix)]
        let Signals {
            runtime,
            terminate,
            interrupt,
            ..
        } = self;
        #[cfg(unix)]
        let received = async move {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
        };
        #[cfg(not(unix))]
        let Signals { runtime } = self;
        #[cfg(not(unix))]
        let received = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        (runtime, received)
    }
}
