//! What the load is made of: the operation mix (`check=80,report=20`) and the customer key
//! distribution (uniform or Zipf), sampled with a small deterministic generator.

use anyhow::{anyhow, bail};

/// One kind of request the harness sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `check` of 1 token.
    Check,
    /// A plain `report` of 1 token.
    Report,
    /// An `only_if_allowed` report (atomic check-and-consume).
    Consume,
    /// `reserve` then `settle` (two round trips, timed together).
    ReserveSettle,
    /// `report_batch` of `--batch` items.
    Batch,
    /// A report of one gpt-4o request's tokens on the `assistant` plan's `chat` (priced by model;
    /// with it in the mix, customers are seeded on `assistant` and only `stream` may join it).
    Model,
    /// One `progress` of a streamed answer (50 more output tokens) against the task's hold of a
    /// gpt-4o request on `assistant`'s `chat`; every 4,096 tokens the answer is settled and a
    /// new one opened, within the same timed operation.
    Stream,
}

impl Op {
    /// Whether it runs on plan `assistant`'s customers (priced by model).
    pub fn is_priced_by_model(self) -> bool {
        matches!(self, Op::Model | Op::Stream)
    }
}

impl Op {
    /// The name used in `--mix`, tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Op::Check => "check",
            Op::Report => "report",
            Op::Consume => "consume",
            Op::ReserveSettle => "reserve-settle",
            Op::Batch => "batch",
            Op::Model => "model",
            Op::Stream => "stream",
        }
    }

    fn parse(name: &str) -> anyhow::Result<Op> {
        Ok(match name {
            "check" => Op::Check,
            "report" => Op::Report,
            "consume" => Op::Consume,
            "reserve-settle" => Op::ReserveSettle,
            "batch" => Op::Batch,
            // `tokens` was this operation's first name.
            "model" | "tokens" => Op::Model,
            "stream" => Op::Stream,
            other => bail!("unknown operation `{other}` in --mix; use check, report, consume, reserve-settle, batch, model or stream"),
        })
    }
}

/// Weighted operations.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    ops: Vec<(Op, u32)>,
    total: u32,
}

impl Mix {
    /// Parses `check=80,report=20`.
    pub fn parse(text: &str) -> anyhow::Result<Mix> {
        let mut ops = Vec::new();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("`{part}` in --mix must be NAME=WEIGHT"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| anyhow!("weight of `{name}` must be a whole number"))?;
            if weight > 0 {
                ops.push((Op::parse(name.trim())?, weight));
            }
        }
        let total = ops.iter().map(|(_, w)| w).sum();
        if total == 0 {
            bail!("--mix `{text}` has no operation with a positive weight");
        }
        Ok(Mix { ops, total })
    }

    /// The operations with a positive weight.
    pub fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        self.ops.iter().map(|(op, _)| *op)
    }

    /// Picks an operation for a uniform draw `u` in `0..u64::MAX`.
    pub fn pick(&self, draw: u64) -> Op {
        let mut point = (draw % u64::from(self.total)) as u32;
        for (op, weight) in &self.ops {
            if point < *weight {
                return *op;
            }
            point -= weight;
        }
        unreachable!("the weights sum to total")
    }

    /// The mix as text, for the JSON line.
    pub fn describe(&self) -> String {
        self.ops
            .iter()
            .map(|(op, w)| format!("{}={w}", op.name()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// How customers are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    /// Every customer equally likely.
    Uniform,
    /// Customer `k` (1-based) with probability ∝ 1/k^s.
    Zipf {
        /// The exponent.
        s: f64,
        /// Cumulative probabilities, one per customer.
        cdf: Vec<f64>,
    },
}

impl Distribution {
    /// Parses `uniform` or `zipf:1.1` for `customers` customers.
    pub fn parse(text: &str, customers: usize) -> anyhow::Result<Distribution> {
        if text == "uniform" {
            return Ok(Distribution::Uniform);
        }
        let s: f64 = text
            .strip_prefix("zipf:")
            .and_then(|s| s.parse().ok())
            .filter(|s: &f64| *s > 0.0)
            .ok_or_else(|| {
                anyhow!("--dist `{text}` must be uniform or zipf:S with S > 0, e.g. zipf:1.1")
            })?;
        let mut cdf = Vec::with_capacity(customers);
        let mut sum = 0.0;
        for k in 1..=customers {
            sum += 1.0 / (k as f64).powf(s);
            cdf.push(sum);
        }
        for p in &mut cdf {
            *p /= sum;
        }
        Ok(Distribution::Zipf { s, cdf })
    }

    /// A customer index in `0..customers` for a uniform draw.
    pub fn pick(&self, draw: u64, customers: usize) -> usize {
        match self {
            Distribution::Uniform => (draw % customers as u64) as usize,
            Distribution::Zipf { cdf, .. } => {
                let u = (draw >> 11) as f64 / (1u64 << 53) as f64;
                cdf.partition_point(|&p| p < u).min(customers - 1)
            }
        }
    }

    /// The distribution as text, for the JSON line.
    pub fn describe(&self) -> String {
        match self {
            Distribution::Uniform => "uniform".into(),
            Distribution::Zipf { s, .. } => format!("zipf:{s}"),
        }
    }
}

/// The harness's generator: seeded per task, so a run's sequence of requests is reproducible.
pub type Rng = fastrand::Rng;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_follows_its_weights() {
        let mix = Mix::parse("check=80,report=20").unwrap();
        let mut rng = Rng::with_seed(7);
        let checks = (0..10_000)
            .filter(|_| mix.pick(rng.u64(..)) == Op::Check)
            .count();
        assert!((7_700..8_300).contains(&checks), "{checks}");
        assert!(Mix::parse("check=0").is_err());
        assert!(Mix::parse("fly=1").is_err());
    }

    #[test]
    fn zipf_favours_the_first_customers() {
        let dist = Distribution::parse("zipf:1.1", 1_000).unwrap();
        let mut rng = Rng::with_seed(3);
        let first = (0..10_000)
            .filter(|_| dist.pick(rng.u64(..), 1_000) == 0)
            .count();
        assert!(
            first > 1_000,
            "customer 0 should get well over 1/1000 of draws: {first}"
        );
        assert!(Distribution::parse("zipf:0", 10).is_err());
    }
}
