//! One shard's customers and the operations on them. `ShardCore::handle` is the single entry for
//! state changes: it applies a request to memory and returns the typed answer. Pure: the caller
//! passes the time and decides when answers are released (after persistence, once it exists).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use tally_protocol::message::*;

use super::alerts::{self, Alert, AlertKind, Levels};
use super::billing::{BillingTerms, Invoice, Transaction};
use super::catalogue::{Catalogue, ModelTerms};
use super::customer::{Customer, HoldRequest};
use super::idempotency::{IdempotencyLog, KeyRecord, Remembered};
use super::models;
use super::table::{CustomerRows, CustomerTable, Slot};
use crate::stable_hash::{stable_hash, Fingerprint};

/// Most open holds one customer may have; a hold is bookkeeping the shard must scan.
pub const HOLDS_PER_CUSTOMER_MAX: usize = 1_024;

/// The state a shard owns exclusively.
#[derive(Debug)]
pub struct ShardCore {
    catalogue: Arc<Catalogue>,
    customers: CustomerTable,
    /// The slot of each open hold's customer.
    hold_owners: HashMap<u64, Slot>,
    hold_expiry: BTreeSet<(u64, u64)>,
    /// `(period end, slot)` of every customer's current period, soonest first (the end rounded
    /// up to the second: [`DueEntry`]). A heap with lazy deletion: an entry left by a period that
    /// ended early (a request's close on touch, a manual close, a plan change) stays until it
    /// surfaces and is skipped then. One 8-byte entry per customer in one allocation, where an
    /// ordered set cost a share of a B-tree node each.
    period_ends: BinaryHeap<Reverse<DueEntry>>,
    idempotency: IdempotencyLog,
    billing: BillingTerms,
    changes: Changes,
    /// Whether the request being handled changed state while reading (a period close or hold
    /// expiry on touch), so its answer must wait for persistence like a write's.
    did_touch_change: bool,
}

/// What changed since the last [`ShardCore::take_changes`]: what the store must persist before
/// the answers that caused it are released.
#[derive(Debug, Default)]
pub struct Changes {
    /// Slots of the customers whose state changed (their whole state is persisted).
    pub customers: HashSet<Slot>,
    /// Usage recorded, in order.
    pub events: Vec<UsageEvent>,
    /// Idempotency keys applied.
    pub keys_remembered: Vec<(IdempotencyKey, KeyRecord)>,
    /// Idempotency keys whose window ended.
    pub keys_forgotten: Vec<IdempotencyKey>,
    /// Invoices of periods closed.
    pub invoices: Vec<Invoice>,
    /// Purchases and top-ups.
    pub transactions: Vec<Transaction>,
    /// What products are told about, in the order it happened.
    pub alerts: Vec<Alert>,
}

impl Changes {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
            && self.events.is_empty()
            && self.keys_remembered.is_empty()
            && self.keys_forgotten.is_empty()
            && self.invoices.is_empty()
            && self.transactions.is_empty()
            && self.alerts.is_empty()
    }
}

/// One recorded usage: the raw event that invoices reconcile against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    /// The customer.
    pub customer: String,
    /// The customer's sequence number after this usage (unique per customer).
    pub seq: u64,
    /// When it was recorded.
    pub at_ms: u64,
    /// The usage feature.
    pub feature: String,
    /// Units.
    pub amount: u64,
    /// What it cost, in the model's unit.
    pub charged: i64,
    /// The idempotency key it came with.
    pub idempotency_key: Option<IdempotencyKey>,
    /// The model request it priced (a feature priced by model), for the console's counts; the
    /// store keeps `amount`, its cost.
    pub model: Option<ModelUsage>,
}

impl ShardCore {
    /// An empty shard; idempotency keys are remembered for `dedup_window_ms`; invoices and
    /// transactions carry the fee of `billing`.
    pub fn new(catalogue: Arc<Catalogue>, dedup_window_ms: u64, billing: BillingTerms) -> Self {
        Self {
            catalogue,
            customers: CustomerTable::default(),
            hold_owners: HashMap::new(),
            hold_expiry: BTreeSet::new(),
            period_ends: BinaryHeap::new(),
            idempotency: IdempotencyLog::new(dedup_window_ms),
            billing,
            changes: Changes::default(),
            did_touch_change: false,
        }
    }

    /// A shard rebuilt from stored customers and keys (recovery).
    pub fn restore(
        catalogue: Arc<Catalogue>,
        dedup_window_ms: u64,
        billing: BillingTerms,
        customers: CustomerRows,
        keys: Vec<(IdempotencyKey, KeyRecord)>,
    ) -> Self {
        let mut core = ShardCore::new(catalogue, dedup_window_ms, billing);
        let customers = CustomerTable::index(customers)
            .unwrap_or_else(|id| panic!("the store holds one row per customer; `{id}` twice"));
        core.period_ends = period_ends_of(&customers);
        for (slot, customer) in customers.iter() {
            for (&hold, h) in customer.holds() {
                core.hold_owners.insert(hold, slot);
                core.hold_expiry.insert((h.expires_at_ms, hold));
            }
        }
        core.customers = customers;
        for (key, record) in keys {
            core.idempotency.restore(key, record);
        }
        core.idempotency.sort_after_restore();
        core
    }

    /// The catalogue requests are priced by.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    /// Prices the requests that follow by `catalogue` (the same plans, new model prices: a
    /// reload). Open holds keep the prices they were opened at.
    pub fn set_catalogue(&mut self, catalogue: Arc<Catalogue>) {
        self.catalogue = catalogue;
    }

