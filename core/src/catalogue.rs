//! The catalogue: features and plans as `config.toml` declares them, validated once at start-up
//! into types the engine trusts ("parse, then trust"). Every refusal names the entry at fault.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tally_protocol::message::{Model, SLUG_BYTES_MAX};

use super::models::{
    allowance_cost_units, charged_price, credits_price, margin_basis_points, AiTerms, ModelPrice,
    ModelToml, Models,
};
use super::money::{parse_dollars, Price};
use super::period::Period;

/// Most credits one unit of a feature may cost; keeps `amount × credits` inside `i64`.
pub const CREDITS_PER_UNIT_MAX: i64 = 1_000_000;
/// Most credits in one pack or one periodic grant.
pub const CREDITS_MAX: i64 = 1_000_000_000_000;

/// A feature as written in `[features]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureToml {
    /// `"usage"` (reported in integer units) or `"flag"` (on/off by plan).
    pub kind: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A plan as written in `[plans.SLUG]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanToml {
    /// `"metered"`, `"credits"` or `"balance"`.
    pub model: String,
    /// `"1 month"`, `"1 hour"`, …
    pub period: String,
    /// Dollars per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_price: Option<String>,
    /// Metered: most overage dollars per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spending_cap: Option<String>,
    /// Credits: credits in one pack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_credits: Option<i64>,
    /// Credits: dollars for one pack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_price: Option<String>,
    /// Credits: credits granted every period (spent first, reset at close).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_credits: Option<i64>,
    /// Balance: how far below zero a check may still allow, in dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdraft: Option<String>,
    /// When a change of this plan's prices takes effect: `"next_period"` (the default: each
    /// customer's current period keeps the prices it started with) or `"now"` (usage from the
    /// start-up that sees the change on; what was used before keeps its price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<String>,
    /// The plan's features: usage features with their model's terms, flag features with `{}`.
    #[serde(default)]
    pub features: BTreeMap<String, PlanFeatureToml>,
}

/// A feature's terms inside a plan.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFeatureToml {
    /// Metered: units included per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub included: Option<i64>,
    /// Metered: dollars per `per` units past `included`; absent means a hard limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overage: Option<String>,
    /// Credits: credits per unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits: Option<i64>,
    /// Balance: dollars per `per` units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// The quantity `overage` or `price` is for (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<i64>,
    /// `"fixed"` (the default: a price per unit) or `"ai_model"` (priced from the model and its
    /// tokens, at the provider's cost plus `margin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<String>,
    /// AI model pricing: the models accepted (default: every model of `[models]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// AI model pricing: the margin on the provider's cost, e.g. `"0.20"` (cost × 1.20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<String>,
    /// AI model pricing, metered: dollars of usage (at the plan's prices) included per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowance: Option<String>,
    /// AI model pricing, credits: credits per dollar of usage (at the plan's prices).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credits_per_dollar: Option<i64>,
}

/// Whether a feature takes usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// Reported in integer units.
    Usage,
    /// On or off by plan.
    Flag,
}

/// The validated catalogue.
#[derive(Debug, Clone)]
pub struct Catalogue {
    features: BTreeMap<String, FeatureKind>,
    plans: BTreeMap<String, Arc<Plan>>,
    /// Earlier versions of each plan's prices, oldest first (the current one is in `plans`).
    earlier: BTreeMap<String, Vec<Arc<Plan>>>,
    /// Each plan as config.toml wrote it, with the features it names: what the store records
    /// for a version of its prices.
    sources: BTreeMap<String, PlanSource>,
    /// AI models' prices by name (`[models]`).
    models: Models,
}

/// A plan as written, with the `[features]` entries it names: enough to build it again.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PlanSource {
    /// The `[features]` entries the plan names.
    pub features: BTreeMap<String, FeatureToml>,
    /// `[plans.SLUG]`.
    pub plan: PlanToml,
}

impl PlanSource {
    /// The plan this builds, as `slug`.
    pub fn build(&self, slug: &str) -> Result<Plan, Vec<String>> {
        let plans = BTreeMap::from([(slug.to_string(), self.plan.clone())]);
        let catalogue = Catalogue::build(&self.features, &plans)?;
        let plan = catalogue
            .plan(slug)
            .expect("a built catalogue has its plans");
        Ok(Plan::clone(plan))
    }
}

