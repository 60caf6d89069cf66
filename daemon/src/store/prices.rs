//! The history of the plans' prices, in the `meta` keyspace: every version of each plan as
//! config.toml wrote it (`prices/SLUG/VERSION`), and the usage each customer had when a version
//! took effect `now`, inside its period (`price-splits/CUSTOMER/SINCE`). Both are written once,
//! at the start-up that sees a changed catalogue, in one synced batch; a split is forgotten once
//! its period has closed. Values are TOML text: the config's own spelling, not a layout.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use fjall::PersistMode;
use serde::{Deserialize, Serialize};

use super::records::RecordError;
use super::{Store, StoreError};
use crate::metering::billing::dollars;
use crate::metering::catalogue::{Catalogue, Plan, PlanSource, UsageTerms};
use crate::metering::money::Price;

const VERSION_PREFIX: &[u8] = b"prices/";
const SPLIT_PREFIX: &[u8] = b"price-splits/";

/// One version of a plan's prices as stored.
#[derive(Debug, Serialize, Deserialize)]
struct VersionRecord {
    version: u32,
    since_ms: u64,
    source: PlanSource,
}

/// A customer's usage when a price change took effect inside its period.
#[derive(Debug, Serialize, Deserialize)]
struct SplitRecord {
    usage: BTreeMap<String, u64>,
}

/// A version of a plan's prices to record.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The version, as the catalogue now holds it.
    pub plan: Arc<Plan>,
    /// What config.toml wrote for it.
    pub source: PlanSource,
}

/// A customer's usage when a change recorded at this start-up took effect inside its period.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSplit {
    /// The customer.
    pub customer: String,
    /// When the change took effect.
    pub since_ms: u64,
    /// Units used of each usage feature before it.
    pub usage: Vec<(String, u64)>,
}

/// The recorded splits, by customer and the instant of their change.
pub type Splits = HashMap<(String, u64), Vec<(String, u64)>>;

/// The catalogue with every plan's price history: the stored versions, and a new one for each
/// plan whose prices in config.toml differ from its last (`since_ms` = `now_ms`), or whose first
/// version this is (since always). Returns the new versions for [`Store::record_prices`].
pub fn catalogue_with_history(
    store: &Store,
    config: &Catalogue,
    now_ms: u64,
) -> Result<(Catalogue, Vec<NewVersion>), StoreError> {
    let mut stored = store.price_versions()?;
    let mut catalogue = config.clone();
    let mut new_versions = Vec::new();
    for current in config.plans() {
        let slug = current.slug.as_str();
        let mut versions = stored.remove(slug).unwrap_or_default();
        let last = versions.last();
        if !last.is_some_and(|last| last.has_same_prices(current)) {
            let (version, since_ms) = match last {
                None => (1, 0),
                Some(last) => (last.version + 1, now_ms),
            };
            let plan = Arc::new(current.as_version(version, since_ms));
            if let Some(last) = last {
                tracing::info!(
                    plan = slug,
                    version,
                    effective = plan.effective.rule.as_str(),
                    changes = %describe_changes(last, &plan),
                    "recorded a new version of a plan's prices"
                );
            }
            let source = config
                .source(slug)
                .expect("every plan of a built catalogue has its source")
                .clone();
            new_versions.push(NewVersion {
                plan: plan.clone(),
                source,
            });
            versions.push(plan);
        }
        catalogue.set_versions(slug, versions);
    }
    Ok((catalogue, new_versions))
}

/// What differs between two versions of a plan, for the log.
fn describe_changes(old: &Plan, new: &Plan) -> String {
    let mut changes = Vec::new();
    if old.base_price_units != new.base_price_units {
        changes.push(format!(
            "base price {} → {}",
            dollars(old.base_price_units),
            dollars(new.base_price_units)
        ));
    }
    if old.period != new.period {
        changes.push(format!("period {:?} → {:?}", old.period, new.period));
    }
    if old.terms != new.terms {
        changes.push(format!("terms {:?} → {:?}", old.terms, new.terms));
    }
    let features = old.usage.keys().chain(new.usage.keys());
    let mut seen = std::collections::BTreeSet::new();
    for feature in features.filter(|f| seen.insert(*f)) {
        let (before, after) = (old.usage.get(feature), new.usage.get(feature));
        if before != after {
            changes.push(format!(
                "{feature}: {} → {}",
                terms_text(before),
                terms_text(after)
            ));
        }
    }
    if old.flags != new.flags {
        changes.push(format!("flags {:?} → {:?}", old.flags, new.flags));
    }
    changes.join("; ")
}

