//! Drawing: a pure function of [`App`]. Overview (throughput, latency, shards, top customers,
//! money, recent invoices) and the customer drill-down, laid out to fit 80×24 and to use more
//! room when there is more.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;
use tally_protocol::message::{Model, StatsSnapshot};

use super::app::{App, CustomerDetail, Link, View};
use crate::output::{dollars, hold_id, timestamp};

/// Money as the console prints it everywhere: dollars with cents, and four places when there
/// is a fraction of a cent (rate units are 1/100 of a cent).
fn money(units: i64) -> String {
    let mut text = dollars(units);
    if let Some((_, fraction)) = text.split_once('.') {
        if fraction.len() > 2 {
            text.push_str(&"0".repeat(4 - fraction.len()));
        }
    }
    format!("${text}")
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &App) {
    let [title, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_title(frame, title, app);
    match &app.view {
        View::Overview => draw_overview(frame, body, app),
        View::Customer { id, data } => draw_customer(frame, body, id, data.as_ref()),
    }
    draw_footer(frame, footer, app);
    if app.show_help {
        draw_help(frame, frame.area());
    }
}

fn draw_title(frame: &mut Frame, area: Rect, app: &App) {
    let (state, color) = match &app.link {
        Link::Connecting => ("connecting".to_string(), Color::Yellow),
        Link::Connected if app.is_paused => ("paused".to_string(), Color::Yellow),
        Link::Connected => ("live".to_string(), Color::Green),
        Link::Disconnected(_) => ("disconnected, retrying".to_string(), Color::Red),
    };
    let mut spans = vec![
        Span::styled(" tally top ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{} ", app.target)),
        Span::styled(format!("[{state}]"), Style::new().fg(color)),
    ];
    if let Some(stats) = &app.stats {
        spans.push(Span::raw(format!(
            "  up {}  conns {}  store {}",
            duration(stats.uptime_ms),
            stats.connections,
            bytes(stats.storage_bytes)
        )));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let text = match (&app.search, &app.link) {
        (Some(search), _) => format!(" customer id: {search}▏ (enter open · esc cancel)"),
        (None, Link::Disconnected(reason)) => format!(" {reason}"),
        (None, _) => {
            " q quit · ? help · p pause · / find customer · ↑↓ select · enter open · esc back"
                .into()
        }
    };
    frame.render_widget(
        Paragraph::new(text).style(Style::new().fg(Color::DarkGray)),
        area,
    );
}

fn draw_overview(frame: &mut Frame, area: Rect, app: &App) {
    let Some(stats) = &app.stats else {
        let text = match &app.link {
            Link::Disconnected(reason) => format!("waiting for the daemon: {reason}"),
            _ => "waiting for the first stats…".into(),
        };
        frame.render_widget(Paragraph::new(text).block(Block::bordered()), area);
        return;
    };
    let is_tall = area.height >= 36;
    let has_alerts = is_tall && area.height >= 44 && !stats.recent_alerts.is_empty();
    let [top, latency, bottom, recent, alerts] = Layout::vertical([
        Constraint::Length(if is_tall { 9 } else { 6 }),
        Constraint::Length(stats.operations.len().clamp(1, 8) as u16 + 3),
        Constraint::Min(6),
        Constraint::Length(if is_tall { 9 } else { 0 }),
        Constraint::Length(if has_alerts { 7 } else { 0 }),
    ])
    .areas(area);
    let [throughput, money] =
        Layout::horizontal([Constraint::Min(30), Constraint::Length(30)]).areas(top);
    draw_throughput(frame, throughput, app, stats);
    draw_money(frame, money, stats);
    draw_latency(frame, latency, app, stats);
    let [shards, customers] =
        Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(bottom);
    draw_shards(frame, shards, app, stats);
    draw_top_customers(frame, customers, app, stats);
    if is_tall {
        draw_recent(frame, recent, stats);
    }
    if has_alerts {
        draw_alerts(frame, alerts, stats);
    }
}

/// The latest crossings and other alerts, newest first.
fn draw_alerts(frame: &mut Frame, area: Rect, stats: &StatsSnapshot) {
    let rows = stats.recent_alerts.iter().map(|a| {
        Row::new([
            timestamp(a.at_ms)[11..19].to_string(),
            a.event.clone(),
            a.customer.clone(),
            a.data.clone(),
        ])
    });
    let widths = [
        Constraint::Length(9),
        Constraint::Length(24),
        Constraint::Length(16),
        Constraint::Min(10),
    ];
    let header = Row::new(["time", "alert", "customer", "data"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" alerts ")),
        area,
    );
}