/// When a version of a plan's prices took effect, and for whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effective {
    /// The instant it was recorded (0 for a plan's first version: since always).
    pub since_ms: u64,
    /// For which periods.
    pub rule: TakesEffect,
}

/// For which periods a new version of a plan's prices counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakesEffect {
    /// Periods that start at or after it was recorded: a current period keeps its prices.
    NextPeriod,
    /// Usage from the instant it was recorded, in the current period too; what was used before
    /// keeps its price (the invoice shows one line per price).
    Now,
}

impl TakesEffect {
    /// The config and store spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TakesEffect::NextPeriod => "next_period",
            TakesEffect::Now => "now",
        }
    }
}

/// The versions of one plan's prices in force over a period: the one at its start, and each
/// later one that took effect `Now` inside it, with the instant it did.
#[derive(Debug, Clone, PartialEq)]
pub struct PricesOverPeriod {
    /// In force at the period's start.
    pub first: Arc<Plan>,
    /// `(since_ms, version)` for each change inside the period, in time order.
    pub changes: Vec<(u64, Arc<Plan>)>,
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The plan's slug.
    pub slug: String,
    /// Its consumption model and plan-wide terms.
    pub terms: ModelTerms,
    /// Its period length.
    pub period: Period,
    /// Rate units per period.
    pub base_price_units: i64,
    /// Usage features and their terms.
    pub usage: BTreeMap<String, UsageTerms>,
    /// Flag features the plan turns on.
    pub flags: BTreeSet<String>,
    /// Usage features priced by AI model (`pricing = "ai_model"`): the models each accepts. Their
    /// counters hold the provider's cost in cost units ([`crate::models`]).
    pub ai: BTreeMap<String, AiTerms>,
    /// Which version of the plan's prices this is: 1, 2, … as recorded in the store (0 for a
    /// plan read from config.toml and not yet compared with the store).
    pub version: u32,
    /// When this version took effect, and for whom.
    pub effective: Effective,
}

impl Plan {
    /// Whether `other` charges exactly like this (everything but the version and its dates).
    pub fn has_same_prices(&self, other: &Plan) -> bool {
        self.slug == other.slug
            && self.terms == other.terms
            && self.period == other.period
            && self.base_price_units == other.base_price_units
            && self.usage == other.usage
            && self.flags == other.flags
            && self.ai == other.ai
    }

    /// This plan as version `version`, in effect from `since_ms`.
    pub fn as_version(&self, version: u32, since_ms: u64) -> Plan {
        Plan {
            version,
            effective: Effective {
                since_ms,
                ..self.effective
            },
            ..self.clone()
        }
    }

    /// Where `feature` sits among the plan's usage features (their slug order), which is where a
    /// customer on this plan keeps its counter.
    pub fn usage_slot(&self, feature: &str) -> Option<usize> {
        self.usage.keys().position(|f| f == feature)
    }
}

/// Plan-wide terms of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelTerms {
    /// Included units, then overage or a hard limit.
    Metered {
        /// Most overage rate units per period across features, if capped.
        spending_cap_units: Option<i64>,
    },
    /// Prepaid credits.
    Credits {
        /// Credits in one pack.
        pack_credits: i64,
        /// Rate units for one pack.
        pack_price_units: i64,
        /// Credits granted each period.
        grant_credits: i64,
    },
    /// A dollar balance.
    Balance {
        /// How far below zero checks still allow, in rate units.
        overdraft_units: i64,
    },
}

/// A usage feature's terms in a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageTerms {
    /// Metered plans.
    Metered {
        /// Units included per period.
        included: u64,
        /// Price past `included`; `None` is a hard limit.
        overage: Option<Price>,
    },
    /// Credits plans.
    Credits {
        /// Credits per `per` units (`credits = n` is n per unit), charged cumulatively.
        price: Price,
    },
    /// Balance plans.
    Balance {
        /// Price of usage.
        price: Price,
    },
}

impl Plan {
    /// The plan's consumption model.
    pub fn model(&self) -> Model {
        match self.terms {
            ModelTerms::Metered { .. } => Model::Metered,
            ModelTerms::Credits { .. } => Model::Credits,
            ModelTerms::Balance { .. } => Model::Balance,
        }
    }
}

