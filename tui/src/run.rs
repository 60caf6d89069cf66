//! Runs one command: find the daemon, connect, call, and turn the answer into [`Output`].

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rust_decimal::Decimal;
use tally_protocol::message::{
    IdempotencyKey, ReportItem, TopUpAmount, WatchRequest, WebhookAnswer, WebhookCommand,
    RATE_UNITS_PER_DOLLAR,
};
use tally_protocol::{Client, ClientConfig};

use std::collections::BTreeMap;

use tally_protocol::message::InvoiceView;

use crate::billing_output::{self, InvoiceCheck};
use crate::cli::{Cli, Command, CustomerCommand, ModelsAction, WebhooksAction};
use crate::discovery::{discover, Overrides};
use crate::output::{self, Output};

/// What the global flags say about where to connect.
pub fn overrides(cli: &Cli) -> Overrides {
    Overrides {
        config: cli.config.clone(),
        addr: cli.addr,
        api_key: cli.api_key.clone(),
        ca_cert: cli.ca_cert.clone(),
    }
}

/// Runs `tally top` (outside any async runtime: the console owns its own).
pub fn run_top(cli: &Cli, interval: &str) -> anyhow::Result<()> {
    let interval = parse_ttl(interval)?.max(Duration::from_millis(100));
    let target = discover(&overrides(cli))?;
    crate::console::run::run_console(target, interval)
}

/// `tally watch`: one line per alert as it is committed, until interrupted (or an error).
async fn watch(
    client: &Client,
    customer: Option<String>,
    events: Vec<String>,
    json: bool,
) -> anyhow::Result<Output> {
    let filter = WatchRequest {
        customer,
        events,
        ..WatchRequest::default()
    };
    let mut subscription = client.events().subscribe(filter);
    loop {
        let alert = subscription.next().await?;
        if json {
            let data: serde_json::Value =
                serde_json::from_str(&alert.data).unwrap_or(serde_json::Value::Null);
            println!(
                "{}",
                serde_json::json!({
                    "id": alert.id, "event": alert.event, "customer": alert.customer,
                    "at": output::timestamp(alert.at_ms), "data": data,
                })
            );
        } else {
            println!(
                "{} {} {} {}",
                output::timestamp(alert.at_ms),
                alert.event,
                alert.customer,
                alert.data
            );
        }
    }
}

/// Runs a one-shot command.
pub async fn run(cli: Cli) -> anyhow::Result<Output> {
    let overrides = overrides(&cli);
    let target = discover(&overrides)?;
    let client = Client::connect(ClientConfig::new(
        target.addr,
        target.ca_pem,
        target.api_key,
    ))
    .await
    .with_context(|| format!("connecting to tallyd at {}", target.addr))?;
    if let Command::Watch { customer, events } = cli.command {
        return watch(&client, customer, events, cli.json).await;
    }
    let output = execute(&client, cli.command).await;
    // The daemon frees this connection's slot as soon as the close reaches it, rather than
    // after its idle timeout.
    client.close().await;
    output
}