fn draw_throughput(frame: &mut Frame, area: Rect, app: &App, stats: &StatsSnapshot) {
    let block = Block::bordered().title(" throughput (ops/s) ");
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let busiest: Vec<&str> = {
        let mut ops: Vec<&str> = stats
            .operations
            .iter()
            .map(|o| o.operation.as_str())
            .collect();
        ops.sort_by_key(|op| std::cmp::Reverse(app.rate(op)));
        ops.into_iter().take(inner.height as usize).collect()
    };
    let rows = Layout::vertical(vec![Constraint::Length(1); busiest.len()]).split(inner);
    for (op, row) in busiest.iter().zip(rows.iter()) {
        let [label, spark] =
            Layout::horizontal([Constraint::Length(22), Constraint::Min(0)]).areas(*row);
        let text = format!("{:<13}{:>8}", op, app.rate(op));
        frame.render_widget(Paragraph::new(text), label);
        let history: Vec<u64> = app
            .throughput
            .get(*op)
            .map(|h| {
                h.iter()
                    .rev()
                    .take(spark.width as usize)
                    .rev()
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        frame.render_widget(
            Sparkline::default()
                .data(history)
                .style(Style::new().fg(Color::Cyan)),
            spark,
        );
    }
}

fn draw_money(frame: &mut Frame, area: Rect, stats: &StatsSnapshot) {
    let r = &stats.revenue;
    let checks = stats.checks_allowed + stats.checks_denied;
    let denied_percent = if checks == 0 {
        0.0
    } else {
        stats.checks_denied as f64 * 100.0 / checks as f64
    };
    let lines = vec![
        Line::from(format!("gross  {:>15}", money(r.gross_units))),
        Line::from(format!("fee    {:>15}", money(r.fee_units))),
        Line::from(format!("net    {:>15}", money(r.net_units))),
        Line::from(format!("denied {denied_percent:.1}% of {checks} checks")),
        Line::from(format!(
            "{} invoices, {} transactions",
            r.invoices, r.transactions
        )),
        Line::from(format!(
            "checks {} ok / {} denied",
            stats.checks_allowed, stats.checks_denied
        )),
    ];
    let title = format!(" money since {} ", &timestamp(r.month_start_ms)[..7]);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn draw_latency(frame: &mut Frame, area: Rect, app: &App, stats: &StatsSnapshot) {
    let header = Row::new([
        "operation",
        "ops/s",
        "count",
        "err",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = stats.operations.iter().map(|op| {
        // The last interval when it has samples, else everything since start.
        let l = if op.recent.count > 0 {
            op.recent
        } else {
            op.latency
        };
        Row::new([
            op.operation.clone(),
            app.rate(&op.operation).to_string(),
            op.count.to_string(),
            op.errors.to_string(),
            micros(l.p50_us),
            micros(l.p90_us),
            micros(l.p99_us),
            micros(l.p999_us),
            micros(l.max_us),
        ])
    });
    let widths = [
        Constraint::Length(17),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(" latency (server side) "));
    frame.render_widget(table, area);
}

fn draw_shards(frame: &mut Frame, area: Rect, app: &App, stats: &StatsSnapshot) {
    let header = Row::new(["shard", "customers", "queue", "ops/s"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = stats.shards.iter().enumerate().map(|(i, s)| {
        Row::new([
            s.shard.to_string(),
            s.customers.to_string(),
            s.mailbox_depth.to_string(),
            app.shard_rates.get(i).copied().unwrap_or(0).to_string(),
        ])
    });
    let widths = [
        Constraint::Length(5),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" shards ")),
        area,
    );
}

fn draw_top_customers(frame: &mut Frame, area: Rect, app: &App, stats: &StatsSnapshot) {
    let header =
        Row::new(["customer", "units", "spend"]).style(Style::new().add_modifier(Modifier::BOLD));
    let rows = stats.top_by_usage.iter().map(|c| {
        Row::new([
            c.customer.clone(),
            c.units.to_string(),
            money(c.spend_units),
        ])
    });
    let widths = [
        Constraint::Min(12),
        Constraint::Length(12),
        Constraint::Length(12),
    ];
    let title = format!(" top customers, last {}s ", stats.interval_ms / 1_000);
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("› ");
    let mut state = TableState::default()
        .with_selected((!stats.top_by_usage.is_empty()).then_some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_recent(frame: &mut Frame, area: Rect, stats: &StatsSnapshot) {
    let [invoices, transactions] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let rows = stats.recent_invoices.iter().map(|i| {
        Row::new([
            i.customer.clone(),
            format!("#{}", i.number),
            timestamp(i.period_end_ms)[..10].to_string(),
            money(i.total_units),
            money(i.net_units),
        ])
    });
    let widths = [
        Constraint::Min(10),
        Constraint::Length(5),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(11),
    ];
    let header = Row::new(["customer", "#", "period end", "total", "net"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" recent invoices ")),
        invoices,
    );
    let rows = stats.recent_transactions.iter().map(|t| {
        Row::new([
            t.customer.clone(),
            timestamp(t.at_ms)[11..19].to_string(),
            money(t.total_units),
            money(t.fee_units),
        ])
    });
    let widths = [
        Constraint::Min(10),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(8),
    ];
    let header = Row::new(["customer", "at", "total", "fee"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" recent transactions ")),
        transactions,
    );
}

fn draw_customer(
    frame: &mut Frame,
    area: Rect,
    id: &str,
    data: Option<&Result<Box<CustomerDetail>, String>>,
) {
    let (view, invoices) = match data {
        None => {
            frame.render_widget(
                Paragraph::new(format!("loading {id}…")).block(Block::bordered()),
                area,
            );
            return;
        }
        Some(Err(reason)) => {
            let text = format!("{id}: {reason}\n\nesc to go back");
            frame.render_widget(
                Paragraph::new(text).block(Block::bordered().title(" customer ")),
                area,
            );
            return;
        }
        Some(Ok(fetched)) => (&fetched.0, &fetched.1),
    };
    let usage_rows = view.usage.len() as u16 + 3;
    let model_rows = if view.models.is_empty() {
        0
    } else {
        view.models.len().min(6) as u16 + 3
    };
    let [summary, usage, models, holds, history] = Layout::vertical([
        Constraint::Length(5),
        Constraint::Length(usage_rows),
        Constraint::Length(model_rows),
        Constraint::Length(view.holds.len().clamp(1, 6) as u16 + 3),
        Constraint::Min(4),
    ])
    .areas(area);
    let standing = match view.model {
        Model::Metered => "metered: usage past included is invoiced at period end".to_string(),
        Model::Credits => format!(
            "credits {} available ({} granted, {} purchased)",
            view.granted_credits + view.purchased_credits
                - view.holds.iter().map(|h| h.held).sum::<i64>(),
            view.granted_credits,
            view.purchased_credits
        ),
        Model::Balance => format!("balance {}", money(view.balance_units)),
    };
    let lines = vec![
        Line::from(vec![
            Span::styled(
                view.customer.clone(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!("  plan {}  seq {}", view.plan, view.seq)),
        ]),
        Line::from(format!(
            "period {} → {}",
            timestamp(view.period_start_ms),
            timestamp(view.period_end_ms)
        )),
        Line::from(standing),
    ];
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" customer ")),
        summary,
    );

    let rows = view.usage.iter().map(|u| {
        let share = if view.model == Model::Metered && u.included > 0 {
            format!("{:.1}%", u.used as f64 * 100.0 / u.included as f64)
        } else {
            "-".into()
        };
        Row::new([
            u.feature.clone(),
            u.used.to_string(),
            u.included.to_string(),
            share,
        ])
    });
    let header = Row::new(["feature", "used", "included", "of included"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Min(14),
        Constraint::Length(14),
        Constraint::Length(12),
        Constraint::Length(12),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" usage this period ")),
        usage,
    );

    if !view.models.is_empty() {
        let charged = |units: i64| match view.model {
            Model::Credits => format!("{units} credits"),
            Model::Metered | Model::Balance => money(units),
        };
        let rows = view.models.iter().map(|m| {
            Row::new([
                format!("{} · {}", m.feature, m.model),
                m.requests.to_string(),
                m.input_tokens.to_string(),
                m.output_tokens.to_string(),
                (m.cache_read_tokens + m.cache_write_tokens).to_string(),
                charged(m.charged),
            ])
        });
        let header = Row::new(["model", "requests", "input", "output", "cache", "spend"])
            .style(Style::new().add_modifier(Modifier::BOLD));
        let widths = [
            Constraint::Min(16),
            Constraint::Length(9),
            Constraint::Length(11),
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Length(12),
        ];
        frame.render_widget(
            Table::new(rows, widths)
                .header(header)
                .block(Block::bordered().title(" spend per model this period ")),
            models,
        );
    }

    let rows = view.holds.iter().map(|h| {
        Row::new([
            hold_id(h.hold),
            h.feature.clone(),
            h.amount.to_string(),
            h.held.to_string(),
            timestamp(h.expires_at_ms),
        ])
    });
    let header = Row::new(["hold", "feature", "amount", "held", "expires"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(17),
        Constraint::Min(10),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(25),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(format!(" holds ({}) ", view.holds.len()))),
        holds,
    );

    let rows = invoices.iter().rev().map(|i| {
        Row::new([
            format!("#{}", i.number),
            timestamp(i.period_start_ms)[..10].to_string(),
            timestamp(i.period_end_ms)[..10].to_string(),
            money(i.total_units),
            money(i.fee_units),
            money(i.net_units),
        ])
    });
    let header = Row::new(["#", "from", "to", "total", "fee", "net"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(5),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(12),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header)
            .block(Block::bordered().title(" last invoices ")),
        history,
    );
}

fn draw_help(frame: &mut Frame, area: Rect) {
    let lines = [
        "q, ctrl-c   quit",
        "?           this help (any key closes it)",
        "p           pause / resume updates",
        "/           find a customer by id",
        "↑↓ or k j   select a top customer",
        "enter, →    open the selected customer",
        "esc, ←      back to the overview",
        "r           refresh the customer",
    ];
    let width = 48.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    let text: Vec<Line> = lines.iter().map(|l| Line::from(*l)).collect();
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(" keys ")),
        popup,
    );
}

