//! AI model pricing: the model catalogue (`[models]`) and what a request of (model, input,
//! output, cache tokens) costs.
//!
//! A feature priced by model (`pricing = "ai_model"`) counts, per customer and period, the
//! provider's cost of its requests in *cost units* of 10⁻¹⁰ dollars (10⁻⁶ rate units): every
//! per-token price of a whole number of rate units per million tokens is a whole number of cost
//! units per token, so a request's cost is exact. The plan's margin is part of the feature's
//! price (rate units per cost unit: `(10,000 + margin in basis points) / 10¹⁰`), charged with the
//! same cumulative rounding as every price — the charges of a period sum to the rounded cost of
//! its total, to the rate unit, whatever the models and token kinds.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tally_protocol::message::{
    ModelUsage, ModelUsageLine, TallyError, AMOUNT_MAX, RATE_UNITS_PER_DOLLAR,
};

use crate::money::Price;

/// Cost units in one rate unit.
pub const COST_UNITS_PER_RATE_UNIT: u64 = 1_000_000;
/// Cost units in one dollar.
pub const COST_UNITS_PER_DOLLAR: u64 = COST_UNITS_PER_RATE_UNIT * RATE_UNITS_PER_DOLLAR as u64;
/// Basis points in one (a margin of 0.20 is 2,000).
const BASIS_POINTS: u64 = 10_000;
/// Largest margin: +1,000%.
pub const MARGIN_BASIS_POINTS_MAX: u64 = 100_000;
/// Tokens a model's prices are given per when `per` is absent.
pub const DEFAULT_PER_TOKENS: u64 = 1_000_000;

/// A model as written in `[models."NAME"]`: dollars per `per` tokens of each kind.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelToml {
    /// Prompt tokens.
    pub input: String,
    /// Answer tokens.
    pub output: String,
    /// Prompt tokens read from the provider's cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<String>,
    /// Prompt tokens written to the provider's cache (default: the input price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<String>,
    /// Tokens the prices are for (default 1,000,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<u64>,
}

/// A model's prices per token, in cost units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelPrice {
    /// Per prompt token.
    pub input: u64,
    /// Per answer token.
    pub output: u64,
    /// Per prompt token read from the cache.
    pub cache_read: u64,
    /// Per prompt token written to the cache.
    pub cache_write: u64,
}

impl ModelPrice {
    /// The validated prices of `[models."name"]`; errors name their key.
    pub fn build(name: &str, toml: &ModelToml) -> Result<ModelPrice, Vec<String>> {
        let at = format!("models.{name}");
        let mut errors = Vec::new();
        let per = toml.per.unwrap_or(DEFAULT_PER_TOKENS);
        if per == 0 {
            errors.push(format!("{at}.per: must be at least 1 token"));
        }
        let mut price = |field: &str, text: Option<&str>| -> u64 {
            let Some(text) = text else { return 0 };
            match per_token(text, per.max(1)) {
                Ok(cost) => cost,
                Err(reason) => {
                    errors.push(format!("{at}.{field}: {reason}"));
                    0
                }
            }
        };
        let input = price("input", Some(&toml.input));
        let output = price("output", Some(&toml.output));
        let cache_read = price(
            "cache_read",
            toml.cache_read.as_deref().or(Some(&toml.input)),
        );
        let cache_write = price(
            "cache_write",
            toml.cache_write.as_deref().or(Some(&toml.input)),
        );
        if errors.is_empty() {
            Ok(ModelPrice {
                input,
                output,
                cache_read,
                cache_write,
            })
        } else {
            Err(errors)
        }
    }

    /// The provider's cost of `usage`, in cost units, if it is at most [`AMOUNT_MAX`].
    pub fn cost(&self, usage: &ModelUsage) -> Option<u64> {
        let cost = u128::from(usage.input_tokens) * u128::from(self.input)
            + u128::from(usage.output_tokens) * u128::from(self.output)
            + u128::from(usage.cache_read_tokens) * u128::from(self.cache_read)
            + u128::from(usage.cache_write_tokens) * u128::from(self.cache_write);
        u64::try_from(cost).ok().filter(|cost| *cost <= AMOUNT_MAX)
    }
}

