//! The console's state and its only mutation, [`App::update`]. Everything the screen shows is
//! here; network trouble is a state (`Link::Disconnected`), not an error.

use std::collections::{BTreeMap, VecDeque};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use tally_protocol::message::{CustomerView, InvoiceView, StatsSnapshot};

/// Samples of throughput kept per operation for the sparklines.
pub const HISTORY_SAMPLES: usize = 120;

/// Everything that can happen to the console.
#[derive(Debug, Clone)]
pub enum Event {
    /// A key was pressed.
    Key(KeyEvent),
    /// A stats poll answered (or failed, with why).
    Stats(Result<StatsSnapshot, String>),
    /// A drill-down fetch answered.
    Customer(Result<(CustomerView, Vec<InvoiceView>), String>),
    /// The terminal was resized (the next draw adapts).
    Resize,
}

/// What the event loop must do after an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Leave and restore the terminal.
    Quit,
    /// Fetch this customer for the drill-down.
    FetchCustomer(String),
}

/// Whether the daemon answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// No answer yet.
    Connecting,
    /// The last poll answered.
    Connected,
    /// The last poll failed; the poller keeps retrying.
    Disconnected(String),
}

/// A customer and its invoices, as the drill-down shows them.
pub type CustomerDetail = (CustomerView, Vec<InvoiceView>);

/// Which screen is shown.
#[derive(Debug, Clone, PartialEq)]
pub enum View {
    /// Throughput, latency, shards, top customers, money.
    Overview,
    /// One customer.
    Customer {
        /// Its id.
        id: String,
        /// What was fetched (`None` while loading).
        data: Option<Result<Box<CustomerDetail>, String>>,
    },
}

/// The console's state.
#[derive(Debug, Clone)]
pub struct App {
    /// Where the daemon is (for the title).
    pub target: String,
    /// Connection state.
    pub link: Link,
    /// The latest snapshot applied.
    pub stats: Option<StatsSnapshot>,
    /// Operations per second per operation, oldest first.
    pub throughput: BTreeMap<String, VecDeque<u64>>,
    /// Operations per second per shard, from the last two snapshots.
    pub shard_rates: Vec<u64>,
    /// The screen.
    pub view: View,
    /// Row selected in the top-customers table.
    pub selected: usize,
    /// The search box's text while searching.
    pub search: Option<String>,
    /// Whether the help overlay is shown.
    pub show_help: bool,
    /// Whether new snapshots are ignored.
    pub is_paused: bool,
}

