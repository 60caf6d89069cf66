//! The console's event loop: every source — keys (a blocking reader thread), stats polls and
//! drill-down fetches (tasks) — feeds one channel; each event goes through `App::update`, then
//! the screen is redrawn. Polling never blocks drawing; a failed poll is shown and retried.

use std::time::Duration;

use crossterm::event::{Event as TerminalEvent, KeyEventKind};
use tally_protocol::{Client, ClientConfig};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;

use super::app::{Action, App, Event};
use super::ui;
use crate::discovery::Target;

/// How long quitting waits for the poller to close its connection.
const QUIT_WAIT: Duration = Duration::from_millis(200);
/// Longest wait between attempts to make the first connection (the client reconnects by itself
/// after that).
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs `tally top` until the user quits; the terminal is restored on exit and on panic.
pub fn run_console(target: Target, interval: Duration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut config = ClientConfig::new(target.addr, target.ca_pem, target.api_key);
    // A daemon that vanished must show as disconnected within a few polls, not after the
    // library's default 10 s.
    config.request_timeout = (interval * 3).clamp(Duration::from_secs(1), Duration::from_secs(5));
    config.connect_timeout = Duration::from_secs(2);
    config.reconnect.call_wait = config.request_timeout;
    let (events, mut incoming) = unbounded_channel();
    let (fetches, fetch_requests) = unbounded_channel();
    spawn_key_reader(events.clone());
    let (quit, quitting) = watch::channel(false);
    let poller = runtime.spawn(poll_stats(
        config.clone(),
        interval,
        events.clone(),
        quitting,
    ));
    runtime.spawn(fetch_customers(config, fetch_requests, events));

    // ratatui::init installs a panic hook that restores the terminal before the panic prints.
    let mut terminal = ratatui::init();
    let mut app = App::new(target.addr.to_string());
    let result = runtime.block_on(async {
        loop {
            terminal.draw(|frame| ui::draw(frame, &app))?;
            let Some(event) = incoming.recv().await else {
                return Ok(());
            };
            match app.update(event) {
                Action::Quit => return Ok(()),
                Action::FetchCustomer(id) => {
                    let _ = fetches.send(id);
                }
                Action::None => {}
            }
        }
    });
    ratatui::restore();
    // The poller closes its connection, so the daemon frees the slot at once.
    let _ = quit.send(true);
    let _ = runtime.block_on(tokio::time::timeout(QUIT_WAIT, poller));
    runtime.shutdown_background();
    result
}

fn spawn_key_reader(events: UnboundedSender<Event>) {
    std::thread::Builder::new()
        .name("tally-top-keys".into())
        .spawn(move || loop {
            let event = match crossterm::event::read() {
                Ok(TerminalEvent::Key(key)) if key.kind == KeyEventKind::Press => Event::Key(key),
                Ok(TerminalEvent::Resize(..)) => Event::Resize,
                Ok(_) => continue,
                Err(_) => return,
            };
            if events.send(event).is_err() {
                return;
            }
        })
        .expect("spawning the key reader");
}

/// Polls `stats` every `interval` until `quitting` says so. The client reconnects by itself
/// when the daemon goes away; meanwhile each failed poll is shown.
async fn poll_stats(
    config: ClientConfig,
    interval: Duration,
    events: UnboundedSender<Event>,
    mut quitting: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    let client = loop {
        match Client::connect(config.clone()).await {
            Ok(client) => break client,
            Err(e) => {
                if events
                    .send(Event::Stats(Err(format!("{e}; retrying"))))
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = quitting.changed() => return,
                }
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
            }
        }
    };
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = quitting.changed() => {
                client.close().await;
                return;
            }
        }
        let polled = client
            .monitor()
            .stats()
            .await
            .map_err(|e| format!("{e}; reconnecting"));
        if events.send(Event::Stats(polled)).is_err() {
            return;
        }
    }
}

/// Answers drill-down requests, one connection per fetch (they are rare).
async fn fetch_customers(
    config: ClientConfig,
    mut requests: UnboundedReceiver<String>,
    events: UnboundedSender<Event>,
) {
    while let Some(id) = requests.recv().await {
        let fetched = async {
            let client = Client::connect(config.clone()).await?;
            let fetched = async {
                let view = client.admin().get_customer(&id).await?;
                let invoices = client.admin().list_invoices(&id).await?;
                Ok::<_, tally_protocol::Error>((view, invoices))
            }
            .await;
            client.close().await;
            fetched
        };
        let result = fetched.await.map_err(|e| e.to_string());
        if events.send(Event::Customer(result)).is_err() {
            return;
        }
    }
}
