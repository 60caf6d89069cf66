//! What the server measures for `stats`: per-operation counts, errors and latency (from decode
//! to answer) in hdrhistograms, since start and over the last interval; allowed vs denied checks;
//! open connections. Lives on the server thread; recording is a few nanoseconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tally_protocol::message::{LatencySummary, OperationStats, Response, TallyError};

/// Largest latency recorded, in microseconds (one minute); longer ones are clamped.
const LATENCY_US_MAX: u64 = 60_000_000;

/// The server's counters.
pub struct Telemetry {
    started: Instant,
    interval: Duration,
    interval_started: Instant,
    operations: BTreeMap<&'static str, Operation>,
    /// `check` answers that allowed.
    pub checks_allowed: u64,
    /// `check` answers that denied.
    pub checks_denied: u64,
    /// Open connections.
    pub connections: u64,
}

struct Operation {
    count: u64,
    errors: u64,
    total: Histogram<u64>,
    current: Histogram<u64>,
    recent: LatencySummary,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

fn summary(histogram: &Histogram<u64>) -> LatencySummary {
    if histogram.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: histogram.len(),
        p50_us: histogram.value_at_quantile(0.5),
        p90_us: histogram.value_at_quantile(0.9),
        p99_us: histogram.value_at_quantile(0.99),
        p999_us: histogram.value_at_quantile(0.999),
        max_us: histogram.max(),
    }
}

impl Telemetry {
    /// Counters starting now; "recent" figures cover `interval`.
    pub fn new(interval: Duration) -> Self {
        let now = Instant::now();
        Self {
            started: now,
            interval,
            interval_started: now,
            operations: BTreeMap::new(),
            checks_allowed: 0,
            checks_denied: 0,
            connections: 0,
        }
    }

    /// Records one request answered at `now` (the caller's clock read serves the latency too).
    pub fn record(
        &mut self,
        operation: &'static str,
        latency: Duration,
        now: Instant,
        is_error: bool,
    ) {
        self.roll_if_due(now);
        let op = self
            .operations
            .entry(operation)
            .or_insert_with(|| Operation {
                count: 0,
                errors: 0,
                total: histogram(),
                current: histogram(),
                recent: LatencySummary::default(),
            });
        let us = (latency.as_micros() as u64).clamp(1, LATENCY_US_MAX);
        op.count += 1;
        op.errors += u64::from(is_error);
        op.total.saturating_record(us);
        op.current.saturating_record(us);
    }

    /// Records one answered request (either door) and, for a check, whether it allowed.
    pub fn record_answer(
        &mut self,
        operation: &'static str,
        started: Instant,
        now: Instant,
        result: &Result<Response, TallyError>,
    ) {
        self.record(operation, now - started, now, result.is_err());
        if let Ok(Response::Check(check)) = result {
            if check.allowed {
                self.checks_allowed += 1;
            } else {
                self.checks_denied += 1;
            }
        }
    }

    fn roll_if_due(&mut self, now: Instant) {
        if now.saturating_duration_since(self.interval_started) < self.interval {
            return;
        }
        self.interval_started = now;
        for op in self.operations.values_mut() {
            op.recent = summary(&op.current);
            op.current.reset();
        }
    }

    /// Per-operation figures, by name.
    pub fn operations(&mut self) -> Vec<OperationStats> {
        self.roll_if_due(Instant::now());
        self.operations
            .iter()
            .map(|(name, op)| OperationStats {
                operation: (*name).to_string(),
                count: op.count,
                errors: op.errors,
                latency: summary(&op.total),
                recent: op.recent,
            })
            .collect()
    }

    /// Milliseconds since the server started.
    pub fn uptime_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Length of the recent interval.
    pub fn interval_ms(&self) -> u64 {
        self.interval.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let mut telemetry = Telemetry::new(Duration::from_secs(3_600));
        for us in 1..=1_000u64 {
            telemetry.record(
                "check",
                Duration::from_micros(us),
                Instant::now(),
                us % 100 == 0,
            );
        }
        let ops = telemetry.operations();
        assert_eq!(ops.len(), 1);
        assert_eq!((ops[0].count, ops[0].errors), (1_000, 10));
        let latency = ops[0].latency;
        assert_eq!(latency.count, 1_000);
        assert!((495..=505).contains(&latency.p50_us), "{latency:?}");
        assert!((985..=995).contains(&latency.p99_us), "{latency:?}");
        assert_eq!(latency.max_us, 1_000);
    }
}