fn terms_text(terms: Option<&UsageTerms>) -> String {
    let price = |p: &Price| format!("{} per {}", dollars(p.units), p.per);
    match terms {
        None => "not in the plan".into(),
        Some(UsageTerms::Metered { included, overage }) => format!(
            "{included} included, then {}",
            overage.as_ref().map_or("a hard limit".into(), price)
        ),
        Some(UsageTerms::Credits { price: p }) if p.per == 1 => {
            format!("{} credits per unit", p.units)
        }
        Some(UsageTerms::Credits { price: p }) => format!("{} credits per {}", p.units, p.per),
        Some(UsageTerms::Balance { price: p }) => price(p),
    }
}

fn version_key(slug: &str, version: u32) -> Vec<u8> {
    let mut key = VERSION_PREFIX.to_vec();
    key.extend_from_slice(slug.as_bytes());
    key.push(b'/');
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// Customer ids hold no control character, so a 0 byte ends one.
fn split_key(customer: &str, since_ms: u64) -> Vec<u8> {
    let mut key = SPLIT_PREFIX.to_vec();
    key.extend_from_slice(customer.as_bytes());
    key.push(0);
    key.extend_from_slice(&since_ms.to_be_bytes());
    key
}

fn corrupt(what: &'static str, reason: impl ToString) -> StoreError {
    StoreError::Record(RecordError::Corrupt {
        what,
        reason: reason.to_string(),
    })
}

impl Store {
    /// Every recorded version of every plan's prices, oldest first per plan.
    pub fn price_versions(&self) -> Result<BTreeMap<String, Vec<Arc<Plan>>>, StoreError> {
        let mut versions: BTreeMap<String, Vec<Arc<Plan>>> = BTreeMap::new();
        for guard in self.meta.prefix(VERSION_PREFIX) {
            let (key, value) = guard.into_inner()?;
            let slug_and_version = &key[VERSION_PREFIX.len()..];
            let slug_bytes = slug_and_version
                .len()
                .checked_sub(5)
                .map(|end| &slug_and_version[..end])
                .ok_or_else(|| corrupt("price version", "a key without a version"))?;
            let slug = std::str::from_utf8(slug_bytes).map_err(|e| corrupt("price version", e))?;
            let text = std::str::from_utf8(&value).map_err(|e| corrupt("price version", e))?;
            let record: VersionRecord =
                toml::from_str(text).map_err(|e| corrupt("price version", e))?;
            let plan = record
                .source
                .build(slug)
                .map_err(|errors| corrupt("price version", errors.join("; ")))?;
            let plan = plan.as_version(record.version, record.since_ms);
            versions
                .entry(slug.to_string())
                .or_default()
                .push(Arc::new(plan));
        }
        Ok(versions)
    }

    /// The recorded usage splits of every customer.
    pub fn price_splits(&self) -> Result<Splits, StoreError> {
        let mut splits = Splits::new();
        for guard in self.meta.prefix(SPLIT_PREFIX) {
            let (key, value) = guard.into_inner()?;
            let rest = &key[SPLIT_PREFIX.len()..];
            let (customer, since) = rest
                .len()
                .checked_sub(9)
                .map(|end| (&rest[..end], &rest[end + 1..]))
                .ok_or_else(|| corrupt("price split", "a key without an instant"))?;
            let customer = std::str::from_utf8(customer).map_err(|e| corrupt("price split", e))?;
            let since_ms = u64::from_be_bytes(since.try_into().expect("8 bytes were cut"));
            let text = std::str::from_utf8(&value).map_err(|e| corrupt("price split", e))?;
            let record: SplitRecord =
                toml::from_str(text).map_err(|e| corrupt("price split", e))?;
            splits.insert(
                (customer.to_string(), since_ms),
                record.usage.into_iter().collect(),
            );
        }
        Ok(splits)
    }

    /// Records new price versions and the splits they made, and forgets the splits no period
    /// needs any more, in one synced batch: a crash before it leaves none of them, and the next
    /// start records them again at its own instant.
    pub fn record_prices(
        &self,
        versions: &[NewVersion],
        splits: &[NewSplit],
        forgotten: &[(String, u64)],
    ) -> Result<(), StoreError> {
        if versions.is_empty() && splits.is_empty() && forgotten.is_empty() {
            return Ok(());
        }
        if self.faults.is_failing() {
            return Err(StoreError::InjectedFault);
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for version in versions {
            let record = VersionRecord {
                version: version.plan.version,
                since_ms: version.plan.effective.since_ms,
                source: version.source.clone(),
            };
            let text = toml::to_string(&record).map_err(|e| corrupt("price version", e))?;
            batch.insert(
                &self.meta,
                version_key(&version.plan.slug, version.plan.version),
                text.into_bytes(),
            );
        }
        for split in splits {
            let record = SplitRecord {
                usage: split.usage.iter().cloned().collect(),
            };
            let text = toml::to_string(&record).map_err(|e| corrupt("price split", e))?;
            batch.insert(
                &self.meta,
                split_key(&split.customer, split.since_ms),
                text.into_bytes(),
            );
        }
        for (customer, since_ms) in forgotten {
            batch.remove(&self.meta, split_key(customer, *since_ms));
        }
        batch.commit()?;
        Ok(())
    }
}

/// What recovery needs to price each customer's current period — the catalogue with its
/// history, the recorded splits, the instant of this start-up (a version recorded at it splits
/// a period at the usage stored now) — and what it found: the new splits to record, and which
/// recorded ones are still in use.
pub struct PriceRecovery<'a> {
    /// The catalogue with every plan's versions.
    pub catalogue: &'a Catalogue,
    /// The recorded splits.
    pub splits: &'a Splits,
    /// This start-up's instant.
    pub now_ms: u64,
    /// Splits made by versions recorded at this start-up.
    pub new_splits: Vec<NewSplit>,
    /// Recorded splits some customer's current period still has.
    pub used: std::collections::HashSet<(String, u64)>,
}

impl<'a> PriceRecovery<'a> {
    /// Recovery with nothing found yet.
    pub fn new(catalogue: &'a Catalogue, splits: &'a Splits, now_ms: u64) -> Self {
        PriceRecovery {
            catalogue,
            splits,
            now_ms,
            new_splits: Vec::new(),
            used: Default::default(),
        }
    }

    /// The usage `customer` had when the change at `since_ms` took effect: recorded, or (for a
    /// change recorded by this start-up) its `stored_usage`, or none (the period had no usage
    /// before it: it was closed after the change, with the daemon down in between).
    pub fn usage_at(
        &mut self,
        customer: &str,
        since_ms: u64,
        stored_usage: impl FnOnce() -> Vec<(String, u64)>,
    ) -> Option<Vec<(String, u64)>> {
        let key = (customer.to_string(), since_ms);
        if let Some(usage) = self.splits.get(&key) {
            let usage = usage.clone();
            self.used.insert(key);
            return Some(usage);
        }
        if since_ms != self.now_ms {
            return None;
        }
        let usage = stored_usage();
        self.new_splits.push(NewSplit {
            customer: customer.to_string(),
            since_ms,
            usage: usage.clone(),
        });
        Some(usage)
    }

    /// Recorded splits no current period has any more.
    pub fn forgotten(&self) -> Vec<(String, u64)> {
        self.splits
            .keys()
            .filter(|key| !self.used.contains(*key))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metering::billing::{BillingTerms, Invoice};
    use crate::metering::catalogue::{FeatureToml, PlanToml};
    use crate::metering::engine::{ShardCore, UsageEvent};
    use crate::store::{writes_for, StoreFaults, Tail};
    use proptest::prelude::*;
    use tally_protocol::message::{CustomerPlan, CustomerRef, LineKind, ReportItem, Request};

    #[test]
    fn keys_keep_their_parts_apart() {
        let key = split_key("acme", 7);
        assert_eq!(&key[..SPLIT_PREFIX.len()], SPLIT_PREFIX);
        assert_eq!(key.len(), SPLIT_PREFIX.len() + 4 + 1 + 8);
        let key = version_key("pro", 2);
        assert_eq!(
            &key[VERSION_PREFIX.len()..VERSION_PREFIX.len() + 4],
            b"pro/"
        );
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn the_log_says_what_changed_in_dollars() {
        let (old, new) = (catalogue(20, "now"), catalogue(30, "now"));
        let said = describe_changes(old.plan("m").unwrap(), new.plan("m").unwrap());
        assert_eq!(
            said,
            "base price $1.20 → $1.30; tokens: 1000 included, then $0.002 per 1 → 1000 included, then $0.003 per 1"
        );
    }

    /// A metered plan `m` and a balance plan `b`, hourly, at `price` rate units per token of
    /// overage and per ten tokens, a base price that moves with it, taking effect as `rule` says.
    fn catalogue(price: i64, rule: &str) -> Catalogue {
        let text = format!(
            r#"
            [features]
            tokens = {{ kind = "usage" }}
            [plans.m]
            model = "metered"
            period = "1 hour"
            base_price = "{base}"
            effective = "{rule}"
            features.tokens = {{ included = 1000, overage = "{unit}" }}
            [plans.b]
            model = "balance"
            period = "1 hour"
            effective = "{rule}"
            features.tokens = {{ price = "{unit}", per = 10 }}"#,
            base = rust_decimal::Decimal::new(10_000 + price * 100, 4),
            unit = rust_decimal::Decimal::new(price, 4),
        );
        #[derive(serde::Deserialize)]
        struct Doc {
            features: BTreeMap<String, FeatureToml>,
            plans: BTreeMap<String, PlanToml>,
        }
        let doc: Doc = toml::from_str(&text).unwrap();
        Catalogue::build(&doc.features, &doc.plans).unwrap()
    }

    /// Starts on `store` as the daemon does: the price history, recovery, the splits recorded.
    fn start(store: &Store, config: &Catalogue, now_ms: u64) -> ShardCore {
        let (catalogue, new_versions) = catalogue_with_history(store, config, now_ms).unwrap();
        let splits = store.price_splits().unwrap();
        let mut prices = PriceRecovery::new(&catalogue, &splits, now_ms);
        let mut recovered = store.recover(&mut prices, now_ms, 1, |_| 0).unwrap();
        store
            .record_prices(&new_versions, &prices.new_splits, &prices.forgotten())
            .unwrap();
        store
            .checkpoint(&mut recovered.log, PersistMode::Buffer)
            .unwrap();
        let rows = recovered.customers.pop().unwrap();
        ShardCore::restore(
            Arc::new(catalogue),
            60_000,
            BillingTerms::default(),
            rows,
            recovered.keys,
        )
    }

    /// Each invoice with the events of its period, in the order they happened.
    #[derive(Default)]
    struct Books {
        open: BTreeMap<String, Vec<UsageEvent>>,
        closed: Vec<(Invoice, Vec<UsageEvent>)>,
    }

    impl Books {
        fn persist(&mut self, store: &Store, core: &mut ShardCore) {
            let changes = core.take_changes();
            // A call closes a period before it records usage in the next.
            for invoice in &changes.invoices {
                let events = self.open.remove(&invoice.customer).unwrap_or_default();
                self.closed.push((invoice.clone(), events));
            }
            for event in &changes.events {
                self.open
                    .entry(event.customer.clone())
                    .or_default()
                    .push(event.clone());
            }
            let writes = writes_for(changes, core);
            store
                .persist(writes, PersistMode::Buffer, &mut Tail::default())
                .unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn every_invoice_line_is_what_its_reports_were_charged_across_price_changes(
            steps in proptest::collection::vec((0u8..12, 1u64..900, 1i64..60, any::<bool>()), 1..40),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut now = T0;
            let mut store = Store::open(dir.path(), StoreFaults::default()).unwrap();
            let mut core = start(&store, &catalogue(20, "now"), now);
            let mut books = Books::default();
            for (id, plan) in [("m", "m"), ("b", "b")] {
                let request = Request::CreateCustomer(CustomerPlan { customer: id.into(), plan: plan.into() });
                core.handle(now, request).unwrap();
            }
            books.persist(&store, &mut core);
            for (kind, amount, price, is_now) in steps {
                let customer = if kind % 2 == 0 { "m" } else { "b" };
                match kind {
                    0..=5 => drop(core.handle(now, Request::Report(ReportItem::new(customer, "tokens", amount)))),
                    6 | 7 => now += amount * 10_000,
                    8 => drop(core.handle(now, Request::ClosePeriod(CustomerRef { customer: customer.into() }))),
                    _ => {
                        // A restart with new prices, a moment later.
                        now += 1;
                        drop(core);
                        drop(store);
                        store = Store::open(dir.path(), StoreFaults::default()).unwrap();
                        let rule = if is_now { "now" } else { "next_period" };
                        core = start(&store, &catalogue(price, rule), now);
                    }
                }
                books.persist(&store, &mut core);
            }
            for customer in ["m", "b"] {
                now += 1;
                core.handle(now, Request::ClosePeriod(CustomerRef { customer: customer.into() })).unwrap();
                books.persist(&store, &mut core);
            }
            prop_assert!(books.open.is_empty());
            for (invoice, events) in &books.closed {
                let mut events = events.iter();
                for line in invoice.lines.iter().filter(|l| matches!(l.kind, LineKind::Metered | LineKind::Usage)) {
                    let (mut used, mut charged) = (0, 0);
                    while used < line.used {
                        let event = events.next().expect("events for every unit invoiced");
                        used += event.amount;
                        charged += event.charged;
                    }
                    let amount = if line.kind == LineKind::Metered { line.amount_units } else { line.consumed };
                    prop_assert_eq!(used, line.used, "{:?}", invoice);
                    prop_assert_eq!(charged, amount, "{:?}", invoice);
                }
                prop_assert!(events.next().is_none(), "every event is invoiced: {:?}", invoice);
            }
        }
    }
}