    /// Everything that changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        let mut changes = std::mem::take(&mut self.changes);
        changes.keys_forgotten = self.idempotency.drain_forgotten();
        changes
    }

    /// Whether changes are waiting to be taken.
    pub fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// A customer's state, for persisting it.
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.get(id)
    }

    /// The customer in `slot` (a slot from [`Changes::customers`]).
    pub fn customer_at(&self, slot: Slot) -> &Customer {
        self.customers.at(slot)
    }

    /// Forgets idempotency keys whose window ended.
    pub fn purge_keys(&mut self, now_ms: u64) {
        self.idempotency.purge(now_ms);
    }

    /// Customers this shard owns.
    pub fn customer_count(&self) -> usize {
        self.customers.len()
    }

    /// Whether the last `handle` changed state as a side effect of reading (closing a due period,
    /// releasing expired holds, or a `progress` growing its hold). A read-only request's answer
    /// that reflects such a change must wait until the change is persisted.
    pub fn did_last_request_change_state(&self) -> bool {
        self.did_touch_change
    }

    /// Applies one request at `now_ms` and answers it.
    pub fn handle(&mut self, now_ms: u64, request: Request) -> Result<Response, TallyError> {
        self.did_touch_change = false;
        match request {
            Request::Report(item) => self.report(now_ms, item).map(Response::Report),
            Request::ReportBatch(items) => {
                Ok(Response::ReportBatch(self.report_batch(now_ms, items)))
            }
            Request::Check(c) => self.check(now_ms, &c).map(Response::Check),
            Request::Reserve(r) => self.reserve(now_ms, &r).map(Response::Reserve),
            Request::Settle(s) => self.settle(now_ms, &s).map(Response::Report),
            Request::Release(r) => self.release(now_ms, r.hold).map(Response::Release),
            Request::CreateCustomer(cp) => self.create_customer(now_ms, cp).map(Response::Customer),
            Request::ChangePlan(cp) => self.change_plan(now_ms, &cp).map(Response::Customer),
            Request::TopUp(t) => self
                .top_up(now_ms, &t)
                .map(|o| Response::TopUp(Box::new(o))),
            Request::GetCustomer(c) => Ok(Response::Customer(
                self.touch(now_ms, &c.customer)?.1.view(),
            )),
            Request::ClosePeriod(c) => self.close_now(now_ms, &c.customer).map(Response::Closed),
            Request::Progress(p) => self.progress(now_ms, &p).map(Response::Progress),
            other => Err(TallyError::Unsupported {
                operation: other.operation_name().into(),
            }),
        }
    }

    /// Applies every item of a batch in order; one result per item.
    pub fn report_batch(&mut self, now_ms: u64, items: Vec<ReportItem>) -> Vec<BatchItemResult> {
        items
            .into_iter()
            .map(|item| match self.report(now_ms, item) {
                Ok(outcome) => BatchItemResult::Ok(outcome),
                Err(error) => BatchItemResult::Err(error),
            })
            .collect()
    }

    /// Releases every hold that expired at or before `now_ms`; returns how many.
    pub fn expire_holds(&mut self, now_ms: u64) -> usize {
        let mut released = 0;
        while let Some(&(expires_at_ms, hold)) = self.hold_expiry.first() {
            if expires_at_ms > now_ms {
                break;
            }
            self.hold_expiry.pop_first();
            // Settled or released holds leave their entry behind; only open ones count.
            if let Some(&owner) = self.hold_owners.get(&hold) {
                self.touch_slot(now_ms, owner);
                released += 1;
            }
        }
        released
    }

    /// Closes the periods that ended at or before `now_ms`, at most `limit` customers' worth;
    /// returns how many customers were closed. Requests close their customer's due periods
    /// themselves (see `touch`), so this only makes closes timely for idle customers.
    pub fn close_due_periods(&mut self, now_ms: u64, limit: usize) -> usize {
        self.compact_period_ends();
        let mut closed = 0;
        while closed < limit {
            let Some(&Reverse(entry)) = self.period_ends.peek() else {
                break;
            };
            if entry.due_ms() > now_ms {
                break;
            }
            self.period_ends.pop();
            let slot = entry.slot;
            if DueEntry::new(self.customers.at(slot).period_end_ms(), slot) != entry {
                continue; // a period that ended early; its customer has a newer entry
            }
            self.touch_slot(now_ms, slot);
            closed += 1;
        }
        closed
    }

    /// Rebuilds the due-period heap from the customers once stale entries outnumber live ones,
    /// so early closes (a script calling `close_period` in a loop) cannot grow it without bound.
    /// Linear, and at most once per as many early closes as there are customers.
    fn compact_period_ends(&mut self) {
        if self.period_ends.len() > 2 * self.customers.len() + 1024 {
            self.period_ends = period_ends_of(&self.customers);
        }
    }

    /// The customer, with its ended periods closed and its expired holds released first, so
    /// every answer is exact and counts usage in the period it happened in.
    fn touch(&mut self, now_ms: u64, id: &str) -> Result<(Slot, &mut Customer), TallyError> {
        let slot = self
            .customers
            .slot_of(id)
            .ok_or_else(|| TallyError::UnknownCustomer {
                customer: id.into(),
            })?;
        Ok((slot, self.touch_slot(now_ms, slot)))
    }

    /// [`ShardCore::touch`] for a customer known by its slot.
    fn touch_slot(&mut self, now_ms: u64, slot: Slot) -> &mut Customer {
        let customer = self.customers.at_mut(slot);
        if customer.period_end_ms() <= now_ms {
            while customer.period_end_ms() <= now_ms {
                let end_ms = customer.period_end_ms();
                let invoice =
                    customer.close_period(end_ms, now_ms, CloseReason::Scheduled, &self.billing);
                customer.enter_period_prices(&self.catalogue);
                self.changes.alerts.push(Alert {
                    customer: customer.id().to_string(),
                    seq: customer.seq(),
                    index: 0,
                    at_ms: now_ms,
                    kind: invoice_created(&invoice),
                });
                self.changes.invoices.push(invoice);
            }
            self.period_ends
                .push(Reverse(DueEntry::new(customer.period_end_ms(), slot)));
            self.changes.customers.insert(slot);
            self.did_touch_change = true;
        }
        let expired = customer.expire_holds(now_ms);
        if !expired.is_empty() {
            self.changes.customers.insert(slot);
            self.did_touch_change = true;
        }
        for (id, hold) in expired {
            self.hold_owners.remove(&id);
            self.charge_reported_output(now_ms, slot, &hold);
        }
        self.customers.at_mut(slot)
    }

    /// An expired hold of a streamed answer: the output reported so far was delivered, so it is
    /// charged (with the input) at the hold's prices; the rest of the hold was released.
    fn charge_reported_output(&mut self, now_ms: u64, slot: Slot, hold: &super::customer::Hold) {
        let Some(request) = hold.request.as_deref() else {
            return;
        };
        let Some(reported) = request.reported_output else {
            return;
        };
        let usage = request.with_output(reported);
        let customer = self.customers.at_mut(slot);
        let (Some(cost), Ok(terms)) = (
            request.price.cost(&usage),
            customer.usage_terms(&self.catalogue, &hold.feature),
        ) else {
            return;
        };
        if cost == 0 {
            return;
        }
        let before = Levels::of(customer, &hold.feature);
        let charged = customer.record(&hold.feature, terms, cost);
        customer.add_model_usage(&hold.feature, &usage, cost, charged);
        let outcome = report_outcome(customer, &hold.feature, terms, cost, charged);
        self.record_usage(now_ms, slot, &hold.feature, &outcome, None, Some(usage));
        self.alert_crossings(now_ms, slot, &hold.feature, terms, before);
    }

    fn report(&mut self, now_ms: u64, item: ReportItem) -> Result<ReportOutcome, TallyError> {
        let first_use = match self.check_key(now_ms, item.idempotency_key, || {
            let fingerprint = with_model(
                Fingerprint::new("report")
                    .text(&item.customer)
                    .text(&item.feature)
                    .number(item.amount)
                    .number(u64::from(item.only_if_allowed)),
                item.model.as_ref(),
            )
            .finish();
            (fingerprint, stable_hash(item.customer.as_bytes()))
        })? {
            KeyCheck::Seen(first) => return as_duplicate_report(first),
            KeyCheck::FirstUse(first_use) => Some(first_use),
            KeyCheck::Unkeyed => None,
        };
        let catalogue = self.catalogue.clone();
        let (slot, customer) = self.touch(now_ms, &item.customer)?;
        let terms = customer.usage_terms(&catalogue, &item.feature)?;
        let amount = amount_of(
            &catalogue,
            customer,
            &item.feature,
            item.amount,
            item.model.as_ref(),
        )?;
        let item = ReportItem { amount, ..item };
        if item.amount == 0 {
            // An empty completion: nothing to record, so no event, no key, `seq` unchanged.
            return Ok(report_outcome(customer, &item.feature, terms, 0, 0));
        }
        if item.only_if_allowed {
            let assessment = customer.assess(&item.feature, terms, item.amount);
            if !assessment.is_allowed {
                return Err(assessment.refusal());
            }
        }
        let before = Levels::of(customer, &item.feature);
        let charged = customer.record(&item.feature, terms, item.amount);
        if let Some(usage) = &item.model {
            customer.add_model_usage(&item.feature, usage, item.amount, charged);
        }
        let outcome = report_outcome(customer, &item.feature, terms, item.amount, charged);
        self.record_usage(
            now_ms,
            slot,
            &item.feature,
            &outcome,
            item.idempotency_key,
            item.model,
        );
        self.alert_crossings(now_ms, slot, &item.feature, terms, before);
        if let Some(first_use) = first_use {
            self.remember(now_ms, first_use, Remembered::Report(outcome.clone()));
        }
        Ok(outcome)
    }

    /// Notes what happened to the customer in `slot` in the change that brought it to its current
    /// `seq`, for the outbox.
    fn alert(&mut self, now_ms: u64, slot: Slot, kind: AlertKind) {
        let customer = self.customers.at(slot);
        let seq = customer.seq();
        let index = self
            .changes
            .alerts
            .iter()
            .rev()
            .take_while(|a| a.seq == seq && a.customer == customer.id())
            .count() as u8;
        self.changes.alerts.push(Alert {
            customer: customer.id().to_string(),
            seq,
            index,
            at_ms: now_ms,
            kind,
        });
    }

    /// The lines the customer in `slot` crossed on `feature` (with `terms`) since `before`, as
    /// alerts.
    fn alert_crossings(
        &mut self,
        now_ms: u64,
        slot: Slot,
        feature: &str,
        terms: super::catalogue::UsageTerms,
        before: Levels,
    ) {
        let customer = self.customers.at(slot);
        for kind in alerts::crossings(before, customer, feature, terms) {
            self.alert(now_ms, slot, kind);
        }
    }

    /// Notes recorded usage: the customer's new state and the raw event, for the store.
    fn record_usage(
        &mut self,
        now_ms: u64,
        slot: Slot,
        feature: &str,
        outcome: &ReportOutcome,
        idempotency_key: Option<IdempotencyKey>,
        model: Option<ModelUsage>,
    ) {
        self.changes.customers.insert(slot);
        if outcome.amount > 0 {
            self.changes.events.push(UsageEvent {
                customer: self.customers.at(slot).id().to_string(),
                seq: outcome.seq,
                at_ms: now_ms,
                feature: feature.into(),
                amount: outcome.amount,
                charged: outcome.charged,
                idempotency_key,
                model,
            });
        }
    }

    /// Looks an idempotency key up. `content` (fingerprint, placement) is only computed for
    /// keyed requests, so unkeyed ones pay nothing.
    fn check_key(
        &mut self,
        now_ms: u64,
        key: Option<IdempotencyKey>,
        content: impl FnOnce() -> (u64, u64),
    ) -> Result<KeyCheck, TallyError> {
        let Some(key) = key else {
            return Ok(KeyCheck::Unkeyed);
        };
        let (fingerprint, placement) = content();
        Ok(match self.idempotency.lookup(now_ms, &key, fingerprint)? {
            Some(first) => KeyCheck::Seen(first),
            None => KeyCheck::FirstUse(FirstUse {
                key,
                fingerprint,
                placement,
            }),
        })
    }

    /// Remembers the outcome of a keyed request's first use, for the store too.
    fn remember(&mut self, now_ms: u64, first_use: FirstUse, outcome: Remembered) {
        let FirstUse {
            key,
            fingerprint,
            placement,
        } = first_use;
        let record = self
            .idempotency
            .remember(now_ms, key, fingerprint, placement, outcome);
        self.changes.keys_remembered.push((key, record));
    }

    fn check(&mut self, now_ms: u64, c: &CheckRequest) -> Result<CheckOutcome, TallyError> {
        let catalogue = self.catalogue.clone();
        let (_, customer) = self.touch(now_ms, &c.customer)?;
        let rule = customer.rule(&catalogue, &c.feature)?;
        let (allowed, cost) = match rule {
            super::customer::FeatureRule::Flag(enabled) => (enabled, 0),
            super::customer::FeatureRule::Usage(terms) => {
                let amount =
                    amount_of(&catalogue, customer, &c.feature, c.amount, c.model.as_ref())?;
                let assessment = customer.assess(&c.feature, terms, amount);
                (assessment.is_allowed, assessment.cost)
            }
        };
        Ok(CheckOutcome {
            allowed,
            seq: customer.seq(),
            cost,
            standing: customer.standing(&c.feature, rule),
        })
    }

    fn reserve(&mut self, now_ms: u64, r: &ReserveRequest) -> Result<ReserveOutcome, TallyError> {
        let catalogue = self.catalogue.clone();
        let (slot, _) = self.touch(now_ms, &r.customer)?;
        // Re-borrowed from the field alone: the hold indexes are updated while it is in use.
        let customer = self.customers.at_mut(slot);
        let terms = customer.usage_terms(&catalogue, &r.feature)?;
        let amount = amount_of(&catalogue, customer, &r.feature, r.amount, r.model.as_ref())?;
        if customer.holds().len() >= HOLDS_PER_CUSTOMER_MAX {
            return Err(TallyError::InvalidRequest {
                reason: format!(
                    "customer `{}` has {} open holds; the limit is {HOLDS_PER_CUSTOMER_MAX}",
                    r.customer,
                    customer.holds().len()
                ),
            });
        }
        let assessment = customer.assess_hold(&r.feature, terms, amount);
        if !assessment.is_allowed {
            return Ok(ReserveOutcome {
                allowed: false,
                hold: None,
                seq: customer.seq(),
                held: 0,
                expires_at_ms: 0,
                standing: customer.standing(&r.feature, terms.into()),
            });
        }
        // The high half of a hold id is the customer's placement hash, so `settle` and `release`
        // route to the owning shard from the id alone, whatever the shard count.
        let placement = stable_hash(r.customer.as_bytes()) & 0xffff_ffff_0000_0000;
        let hold_owners = &self.hold_owners;
        let hold = customer.new_hold_id(placement, |id| hold_owners.contains_key(&id));
        let expires_at_ms = now_ms.saturating_add(r.ttl_ms);
        let request = r.model.as_ref().map(|usage| HoldRequest {
            usage: usage.clone(),
            price: catalogue.models()[&usage.model],
            reported_output: None,
        });
        let opened = super::customer::Hold {
            feature: r.feature.clone(),
            amount,
            held: 0,
            expires_at_ms,
            request: request.map(Box::new),
        };
        customer.open_hold(hold, terms, opened);
        self.hold_owners.insert(hold, slot);
        self.hold_expiry.insert((expires_at_ms, hold));
        self.changes.customers.insert(slot);
        Ok(ReserveOutcome {
            allowed: true,
            hold: Some(hold),
            seq: customer.seq(),
            held: customer
                .holds()
                .get(&hold)
                .expect("the hold was just opened")
                .held,
            expires_at_ms,
            standing: customer.standing(&r.feature, terms.into()),
        })
    }

    /// The slot of an open hold's owner, touched (which may expire the hold), or `UnknownHold`.
    fn hold_owner(&mut self, now_ms: u64, hold: u64) -> Result<Slot, TallyError> {
        let owner = *self
            .hold_owners
            .get(&hold)
            .ok_or(TallyError::UnknownHold { hold })?;
        self.touch_slot(now_ms, owner);
        Ok(owner)
    }

    fn settle(&mut self, now_ms: u64, s: &SettleRequest) -> Result<ReportOutcome, TallyError> {
        let first_use = match self.check_key(now_ms, s.idempotency_key, || {
            let fingerprint = with_model(
                Fingerprint::new("settle")
                    .number(s.hold)
                    .number(s.actual)
                    .number(s.output_tokens.map_or(u64::MAX, |output| output)),
                s.model.as_ref(),
            )
            .finish();
            (fingerprint, s.hold)
        })? {
            KeyCheck::Seen(first) => return as_duplicate_report(first),
            KeyCheck::FirstUse(first_use) => Some(first_use),
            KeyCheck::Unkeyed => None,
        };
        let catalogue = self.catalogue.clone();
        let owner = self.hold_owner(now_ms, s.hold)?;
        let customer = self.customers.at_mut(owner);
        let hold = customer
            .holds()
            .get(&s.hold)
            .ok_or(TallyError::UnknownHold { hold: s.hold })?;
        let feature = hold.feature.clone();
        // The tokens used and their cost: given in full, or the output of the hold's request.
        let (usage, actual) = match (s.output_tokens, hold.request.as_deref()) {
            (Some(output), Some(request)) => {
                let usage = request.with_output(output);
                let cost = request.price.cost(&usage).ok_or_else(|| {
                    TallyError::InvalidRequest {
                        reason: format!("{output} output tokens cost more than a request may"),
                    }
                })?;
                (Some(usage), cost)
            }
            (Some(_), None) => {
                return Err(TallyError::InvalidRequest {
                    reason: format!(
                        "hold {:#x} was opened for units, not a model request: settle it with its units",
                        s.hold
                    ),
                })
            }
            (None, _) => (
                s.model.clone(),
                amount_of(&catalogue, customer, &feature, s.actual, s.model.as_ref())?,
            ),
        };
        let before = Levels::of(customer, &feature);
        let (hold, terms, charged) = customer.settle_hold(&catalogue, s.hold, actual)?;
        let usage = usage.filter(|_| actual > 0);
        if let Some(usage) = &usage {
            customer.add_model_usage(&hold.feature, usage, actual, charged);
        }
        self.hold_owners.remove(&s.hold);
        let customer = self.customers.at(owner);
        let outcome = report_outcome(customer, &hold.feature, terms, actual, charged);
        self.record_usage(
            now_ms,
            owner,
            &hold.feature,
            &outcome,
            s.idempotency_key,
            usage,
        );
        self.alert_crossings(now_ms, owner, &hold.feature, terms, before);
        if let Some(first_use) = first_use {
            self.remember(now_ms, first_use, Remembered::Report(outcome.clone()));
        }
        Ok(outcome)
    }

    /// `progress`: a streamed answer's output so far against its hold. One that grew the hold
    /// waits for the growth to persist, like a reserve. One that only notes the running total is
    /// served at once and writes nothing: the total persists with the customer's next change
    /// (the hold's next growth at the latest), so a crash forgets at most the output reported
    /// since the last growth — only ever under-charged, at an abandoned stream's expiry.
    fn progress(
        &mut self,
        now_ms: u64,
        p: &ProgressRequest,
    ) -> Result<ProgressOutcome, TallyError> {
        let catalogue = self.catalogue.clone();
        let owner = self.hold_owner(now_ms, p.hold)?;
        let customer = self.customers.at_mut(owner);
        let feature = customer
            .holds()
            .get(&p.hold)
            .map(|h| h.feature.clone())
            .ok_or(TallyError::UnknownHold { hold: p.hold })?;
        let terms = customer.usage_terms(&catalogue, &feature)?;
        let progress = customer.progress_hold(p.hold, terms, p.output_tokens)?;
        if progress.grew {
            self.changes.customers.insert(owner);
            self.did_touch_change = true;
        }
        let customer = self.customers.at(owner);
        Ok(ProgressOutcome {
            cut_off: progress.cut_off,
            output_tokens_allowed: progress.output_tokens_allowed,
            held: customer.holds().get(&p.hold).map_or(0, |h| h.held),
            seq: customer.seq(),
        })
    }

    fn release(&mut self, now_ms: u64, hold_id: u64) -> Result<ReleaseOutcome, TallyError> {
        let catalogue = self.catalogue.clone();
        let owner = self.hold_owner(now_ms, hold_id)?;
        let hold = self.customers.at_mut(owner).release_hold(hold_id)?;
        self.hold_owners.remove(&hold_id);
        let customer = self.customers.at(owner);
        let rule = customer.rule(&catalogue, &hold.feature)?;
        self.changes.customers.insert(owner);
        Ok(ReleaseOutcome {
            seq: customer.seq(),
            released: hold.held,
            standing: customer.standing(&hold.feature, rule),
        })
    }

    /// `close_period`: closes the current period now; the billing cycle re-anchors here.
    fn close_now(&mut self, now_ms: u64, id: &str) -> Result<InvoiceView, TallyError> {
        let billing = self.billing;
        let catalogue = self.catalogue.clone();
        let (slot, customer) = self.touch(now_ms, id)?;
        let invoice = customer.close_period(now_ms, now_ms, CloseReason::Manual, &billing);
        customer.enter_period_prices(&catalogue);
        let next_end = customer.period_end_ms();
        let view = invoice.view();
        let created = invoice_created(&invoice);
        self.changes.invoices.push(invoice);
        self.changes.customers.insert(slot);
        self.period_ends
            .push(Reverse(DueEntry::new(next_end, slot)));
        self.alert(now_ms, slot, created);
        Ok(view)
    }

    fn create_customer(
        &mut self,
        now_ms: u64,
        cp: CustomerPlan,
    ) -> Result<CustomerView, TallyError> {
        if self.customers.slot_of(&cp.customer).is_some() {
            return Err(TallyError::CustomerExists {
                customer: cp.customer,
            });
        }
        let plan = self
            .catalogue
            .plan(&cp.plan)
            .cloned()
            .ok_or(TallyError::UnknownPlan { plan: cp.plan })?;
        let customer = Customer::new(cp.customer, plan, now_ms);
        let view = customer.view();
        let period_end_ms = customer.period_end_ms();
        let slot = self
            .customers
            .insert(customer)
            .unwrap_or_else(|_| unreachable!("the id was just looked up"));
        self.changes.customers.insert(slot);
        self.period_ends
            .push(Reverse(DueEntry::new(period_end_ms, slot)));
        let created = AlertKind::CustomerCreated {
            plan: view.plan.clone(),
            period_start_ms: view.period_start_ms,
        };
        self.alert(now_ms, slot, created);
        Ok(view)
    }

    fn change_plan(&mut self, now_ms: u64, cp: &CustomerPlan) -> Result<CustomerView, TallyError> {
        let plan =
            self.catalogue
                .plan(&cp.plan)
                .cloned()
                .ok_or_else(|| TallyError::UnknownPlan {
                    plan: cp.plan.clone(),
                })?;
        let billing = self.billing;
        let (slot, customer) = self.touch(now_ms, &cp.customer)?;
        if customer.plan().slug == plan.slug {
            return Err(TallyError::InvalidRequest {
                reason: format!(
                    "customer `{}` is already on plan `{}`",
                    cp.customer, plan.slug
                ),
            });
        }
        let from = customer.plan().slug.clone();
        let invoice = customer.close_period(now_ms, now_ms, CloseReason::PlanChange, &billing);
        let dropped = customer.start_plan(plan, now_ms);
        let view = customer.view();
        let created = invoice_created(&invoice);
        self.changes.invoices.push(invoice);
        self.period_ends
            .push(Reverse(DueEntry::new(view.period_end_ms, slot)));
        for hold in dropped {
            self.hold_owners.remove(&hold);
        }
        self.changes.customers.insert(slot);
        self.alert(now_ms, slot, created);
        let to = view.plan.clone();
        self.alert(now_ms, slot, AlertKind::PlanChanged { from, to });
        Ok(view)
    }

    fn top_up(&mut self, now_ms: u64, t: &TopUpRequest) -> Result<TopUpOutcome, TallyError> {
        let (kind, value) = match t.amount {
            TopUpAmount::Packs(packs) => ("packs", u64::from(packs)),
            TopUpAmount::Units(units) => ("units", units as u64),
        };
        let first_use = match self.check_key(now_ms, t.idempotency_key, || {
            let fingerprint = Fingerprint::new("top_up")
                .text(&t.customer)
                .text(kind)
                .number(value)
                .finish();
            (fingerprint, stable_hash(t.customer.as_bytes()))
        })? {
            KeyCheck::Seen(Remembered::TopUp(first)) => {
                return Ok(TopUpOutcome {
                    duplicate: true,
                    ..*first
                })
            }
            KeyCheck::Seen(Remembered::Report(_)) => return Err(key_reused()),
            KeyCheck::FirstUse(first_use) => Some(first_use),
            KeyCheck::Unkeyed => None,
        };
        let billing = self.billing;
        let (slot, customer) = self.touch(now_ms, &t.customer)?;
        let (gross_units, credits_added, balance_added_units) =
            match (customer.plan().terms, t.amount) {
                (
                    ModelTerms::Credits {
                        pack_credits,
                        pack_price_units,
                        ..
                    },
                    TopUpAmount::Packs(packs),
                ) => {
                    let credits = i64::from(packs) * pack_credits;
                    (i64::from(packs) * pack_price_units, credits, 0)
                }
                (ModelTerms::Balance { .. }, TopUpAmount::Units(units)) => {
                    billing
                        .check_top_up(units)
                        .map_err(|reason| TallyError::InvalidRequest { reason })?;
                    (units, 0, units)
                }
                (terms, _) => {
                    let how = match terms {
                        ModelTerms::Credits { .. } => "buys credits with --packs, not dollars",
                        ModelTerms::Balance { .. } => "loads dollars with --amount, not packs",
                        ModelTerms::Metered { .. } => "is metered and takes no top-ups",
                    };
                    return Err(TallyError::InvalidRequest {
                        reason: format!(
                            "customer `{}` is on plan `{}`, which {how}",
                            t.customer,
                            customer.plan().slug
                        ),
                    });
                }
            };
        let Some(number) = customer.top_up(credits_added, balance_added_units) else {
            return Err(TallyError::InvalidRequest {
                reason: format!(
                    "customer `{}` has made {} top-ups, the most one customer can",
                    t.customer,
                    customer.transactions_made()
                ),
            });
        };
        let settlement = billing.settle(gross_units);
        let transaction = Transaction {
            customer: t.customer.clone(),
            number: u64::from(number),
            kind: match t.amount {
                TopUpAmount::Packs(_) => TransactionKind::CreditPurchase,
                TopUpAmount::Units(_) => TransactionKind::BalanceTopUp,
            },
            at_ms: now_ms,
            quantity: value,
            total_units: settlement.total_units,
            fee_units: settlement.fee_units,
            net_units: settlement.net_units,
        };
        let outcome = TopUpOutcome {
            seq: customer.seq(),
            duplicate: false,
            gross_units,
            credits_added,
            balance_added_units,
            transaction: transaction.view(),
            customer: customer.view(),
        };
        self.changes.transactions.push(transaction);
        self.changes.customers.insert(slot);
        let kind = if credits_added > 0 {
            AlertKind::CreditsPurchased {
                credits: credits_added,
                transaction: number,
            }
        } else {
            AlertKind::BalanceToppedUp {
                amount_units: balance_added_units,
                transaction: number,
            }
        };
        self.alert(now_ms, slot, kind);
        if let Some(first_use) = first_use {
            self.remember(
                now_ms,
                first_use,
                Remembered::TopUp(Box::new(outcome.clone())),
            );
        }
        Ok(outcome)
    }
}