async fn execute(client: &Client, command: Command) -> anyhow::Result<Output> {
    if let Command::Check { tokens, .. }
    | Command::Report { tokens, .. }
    | Command::Reserve { tokens, .. } = &command
    {
        if tokens.output_alone().is_some() {
            bail!("--output needs --model here (only `tally settle` takes it alone)");
        }
    }
    match command {
        Command::Top { .. } => bail!("`tally top` runs its own event loop; see run_top"),
        Command::Watch { .. } => bail!("`tally watch` follows alerts until interrupted; see watch"),
        Command::Customer(CustomerCommand::Create { customer, plan }) => Ok(output::customer(
            &client.admin().create_customer(&customer, &plan).await?,
        )),
        Command::Customer(CustomerCommand::Show { customer }) => Ok(output::customer(
            &client.admin().get_customer(&customer).await?,
        )),
        Command::Customer(CustomerCommand::ChangePlan { customer, plan }) => Ok(output::customer(
            &client.admin().change_plan(&customer, &plan).await?,
        )),
        Command::TopUp(args) => {
            let amount = match (args.packs, args.amount.as_deref()) {
                (Some(packs), None) => TopUpAmount::Packs(packs),
                (None, Some(dollars)) => TopUpAmount::Units(parse_dollars(dollars)?),
                _ => bail!("give either --packs or --amount"),
            };
            let key = args.idempotency_key.as_deref().map(parse_key).transpose()?;
            Ok(output::top_up(
                &client.admin().top_up(&args.customer, amount, key).await?,
            ))
        }
        Command::Check {
            customer,
            feature,
            amount,
            tokens,
        } => {
            let entitlements = client.entitlements();
            match tokens.usage() {
                Some(usage) => {
                    let outcome = entitlements
                        .check_tokens(&customer, &feature, usage.clone())
                        .await?;
                    let out = output::check(&customer, &feature, 0, &outcome);
                    Ok(output::with_tokens(out, &usage, None))
                }
                None => {
                    let outcome = entitlements.check(&customer, &feature, amount).await?;
                    Ok(output::check(&customer, &feature, amount, &outcome))
                }
            }
        }
        Command::Report {
            customer,
            feature,
            amount,
            idempotency_key,
            only_if_allowed,
            tokens,
        } => {
            let mut item = match tokens.usage() {
                Some(usage) => ReportItem::tokens(customer.clone(), feature.clone(), usage),
                None => ReportItem::new(customer.clone(), feature.clone(), amount.unwrap_or(0)),
            };
            if let Some(key) = idempotency_key.as_deref() {
                item = item.with_idempotency_key(parse_key(key)?);
            }
            if only_if_allowed {
                item = item.only_if_allowed();
            }
            let model = item.model.clone();
            let outcome = client.usage().report(item).await?;
            let out = output::report(Some(&customer), Some(&feature), &outcome);
            Ok(match model {
                Some(usage) => output::with_tokens(out, &usage, Some(outcome.amount)),
                None => out,
            })
        }
        Command::Reserve {
            customer,
            feature,
            amount,
            ttl,
            tokens,
        } => {
            let ttl = parse_ttl(&ttl)?;
            let holds = client.holds();
            let outcome = match tokens.usage() {
                Some(usage) => {
                    holds
                        .reserve_tokens(&customer, &feature, usage, ttl)
                        .await?
                }
                None => {
                    holds
                        .reserve(&customer, &feature, amount.unwrap_or(0), ttl)
                        .await?
                }
            };
            Ok(output::reserve(&outcome))
        }
        Command::Settle {
            hold,
            actual,
            idempotency_key,
            tokens,
        } => {
            let hold = parse_hold(&hold)?;
            let key = idempotency_key.as_deref().map(parse_key).transpose()?;
            let usage = tokens.usage();
            let outcome = match (&usage, tokens.output_alone()) {
                (Some(usage), _) => {
                    client
                        .holds()
                        .settle_tokens(hold, usage.clone(), key)
                        .await?
                }
                (None, Some(output)) => client.holds().settle_output(hold, output, key).await?,
                (None, None) => {
                    client
                        .holds()
                        .settle(hold, actual.unwrap_or(0), key)
                        .await?
                }
            };
            let out = output::report(None, None, &outcome);
            let mut out = match &usage {
                Some(usage) => output::with_tokens(out, usage, Some(outcome.amount)),
                None => out,
            };
            out.json["hold"] = output::hold_id(hold).into();
            Ok(out)
        }
        Command::Progress { hold, output } => {
            let hold = parse_hold(&hold)?;
            Ok(output::progress(
                hold,
                output,
                &client.holds().progress(hold, output).await?,
            ))
        }
        Command::Models {
            action: ModelsAction::Reload,
        } => Ok(output::models_reloaded(
            &client.admin().reload_models().await?,
        )),
        Command::Webhooks { action } => {
            let command = match action {
                WebhooksAction::List => WebhookCommand::List,
                WebhooksAction::Add { url, events } => WebhookCommand::Add { url, events },
                WebhooksAction::Remove { id } => WebhookCommand::Remove { id },
                WebhooksAction::Test { id } => WebhookCommand::Test { id },
                WebhooksAction::Failed { id } => WebhookCommand::Failed { id },
                WebhooksAction::Redeliver { id } => WebhookCommand::Redeliver { id },
            };
            let answer = client.admin().webhooks(command).await?;
            let stats = match answer {
                WebhookAnswer::Endpoints(_) => client.monitor().stats().await?.webhooks,
                _ => Vec::new(),
            };
            Ok(output::webhooks(&answer, &stats))
        }
        Command::Release { hold } => {
            let hold = parse_hold(&hold)?;
            Ok(output::release(hold, &client.holds().release(hold).await?))
        }
        Command::Invoices { customer, csv } => {
            let invoices = client.admin().list_invoices(&customer).await?;
            let mut out = billing_output::invoices(&customer, &invoices);
            if csv {
                out.human = billing_output::invoices_csv(&invoices)
                    .trim_end()
                    .to_string();
            }
            Ok(out)
        }
        Command::Transactions { customer } => {
            let transactions = client.admin().list_transactions(&customer).await?;
            Ok(billing_output::transactions(&customer, &transactions))
        }
        Command::Events { customer, from, to } => {
            let from_ms = from.as_deref().map(parse_time).transpose()?.unwrap_or(0);
            let to_ms = to
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(u64::MAX);
            let list = client
                .admin()
                .list_events(&customer, from_ms, to_ms)
                .await?;
            Ok(billing_output::events(&customer, &list))
        }
        Command::ClosePeriod { customer } => Ok(billing_output::closed(
            &client.admin().close_period(&customer).await?,
        )),
        Command::Reconcile { customer } => {
            let mut checks = Vec::new();
            for invoice in client.admin().list_invoices(&customer).await? {
                checks.push(reconcile(client, invoice).await?);
            }
            let out = billing_output::reconciliation(&customer, &checks);
            if checks.iter().all(InvoiceCheck::is_reconciled) {
                Ok(out)
            } else {
                bail!("{}", out.human.replace('\n', "; "))
            }
        }
    }
}