impl Catalogue {
    /// Validates the catalogue; every problem found is listed, each naming its entry.
    pub fn build(
        features: &BTreeMap<String, FeatureToml>,
        plans: &BTreeMap<String, PlanToml>,
    ) -> Result<Catalogue, Vec<String>> {
        let mut errors = Vec::new();
        let mut kinds = BTreeMap::new();
        check_unique_slugs("features", features.keys(), &mut errors);
        check_unique_slugs("plans", plans.keys(), &mut errors);
        for (slug, feature) in features {
            match feature.kind.as_str() {
                "usage" => drop(kinds.insert(slug.clone(), FeatureKind::Usage)),
                "flag" => drop(kinds.insert(slug.clone(), FeatureKind::Flag)),
                other => errors.push(format!(
                    "features.{slug}.kind: `{other}` is not a feature kind; use \"usage\" or \"flag\""
                )),
            }
        }
        let mut validated = BTreeMap::new();
        let mut sources = BTreeMap::new();
        for (slug, plan) in plans {
            if let Some(built) = build_plan(slug, plan, &kinds, &mut errors) {
                validated.insert(slug.clone(), Arc::new(built));
                let named = features
                    .iter()
                    .filter(|(feature, _)| plan.features.contains_key(*feature))
                    .map(|(feature, toml)| (feature.clone(), toml.clone()))
                    .collect();
                sources.insert(
                    slug.clone(),
                    PlanSource {
                        features: named,
                        plan: plan.clone(),
                    },
                );
            }
        }
        if errors.is_empty() {
            Ok(Catalogue {
                features: kinds,
                plans: validated,
                earlier: BTreeMap::new(),
                sources,
                models: Models::new(),
            })
        } else {
            Err(errors)
        }
    }

    /// A feature's kind, if the catalogue has it.
    pub fn feature(&self, slug: &str) -> Option<FeatureKind> {
        self.features.get(slug).copied()
    }

    /// Sets the AI model catalogue (`[models]`), after checking that every model a plan's
    /// feature names is in it; errors name their key.
    pub fn set_models(&mut self, toml: &BTreeMap<String, ModelToml>) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut models = Models::new();
        for (name, model) in toml {
            match ModelPrice::build(name, model) {
                Ok(price) => drop(models.insert(name.clone(), price)),
                Err(found) => errors.extend(found),
            }
        }
        errors.extend(self.models_missing_from(&models));
        if !errors.is_empty() {
            return Err(errors);
        }
        self.models = models;
        Ok(())
    }

    /// This catalogue with `models` as its model prices (a reload), if every model a plan's
    /// feature names is among them; errors name their key.
    pub fn with_models(&self, models: &Models) -> Result<Catalogue, Vec<String>> {
        let missing = self.models_missing_from(models);
        if !missing.is_empty() {
            return Err(missing);
        }
        Ok(Catalogue {
            models: models.clone(),
            ..self.clone()
        })
    }

    fn models_missing_from(&self, models: &Models) -> Vec<String> {
        let mut errors = Vec::new();
        for plan in self.plans.values() {
            for (feature, terms) in &plan.ai {
                for model in terms.models.iter().flatten() {
                    if !models.contains_key(model) {
                        errors.push(format!(
                            "plans.{}.features.{feature}.models: unknown model `{model}`; declare it under [models]",
                            plan.slug
                        ));
                    }
                }
            }
        }
        errors
    }

    /// AI models' prices by name.
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// Every feature's slug and kind, by slug.
    pub fn features(&self) -> impl Iterator<Item = (&str, FeatureKind)> {
        self.features
            .iter()
            .map(|(slug, kind)| (slug.as_str(), *kind))
    }

    /// A plan by slug.
    pub fn plan(&self, slug: &str) -> Option<&Arc<Plan>> {
        self.plans.get(slug)
    }

    /// Every plan, by slug.
    pub fn plans(&self) -> impl Iterator<Item = &Arc<Plan>> {
        self.plans.values()
    }

    /// Plan `slug` as config.toml wrote it.
    pub fn source(&self, slug: &str) -> Option<&PlanSource> {
        self.sources.get(slug)
    }

    /// Sets the versions of plan `slug`'s prices, oldest first: the last becomes the current
    /// one, the others stay for the customers whose periods they still price.
    pub fn set_versions(&mut self, slug: &str, mut versions: Vec<Arc<Plan>>) {
        assert!(
            versions.windows(2).all(|w| w[0].version < w[1].version
                && w[0].effective.since_ms <= w[1].effective.since_ms),
            "versions are in order"
        );
        let Some(current) = versions.pop() else {
            return;
        };
        self.plans.insert(slug.to_string(), current);
        self.earlier.insert(slug.to_string(), versions);
    }

    /// Every version of plan `slug`'s prices, oldest first.
    pub fn versions(&self, slug: &str) -> impl Iterator<Item = &Arc<Plan>> {
        self.earlier
            .get(slug)
            .into_iter()
            .flatten()
            .chain(self.plans.get(slug))
    }

    /// The versions of plan `slug`'s prices over the period `[start_ms, end_ms)`: the newest
    /// one in force at its start (recorded at or before it, or the first), then each `Now`
    /// version recorded inside it. `None` for a plan the catalogue never had.
    pub fn prices_over_period(
        &self,
        slug: &str,
        start_ms: u64,
        end_ms: u64,
    ) -> Option<PricesOverPeriod> {
        let current = self.plans.get(slug)?;
        if self.earlier.get(slug).is_none_or(Vec::is_empty) {
            // Every plan but a repriced one: no list to build for each customer at recovery.
            return Some(PricesOverPeriod {
                first: Arc::clone(current),
                changes: Vec::new(),
            });
        }
        // Versions are in `since_ms` order (`set_versions` asserts it), the first since always.
        let versions: Vec<&Arc<Plan>> = self.versions(slug).collect();
        let first = versions
            .iter()
            .rev()
            .find(|v| v.effective.since_ms <= start_ms)
            .unwrap_or(&versions[0]);
        let changes = versions
            .iter()
            .filter(|v| v.effective.rule == TakesEffect::Now)
            .filter(|v| v.effective.since_ms > start_ms && v.effective.since_ms < end_ms)
            .map(|v| (v.effective.since_ms, Arc::clone(v)))
            .collect();
        Some(PricesOverPeriod {
            first: Arc::clone(first),
            changes,
        })
    }
}