/// The due-period heap with exactly one entry per customer (built in linear time).
fn period_ends_of(customers: &CustomerTable) -> BinaryHeap<Reverse<DueEntry>> {
    customers
        .iter()
        .map(|(slot, customer)| Reverse(DueEntry::new(customer.period_end_ms(), slot)))
        .collect()
}

/// A due-period heap entry, ordered as `(due second, slot)`: 8 bytes where `(u64, Slot)` takes
/// 16 (padded to the u64's alignment) — the heap holds one per customer. The period's end is
/// rounded up to the second: the sweep runs once a second, so an idle customer's period closes
/// at most one sweep later than with the exact end (a request closes its customer's ended
/// periods itself, whatever the heap says). Ends past 2106 (u32 seconds) are due then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DueEntry {
    due_s: u32,
    slot: Slot,
}

impl DueEntry {
    fn new(end_ms: u64, slot: Slot) -> Self {
        let due_s = u32::try_from(end_ms.div_ceil(1000)).unwrap_or(u32::MAX);
        Self { due_s, slot }
    }

    /// When the entry is due: at or after its period's end.
    fn due_ms(self) -> u64 {
        u64::from(self.due_s) * 1000
    }
}

/// What an idempotency key lookup found.
enum KeyCheck {
    /// The request carries no key.
    Unkeyed,
    /// The key was applied before: its first outcome.
    Seen(Remembered),
    /// The key is new: remember the outcome once applied.
    FirstUse(FirstUse),
}

