//! The `tally` command line: one-shot admin and usage commands. These shapes are a contract that
//! users' scripts rely on; add flags, do not rename them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tally_protocol::message::{ModelUsage, AMOUNT_MAX, TOP_UP_PACKS_MAX};

/// Tally operator console and admin commands.
#[derive(Debug, Parser)]
#[command(name = "tally", version)]
pub struct Cli {
    /// Print one JSON object instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// API key (default: the development admin key the daemon created).
    #[arg(long, global = true, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Daemon address (default: the address the running daemon wrote, else config.toml's).
    #[arg(long, global = true, env = "TALLY_ADDR")]
    pub addr: Option<SocketAddr>,
    /// Config file to find the daemon from (default: ./config.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// PEM certificate to trust (default: the daemon's development certificate).
    #[arg(long, global = true, env = "TALLY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The live console: throughput, latency, shards, top customers, money; drill into customers.
    Top {
        /// How often to poll the daemon, e.g. 1s, 500ms.
        #[arg(long, default_value = "1s")]
        interval: String,
    },
    /// Create, show or re-plan customers.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Buy credit packs (credits plans) or load dollars (balance plans).
    TopUp(TopUpArgs),
    /// May a customer use a feature? Exit 0 whether allowed or not.
    Check {
        /// Customer id.
        customer: String,
        /// Feature slug.
        feature: String,
        /// Units about to be used.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = units)]
        amount: u64,
        /// For a feature priced by AI model: the request's model and tokens.
        #[command(flatten)]
        tokens: TokenArgs,
    },
    /// Record usage.
    Report {
        /// Customer id.
        customer: String,
        /// Feature slug.
        feature: String,
        /// Units used (0 is allowed and records nothing); not with --model.
        #[arg(allow_negative_numbers = true, value_parser = units, required_unless_present = "model")]
        amount: Option<u64>,
        /// 32 hex digits; a retry with the same key changes nothing.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Record only if allowed (atomic check-and-consume).
        #[arg(long)]
        only_if_allowed: bool,
        /// For a feature priced by AI model: the request's model and tokens.
        #[command(flatten)]
        tokens: TokenArgs,
    },
    /// Hold an estimate before variable-cost work.
    Reserve {
        /// Customer id.
        customer: String,
        /// Feature slug.
        feature: String,
        /// Units to hold; not with --model.
        #[arg(allow_negative_numbers = true, value_parser = units, required_unless_present = "model")]
        amount: Option<u64>,
        /// How long the hold lives, e.g. 30s, 5m.
        #[arg(long, default_value = "30s")]
        ttl: String,
        /// For a feature priced by AI model: the request's model, its input and --max-output
        /// (the worst case is held).
        #[command(flatten)]
        tokens: TokenArgs,
    },
    /// Charge a hold's actual usage and release the rest.
    Settle {
        /// Hold id from `tally reserve`.
        hold: String,
        /// Units actually used; not with --model or --output.
        #[arg(allow_negative_numbers = true, value_parser = units, required_unless_present_any = ["model", "output"])]
        actual: Option<u64>,
        /// 32 hex digits; a retry with the same key changes nothing.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// For a hold on a feature priced by AI model: the tokens the request used — or, for a
        /// hold opened with a model request, `--output N` alone.
        #[command(flatten)]
        tokens: TokenArgs,
    },
    /// Report the output tokens a streamed answer has so far against its hold (opened with a
    /// model request); the hold grows, or the answer says where to cut off.
    Progress {
        /// Hold id from `tally reserve`.
        hold: String,
        /// Output tokens so far (a running total).
        #[arg(value_parser = units)]
        output: u64,
    },
    /// Release a hold without charging.
    Release {
        /// Hold id from `tally reserve`.
        hold: String,
    },
    /// AI model prices.
    Models {
        /// What to do.
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Print alerts live as they are committed (balance.low, quota.exceeded, …) until Ctrl-C.
    Watch {
        /// Only this customer's.
        customer: Option<String>,
        /// Only these event names (repeat).
        #[arg(long = "event")]
        events: Vec<String>,
    },
    /// Webhook endpoints and their dead letters.
    Webhooks {
        /// What to do.
        #[command(subcommand)]
        action: WebhooksAction,
    },
    /// A customer's invoices, oldest first.
    Invoices {
        /// Customer id.
        customer: String,
        /// One CSV row per invoice line instead of a table.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
    /// A customer's credit purchases and top-ups, with fees.
    Transactions {
        /// Customer id.
        customer: String,
    },
    /// A customer's raw usage events in a time range.
    Events {
        /// Customer id.
        customer: String,
        /// Start (inclusive): RFC 3339 (2027-01-15T00:00:00Z) or milliseconds since the epoch.
        #[arg(long)]
        from: Option<String>,
        /// End (exclusive): RFC 3339 or milliseconds since the epoch.
        #[arg(long)]
        to: Option<String>,
    },
    /// Close a customer's current period now and print its invoice.
    ClosePeriod {
        /// Customer id.
        customer: String,
    },
    /// Check every invoice's usage against the sum of its period's stored events.
    /// Exit 1 if any differs.
    Reconcile {
        /// Customer id.
        customer: String,
    },
}

/// `tally customer …`.
#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Create a customer on a plan.
    Create {
        /// Customer id.
        customer: String,
        /// Plan slug.
        #[arg(long)]
        plan: String,
    },
    /// Show plan, period, usage, credits or balance, and holds.
    Show {
        /// Customer id.
        customer: String,
    },
    /// Move a customer to another plan (a new period starts).
    ChangePlan {
        /// Customer id.
        customer: String,
        /// Plan slug.
        #[arg(long)]
        plan: String,
    },
}

/// `tally top-up`.
#[derive(Debug, Args)]
pub struct TopUpArgs {
    /// Customer id.
    pub customer: String,
    /// Credit packs to buy (credits plans).
    #[arg(
        long,
        conflicts_with = "amount",
        required_unless_present = "amount",
        allow_negative_numbers = true,
        value_parser = packs
    )]
    pub packs: Option<u32>,
    /// Dollars to load in whole cents, e.g. 50.00 (balance plans).
    #[arg(long, allow_negative_numbers = true)]
    pub amount: Option<String>,
    /// 32 hex digits; a retry with the same key changes nothing.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