fn check_unique_slugs<'a>(
    section: &str,
    slugs: impl Iterator<Item = &'a String>,
    errors: &mut Vec<String>,
) {
    let mut seen: BTreeMap<String, &String> = BTreeMap::new();
    for slug in slugs {
        let valid = !slug.is_empty()
            && slug.len() <= SLUG_BYTES_MAX
            && slug.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' || b == b'.'
            });
        if !valid {
            errors.push(format!(
                "{section}.{slug}: a slug is 1 to {SLUG_BYTES_MAX} characters of a-z, 0-9, `-`, `_` or `.`"
            ));
        }
        if let Some(first) = seen.insert(slug.to_ascii_lowercase(), slug) {
            errors.push(format!("{section}.{slug}: duplicates the slug `{first}`"));
        }
    }
}

/// Which model a field belongs to, for "one model per plan" errors.
fn field_model(field: &str) -> &'static str {
    match field {
        "spending_cap" | "included" | "overage" => "metered",
        "pack_credits" | "pack_price" | "grant_credits" | "credits" => "credits",
        _ => "balance",
    }
}

fn build_plan(
    slug: &str,
    plan: &PlanToml,
    kinds: &BTreeMap<String, FeatureKind>,
    errors: &mut Vec<String>,
) -> Option<Plan> {
    let at = format!("plans.{slug}");
    let errors_before = errors.len();
    let model = match plan.model.as_str() {
        m @ ("metered" | "credits" | "balance") => m,
        other => {
            errors.push(format!(
                "{at}.model: `{other}` is not a consumption model; use \"metered\", \"credits\" or \"balance\""
            ));
            return None;
        }
    };
    let mut foreign = |field: &str, present: bool| {
        if present && field_model(field) != model {
            errors.push(format!(
                "{at}.{field}: belongs to the {} model, but plan `{slug}` is {model} (one consumption model per plan)",
                field_model(field)
            ));
        }
    };
    foreign("spending_cap", plan.spending_cap.is_some());
    foreign("pack_credits", plan.pack_credits.is_some());
    foreign("pack_price", plan.pack_price.is_some());
    foreign("grant_credits", plan.grant_credits.is_some());
    foreign("overdraft", plan.overdraft.is_some());

    let period = Period::parse(&plan.period)
        .map_err(|e| errors.push(format!("{at}.period: {e}")))
        .ok();
    let base_price_units = dollars(
        &format!("{at}.base_price"),
        plan.base_price.as_deref(),
        errors,
    );
    let terms = match model {
        "metered" => ModelTerms::Metered {
            spending_cap_units: plan
                .spending_cap
                .as_deref()
                .map(|cap| dollars(&format!("{at}.spending_cap"), Some(cap), errors)),
        },
        "credits" => {
            let pack_credits = count(
                &format!("{at}.pack_credits"),
                plan.pack_credits.unwrap_or(0),
                CREDITS_MAX,
                errors,
            );
            if plan.pack_credits.is_none() || pack_credits == 0 {
                errors.push(format!(
                    "{at}.pack_credits: a credits plan needs packs of at least 1 credit"
                ));
            }
            if plan.pack_price.is_none() {
                errors.push(format!(
                    "{at}.pack_price: a credits plan needs the price of a pack"
                ));
            }
            ModelTerms::Credits {
                pack_credits,
                pack_price_units: dollars(
                    &format!("{at}.pack_price"),
                    plan.pack_price.as_deref(),
                    errors,
                ),
                grant_credits: count(
                    &format!("{at}.grant_credits"),
                    plan.grant_credits.unwrap_or(0),
                    CREDITS_MAX,
                    errors,
                ),
            }
        }
        _ => ModelTerms::Balance {
            overdraft_units: dollars(
                &format!("{at}.overdraft"),
                plan.overdraft.as_deref(),
                errors,
            ),
        },
    };

    let mut usage = BTreeMap::new();
    let mut flags = BTreeSet::new();
    let mut ai = BTreeMap::new();
    for (feature, terms_toml) in &plan.features {
        let at = format!("{at}.features.{feature}");
        match kinds.get(feature) {
            None => errors.push(format!(
                "{at}: unknown feature `{feature}`; declare it under [features]"
            )),
            Some(FeatureKind::Flag) => {
                if has_any_term(terms_toml) {
                    errors.push(format!(
                        "{at}: `{feature}` is a flag feature; write it as {{}} with no terms"
                    ));
                }
                flags.insert(feature.clone());
            }
            Some(FeatureKind::Usage) => match terms_toml.pricing.as_deref() {
                None | Some("fixed") => {
                    if let Some(terms) = build_usage_terms(&at, slug, model, terms_toml, errors) {
                        usage.insert(feature.clone(), terms);
                    }
                }
                Some("ai_model") => {
                    if let Some((terms, ai_terms)) = build_ai_terms(&at, model, terms_toml, errors)
                    {
                        usage.insert(feature.clone(), terms);
                        ai.insert(feature.clone(), ai_terms);
                    }
                }
                Some(other) => errors.push(format!(
                    "{at}.pricing: `{other}` is not a pricing; use \"fixed\" or \"ai_model\""
                )),
            },
        }
    }
    let rule = match plan.effective.as_deref() {
        None | Some("next_period") => TakesEffect::NextPeriod,
        Some("now") => TakesEffect::Now,
        Some(other) => {
            errors.push(format!(
                "{at}.effective: `{other}` is not when a price change takes effect; use \"next_period\" or \"now\""
            ));
            TakesEffect::NextPeriod
        }
    };
    if errors.len() > errors_before {
        return None;
    }
    Some(Plan {
        slug: slug.into(),
        terms,
        period: period.expect("no errors means the period parsed"),
        base_price_units,
        usage,
        flags,
        ai,
        version: 0,
        effective: Effective { since_ms: 0, rule },
    })
}

