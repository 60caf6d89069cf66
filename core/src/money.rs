//! Exact money: rate units (10,000 = $1.00), prices with an optional `per` quantity, and the
//! cumulative cost function that keeps per-report rounding from drifting. Pure arithmetic.

use rust_decimal::Decimal;
use tally_protocol::message::RATE_UNITS_PER_DOLLAR;

/// A price: `units` rate units for every `per` units of usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    /// Rate units charged per `per` units of usage.
    pub units: i64,
    /// The usage quantity the price is for (1 for a plain per-unit price).
    pub per: u64,
}

/// Why a dollar string is not a price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a decimal number.
    #[error("`{0}` is not a decimal dollar amount")]
    NotADecimal(String),
    /// Negative where only non-negative amounts make sense.
    #[error("`{0}` is negative")]
    Negative(String),
    /// Finer than a rate unit.
    #[error("`{0}` is finer than $0.0001; give the price per a larger quantity with `per` (e.g. price = \"0.15\", per = 1000000)")]
    TooFine(String),
    /// Larger than money can be here.
    #[error("`{0}` is too large")]
    TooLarge(String),
    /// `per` of zero.
    #[error("`per` must be at least 1")]
    ZeroPer,
}

impl Price {
    /// Parses a non-negative dollar string priced per `per` units of usage.
    pub fn parse(dollars: &str, per: u64) -> Result<Price, MoneyError> {
        if per == 0 {
            return Err(MoneyError::ZeroPer);
        }
        Ok(Price {
            units: parse_dollars(dollars)?,
            per,
        })
    }

    /// Cost in rate units of a cumulative usage: `ceil(usage × units / per)`.
    pub fn cost(&self, usage: u64) -> i64 {
        let numerator = i128::from(usage) * i128::from(self.units);
        let per = i128::from(self.per);
        let cost = (numerator + per - 1) / per;
        i64::try_from(cost).unwrap_or(i64::MAX)
    }

    /// What raising cumulative usage from `before` by `amount` costs: `cost(before + amount) −
    /// cost(before)`. Summed over reports this equals the cost of the total, so rounding never drifts.
    pub fn cost_of_increase(&self, before: u64, amount: u64) -> i64 {
        self.cost(before.saturating_add(amount)) - self.cost(before)
    }
}

/// Parses a non-negative decimal dollar string into exact rate units.
pub fn parse_dollars(dollars: &str) -> Result<i64, MoneyError> {
    let value: Decimal = dollars
        .trim()
        .parse()
        .map_err(|_| MoneyError::NotADecimal(dollars.into()))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(MoneyError::Negative(dollars.into()));
    }
    dollars_to_units(value).map_err(|e| match e {
        MoneyError::TooFine(_) => MoneyError::TooFine(dollars.into()),
        _ => MoneyError::TooLarge(dollars.into()),
    })
}

/// Converts exact dollars to rate units; refuses anything finer than $0.0001.
pub fn dollars_to_units(value: Decimal) -> Result<i64, MoneyError> {
    let units = value
        .checked_mul(Decimal::from(RATE_UNITS_PER_DOLLAR))
        .ok_or_else(|| MoneyError::TooLarge(value.to_string()))?;
    if !units.fract().is_zero() {
        return Err(MoneyError::TooFine(value.to_string()));
    }
    i64::try_from(units).map_err(|_| MoneyError::TooLarge(value.to_string()))
}

/// Rate units as exact dollars.
pub fn units_to_dollars(units: i64) -> Decimal {
    Decimal::new(units, 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_prices_convert_exactly() {
        assert_eq!(parse_dollars("49.00"), Ok(490_000));
        assert_eq!(parse_dollars("0.002"), Ok(20));
        assert_eq!(parse_dollars("0.03"), Ok(300));
        assert_eq!(parse_dollars("0.003"), Ok(30));
        assert_eq!(parse_dollars("0.0001"), Ok(1));
        assert_eq!(parse_dollars("10"), Ok(100_000));
    }

    #[test]
    fn prices_finer_than_a_rate_unit_are_refused_unless_per_a_quantity() {
        assert!(matches!(
            parse_dollars("0.00001"),
            Err(MoneyError::TooFine(_))
        ));
        let per_million = Price::parse("0.15", 1_000_000).unwrap();
        assert_eq!(per_million.cost(1_000_000), 1_500);
        assert_eq!(per_million.cost(1), 1, "a partial rate unit rounds up");
        assert_eq!(
            per_million.cost(1_000),
            2,
            "0.15 units of 1000 round up to 2"
        );
    }

    #[test]
    fn negative_and_garbage_amounts_are_refused() {
        assert!(matches!(parse_dollars("-1"), Err(MoneyError::Negative(_))));
        assert!(matches!(
            parse_dollars("ten"),
            Err(MoneyError::NotADecimal(_))
        ));
        assert_eq!(Price::parse("1", 0), Err(MoneyError::ZeroPer));
    }

    #[test]
    fn one_token_of_pro_overage_costs_twenty_units() {
        let overage = Price::parse("0.002", 1).unwrap();
        assert_eq!(overage.cost(1), 20);
        assert_eq!(overage.cost(30_000), 600_000);
    }

    proptest! {
        #[test]
        fn per_report_charges_sum_to_the_cost_of_the_total(
            units in 0i64..10_000_000,
            per in 1u64..10_000_000,
            amounts in proptest::collection::vec(1u64..1_000_000_000, 0..200),
        ) {
            let price = Price { units, per };
            let mut used = 0u64;
            let mut charged = 0i64;
            for amount in amounts {
                let charge = price.cost_of_increase(used, amount);
                prop_assert!(charge >= 0);
                charged += charge;
                used += amount;
            }
            prop_assert_eq!(charged, price.cost(used));
        }

        #[test]
        fn cost_is_the_exact_ceiling(units in 0i64..1_000_000, per in 1u64..1_000_000_000, usage in 0u64..1_000_000_000_000) {
            let price = Price { units, per };
            let exact = Decimal::from(usage) * Decimal::from(units) / Decimal::from(per);
            prop_assert_eq!(Decimal::from(price.cost(usage)), exact.ceil());
        }
    }
}
