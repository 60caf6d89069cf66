//! The typed calls, grouped as a product uses them: `client.usage()`, `entitlements()`,
//! `holds()`, `admin()`, `monitor()`. Each builds a [`Request`], sends it with
//! [`Client::call`] and unpacks the one response shape it expects.

use std::time::Duration;

use crate::message::*;

use super::{Client, Error};

impl Client {
    /// Usage reporting: `client.usage().report(..)`.
    pub fn usage(&self) -> Usage<'_> {
        Usage { client: self }
    }

    /// Entitlement checks: `client.entitlements().check(..)`.
    pub fn entitlements(&self) -> Entitlements<'_> {
        Entitlements { client: self }
    }

    /// Reservations for variable-cost work: `client.holds().reserve(..)`.
    pub fn holds(&self) -> Holds<'_> {
        Holds { client: self }
    }

    /// Admin operations (admin role).
    pub fn admin(&self) -> Admin<'_> {
        Admin { client: self }
    }

    /// Monitoring (monitor or admin role).
    pub fn monitor(&self) -> Monitor<'_> {
        Monitor { client: self }
    }

    /// Alerts as they are committed (monitor or admin role).
    pub fn events(&self) -> Events<'_> {
        Events { client: self }
    }
}

/// `client.events()`.
pub struct Events<'a> {
    client: &'a Client,
}

impl<'a> Events<'a> {
    /// Follows the alerts that match `filter`: after `filter.after` (resume after the last one
    /// seen, e.g. across a reconnect), or with `after: None`, those committed from now on.
    pub fn subscribe(&self, filter: WatchRequest) -> Subscription<'a> {
        Subscription {
            client: self.client,
            needs_start: filter.after.is_none(),
            filter,
            buffered: std::collections::VecDeque::new(),
        }
    }
}

/// A subscription to alerts: each [`Subscription::next`] waits for the next one.
pub struct Subscription<'a> {
    client: &'a Client,
    filter: WatchRequest,
    buffered: std::collections::VecDeque<AlertView>,
    needs_start: bool,
}

impl Subscription<'_> {
    /// The next matching alert, in commit order, waiting as long as it takes. After an error
    /// (a reconnect, say) calling it again resumes where it stopped, without a gap.
    pub async fn next(&mut self) -> Result<AlertView, Error> {
        loop {
            if let Some(alert) = self.buffered.pop_front() {
                return Ok(alert);
            }
            let mut request = self.filter.clone();
            request.from_now = self.needs_start;
            if request.wait_ms == 0 && !self.needs_start {
                request.wait_ms = WATCH_WAIT_MS_MAX / 2;
            }
            let batch = match self.client.call(Request::WatchAlerts(request)).await? {
                Response::Alerts(batch) => batch,
                other => return Err(unexpected(other)),
            };
            self.needs_start = false;
            if let Some(next) = batch.next_after {
                self.filter.after = Some(next);
            }
            self.buffered.extend(batch.alerts);
        }
    }

    /// The outbox number to resume after (the last alert looked at).
    pub fn position(&self) -> Option<u64> {
        self.filter.after
    }
}

fn unexpected(response: Response) -> Error {
    Error::Protocol(format!("unexpected response {response:?}"))
}

/// `client.usage()`.
pub struct Usage<'a> {
    client: &'a Client,
}