fn has_any_term(t: &PlanFeatureToml) -> bool {
    t.included.is_some()
        || t.overage.is_some()
        || t.credits.is_some()
        || t.price.is_some()
        || t.per.is_some()
        || t.pricing.is_some()
        || t.models.is_some()
        || t.margin.is_some()
        || t.allowance.is_some()
        || t.credits_per_dollar.is_some()
}

fn build_usage_terms(
    at: &str,
    plan: &str,
    model: &str,
    t: &PlanFeatureToml,
    errors: &mut Vec<String>,
) -> Option<UsageTerms> {
    let before = errors.len();
    for (field, present) in [
        ("included", t.included.is_some()),
        ("overage", t.overage.is_some()),
        ("credits", t.credits.is_some()),
        ("price", t.price.is_some()),
    ] {
        if present && field_model(field) != model {
            errors.push(format!(
                "{at}.{field}: belongs to the {} model, but plan `{plan}` is {model} (one consumption model per plan)",
                field_model(field)
            ));
        }
    }
    let per = match t.per {
        None => 1,
        Some(per) if per >= 1 => per as u64,
        Some(per) => {
            errors.push(format!("{at}.per: is {per}; it must be at least 1"));
            1
        }
    };
    let price = |field: &str, text: &str, errors: &mut Vec<String>| {
        Price::parse(text, per)
            .map_err(|e| errors.push(format!("{at}.{field}: {e}")))
            .ok()
    };
    let terms = match model {
        "metered" => UsageTerms::Metered {
            included: count(
                &format!("{at}.included"),
                t.included.unwrap_or(0),
                i64::MAX,
                errors,
            ) as u64,
            overage: t
                .overage
                .as_deref()
                .and_then(|o| price("overage", o, errors)),
        },
        "credits" => {
            let Some(credits) = t.credits else {
                errors.push(format!(
                    "{at}.credits: a credits plan needs the credits each unit costs"
                ));
                return None;
            };
            UsageTerms::Credits {
                price: Price {
                    units: count(
                        &format!("{at}.credits"),
                        credits,
                        CREDITS_PER_UNIT_MAX,
                        errors,
                    ),
                    per: 1,
                },
            }
        }
        _ => {
            let Some(text) = t.price.as_deref() else {
                errors.push(format!(
                    "{at}.price: a balance plan needs the price of each feature"
                ));
                return None;
            };
            UsageTerms::Balance {
                price: price("price", text, errors)?,
            }
        }
    };
    (errors.len() == before).then_some(terms)
}