/// What remembering a new key's outcome needs.
struct FirstUse {
    key: IdempotencyKey,
    fingerprint: u64,
    placement: u64,
}

fn report_outcome(
    customer: &Customer,
    feature: &str,
    terms: super::catalogue::UsageTerms,
    amount: u64,
    charged: i64,
) -> ReportOutcome {
    ReportOutcome {
        seq: customer.seq(),
        duplicate: false,
        amount,
        charged,
        standing: customer.standing(feature, terms.into()),
    }
}

fn as_duplicate_report(first: Remembered) -> Result<ReportOutcome, TallyError> {
    match first {
        Remembered::Report(outcome) => Ok(ReportOutcome {
            duplicate: true,
            ..outcome
        }),
        // Only a 64-bit fingerprint collision between operations can land here.
        Remembered::TopUp(_) => Err(key_reused()),
    }
}

/// The amount a request carries on `feature` of the customer's plan: its units, or, for a
/// feature priced by AI model, the provider's cost of its model tokens in cost units. Units on a
/// feature priced by model, or tokens on one priced per unit, are refused.
fn amount_of(
    catalogue: &Catalogue,
    customer: &Customer,
    feature: &str,
    amount: u64,
    model: Option<&ModelUsage>,
) -> Result<u64, TallyError> {
    let plan = customer.plan();
    match (plan.ai.get(feature), model) {
        (None, None) => Ok(amount),
        (Some(terms), Some(usage)) => {
            models::cost_units(catalogue.models(), terms, &plan.slug, feature, usage)
        }
        (Some(_), None) if amount == 0 => Ok(0),
        (Some(_), None) => Err(TallyError::InvalidRequest {
            reason: format!(
                "feature `{feature}` of plan `{}` is priced by AI model: report the model and its tokens, not units",
                plan.slug
            ),
        }),
        (None, Some(_)) => Err(TallyError::InvalidRequest {
            reason: format!(
                "feature `{feature}` of plan `{}` is priced per unit: report units, not model tokens",
                plan.slug
            ),
        }),
    }
}