/// Gathers the invoice period's stored events per feature, page by page, to set beside each
/// invoice line: units and money, to the rate unit.
pub async fn reconcile(client: &Client, invoice: InvoiceView) -> anyhow::Result<InvoiceCheck> {
    let mut events: BTreeMap<String, Vec<(u64, i64)>> = BTreeMap::new();
    let mut from = (invoice.period_start_ms, 0);
    loop {
        let page = client
            .admin()
            .list_events_from(&invoice.customer, from, invoice.period_end_ms)
            .await?;
        for event in &page.events {
            events
                .entry(event.feature.clone())
                .or_default()
                .push((event.amount, event.charged));
        }
        match (page.more, page.events.last()) {
            (true, Some(last)) => from = (last.at_ms, last.seq + 1),
            _ => break,
        }
    }
    Ok(InvoiceCheck::new(invoice, &events))
}

/// RFC 3339 (`2027-01-15T00:00:00Z`) or milliseconds since the epoch.
pub fn parse_time(text: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
        anyhow!(
            "`{text}` is not a time; write 2027-01-15T00:00:00Z or milliseconds since the epoch"
        )
    })?;
    u64::try_from(time.timestamp_millis()).map_err(|_| anyhow!("`{text}` is before 1970"))
}

/// `50.00` → 500000 rate units; refuses anything finer than $0.0001 or not positive.
pub fn parse_dollars(text: &str) -> anyhow::Result<i64> {
    let value: Decimal = text
        .trim()
        .trim_start_matches('$')
        .parse()
        .map_err(|_| anyhow!("`{text}` is not a dollar amount"))?;
    let units = value * Decimal::from(RATE_UNITS_PER_DOLLAR);
    if !units.fract().is_zero() {
        bail!("`{text}` is finer than $0.0001");
    }
    let units: i64 = units
        .try_into()
        .map_err(|_| anyhow!("`{text}` is too large"))?;
    if units <= 0 {
        bail!("`{text}` is not allowed; a top-up is a positive dollar amount in whole cents, e.g. 10.00");
    }
    Ok(units)
}

/// 32 hex digits → a 16-byte idempotency key.
pub fn parse_key(text: &str) -> anyhow::Result<IdempotencyKey> {
    let mut key = [0u8; 16];
    hex::decode_to_slice(text, &mut key)
        .map_err(|_| anyhow!("idempotency key `{text}` must be 32 hex digits"))?;
    Ok(key)
}

/// A hold id as printed by `tally reserve` (16 hex digits, `0x` optional).
pub fn parse_hold(text: &str) -> anyhow::Result<u64> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .map_err(|_| anyhow!("hold `{text}` must be the hex id that `tally reserve` printed"))
}

/// `500ms`, `30s`, `5m`, `1h`.
pub fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let count: u64 = text[..digits]
        .parse()
        .map_err(|_| anyhow!("ttl `{text}` must look like 30s, 5m or 1h"))?;
    let ms = match text[digits..].trim() {
        "ms" => 1,
        "s" | "" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => bail!("ttl `{text}` must look like 30s, 5m or 1h"),
    };
    Ok(Duration::from_millis(count.saturating_mul(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_values_parse_exactly_or_explain_themselves() {
        assert_eq!(parse_dollars("50.00").unwrap(), 500_000);
        assert_eq!(parse_dollars("$0.0001").unwrap(), 1);
        assert!(parse_dollars("0.00001")
            .unwrap_err()
            .to_string()
            .contains("finer"));
        assert!(parse_dollars("-5").is_err());
        assert_eq!(parse_key(&"ab".repeat(16)).unwrap(), [0xab; 16]);
        assert!(parse_key("abc").is_err());
        assert_eq!(parse_hold("00000000000000ff").unwrap(), 255);
        assert_eq!(parse_ttl("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_ttl("5m").unwrap(), Duration::from_secs(300));
        assert!(parse_ttl("soon").is_err());
    }
}