/// A usage feature priced by AI model: its counter is the provider's cost in cost units, and its
/// price the margin on it, in the plan's model.
fn build_ai_terms(
    at: &str,
    model: &str,
    t: &PlanFeatureToml,
    errors: &mut Vec<String>,
) -> Option<(UsageTerms, AiTerms)> {
    let before = errors.len();
    for (field, present) in [
        ("included", t.included.is_some()),
        ("overage", t.overage.is_some()),
        ("credits", t.credits.is_some()),
        ("price", t.price.is_some()),
        ("per", t.per.is_some()),
    ] {
        if present {
            errors.push(format!(
                "{at}.{field}: a feature priced by AI model takes its prices from [models]; give margin (and allowance for metered, credits_per_dollar for credits)"
            ));
        }
    }
    let margin = match t.margin.as_deref().map(margin_basis_points) {
        None => 0,
        Some(Ok(points)) => points,
        Some(Err(reason)) => {
            errors.push(format!("{at}.margin: {reason}"));
            0
        }
    };
    if t.allowance.is_some() && model != "metered" {
        errors.push(format!(
            "{at}.allowance: only a metered plan includes an allowance"
        ));
    }
    if t.credits_per_dollar.is_some() && model != "credits" {
        errors.push(format!(
            "{at}.credits_per_dollar: only a credits plan spends credits"
        ));
    }
    let terms = match model {
        "metered" => UsageTerms::Metered {
            included: allowance_cost_units(
                dollars(&format!("{at}.allowance"), t.allowance.as_deref(), errors),
                margin,
            ),
            overage: Some(charged_price(margin)),
        },
        "credits" => {
            let Some(per_dollar) = t.credits_per_dollar else {
                errors.push(format!(
                    "{at}.credits_per_dollar: a credits plan needs the credits a dollar of usage costs"
                ));
                return None;
            };
            let per_dollar = count(
                &format!("{at}.credits_per_dollar"),
                per_dollar,
                CREDITS_PER_UNIT_MAX,
                errors,
            );
            UsageTerms::Credits {
                price: credits_price(margin, per_dollar),
            }
        }
        _ => UsageTerms::Balance {
            price: charged_price(margin),
        },
    };
    let models = t
        .models
        .as_ref()
        .map(|names| names.iter().cloned().collect());
    (errors.len() == before).then_some((
        terms,
        AiTerms {
            models,
            margin_basis_points: margin,
        },
    ))
}

fn dollars(at: &str, text: Option<&str>, errors: &mut Vec<String>) -> i64 {
    match text.map(parse_dollars) {
        None => 0,
        Some(Ok(units)) => units,
        Some(Err(e)) => {
            errors.push(format!("{at}: {e}"));
            0
        }
    }
}

