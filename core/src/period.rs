//! Billing periods and human durations: `"1 month"` (calendar-aware, anchored at the subscription
//! start so Jan 31 → Feb 28/29 → Mar 31) and fixed lengths such as `"1 hour"`. Times are
//! milliseconds since the Unix epoch, passed in; nothing here reads a clock.

use chrono::{DateTime, Months, Utc};

/// A plan's period length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Whole calendar months, anchored at the subscription start.
    Months(u32),
    /// A fixed length in milliseconds.
    Fixed {
        /// Length of one period.
        length_ms: u64,
    },
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a duration; write a count and a unit, e.g. \"1 month\", \"1 hour\", \"30 days\"")]
pub struct DurationError {
    text: String,
}

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
/// Longest fixed period or window: about ten years.
const DURATION_MS_MAX: u64 = 3_660 * DAY_MS;

impl Period {
    /// Parses `"N unit"` where unit is second(s), minute(s), hour(s), day(s), week(s) or month(s).
    pub fn parse(text: &str) -> Result<Period, DurationError> {
        let error = || DurationError { text: text.into() };
        let (count, unit) = split_count_unit(text).ok_or_else(error)?;
        if count == 0 {
            return Err(error());
        }
        if matches!(unit, "month" | "months") {
            return u32::try_from(count)
                .ok()
                .filter(|&m| m <= 120)
                .map(Period::Months)
                .ok_or_else(error);
        }
        let length_ms = fixed_ms(count, unit).ok_or_else(error)?;
        Ok(Period::Fixed { length_ms })
    }

    /// The end (exclusive) of the period that contains `at_ms`, for a subscription anchored at
    /// `anchor_ms`. Precondition: `at_ms >= anchor_ms`.
    pub fn end_containing(&self, anchor_ms: u64, at_ms: u64) -> u64 {
        assert!(
            at_ms >= anchor_ms,
            "a period is asked for before its anchor"
        );
        match *self {
            Period::Fixed { length_ms } => {
                anchor_ms + ((at_ms - anchor_ms) / length_ms + 1) * length_ms
            }
            Period::Months(months) => {
                let anchor = datetime(anchor_ms);
                // Each boundary is computed from the anchor, never from the previous boundary, so a
                // day clamped in a short month (Jan 31 → Feb 28) comes back (→ Mar 31).
                let mut k: u32 = 1;
                loop {
                    let end = anchor
                        .checked_add_months(Months::new(months * k))
                        .expect("period end within chrono's range");
                    let end_ms = end.timestamp_millis() as u64;
                    if end_ms > at_ms {
                        return end_ms;
                    }
                    k += 1;
                }
            }
        }
    }
}

/// Parses a fixed duration such as `"24 hours"` or `"30s"` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, DurationError> {
    let error = || DurationError { text: text.into() };
    let (count, unit) = split_count_unit(text).ok_or_else(error)?;
    fixed_ms(count, unit).ok_or_else(error)
}

fn split_count_unit(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let count: u64 = text[..digits].parse().ok()?;
    Some((count, text[digits..].trim()))
}

fn fixed_ms(count: u64, unit: &str) -> Option<u64> {
    let unit_ms = match unit {
        "ms" | "millisecond" | "milliseconds" => 1,
        "s" | "second" | "seconds" => SECOND_MS,
        "m" | "min" | "minute" | "minutes" => MINUTE_MS,
        "h" | "hour" | "hours" => HOUR_MS,
        "d" | "day" | "days" => DAY_MS,
        "w" | "week" | "weeks" => 7 * DAY_MS,
        _ => return None,
    };
    count
        .checked_mul(unit_ms)
        .filter(|&ms| ms > 0 && ms <= DURATION_MS_MAX)
}

fn datetime(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).expect("milliseconds within chrono's range")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ms(y: i32, m: u32, d: u32) -> u64 {
        Utc.with_ymd_and_hms(y, m, d, 12, 0, 0)
            .unwrap()
            .timestamp_millis() as u64
    }

    #[test]
    fn monthly_periods_anchored_on_the_31st_come_back_after_february() {
        let month = Period::parse("1 month").unwrap();
        let anchor = ms(2028, 1, 31);
        let feb = month.end_containing(anchor, anchor);
        assert_eq!(feb, ms(2028, 2, 29), "leap year clamps to the 29th");
        let mar = month.end_containing(anchor, feb);
        assert_eq!(mar, ms(2028, 3, 31));
        assert_eq!(
            month.end_containing(ms(2027, 1, 31), ms(2027, 1, 31)),
            ms(2027, 2, 28)
        );
    }

    #[test]
    fn fixed_periods_tile_from_the_anchor() {
        let hour = Period::parse("1 hour").unwrap();
        assert_eq!(hour, Period::Fixed { length_ms: HOUR_MS });
        assert_eq!(hour.end_containing(1_000, 1_000), 1_000 + HOUR_MS);
        assert_eq!(
            hour.end_containing(1_000, 1_000 + HOUR_MS),
            1_000 + 2 * HOUR_MS
        );
    }

    #[test]
    fn durations_parse_with_or_without_a_space() {
        assert_eq!(parse_duration_ms("24 hours"), Ok(24 * HOUR_MS));
        assert_eq!(parse_duration_ms("30s"), Ok(30 * SECOND_MS));
        assert!(parse_duration_ms("soon").is_err());
        assert!(Period::parse("0 days").is_err());
        assert!(Period::parse("1 fortnight").is_err());
    }
}