/// `invoice.created` for `invoice`.
fn invoice_created(invoice: &Invoice) -> AlertKind {
    AlertKind::InvoiceCreated {
        number: invoice.number,
        period_start_ms: invoice.period_start_ms,
        period_end_ms: invoice.period_end_ms,
        total_units: invoice.total_units,
        reason: invoice.reason,
    }
}

/// Adds a request's model tokens to its idempotency fingerprint.
fn with_model(fingerprint: Fingerprint, model: Option<&ModelUsage>) -> Fingerprint {
    match model {
        None => fingerprint,
        Some(usage) => fingerprint
            .text(&usage.model)
            .number(usage.input_tokens)
            .number(usage.output_tokens)
            .number(usage.cache_read_tokens)
            .number(usage.cache_write_tokens),
    }
}

fn key_reused() -> TallyError {
    TallyError::Conflict {
        reason: "idempotency key was already used for a different operation".into(),
    }
}

impl From<super::catalogue::UsageTerms> for super::customer::FeatureRule {
    fn from(terms: super::catalogue::UsageTerms) -> Self {
        super::customer::FeatureRule::Usage(terms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T0: u64 = 1_800_000_000_000;

    fn core() -> ShardCore {
        ShardCore::new(crate::shipped::catalogue(), 60_000, BillingTerms::default())
    }

    fn create(core: &mut ShardCore, id: &str, plan: &str) {
        core.handle(
            T0,
            Request::CreateCustomer(CustomerPlan {
                customer: id.into(),
                plan: plan.into(),
            }),
        )
        .unwrap();
    }

    #[test]
    fn the_sweep_closes_each_period_once_after_early_closes_left_stale_entries() {
        let mut core = create_three_for_the_sweep();
        let end = core.customer("manual").unwrap().period_end_ms();
        // Ended early: a manual close mid-period, and a request that touches after the end.
        let closed = core.handle(
            T0 + 1_000,
            Request::ClosePeriod(CustomerRef {
                customer: "manual".into(),
            }),
        );
        assert!(matches!(closed, Ok(Response::Closed(_))));
        check(&mut core, end + 5, "touched", "tokens", 1).unwrap();
        let manual_end = core.customer("manual").unwrap().period_end_ms();
        assert!(manual_end > end);
        core.take_changes();

        // Past the original end: only the idle customer is due; the stale entries are skipped.
        assert_eq!(core.close_due_periods(end + 10, usize::MAX), 1);
        let invoices = core.take_changes().invoices;
        assert_eq!(invoices.len(), 1);
        assert_eq!(invoices[0].customer, "idle");
        assert_eq!(core.close_due_periods(end + 10, usize::MAX), 0);

        // The manually closed customer is due at its new end, once.
        assert_eq!(core.close_due_periods(manual_end, usize::MAX), 1);
        let invoices = core.take_changes().invoices;
        assert_eq!(invoices.len(), 1);
        assert_eq!(invoices[0].customer, "manual");
        assert_eq!(core.close_due_periods(manual_end, usize::MAX), 0);
    }

    #[test]
    fn early_closes_in_a_loop_leave_a_bounded_due_period_heap() {
        let mut core = core();
        create(&mut core, "looping", "pro");
        for i in 1..=5_000 {
            let closed = core.handle(
                T0 + i,
                Request::ClosePeriod(CustomerRef {
                    customer: "looping".into(),
                }),
            );
            assert!(matches!(closed, Ok(Response::Closed(_))));
        }
        assert_eq!(core.period_ends.len(), 5_001);
        assert_eq!(core.close_due_periods(T0 + 5_000, usize::MAX), 0);
        assert_eq!(core.period_ends.len(), 1);
        let end = core.customer("looping").unwrap().period_end_ms();
        core.take_changes();
        assert_eq!(core.close_due_periods(end, usize::MAX), 1);
        assert_eq!(core.take_changes().invoices.len(), 1);
    }

    fn create_three_for_the_sweep() -> ShardCore {
        let mut core = core();
        for id in ["manual", "touched", "idle"] {
            create(&mut core, id, "pro");
        }
        core.take_changes();
        core
    }

    fn report(core: &mut ShardCore, item: ReportItem) -> Result<ReportOutcome, TallyError> {
        match core.handle(T0, Request::Report(item))? {
            Response::Report(outcome) => Ok(outcome),
            other => panic!("{other:?}"),
        }
    }

    fn check(
        core: &mut ShardCore,
        now_ms: u64,
        id: &str,
        feature: &str,
        amount: u64,
    ) -> Result<CheckOutcome, TallyError> {
        let request = Request::Check(CheckRequest {
            model: None,
            customer: id.into(),
            feature: feature.into(),
            amount,
        });
        match core.handle(now_ms, request)? {
            Response::Check(outcome) => Ok(outcome),
            other => panic!("{other:?}"),
        }
    }

    fn reserve(
        core: &mut ShardCore,
        id: &str,
        feature: &str,
        amount: u64,
        ttl_ms: u64,
    ) -> ReserveOutcome {
        let request = Request::Reserve(ReserveRequest {
            model: None,
            customer: id.into(),
            feature: feature.into(),
            amount,
            ttl_ms,
        });
        match core.handle(T0, request).unwrap() {
            Response::Reserve(outcome) => outcome,
            other => panic!("{other:?}"),
        }
    }

    fn top_up(
        core: &mut ShardCore,
        id: &str,
        amount: TopUpAmount,
        key: Option<IdempotencyKey>,
    ) -> Result<TopUpOutcome, TallyError> {
        let request = Request::TopUp(TopUpRequest {
            customer: id.into(),
            amount,
            idempotency_key: key,
        });
        match core.handle(T0, request)? {
            Response::TopUp(outcome) => Ok(*outcome),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pro_overage_starts_after_the_included_tokens() {
        let mut core = core();
        create(&mut core, "acme", "pro");
        let within = report(&mut core, ReportItem::new("acme", "tokens", 100_000)).unwrap();
        assert_eq!(within.charged, 0);
        let over = check(&mut core, T0, "acme", "tokens", 1).unwrap();
        assert!(over.allowed, "an overage price allows usage past included");
        assert_eq!(over.cost, 20);
        let outcome = report(&mut core, ReportItem::new("acme", "tokens", 1)).unwrap();
        assert_eq!(outcome.charged, 20);
        assert!(matches!(
            outcome.standing,
            Standing::Metered {
                overage_units: 1,
                overage_cost_units: 20,
                ..
            }
        ));
        assert!(
            check(&mut core, T0, "acme", "priority-support", 1)
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn zero_is_allowed_and_a_zero_report_changes_nothing() {
        let mut core = core();
        create(&mut core, "w", "wallet");
        core.take_changes();
        let before = core.customer("w").unwrap().seq();
        let empty = ReportItem::new("w", "gpt-4", 0).with_idempotency_key([9; 16]);
        let outcome = report(&mut core, empty.clone().only_if_allowed()).unwrap();
        assert_eq!(
            (outcome.amount, outcome.charged, outcome.seq),
            (0, 0, before)
        );
        assert!(!core.has_changes(), "no event, no row, no key to persist");
        let outcome = report(&mut core, empty.clone()).unwrap();
        assert_eq!((outcome.amount, outcome.seq), (0, before));
        // The key was not spent on nothing: it still serves a real report.
        let real = ReportItem { amount: 1, ..empty };
        let outcome = report(&mut core, real).unwrap();
        assert_eq!(
            (outcome.amount, outcome.charged, outcome.duplicate),
            (1, 300, false)
        );
        // A wallet in debt may still be asked about nothing.
        report(&mut core, ReportItem::new("w", "gpt-4", 10)).unwrap();
        assert!(check(&mut core, T0, "w", "gpt-4", 0).unwrap().allowed);
        assert!(!check(&mut core, T0, "w", "gpt-4", 1).unwrap().allowed);
        let zero_hold = reserve(&mut core, "w", "gpt-4", 0, 1_000);
        assert!(zero_hold.allowed && zero_hold.held == 0, "{zero_hold:?}");
        let unknown = report(&mut core, ReportItem::new("nobody", "gpt-4", 0));
        assert!(matches!(unknown, Err(TallyError::UnknownCustomer { .. })));
    }

    #[test]
    fn a_denied_check_or_refused_report_creates_no_usage() {
        let mut core = core();
        create(&mut core, "pics", "images");
        let denied = check(&mut core, T0, "pics", "image-gen", 1).unwrap();
        assert!(!denied.allowed);
        let refused = report(
            &mut core,
            ReportItem::new("pics", "image-gen", 1).only_if_allowed(),
        );
        assert_eq!(
            refused,
            Err(TallyError::InsufficientBalance {
                cost: 1,
                available: 0
            })
        );
        let after = check(&mut core, T0, "pics", "image-gen", 1).unwrap();
        assert_eq!(after.seq, denied.seq, "nothing changed");
    }

    #[test]
    fn a_plain_report_goes_negative_because_the_work_happened() {
        let mut core = core();
        create(&mut core, "w", "wallet");
        let outcome = report(&mut core, ReportItem::new("w", "gpt-4", 2)).unwrap();
        assert_eq!(outcome.charged, 600);
        assert!(matches!(
            outcome.standing,
            Standing::Balance {
                balance_units: -600,
                ..
            }
        ));
    }

    #[test]
    fn holds_count_as_spent_until_settled_released_or_expired() {
        let mut core = core();
        create(&mut core, "pics", "images");
        top_up(&mut core, "pics", TopUpAmount::Packs(1), None).unwrap();
        let hold = reserve(&mut core, "pics", "image-gen", 400, 1_000);
        assert!(hold.allowed);
        assert!(
            !check(&mut core, T0, "pics", "image-gen", 101)
                .unwrap()
                .allowed
        );
        assert!(
            check(&mut core, T0 + 1_000, "pics", "image-gen", 500)
                .unwrap()
                .allowed,
            "expired at its deadline"
        );
        assert!(matches!(
            core.handle(
                T0 + 1_000,
                Request::Release(ReleaseRequest {
                    hold: hold.hold.unwrap()
                })
            ),
            Err(TallyError::UnknownHold { .. })
        ));
        let hold = reserve(&mut core, "pics", "image-gen", 10, 60_000)
            .hold
            .unwrap();
        let settled = core
            .handle(
                T0,
                Request::Settle(SettleRequest {
                    model: None,
                    hold,
                    actual: 12,
                    idempotency_key: None,
                    output_tokens: None,
                }),
            )
            .unwrap();
        let Response::Report(settled) = settled else {
            panic!()
        };
        assert_eq!(
            settled.charged, 12,
            "actual past the hold is charged in full"
        );
        assert!(matches!(
            settled.standing,
            Standing::Credits {
                available: 488,
                held: 0,
                ..
            }
        ));
    }

    #[test]
    fn the_hold_sweep_releases_expired_holds_without_a_request() {
        let mut core = core();
        create(&mut core, "pics", "images");
        top_up(&mut core, "pics", TopUpAmount::Packs(1), None).unwrap();
        reserve(&mut core, "pics", "image-gen", 5, 1_000);
        assert_eq!(core.expire_holds(T0 + 999), 0);
        assert_eq!(core.expire_holds(T0 + 1_000), 1);
        assert!(core.hold_owners.is_empty());
    }

    #[test]
    fn a_retried_key_changes_nothing_and_a_reused_key_conflicts() {
        let mut core = core();
        create(&mut core, "w", "wallet");
        let key = [1u8; 16];
        let first = top_up(&mut core, "w", TopUpAmount::Units(500_000), Some(key)).unwrap();
        let again = top_up(&mut core, "w", TopUpAmount::Units(500_000), Some(key)).unwrap();
        assert!(again.duplicate);
        assert_eq!(again.customer.balance_units, 500_000);
        assert_eq!(again.seq, first.seq);
        let other = top_up(&mut core, "w", TopUpAmount::Units(1), Some(key));
        assert!(matches!(other, Err(TallyError::Conflict { .. })));
        let key = [2u8; 16];
        let first = report(
            &mut core,
            ReportItem::new("w", "embeddings", 3).with_idempotency_key(key),
        )
        .unwrap();
        let again = report(
            &mut core,
            ReportItem::new("w", "embeddings", 3).with_idempotency_key(key),
        )
        .unwrap();
        assert!(!first.duplicate && again.duplicate);
        assert_eq!(again.charged, first.charged);
    }

    #[test]
    fn unknown_things_are_typed_errors() {
        let mut core = core();
        create(&mut core, "acme", "pro");
        assert!(matches!(
            check(&mut core, T0, "nobody", "tokens", 1),
            Err(TallyError::UnknownCustomer { .. })
        ));
        assert!(matches!(
            check(&mut core, T0, "acme", "nope", 1),
            Err(TallyError::UnknownFeature { .. })
        ));
        assert!(matches!(
            check(&mut core, T0, "acme", "gpt-4", 1),
            Err(TallyError::FeatureNotInPlan { .. })
        ));
        assert!(matches!(
            report(&mut core, ReportItem::new("acme", "priority-support", 1)),
            Err(TallyError::NotAUsageFeature { .. })
        ));
        let dup = core.handle(
            T0,
            Request::CreateCustomer(CustomerPlan {
                customer: "acme".into(),
                plan: "pro".into(),
            }),
        );
        assert!(matches!(dup, Err(TallyError::CustomerExists { .. })));
    }

    #[test]
    fn changing_plan_keeps_money_and_restarts_the_period() {
        let mut core = core();
        create(&mut core, "c", "wallet");
        top_up(&mut core, "c", TopUpAmount::Units(10_000), None).unwrap();
        report(&mut core, ReportItem::new("c", "gpt-4", 1)).unwrap();
        let request = Request::ChangePlan(CustomerPlan {
            customer: "c".into(),
            plan: "images".into(),
        });
        let Response::Customer(view) = core.handle(T0 + 5, request).unwrap() else {
            panic!()
        };
        assert_eq!(view.plan, "images");
        assert_eq!(view.balance_units, 9_700);
        assert_eq!(view.period_start_ms, T0 + 5);
        assert!(view.usage.iter().all(|u| u.used == 0));
    }

    #[test]
    fn a_top_up_past_the_last_transaction_number_is_refused_and_changes_nothing() {
        let mut core = core();
        create(&mut core, "pics", "images");
        let outcome = top_up(&mut core, "pics", TopUpAmount::Packs(1), None).unwrap();
        assert_eq!(outcome.transaction.number, 1);
        let slot = core.customers.slot_of("pics").unwrap();
        core.customers
            .at_mut(slot)
            .set_transactions_made(u32::MAX - 1);
        let last = top_up(&mut core, "pics", TopUpAmount::Packs(1), None).unwrap();
        assert_eq!(last.transaction.number, u64::from(u32::MAX));
        let before = core.customers.at(slot).clone();
        let refused = top_up(&mut core, "pics", TopUpAmount::Packs(1), None).unwrap_err();
        assert!(
            matches!(&refused, TallyError::InvalidRequest { reason } if reason.contains("top-ups")),
            "{refused:?}"
        );
        assert_eq!(core.customers.at(slot), &before);
    }

    /// A catalogue with the feature `chat` priced by model in each consumption model, and a model
    /// no plan accepts.
    fn ai_core() -> ShardCore {
        let toml = format!(
            "{}\n{}",
            crate::shipped::CONFIG_TOML,
            r#"
[models."other"]
input = "1.00"
output = "1.00"

[plans.ai-metered]
model = "metered"
period = "1 month"
features.chat = { pricing = "ai_model", models = ["gpt-4o"], margin = "0.20", allowance = "0.01" }

[plans.ai-credits]
model = "credits"
period = "1 month"
pack_credits = 1000
pack_price = "10.00"
features.chat = { pricing = "ai_model", models = ["gpt-4o"], credits_per_dollar = 100 }
"#
        );
        ShardCore::new(
            crate::shipped::catalogue_of(&toml),
            60_000,
            BillingTerms::default(),
        )
    }

    fn tokens(
        core: &mut ShardCore,
        id: &str,
        usage: ModelUsage,
    ) -> Result<ReportOutcome, TallyError> {
        report(core, ReportItem::tokens(id, "chat", usage))
    }

    #[test]
    fn model_usage_is_priced_from_its_tokens_with_the_margin_in_each_model() {
        let mut core = ai_core();
        // 1,200 prompt and 350 answer tokens of gpt-4o: $0.0065 of provider cost.
        let request = || ModelUsage::new("gpt-4o", 1_200, 350);

        // Balance, +20%: 78 rate units off the wallet.
        create(&mut core, "w", "assistant");
        top_up(&mut core, "w", TopUpAmount::Units(10_000), None).unwrap();
        let outcome = tokens(&mut core, "w", request()).unwrap();
        assert_eq!((outcome.amount, outcome.charged), (65_000_000, 78));
        assert_eq!(core.customer("w").unwrap().balance_units(), 10_000 - 78);

        // Credits at 100 per dollar, no margin: 0.65 credits, rounded up once over the period.
        create(&mut core, "c", "ai-credits");
        top_up(&mut core, "c", TopUpAmount::Packs(1), None).unwrap();
        let charged: Vec<i64> = (0..4)
            .map(|_| tokens(&mut core, "c", request()).unwrap().charged)
            .collect();
        assert_eq!(
            charged,
            [1, 1, 0, 1],
            "0.65, 1.3, 1.95, 2.6 credits, cumulatively rounded up"
        );

        // Metered: $0.01 included (+20%), then overage at cost + 20%, billed at close.
        create(&mut core, "m", "ai-metered");
        assert_eq!(
            tokens(&mut core, "m", request()).unwrap().charged,
            0,
            "within the allowance"
        );
        let over = tokens(&mut core, "m", request()).unwrap();
        assert_eq!(
            over.charged, 56,
            "$0.0156 used, $0.0100 included: 56 rate units of overage"
        );

        // The worst case of a request is held; settling charges what it used and frees the rest.
        let hold = core
            .handle(
                T0,
                Request::Reserve(ReserveRequest {
                    customer: "w".into(),
                    feature: "chat".into(),
                    amount: 0,
                    ttl_ms: 60_000,
                    model: Some(ModelUsage::new("gpt-4o", 1_200, 4_096)),
                }),
            )
            .unwrap();
        let Response::Reserve(hold) = hold else {
            panic!("{hold:?}")
        };
        assert_eq!(hold.held, 528, "($0.003 + $0.04096) × 1.2, rounded up");
        let settled = core
            .handle(
                T0,
                Request::Settle(SettleRequest {
                    hold: hold.hold.unwrap(),
                    actual: 0,
                    idempotency_key: None,
                    model: Some(request()),
                    output_tokens: None,
                }),
            )
            .unwrap();
        let Response::Report(settled) = settled else {
            panic!("{settled:?}")
        };
        assert_eq!(settled.charged, 78);
        assert_eq!(core.customer("w").unwrap().balance_units(), 10_000 - 2 * 78);
    }

    #[test]
    fn unknown_or_refused_models_and_the_wrong_kind_of_usage_are_typed_errors() {
        let mut core = ai_core();
        create(&mut core, "m", "ai-metered");
        create(&mut core, "p", "pro");
        let seq = core.customer("m").unwrap().seq();
        assert!(matches!(
            tokens(&mut core, "m", ModelUsage::new("nope", 1, 1)),
            Err(TallyError::UnknownModel { .. })
        ));
        assert!(matches!(
            tokens(&mut core, "m", ModelUsage::new("other", 1, 1)),
            Err(TallyError::ModelNotInPlan { .. })
        ));
        assert!(matches!(
            report(&mut core, ReportItem::new("m", "chat", 5)),
            Err(TallyError::InvalidRequest { .. })
        ));
        assert!(matches!(
            report(
                &mut core,
                ReportItem::tokens("p", "tokens", ModelUsage::new("gpt-4o", 1, 1))
            ),
            Err(TallyError::InvalidRequest { .. })
        ));
        assert_eq!(core.customer("m").unwrap().seq(), seq, "nothing changed");
    }

    proptest! {
        /// The packed heap entry orders as `(end, slot)` up to the second its end rounds up to,
        /// and is due at or after its end, within a second of it.
        #[test]
        fn a_due_entry_orders_as_its_end_then_slot(a in (0..4_000_000_000_000u64, any::<u32>()), b in (0..4_000_000_000_000u64, any::<u32>())) {
            let (x, y) = (DueEntry::new(a.0, a.1), DueEntry::new(b.0, b.1));
            if a.0.div_ceil(1000) != b.0.div_ceil(1000) {
                prop_assert_eq!(x.cmp(&y), a.0.cmp(&b.0));
            } else {
                prop_assert_eq!(x.cmp(&y), a.1.cmp(&b.1));
            }
            prop_assert!(x.due_ms() >= a.0 && x.due_ms() < a.0 + 1000);
            prop_assert_eq!(x.slot, a.1);
        }
    }

    #[test]
    fn a_due_entry_takes_eight_bytes_and_saturates_past_its_range() {
        assert_eq!(std::mem::size_of::<Reverse<DueEntry>>(), 8);
        let ordered = [
            (0, 7),
            (1, 1),
            (1000, 2),
            (1001, 0),
            (1001, 1),
            (u64::MAX, 0),
        ];
        for pair in ordered.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                DueEntry::new(a.0, a.1) < DueEntry::new(b.0, b.1),
                "{a:?} < {b:?}"
            );
        }
        assert_eq!(
            DueEntry::new(u64::MAX, 3).due_ms(),
            u64::from(u32::MAX) * 1000
        );
    }

    proptest! {
        /// Against a credits customer, any interleaving of consume-reports, holds, settles and
        /// releases never spends more than was bought unless a plain report or over-settle did.
        #[test]
        fn only_if_allowed_and_holds_never_overspend(ops in proptest::collection::vec((0u8..4, 1u64..60), 1..200)) {
            let mut core = core();
            create(&mut core, "pics", "images");
            top_up(&mut core, "pics", TopUpAmount::Packs(1), None).unwrap();
            let mut consumed = 0i64;
            let mut holds = Vec::new();
            for (op, amount) in ops {
                match op {
                    0 => if let Ok(o) = report(&mut core, ReportItem::new("pics", "image-gen", amount).only_if_allowed()) {
                        consumed += o.charged;
                    },
                    1 => if let Some(h) = reserve(&mut core, "pics", "image-gen", amount, 60_000).hold { holds.push((h, amount)); },
                    2 => if let Some((hold, amount)) = holds.pop() {
                        let r = core.handle(T0, Request::Settle(SettleRequest { model: None, hold, actual: amount, idempotency_key: None, output_tokens: None })).unwrap();
                        let Response::Report(o) = r else { panic!() };
                        consumed += o.charged;
                    },
                    _ => if let Some((hold, _)) = holds.pop() {
                        core.handle(T0, Request::Release(ReleaseRequest { hold })).unwrap();
                    },
                }
                let Response::Customer(view) = core.handle(T0, Request::GetCustomer(CustomerRef { customer: "pics".into() })).unwrap() else { panic!() };
                let held: i64 = view.holds.iter().map(|h| h.held).sum();
                prop_assert!(view.purchased_credits - held >= 0, "available went negative");
                prop_assert_eq!(view.purchased_credits, 500 - consumed);
            }
        }
    }
}

#[cfg(test)]
mod invoice_properties {
    //! Invoices against an independent computation from the events the shard emitted (exactly
    //! what the store keeps), for random prices, `per` quantities and usage histories.

    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const DAY_MS: u64 = 24 * 60 * 60 * 1000;
    const T0: u64 = 1_800_000_000_000;

    fn catalogue(included: u64, overage: (i64, u64), price: (i64, u64)) -> Arc<Catalogue> {
        let text = format!(
            r#"[features]
            tokens = {{ kind = "usage" }}
            [plans.metered]
            model = "metered"
            period = "7 days"
            base_price = "12.34"
            features.tokens = {{ included = {included}, overage = "{}", per = {} }}
            [plans.balance]
            model = "balance"
            period = "7 days"
            features.tokens = {{ price = "{}", per = {} }}"#,
            rust_decimal::Decimal::new(overage.0, 4),
            overage.1,
            rust_decimal::Decimal::new(price.0, 4),
            price.1
        );
        #[derive(serde::Deserialize)]
        struct Doc {
            features: BTreeMap<String, super::super::catalogue::FeatureToml>,
            plans: BTreeMap<String, super::super::catalogue::PlanToml>,
        }
        let doc: Doc = toml::from_str(&text).unwrap();
        Arc::new(Catalogue::build(&doc.features, &doc.plans).unwrap())
    }

    /// `ceil(a × b / c)` in plain integers.
    fn ceil_div(a: u64, b: i64, c: u64) -> i64 {
        let n = u128::from(a) * b as u128;
        n.div_ceil(u128::from(c)) as i64
    }

    /// Rounds non-negative rate units to cents, half up (= away from zero here).
    fn cents(units: i64) -> i64 {
        (units + 50) / 100 * 100
    }

    proptest! {
            #[test]
            fn invoices_equal_a_straightforward_computation_from_the_events(
                included in 0u64..50_000,
                overage in (0i64..10_000, 1u64..1_000_000),
                price in (0i64..10_000, 1u64..1_000_000),
                history in proptest::collection::vec((0u64..3 * DAY_MS, any::<bool>(), 1u64..40_000), 1..60),
            ) {
                let mut core = ShardCore::new(catalogue(included, overage, price), 60_000, BillingTerms::default());
                for (id, plan) in [("m", "metered"), ("b", "balance")] {
                    core.handle(T0, Request::CreateCustomer(CustomerPlan { customer: id.into(), plan: plan.into() })).unwrap();
                }
                let mut events = Vec::new();
                let mut invoices = Vec::new();
                let mut now = T0;
                for (advance, metered, amount) in history {
                    now += advance;
                    let customer = if metered { "m" } else { "b" };
                    core.handle(now, Request::Report(ReportItem::new(customer, "tokens", amount))).unwrap();
                    let changes = core.take_changes();
                    events.extend(changes.events);
                    invoices.extend(changes.invoices);
                }
                core.close_due_periods(now + 8 * DAY_MS, usize::MAX);
                invoices.extend(core.take_changes().invoices);
                prop_assert!(!invoices.is_empty());

                let (mut gross, mut fees, mut nets) = (0i64, 0i64, 0i64);
                for invoice in &invoices {
                    let used: u64 = events
                        .iter()
                        .filter(|e| e.customer == invoice.customer)
                        .filter(|e| (invoice.period_start_ms..invoice.period_end_ms).contains(&e.at_ms))
                        .map(|e| e.amount)
                        .sum();
                    let subtotal = if invoice.customer == "m" {
                        let over = used.saturating_sub(included);
                        123_400 + ceil_div(over, overage.0, overage.1)
                    } else {
                        // No top-ups: everything consumed is owed at close.
                        ceil_div(used, price.0, price.1)
                    };
                    let line_used: u64 = invoice.lines.iter().filter(|l| l.feature == "tokens").map(|l| l.used).sum();
                    prop_assert_eq!(line_used, used, "invoice usage reconciles with the events");
                    let total = cents(subtotal);
                    let fee = if total > 0 { (total / 100 * 45 + 500) / 1_000 * 100 + 4_000 } else { 0 };
                    prop_assert_eq!(invoice.total_units, total);
                    prop_assert_eq!(invoice.fee_units, fee);
                    prop_assert_eq!(invoice.net_units, total - fee);
                    gross += invoice.total_units;
                    fees += invoice.fee_units;
                    nets += invoice.net_units;
                }
                prop_assert_eq!(nets + fees, gross);
            }

            #[test]
            fn top_ups_credit_exactly_their_gross_and_never_net_below_zero(
                amounts in proptest::collection::vec(
                    prop_oneof![0i64..20_000, (1i64..200_000).prop_map(|c| c * 100), 99_999_000i64..100_001_000],
                    1..40,
                ),
                // Fees a config may set with the default minimum ($1.00 must net at least zero).
                fee in (0i64..1_000, 0i64..5_000),
            ) {
                let terms = BillingTerms {
                    fee_percent: rust_decimal::Decimal::new(fee.0, 2),
                    fee_fixed_units: fee.1 / 100 * 100,
                    ..BillingTerms::default()
                };
                let mut core = ShardCore::new(catalogue(0, (1, 1), (1, 1)), 60_000, terms);
                core.handle(T0, Request::CreateCustomer(CustomerPlan { customer: "b".into(), plan: "balance".into() })).unwrap();
                let (mut credited, mut gross) = (0i64, 0i64);
                for units in amounts {
                    let before = core.customer("b").unwrap().balance_units();
                    let whole_cents_in_range = units % 100 == 0 && (10_000..=100_000_000).contains(&units);
                    let request = Request::TopUp(TopUpRequest { customer: "b".into(), amount: TopUpAmount::Units(units), idempotency_key: None });
                    match core.handle(T0, request) {
                        Ok(Response::TopUp(outcome)) => {
                            prop_assert!(whole_cents_in_range, "{units} was accepted");
                            prop_assert_eq!(outcome.balance_added_units, outcome.transaction.total_units);
                            prop_assert!(outcome.transaction.net_units >= 0, "{:?}", outcome.transaction);
                            credited += outcome.balance_added_units;
                            gross += outcome.transaction.total_units;
                        }
                        Err(TallyError::InvalidRequest { reason }) => {
                            prop_assert!(!whole_cents_in_range, "{units} was refused: {reason}");
                            prop_assert_eq!(core.customer("b").unwrap().balance_units(), before);
                        }
                        other => prop_assert!(false, "{other:?}"),
                    }
                }
                prop_assert_eq!(core.customer("b").unwrap().balance_units(), credited);
                prop_assert_eq!(credited, gross);
            }
    }
}