fn count(at: &str, value: i64, max: i64, errors: &mut Vec<String>) -> i64 {
    if !(0..=max).contains(&value) {
        errors.push(format!("{at}: is {value}; it must be 0 to {max}"));
        return 0;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Catalogue, Vec<String>> {
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            features: BTreeMap<String, FeatureToml>,
            #[serde(default)]
            plans: BTreeMap<String, PlanToml>,
        }
        let doc: Doc = toml::from_str(text).expect("test TOML parses");
        Catalogue::build(&doc.features, &doc.plans)
    }

    const FEATURES: &str = r#"
        [features]
        tokens = { kind = "usage" }
        image-gen = { kind = "usage" }
        priority-support = { kind = "flag" }
    "#;

    fn errors_of(plans: &str) -> String {
        parse(&format!("{FEATURES}\n{plans}"))
            .unwrap_err()
            .join("\n")
    }

    #[test]
    fn a_plan_mixing_models_names_the_plan_and_the_entry() {
        let errors = errors_of(
            r#"[plans.pro]
               model = "metered"
               period = "1 month"
               features.tokens = { included = 10, credits = 2 }"#,
        );
        assert!(
            errors.contains("plans.pro.features.tokens.credits: belongs to the credits model"),
            "{errors}"
        );
        let errors = errors_of(
            r#"[plans.pro]
               model = "metered"
               period = "1 month"
               pack_price = "10.00""#,
        );
        assert!(errors.contains("plans.pro.pack_price"), "{errors}");
    }

    #[test]
    fn unknown_feature_and_too_fine_price_are_named() {
        let errors = errors_of(
            r#"[plans.wallet]
               model = "balance"
               period = "1 month"
               features.gpt-5 = { price = "0.01" }
               features.tokens = { price = "0.00001" }"#,
        );
        assert!(
            errors.contains("plans.wallet.features.gpt-5: unknown feature"),
            "{errors}"
        );
        assert!(
            errors.contains("plans.wallet.features.tokens.price: `0.00001` is finer than $0.0001"),
            "{errors}"
        );
    }

    #[test]
    fn negative_amounts_and_bad_kinds_are_refused() {
        let errors = errors_of(
            r#"[plans.pro]
               model = "metered"
               period = "1 month"
               base_price = "-1"
               features.tokens = { included = -5 }"#,
        );
        assert!(
            errors.contains("plans.pro.base_price: `-1` is negative"),
            "{errors}"
        );
        assert!(
            errors.contains("plans.pro.features.tokens.included: is -5"),
            "{errors}"
        );
        let errors = parse("[features]\nx = { kind = \"maybe\" }")
            .unwrap_err()
            .join("\n");
        assert!(errors.contains("features.x.kind"), "{errors}");
    }

    #[test]
    fn slugs_differing_only_in_case_are_duplicates() {
        let errors =
            parse("[features]\ntokens = { kind = \"usage\" }\nTokens = { kind = \"usage\" }")
                .unwrap_err()
                .join("\n");
        assert!(errors.contains("duplicates the slug"), "{errors}");
    }

    #[test]
    fn a_valid_plan_of_each_model_builds() {
        let catalogue = parse(&format!(
            r#"{FEATURES}
            [plans.pro]
            model = "metered"
            period = "1 month"
            base_price = "49.00"
            features.tokens = {{ included = 100000, overage = "0.002" }}
            features.priority-support = {{}}
            [plans.images]
            model = "credits"
            period = "1 month"
            pack_credits = 500
            pack_price = "10.00"
            features.image-gen = {{ credits = 1 }}
            [plans.wallet]
            model = "balance"
            period = "1 month"
            features.tokens = {{ price = "0.15", per = 1000000 }}"#
        ))
        .unwrap();
        let pro = catalogue.plan("pro").unwrap();
        assert_eq!(pro.base_price_units, 490_000);
        assert!(pro.flags.contains("priority-support"));
        assert_eq!(
            pro.usage["tokens"],
            UsageTerms::Metered {
                included: 100_000,
                overage: Some(Price { units: 20, per: 1 })
            }
        );
        assert_eq!(catalogue.plan("images").unwrap().model(), Model::Credits);
        assert_eq!(
            catalogue.plan("wallet").unwrap().usage["tokens"],
            UsageTerms::Balance {
                price: Price {
                    units: 1_500,
                    per: 1_000_000
                }
            }
        );
    }
}