/// Dollars per `per` tokens as whole cost units per token.
fn per_token(text: &str, per: u64) -> Result<u64, String> {
    let dollars: Decimal = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a decimal dollar amount"))?;
    if dollars.is_sign_negative() && !dollars.is_zero() {
        return Err(format!("`{text}` is negative"));
    }
    let cost = dollars
        .checked_mul(Decimal::from(COST_UNITS_PER_DOLLAR))
        .and_then(|c| c.checked_div(Decimal::from(per)))
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if !cost.fract().is_zero() {
        return Err(format!(
            "${text} per {per} tokens is not a whole number of 10⁻¹⁰ dollars per token; give the price per fewer tokens"
        ));
    }
    u64::try_from(cost).map_err(|_| format!("`{text}` is too large"))
}

/// Parses a margin such as `"0.20"` (cost × 1.20) into basis points.
pub fn margin_basis_points(text: &str) -> Result<u64, String> {
    let margin: Decimal = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a decimal margin (0.20 adds 20%)"))?;
    let points = margin * Decimal::from(BASIS_POINTS);
    if margin.is_sign_negative() && !margin.is_zero() {
        return Err(format!("`{text}` is negative"));
    }
    if !points.fract().is_zero() {
        return Err(format!("`{text}` is finer than a basis point (0.0001)"));
    }
    match u64::try_from(points) {
        Ok(points) if points <= MARGIN_BASIS_POINTS_MAX => Ok(points),
        _ => Err(format!("`{text}` is over the largest margin, 10 (+1,000%)")),
    }
}

/// Rate units per cost unit with a margin: what a balance or metered feature priced by model
/// charges.
pub fn charged_price(margin_basis_points: u64) -> Price {
    Price {
        units: (BASIS_POINTS + margin_basis_points) as i64,
        per: COST_UNITS_PER_RATE_UNIT * BASIS_POINTS,
    }
}

/// Credits per cost unit with a margin, at `credits_per_dollar`.
pub fn credits_price(margin_basis_points: u64, credits_per_dollar: i64) -> Price {
    Price {
        units: (BASIS_POINTS + margin_basis_points) as i64 * credits_per_dollar,
        per: COST_UNITS_PER_DOLLAR * BASIS_POINTS,
    }
}

/// Cost units of provider cost that a charged allowance of `rate_units` covers with a margin
/// (rounded up, so the allowance is never short by the rounding).
pub fn allowance_cost_units(rate_units: i64, margin_basis_points: u64) -> u64 {
    let numerator =
        u128::from(rate_units.max(0) as u64) * u128::from(COST_UNITS_PER_RATE_UNIT * BASIS_POINTS);
    let denominator = u128::from(BASIS_POINTS + margin_basis_points);
    u64::try_from(numerator.div_ceil(denominator)).unwrap_or(u64::MAX)
}

/// How a plan's feature priced by model takes requests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AiTerms {
    /// The models it accepts; `None`: every model of the catalogue.
    pub models: Option<BTreeSet<String>>,
    /// The margin on the provider's cost, in basis points (what the feature's price includes).
    pub margin_basis_points: u64,
}

/// The catalogue's models by name.
pub type Models = BTreeMap<String, ModelPrice>;

/// What `usage` costs on a feature with `terms`, in cost units: the typed errors of an unknown
/// model, one the feature does not accept, and a request over [`AMOUNT_MAX`].
pub fn cost_units(
    models: &Models,
    terms: &AiTerms,
    plan: &str,
    feature: &str,
    usage: &ModelUsage,
) -> Result<u64, TallyError> {
    let price = models
        .get(&usage.model)
        .ok_or_else(|| TallyError::UnknownModel {
            model: usage.model.clone(),
        })?;
    if terms
        .models
        .as_ref()
        .is_some_and(|accepted| !accepted.contains(&usage.model))
    {
        return Err(TallyError::ModelNotInPlan {
            model: usage.model.clone(),
            feature: feature.into(),
            plan: plan.into(),
        });
    }
    price.cost(usage).ok_or_else(|| TallyError::InvalidRequest {
        reason: format!(
            "this {} request costs more than ${} before margin; split it",
            usage.model,
            AMOUNT_MAX / COST_UNITS_PER_DOLLAR
        ),
    })
}