fn micros(us: u64) -> String {
    match us {
        0 => "-".into(),
        us if us < 10_000 => format!("{us}µs"),
        us if us < 10_000_000 => format!("{}ms", us / 1_000),
        us => format!("{}s", us / 1_000_000),
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1 << 20 => format!("{} KiB", n >> 10),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / f64::from(1 << 20)),
        n => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
    }
}

fn duration(ms: u64) -> String {
    let s = ms / 1_000;
    match s {
        s if s < 3_600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::app::Event;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    use tally_protocol::message::*;

    fn latency(p50_us: u64) -> LatencySummary {
        LatencySummary {
            count: 1_000,
            p50_us,
            p90_us: p50_us + 10,
            p99_us: p50_us * 2,
            p999_us: p50_us * 3,
            max_us: 4_321,
        }
    }

    fn snapshot(uptime_ms: u64, reports: u64, checks: u64) -> StatsSnapshot {
        let invoice = InvoiceView {
            customer: "acme".into(),
            number: 1,
            plan: "pro".into(),
            model: Model::Metered,
            period_start_ms: 1_800_000_000_000,
            period_end_ms: 1_802_678_400_000,
            closed_at_ms: 1_802_678_400_000,
            reason: CloseReason::Scheduled,
            lines: vec![],
            models: vec![],
            total_units: 1_090_000,
            fee_units: 53_100,
            net_units: 1_036_900,
        };
        StatsSnapshot {
            at_ms: 1_802_678_400_000,
            uptime_ms,
            operations: vec![
                OperationStats {
                    operation: "check".into(),
                    count: checks,
                    errors: 0,
                    latency: latency(62),
                    recent: latency(61),
                },
                OperationStats {
                    operation: "report".into(),
                    count: reports,
                    errors: 3,
                    latency: latency(180),
                    recent: latency(175),
                },
            ],
            checks_allowed: checks - 40,
            checks_denied: 40,
            connections: 3,
            shards: vec![
                ShardStats {
                    shard: 0,
                    customers: 1_503,
                    mailbox_depth: 2,
                    handled: reports,
                },
                ShardStats {
                    shard: 1,
                    customers: 1_497,
                    mailbox_depth: 0,
                    handled: checks,
                },
            ],
            storage_bytes: 12 << 20,
            revenue: RevenueStats {
                month_start_ms: 1_801_267_200_000,
                gross_units: 1_190_000,
                fee_units: 61_600,
                net_units: 1_128_400,
                invoices: 1,
                transactions: 1,
            },
            top_by_usage: vec![
                TopCustomer {
                    customer: "acme".into(),
                    units: 130_000,
                    spend_units: 600_000,
                },
                TopCustomer {
                    customer: "pics".into(),
                    units: 480,
                    spend_units: 9_600,
                },
            ],
            top_by_spend: vec![],
            recent_invoices: vec![invoice],
            recent_transactions: vec![TransactionView {
                customer: "pics".into(),
                number: 1,
                kind: TransactionKind::CreditPurchase,
                at_ms: 1_802_000_000_000,
                quantity: 1,
                total_units: 100_000,
                fee_units: 8_500,
                net_units: 91_500,
            }],
            interval_ms: 5_000,
            models: vec![],
            webhooks: vec![],
            recent_alerts: vec![AlertView {
                id: "evt_0000000000000007".into(),
                number: 7,
                event: "balance.low".into(),
                customer: "acme".into(),
                at_ms: 1_802_678_400_000,
                data: r#"{"currentBalance":880}"#.into(),
            }],
        }
    }

    fn app() -> App {
        let mut app = App::new("127.0.0.1:7070");
        app.update(Event::Stats(Ok(snapshot(10_000, 1_000, 5_000))));
        app.update(Event::Stats(Ok(snapshot(11_000, 3_000, 25_000))));
        app
    }

    fn render(app: &App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        let buffer = terminal.backend().buffer();
        buffer
            .content()
            .chunks(width as usize)
            .map(|row| {
                row.iter()
                    .map(ratatui::buffer::Cell::symbol)
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn customer_view() -> (CustomerView, Vec<InvoiceView>) {
        let view = CustomerView {
            customer: "acme".into(),
            plan: "pro".into(),
            model: Model::Metered,
            seq: 42,
            period_start_ms: 1_802_678_400_000,
            period_end_ms: 1_805_097_600_000,
            usage: vec![FeatureUsage {
                feature: "tokens".into(),
                used: 25_000,
                included: 100_000,
            }],
            granted_credits: 0,
            purchased_credits: 0,
            balance_units: 0,
            holds: vec![HoldView {
                hold: 0xabc,
                feature: "tokens".into(),
                amount: 500,
                held: 500,
                expires_at_ms: 1_802_678_430_000,
            }],
            models: vec![],
        };
        (view, snapshot(0, 0, 100).recent_invoices)
    }

    #[test]
    fn the_overview_fits_80_by_24() {
        let screen = render(&app(), 80, 24);
        for expected in [
            "tally top",
            "[live]",
            "throughput",
            "check",
            "report",
            "latency",
            "p99.9",
            "shards",
            "1503",
            "acme",
            "130000",
            "119.00",
            "denied 0.2%",
            "q quit",
        ] {
            assert!(
                screen.contains(expected),
                "missing {expected:?} in\n{screen}"
            );
        }
        assert!(
            screen.contains("20000"),
            "checks/s from the count delta:\n{screen}"
        );
        assert!(
            screen.contains("62µs") || screen.contains("61µs"),
            "{screen}"
        );
    }

    #[test]
    fn the_overview_uses_160_by_48_for_recent_invoices_and_transactions() {
        let screen = render(&app(), 160, 48);
        for expected in [
            "recent invoices",
            "recent transactions",
            "$109.00",
            "$103.69",
            "$10.00",
            "$0.85",
            "pics",
            "12.0 MiB",
            "conns 3",
            "24960 ok / 40 denied",
            " alerts ",
            "balance.low",
            "currentBalance",
        ] {
            assert!(
                screen.contains(expected),
                "missing {expected:?} in\n{screen}"
            );
        }
        let small = render(&app(), 80, 24);
        assert!(!small.contains(" alerts "), "no room for alerts at 80x24");
    }

    #[test]
    fn the_drill_down_shows_usage_holds_and_invoices_at_both_sizes() {
        let mut app = app();
        app.update(Event::Key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Enter,
        )));
        app.update(Event::Customer(Ok(customer_view())));
        for (width, height) in [(80, 24), (160, 48)] {
            let screen = render(&app, width, height);
            for expected in [
                "acme",
                "plan pro",
                "seq 42",
                "tokens",
                "25000",
                "100000",
                "25.0%",
                "0000000000000abc",
                "#1",
                "$109.00",
            ] {
                assert!(
                    screen.contains(expected),
                    "missing {expected:?} at {width}x{height} in\n{screen}"
                );
            }
        }
    }

    #[test]
    fn the_drill_down_shows_spend_per_model_and_money_has_cents_or_four_places() {
        let mut app = app();
        app.update(Event::Key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Enter,
        )));
        let (mut view, invoices) = customer_view();
        view.model = Model::Balance;
        view.balance_units = 17_124_780;
        view.models = vec![ModelUsageLine {
            feature: "chat".into(),
            model: "gpt-4o".into(),
            requests: 3,
            input_tokens: 3_600,
            output_tokens: 1_050,
            cost_units: 195_000_000,
            charged: 234,
            ..ModelUsageLine::default()
        }];
        app.update(Event::Customer(Ok((view, invoices))));
        let screen = render(&app, 80, 30);
        for expected in ["chat · gpt-4o", "3600", "1050", "$0.0234", "$1712.4780"] {
            assert!(
                screen.contains(expected),
                "missing {expected:?} in\n{screen}"
            );
        }
        assert_eq!(money(490_000), "$49.00");
        assert_eq!(money(20), "$0.0020");
        assert_eq!(money(-15), "$-0.0015");
    }

    #[test]
    fn disconnection_and_help_are_drawn_over_the_last_data() {
        let mut app = app();
        app.update(Event::Stats(Err("connection refused; retrying".into())));
        app.update(Event::Key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char('?'),
        )));
        let screen = render(&app, 80, 24);
        assert!(screen.contains("disconnected, retrying"), "{screen}");
        assert!(screen.contains("connection refused"), "{screen}");
        assert!(screen.contains("pause / resume"), "{screen}");
        assert!(screen.contains("gross"), "the last data stays: {screen}");
    }
}