impl App {
    /// A console for the daemon at `target`.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            link: Link::Connecting,
            stats: None,
            throughput: BTreeMap::new(),
            shard_rates: Vec::new(),
            view: View::Overview,
            selected: 0,
            search: None,
            show_help: false,
            is_paused: false,
        }
    }

    /// Applies one event; the only way the state changes.
    pub fn update(&mut self, event: Event) -> Action {
        match event {
            Event::Key(key) => self.on_key(key),
            Event::Stats(Ok(snapshot)) => {
                self.link = Link::Connected;
                if !self.is_paused {
                    self.apply(snapshot);
                }
                Action::None
            }
            Event::Stats(Err(reason)) => {
                self.link = Link::Disconnected(reason);
                Action::None
            }
            Event::Customer(result) => {
                if let View::Customer { data, .. } = &mut self.view {
                    *data = Some(result.map(Box::new));
                }
                Action::None
            }
            Event::Resize => Action::None,
        }
    }

    fn apply(&mut self, snapshot: StatsSnapshot) {
        if let Some(previous) = &self.stats {
            let seconds =
                (snapshot.uptime_ms.saturating_sub(previous.uptime_ms) as f64 / 1_000.0).max(0.001);
            for op in &snapshot.operations {
                let before = previous
                    .operations
                    .iter()
                    .find(|p| p.operation == op.operation)
                    .map_or(0, |p| p.count);
                let rate = (op.count.saturating_sub(before) as f64 / seconds).round() as u64;
                let history = self.throughput.entry(op.operation.clone()).or_default();
                history.push_back(rate);
                if history.len() > HISTORY_SAMPLES {
                    history.pop_front();
                }
            }
            self.shard_rates = snapshot
                .shards
                .iter()
                .map(|shard| {
                    let before = previous
                        .shards
                        .iter()
                        .find(|p| p.shard == shard.shard)
                        .map_or(0, |p| p.handled);
                    (shard.handled.saturating_sub(before) as f64 / seconds).round() as u64
                })
                .collect();
        }
        self.selected = self
            .selected
            .min(self.top_customers().len().saturating_sub(1));
        self.stats = Some(snapshot);
    }

    /// The current ops/s of an operation (0 before two snapshots).
    pub fn rate(&self, operation: &str) -> u64 {
        self.throughput
            .get(operation)
            .and_then(|h| h.back().copied())
            .unwrap_or(0)
    }

    /// Customer ids in the top-customers table, in display order.
    pub fn top_customers(&self) -> Vec<String> {
        self.stats
            .as_ref()
            .map(|s| s.top_by_usage.iter().map(|c| c.customer.clone()).collect())
            .unwrap_or_default()
    }

    fn on_key(&mut self, key: KeyEvent) -> Action {
        let is_ctrl_c =
            key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
        if is_ctrl_c {
            return Action::Quit;
        }
        if let Some(search) = &mut self.search {
            match key.code {
                KeyCode::Esc => self.search = None,
                KeyCode::Enter => {
                    let id = search.trim().to_string();
                    self.search = None;
                    if !id.is_empty() {
                        return self.open_customer(id);
                    }
                }
                KeyCode::Backspace => {
                    search.pop();
                }
                KeyCode::Char(c) if search.len() < 128 => search.push(c),
                _ => {}
            }
            return Action::None;
        }
        if self.show_help {
            self.show_help = false;
            return if key.code == KeyCode::Char('q') {
                Action::Quit
            } else {
                Action::None
            };
        }
        match key.code {
            KeyCode::Char('q') => Action::Quit,
            KeyCode::Char('?') => {
                self.show_help = true;
                Action::None
            }
            KeyCode::Char('p') => {
                self.is_paused = !self.is_paused;
                Action::None
            }
            KeyCode::Char('/') => {
                self.search = Some(String::new());
                Action::None
            }
            KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => {
                self.view = View::Overview;
                Action::None
            }
            KeyCode::Char('r') => match &self.view {
                View::Customer { id, .. } => self.open_customer(id.clone()),
                View::Overview => Action::None,
            },
            KeyCode::Up | KeyCode::Char('k') => {
                self.selected = self.selected.saturating_sub(1);
                Action::None
            }
            KeyCode::Down | KeyCode::Char('j') => {
                let last = self.top_customers().len().saturating_sub(1);
                self.selected = (self.selected + 1).min(last);
                Action::None
            }
            KeyCode::Enter | KeyCode::Right => {
                match (&self.view, self.top_customers().get(self.selected)) {
                    (View::Overview, Some(id)) => self.open_customer(id.clone()),
                    _ => Action::None,
                }
            }
            _ => Action::None,
        }
    }

    fn open_customer(&mut self, id: String) -> Action {
        self.view = View::Customer {
            id: id.clone(),
            data: None,
        };
        Action::FetchCustomer(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_protocol::message::{OperationStats, TopCustomer};

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn snapshot(uptime_ms: u64, checks: u64) -> StatsSnapshot {
        StatsSnapshot {
            uptime_ms,
            operations: vec![OperationStats {
                operation: "check".into(),
                count: checks,
                ..OperationStats::default()
            }],
            top_by_usage: vec![
                TopCustomer {
                    customer: "acme".into(),
                    units: 10,
                    spend_units: 0,
                },
                TopCustomer {
                    customer: "zed".into(),
                    units: 5,
                    spend_units: 0,
                },
            ],
            ..StatsSnapshot::default()
        }
    }

    #[test]
    fn rates_come_from_count_deltas_and_pause_freezes_them() {
        let mut app = App::new("daemon");
        app.update(Event::Stats(Ok(snapshot(1_000, 100))));
        app.update(Event::Stats(Ok(snapshot(2_000, 600))));
        assert_eq!(app.rate("check"), 500);
        app.update(key(KeyCode::Char('p')));
        app.update(Event::Stats(Ok(snapshot(3_000, 5_600))));
        assert_eq!(app.rate("check"), 500, "paused");
        assert_eq!(app.link, Link::Connected);
    }

    #[test]
    fn a_failed_poll_is_a_state_and_the_last_data_stays() {
        let mut app = App::new("daemon");
        app.update(Event::Stats(Ok(snapshot(1_000, 1))));
        app.update(Event::Stats(Err("connection refused".into())));
        assert_eq!(app.link, Link::Disconnected("connection refused".into()));
        assert!(app.stats.is_some());
    }

    #[test]
    fn selecting_and_searching_open_the_drill_down() {
        let mut app = App::new("daemon");
        app.update(Event::Stats(Ok(snapshot(1_000, 1))));
        app.update(key(KeyCode::Down));
        assert_eq!(
            app.update(key(KeyCode::Enter)),
            Action::FetchCustomer("zed".into())
        );
        app.update(key(KeyCode::Esc));
        assert_eq!(app.view, View::Overview);
        app.update(key(KeyCode::Char('/')));
        for c in "pics".chars() {
            app.update(key(KeyCode::Char(c)));
        }
        assert_eq!(
            app.update(key(KeyCode::Enter)),
            Action::FetchCustomer("pics".into())
        );
        assert_eq!(app.update(key(KeyCode::Char('q'))), Action::Quit);
    }
}