/// Adds one request of `usage` on `feature` — `cost_units` of provider cost, `charged` — to
/// `lines`, kept sorted by (feature, model).
pub fn add_to_lines(
    lines: &mut Vec<ModelUsageLine>,
    feature: &str,
    usage: &ModelUsage,
    cost_units: u64,
    charged: i64,
) {
    let at = match lines.binary_search_by(|line| {
        (line.feature.as_str(), line.model.as_str()).cmp(&(feature, usage.model.as_str()))
    }) {
        Ok(at) => at,
        Err(at) => {
            let line = ModelUsageLine {
                feature: feature.into(),
                model: usage.model.clone(),
                ..ModelUsageLine::default()
            };
            lines.insert(at, line);
            at
        }
    };
    let line = &mut lines[at];
    line.requests += 1;
    line.input_tokens += usage.input_tokens;
    line.output_tokens += usage.output_tokens;
    line.cache_read_tokens += usage.cache_read_tokens;
    line.cache_write_tokens += usage.cache_write_tokens;
    line.cost_units += cost_units;
    line.charged += charged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gpt_4o() -> ModelPrice {
        let toml = ModelToml {
            input: "2.50".into(),
            output: "10.00".into(),
            cache_read: Some("1.25".into()),
            cache_write: Some("3.125".into()),
            per: None,
        };
        ModelPrice::build("gpt-4o", &toml).unwrap()
    }

    #[test]
    fn prices_per_million_tokens_are_whole_cost_units_per_token() {
        let price = gpt_4o();
        assert_eq!(
            (
                price.input,
                price.output,
                price.cache_read,
                price.cache_write
            ),
            (25_000, 100_000, 12_500, 31_250)
        );
        // 1,200 prompt and 350 answer tokens: $0.003 + $0.0035 = $0.0065 = 65 rate units.
        let usage = ModelUsage::new("gpt-4o", 1_200, 350);
        assert_eq!(price.cost(&usage), Some(65 * COST_UNITS_PER_RATE_UNIT));
        // With a 20% margin: 78 rate units.
        assert_eq!(charged_price(2_000).cost(price.cost(&usage).unwrap()), 78);
    }

    #[test]
    fn unrepresentable_prices_and_margins_are_refused_with_their_key() {
        let toml = ModelToml {
            input: "0.000000001".into(),
            output: "-1".into(),
            cache_read: None,
            cache_write: None,
            per: Some(3),
        };
        let errors = ModelPrice::build("odd", &toml).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with("models.odd.input:")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("models.odd.output:")),
            "{errors:?}"
        );
        assert_eq!(margin_basis_points("0.20"), Ok(2_000));
        assert_eq!(margin_basis_points("0"), Ok(0));
        assert!(margin_basis_points("0.00001").is_err());
        assert!(margin_basis_points("-0.1").is_err());
        assert!(margin_basis_points("11").is_err());
    }

    #[test]
    fn an_allowance_covers_exactly_what_it_says_after_the_margin() {
        // $5.00 of charged usage at +20% is $4.1666… of provider cost: the fewest cost units
        // whose charged value reaches $5.00.
        let covered = allowance_cost_units(50_000, 2_000);
        assert_eq!(covered, 41_666_666_667);
        let charged = |units: u64| u128::from(units) * 12_000;
        assert!(charged(covered) >= 50_000 * 10_000_000_000);
        assert!(charged(covered - 1) < 50_000 * 10_000_000_000);
    }

    proptest! {
        /// Charged request by request with cumulative rounding, any sequence of requests of any
        /// models costs exactly the rounded cost of its total, in rate units and in credits.
        #[test]
        fn charges_never_drift_from_the_cost_of_the_total(
            requests in proptest::collection::vec((0u64..20_000, 0u64..4_000, 0u64..5_000, 0u64..500), 1..60),
            margin in 0u64..30_000,
            credits_per_dollar in 1i64..1_000,
        ) {
            let price = gpt_4o();
            let (charged, credits) = (charged_price(margin), credits_price(margin, credits_per_dollar));
            let (mut used, mut rate_units, mut spent) = (0u64, 0i64, 0i64);
            for (input, output, cache_read, cache_write) in requests {
                let usage = ModelUsage {
                    model: "gpt-4o".into(),
                    input_tokens: input,
                    output_tokens: output,
                    cache_read_tokens: cache_read,
                    cache_write_tokens: cache_write,
                };
                let cost = price.cost(&usage).unwrap();
                rate_units += charged.cost_of_increase(used, cost);
                spent += credits.cost_of_increase(used, cost);
                used += cost;
            }
            // The exact charged total, rounded up once: ceil(used × (1 + margin) / 10⁶).
            let exact = u128::from(used) * u128::from(BASIS_POINTS + margin);
            let per = u128::from(COST_UNITS_PER_RATE_UNIT * BASIS_POINTS);
            prop_assert_eq!(rate_units as u128, exact.div_ceil(per));
            let per_credit = u128::from(COST_UNITS_PER_DOLLAR * BASIS_POINTS);
            prop_assert_eq!(spent as u128, (exact * credits_per_dollar as u128).div_ceil(per_credit));
        }
    }
}