impl Usage<'_> {
    /// Records usage; see [`ReportItem`] for idempotency keys and `only_if_allowed`.
    pub async fn report(&self, item: ReportItem) -> Result<ReportOutcome, Error> {
        match self.client.call(Request::Report(item)).await? {
            Response::Report(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Records many usages at once; one result per item, in order.
    pub async fn report_batch(
        &self,
        items: Vec<ReportItem>,
    ) -> Result<Vec<BatchItemResult>, Error> {
        match self.client.call(Request::ReportBatch(items)).await? {
            Response::ReportBatch(results) => Ok(results),
            other => Err(unexpected(other)),
        }
    }
}

/// `client.entitlements()`.
pub struct Entitlements<'a> {
    client: &'a Client,
}

impl Entitlements<'_> {
    /// May `customer` use `amount` of `feature` now? Read-only.
    pub async fn check(
        &self,
        customer: &str,
        feature: &str,
        amount: u64,
    ) -> Result<CheckOutcome, Error> {
        self.ask(CheckRequest {
            customer: customer.into(),
            feature: feature.into(),
            amount,
            model: None,
        })
        .await
    }

    /// May `customer` run this AI model request on `feature` (priced by model)? `usage` has the
    /// most output tokens the answer may have; `cost` is that worst case. Read-only.
    pub async fn check_tokens(
        &self,
        customer: &str,
        feature: &str,
        usage: ModelUsage,
    ) -> Result<CheckOutcome, Error> {
        self.ask(CheckRequest {
            customer: customer.into(),
            feature: feature.into(),
            amount: 0,
            model: Some(usage),
        })
        .await
    }

    async fn ask(&self, check: CheckRequest) -> Result<CheckOutcome, Error> {
        match self.client.call(Request::Check(check)).await? {
            Response::Check(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }
}

/// `client.holds()`.
pub struct Holds<'a> {
    client: &'a Client,
}

impl Holds<'_> {
    /// Holds the cost of `amount` for `ttl`; `allowed: false` when the customer cannot afford it.
    pub async fn reserve(
        &self,
        customer: &str,
        feature: &str,
        amount: u64,
        ttl: Duration,
    ) -> Result<ReserveOutcome, Error> {
        self.hold(ReserveRequest {
            customer: customer.into(),
            feature: feature.into(),
            amount,
            ttl_ms: ttl.as_millis().try_into().unwrap_or(u64::MAX),
            model: None,
        })
        .await
    }

    /// Holds the worst case of an AI model request (its input and the most output it may have,
    /// `usage.output_tokens`) on a feature priced by model, for `ttl`.
    pub async fn reserve_tokens(
        &self,
        customer: &str,
        feature: &str,
        usage: ModelUsage,
        ttl: Duration,
    ) -> Result<ReserveOutcome, Error> {
        self.hold(ReserveRequest {
            customer: customer.into(),
            feature: feature.into(),
            amount: 0,
            ttl_ms: ttl.as_millis().try_into().unwrap_or(u64::MAX),
            model: Some(usage),
        })
        .await
    }

    async fn hold(&self, reserve: ReserveRequest) -> Result<ReserveOutcome, Error> {
        match self.client.call(Request::Reserve(reserve)).await? {
            Response::Reserve(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Charges `actual` units and releases the hold.
    pub async fn settle(
        &self,
        hold: u64,
        actual: u64,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<ReportOutcome, Error> {
        self.charge(SettleRequest {
            hold,
            actual,
            idempotency_key,
            model: None,
            output_tokens: None,
        })
        .await
    }

    /// Charges the tokens an AI model request actually used and releases the rest of the hold.
    pub async fn settle_tokens(
        &self,
        hold: u64,
        usage: ModelUsage,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<ReportOutcome, Error> {
        self.charge(SettleRequest {
            hold,
            actual: 0,
            idempotency_key,
            model: Some(usage),
            output_tokens: None,
        })
        .await
    }

    /// Charges a hold opened with a model request for the `output_tokens` its answer had (the
    /// model, input and cache tokens are the hold's) and releases the rest.
    pub async fn settle_output(
        &self,
        hold: u64,
        output_tokens: u64,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<ReportOutcome, Error> {
        self.charge(SettleRequest {
            hold,
            actual: 0,
            idempotency_key,
            model: None,
            output_tokens: Some(output_tokens),
        })
        .await
    }

    /// Reports the output tokens streamed so far (a running total) against a hold opened with a
    /// model request. The hold grows as the answer does; with `cut_off`, stop the answer at
    /// `output_tokens_allowed`, the most the customer can pay for. Cheap, and safe to retry.
    pub async fn progress(&self, hold: u64, output_tokens: u64) -> Result<ProgressOutcome, Error> {
        match self
            .client
            .call(Request::Progress(ProgressRequest {
                hold,
                output_tokens,
            }))
            .await?
        {
            Response::Progress(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    async fn charge(&self, settle: SettleRequest) -> Result<ReportOutcome, Error> {
        match self.client.call(Request::Settle(settle)).await? {
            Response::Report(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Releases the hold without charging.
    pub async fn release(&self, hold: u64) -> Result<ReleaseOutcome, Error> {
        match self
            .client
            .call(Request::Release(ReleaseRequest { hold }))
            .await?
        {
            Response::Release(outcome) => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }
}

/// `client.admin()`.
pub struct Admin<'a> {
    client: &'a Client,
}

impl Admin<'_> {
    async fn customer_call(&self, request: Request) -> Result<CustomerView, Error> {
        match self.client.call(request).await? {
            Response::Customer(view) => Ok(view),
            other => Err(unexpected(other)),
        }
    }

    /// Creates a customer on `plan`; its first period starts now.
    pub async fn create_customer(&self, customer: &str, plan: &str) -> Result<CustomerView, Error> {
        let request = Request::CreateCustomer(CustomerPlan {
            customer: customer.into(),
            plan: plan.into(),
        });
        self.customer_call(request).await
    }

    /// Moves a customer to `plan`; a new period starts now.
    pub async fn change_plan(&self, customer: &str, plan: &str) -> Result<CustomerView, Error> {
        let request = Request::ChangePlan(CustomerPlan {
            customer: customer.into(),
            plan: plan.into(),
        });
        self.customer_call(request).await
    }

    /// The customer's plan, period, usage, credits or balance and holds.
    pub async fn get_customer(&self, customer: &str) -> Result<CustomerView, Error> {
        self.customer_call(Request::GetCustomer(CustomerRef {
            customer: customer.into(),
        }))
        .await
    }

    /// Buys credit packs or loads dollars.
    pub async fn top_up(
        &self,
        customer: &str,
        amount: TopUpAmount,
        idempotency_key: Option<IdempotencyKey>,
    ) -> Result<TopUpOutcome, Error> {
        let request = Request::TopUp(TopUpRequest {
            customer: customer.into(),
            amount,
            idempotency_key,
        });
        match self.client.call(request).await? {
            Response::TopUp(outcome) => Ok(*outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Raw usage events with `from_ms <= at_ms < to_ms`, oldest first (one page).
    pub async fn list_events(
        &self,
        customer: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<EventList, Error> {
        self.list_events_from(customer, (from_ms, 0), to_ms).await
    }

    /// One page of events from `(at_ms, seq)` on; see [`EventList::more`] for paging.
    pub async fn list_events_from(
        &self,
        customer: &str,
        from: (u64, u64),
        to_ms: u64,
    ) -> Result<EventList, Error> {
        let request = Request::ListEvents(ListEventsRequest {
            customer: customer.into(),
            from_ms: from.0,
            from_seq: from.1,
            to_ms,
        });
        match self.client.call(request).await? {
            Response::Events(list) => Ok(list),
            other => Err(unexpected(other)),
        }
    }

    /// Closes the customer's current period now and returns its invoice; the next period
    /// starts now.
    pub async fn close_period(&self, customer: &str) -> Result<InvoiceView, Error> {
        let request = Request::ClosePeriod(CustomerRef {
            customer: customer.into(),
        });
        match self.client.call(request).await? {
            Response::Closed(invoice) => Ok(invoice),
            other => Err(unexpected(other)),
        }
    }

    /// Re-reads the model catalogue from the daemon's configuration file: all of it or, when it
    /// is invalid, none of it (the error says why and the old prices stay).
    pub async fn reload_models(&self) -> Result<ModelsReloaded, Error> {
        match self.client.call(Request::ReloadModels).await? {
            Response::ModelsReloaded(answer) => Ok(answer),
            other => Err(unexpected(other)),
        }
    }

    /// Webhook endpoints: list, add, remove, test; dead letters and their redelivery.
    pub async fn webhooks(&self, command: WebhookCommand) -> Result<WebhookAnswer, Error> {
        match self.client.call(Request::Webhooks(command)).await? {
            Response::Webhooks(answer) => Ok(answer),
            other => Err(unexpected(other)),
        }
    }

    /// The customer's invoices, oldest first.
    pub async fn list_invoices(&self, customer: &str) -> Result<Vec<InvoiceView>, Error> {
        let request = Request::ListInvoices(CustomerRef {
            customer: customer.into(),
        });
        match self.client.call(request).await? {
            Response::Invoices(invoices) => Ok(invoices),
            other => Err(unexpected(other)),
        }
    }

    /// The customer's credit purchases and top-ups, oldest first.
    pub async fn list_transactions(&self, customer: &str) -> Result<Vec<TransactionView>, Error> {
        let request = Request::ListTransactions(CustomerRef {
            customer: customer.into(),
        });
        match self.client.call(request).await? {
            Response::Transactions(transactions) => Ok(transactions),
            other => Err(unexpected(other)),
        }
    }
}

/// `client.monitor()`.
pub struct Monitor<'a> {
    client: &'a Client,
}

impl Monitor<'_> {
    /// The console's data.
    pub async fn stats(&self) -> Result<StatsSnapshot, Error> {
        match self.client.call(Request::Stats).await? {
            Response::Stats(snapshot) => Ok(*snapshot),
            other => Err(unexpected(other)),
        }
    }
}