/// A usage amount: a whole number from 0 to the protocol's limit, with a message that says so
/// for a negative one (clap would otherwise take `-5` for an unknown flag).
fn units(text: &str) -> Result<u64, String> {
    let allowed = format!("amounts are whole numbers from 0 to {AMOUNT_MAX}");
    if text.trim_start().starts_with('-') {
        return Err(format!("`{text}` is negative; {allowed}"));
    }
    match text.parse::<u64>() {
        Ok(units) if units <= AMOUNT_MAX => Ok(units),
        _ => Err(format!("`{text}` is not allowed; {allowed}")),
    }
}

/// A number of credit packs: 1 to the protocol's limit.
fn packs(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(packs) if (1..=TOP_UP_PACKS_MAX).contains(&packs) => Ok(packs),
        _ => Err(format!(
            "`{text}` is not allowed; packs are whole numbers from 1 to {TOP_UP_PACKS_MAX}"
        )),
    }
}

/// `tally webhooks …`.
#[derive(Debug, Subcommand)]
pub enum WebhooksAction {
    /// Every endpoint (those of config.toml too) with its delivery figures.
    List,
    /// A new endpoint; prints its signing secret once.
    Add {
        /// An http:// or https:// URL.
        url: String,
        /// Event names it takes (repeat; none: every event).
        #[arg(long = "event")]
        events: Vec<String>,
    },
    /// Forget an endpoint added with `add` or the API.
    Remove {
        /// The endpoint's id (`wh_…`).
        id: String,
    },
    /// Send the endpoint one signed `webhook.test` event.
    Test {
        /// The endpoint's id.
        id: String,
    },
    /// The events the endpoint never took (dead letters).
    Failed {
        /// The endpoint's id.
        id: String,
    },
    /// Send the endpoint's dead letters again, one attempt each.
    Redeliver {
        /// The endpoint's id.
        id: String,
    },
}

/// `tally models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsAction {
    /// Read `[models]` from the daemon's config file again and put the prices in force (as
    /// SIGHUP does); an invalid file changes nothing.
    Reload,
}

/// An AI model request's tokens, for a feature priced by model (`pricing = "ai_model"`).
#[derive(Debug, Clone, Default, Args)]
pub struct TokenArgs {
    /// The model (a `[models]` entry); its tokens are priced instead of units.
    #[arg(long)]
    pub model: Option<String>,
    /// Prompt tokens.
    #[arg(long, default_value_t = 0, value_parser = units, requires = "model")]
    pub input: u64,
    /// Answer tokens (report, settle; alone, a settle of a hold opened with a model request).
    #[arg(long, value_parser = units)]
    pub output: Option<u64>,
    /// The most answer tokens the request may produce (check, reserve: the worst case).
    #[arg(long, value_parser = units, requires = "model", conflicts_with = "output")]
    pub max_output: Option<u64>,
    /// Prompt tokens read from the provider's cache.
    #[arg(long, default_value_t = 0, value_parser = units, requires = "model")]
    pub cache_read: u64,
    /// Prompt tokens written to the provider's cache.
    #[arg(long, default_value_t = 0, value_parser = units, requires = "model")]
    pub cache_write: u64,
}

impl TokenArgs {
    /// `--output` without `--model`: only a settle takes it (the hold has the model request).
    pub fn output_alone(&self) -> Option<u64> {
        self.output.filter(|_| self.model.is_none())
    }

    /// The model usage, when `--model` was given.
    pub fn usage(&self) -> Option<ModelUsage> {
        let model = self.model.clone()?;
        Some(ModelUsage {
            model,
            input_tokens: self.input,
            output_tokens: self.output.or(self.max_output).unwrap_or(0),
            cache_read_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
        })
    }
}
