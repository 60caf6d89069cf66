//! How answers are shown: one JSON object (`--json`, for scripts) or a few human lines. Money in
//! JSON is a decimal dollar string (`"49.9669"`) beside the exact integer rate units.

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use tally_protocol::message::*;

/// What a command prints.
pub struct Output {
    /// The `--json` form.
    pub json: Value,
    /// The human form.
    pub human: String,
}

/// Rate units as a dollar string with at least two decimals: 490000 → "49.00", 20 → "0.002".
pub fn dollars(units: i64) -> String {
    let mut value = Decimal::new(units, 4).normalize();
    if value.scale() < 2 {
        value.rescale(2);
    }
    value.to_string()
}

/// Milliseconds since the epoch as RFC 3339.
pub fn timestamp(ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// A hold id as users type it: 16 hex digits.
pub fn hold_id(hold: u64) -> String {
    format!("{hold:016x}")
}

fn model_name(model: Model) -> &'static str {
    match model {
        Model::Metered => "metered",
        Model::Credits => "credits",
        Model::Balance => "balance",
    }
}

/// The standing's fields, flattened into `object`, and a human phrase.
fn standing(object: &mut Map<String, Value>, standing: &Standing) -> String {
    match standing {
        Standing::Metered {
            used,
            included,
            held,
            overage_units,
            overage_cost_units,
            has_overage,
        } => {
            object.insert("used".into(), json!(used));
            object.insert("included".into(), json!(included));
            object.insert("held".into(), json!(held));
            object.insert("overage_units".into(), json!(overage_units));
            object.insert("overage_cost_units".into(), json!(overage_cost_units));
            object.insert("overage_cost".into(), json!(dollars(*overage_cost_units)));
            object.insert("has_overage".into(), json!(has_overage));
            format!(
                "{used} of {included} included used, {overage_units} overage (${})",
                dollars(*overage_cost_units)
            )
        }
        Standing::Credits {
            available,
            granted,
            purchased,
            held,
        } => {
            object.insert("credits".into(), json!(available));
            object.insert("granted_credits".into(), json!(granted));
            object.insert("purchased_credits".into(), json!(purchased));
            object.insert("held_credits".into(), json!(held));
            format!("{available} credits available ({held} held)")
        }
        Standing::Balance {
            available_units,
            balance_units,
            held_units,
            overdraft_units,
        } => {
            object.insert("balance_units".into(), json!(balance_units));
            object.insert("balance".into(), json!(dollars(*balance_units)));
            object.insert("available_units".into(), json!(available_units));
            object.insert("held_units".into(), json!(held_units));
            object.insert("overdraft_units".into(), json!(overdraft_units));
            format!(
                "balance ${} (${} available, ${} held)",
                dollars(*balance_units),
                dollars(*available_units),
                dollars(*held_units)
            )
        }
        Standing::Flag { enabled } => {
            object.insert("enabled".into(), json!(enabled));
            if *enabled {
                "the plan has this flag"
            } else {
                "the plan lacks this flag"
            }
            .into()
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object literal is an object"),
    }
}

/// `tally check`.
pub fn check(customer: &str, feature: &str, amount: u64, outcome: &CheckOutcome) -> Output {
    let mut o = object(json!({
        "customer": customer, "feature": feature, "amount": amount,
        "allowed": outcome.allowed, "seq": outcome.seq, "cost": outcome.cost,
    }));
    let phrase = standing(&mut o, &outcome.standing);
    let verdict = if outcome.allowed { "allowed" } else { "denied" };
    Output {
        json: Value::Object(o),
        human: format!(
            "{verdict}: {amount} {feature} for {customer} costs {}; {phrase} (seq {})",
            outcome.cost, outcome.seq
        ),
    }
}

/// `tally report` and `tally settle`.
pub fn report(customer: Option<&str>, feature: Option<&str>, outcome: &ReportOutcome) -> Output {
    let mut o = object(json!({
        "seq": outcome.seq, "duplicate": outcome.duplicate,
        "amount": outcome.amount, "charged": outcome.charged,
    }));
    if let Some(customer) = customer {
        o.insert("customer".into(), json!(customer));
    }
    if let Some(feature) = feature {
        o.insert("feature".into(), json!(feature));
    }
    let phrase = standing(&mut o, &outcome.standing);
    let duplicate = if outcome.duplicate {
        " (duplicate: nothing changed)"
    } else {
        ""
    };
    Output {
        json: Value::Object(o),
        human: format!(
            "recorded {} units, charged {}{duplicate}; {phrase} (seq {})",
            outcome.amount, outcome.charged, outcome.seq
        ),
    }
}

/// `tally reserve`.
pub fn reserve(outcome: &ReserveOutcome) -> Output {
    let mut o = object(json!({
        "allowed": outcome.allowed,
        "hold": outcome.hold.map(hold_id),
        "seq": outcome.seq, "held": outcome.held,
        "expires_at": outcome.hold.map(|_| timestamp(outcome.expires_at_ms)),
    }));
    let phrase = standing(&mut o, &outcome.standing);
    let human = match outcome.hold {
        Some(hold) => format!(
            "hold {} holds {} until {}; {phrase}",
            hold_id(hold),
            outcome.held,
            timestamp(outcome.expires_at_ms)
        ),
        None => format!("denied: cannot hold that much; {phrase}"),
    };
    Output {
        json: Value::Object(o),
        human,
    }
}

/// `tally release`.
pub fn release(hold: u64, outcome: &ReleaseOutcome) -> Output {
    let mut o =
        object(json!({ "hold": hold_id(hold), "seq": outcome.seq, "released": outcome.released }));
    let phrase = standing(&mut o, &outcome.standing);
    Output {
        json: Value::Object(o),
        human: format!(
            "released hold {} ({}); {phrase}",
            hold_id(hold),
            outcome.released
        ),
    }
}

/// `tally progress`.
pub fn progress(hold: u64, output: u64, outcome: &ProgressOutcome) -> Output {
    let json = json!({
        "hold": hold_id(hold), "output_tokens": output, "cut_off": outcome.cut_off,
        "output_tokens_allowed": outcome.output_tokens_allowed, "held": outcome.held,
        "seq": outcome.seq,
    });
    let human = if outcome.cut_off {
        format!(
            "cut off: stop the answer at {} output tokens (hold {} holds {})",
            outcome.output_tokens_allowed,
            hold_id(hold),
            outcome.held
        )
    } else {
        format!(
            "go on: hold {} covers {} output tokens ({} held)",
            hold_id(hold),
            outcome.output_tokens_allowed,
            outcome.held
        )
    };
    Output { json, human }
}

/// `tally webhooks …`; `stats` gives the list its delivery figures.
pub fn webhooks(answer: &WebhookAnswer, stats: &[WebhookStats]) -> Output {
    match answer {
        WebhookAnswer::Endpoints(endpoints) => {
            let mut lines = Vec::new();
            let mut json = Vec::new();
            for e in endpoints {
                let figures = stats.iter().find(|s| s.endpoint == e.id);
                let events = if e.events.is_empty() {
                    "every event".to_string()
                } else {
                    e.events.join(", ")
                };
                let source = if e.configured { "config.toml" } else { "added" };
                let state = if e.active { "" } else { ", off" };
                let counts = figures.map_or(String::new(), |f| {
                    format!(
                        "; {} delivered, {} pending, {} dead-lettered, last lag {} ms",
                        f.delivered, f.pending, f.failed, f.last_lag_ms
                    )
                });
                lines.push(format!(
                    "{} {} ({source}{state}): {events}{counts}",
                    e.id, e.url
                ));
                json.push(json!({
                    "id": e.id, "url": e.url, "events": e.events, "configured": e.configured,
                    "active": e.active,
                    "delivered": figures.map(|f| f.delivered), "pending": figures.map(|f| f.pending),
                    "failed": figures.map(|f| f.failed),
                }));
            }
            if lines.is_empty() {
                lines.push("no webhook endpoints".into());
            }
            Output {
                json: Value::Array(json),
                human: lines.join("\n"),
            }
        }
        WebhookAnswer::Added { endpoint, secret } => Output {
            json: json!({ "id": endpoint.id, "url": endpoint.url, "events": endpoint.events, "secret": secret }),
            human: format!(
                "added {} for {}; its signing secret (shown this once): {secret}",
                endpoint.id, endpoint.url
            ),
        },
        WebhookAnswer::Removed => Output {
            json: json!({ "removed": true }),
            human: "removed".into(),
        },
        WebhookAnswer::Tested(error) => Output {
            json: json!({ "success": error.is_none(), "error": error }),
            human: match error {
                None => "the endpoint took the test event".into(),
                Some(reason) => format!("the endpoint did not take the test event: {reason}"),
            },
        },
        WebhookAnswer::Failures(failures) => {
            let lines: Vec<String> = failures
                .iter()
                .map(|f| {
                    format!(
                        "{} {}: {} attempts, last {} — {}",
                        f.event_id,
                        f.event,
                        f.attempts,
                        timestamp(f.last_attempt_ms),
                        f.reason
                    )
                })
                .collect();
            Output {
                json: Value::Array(
                    failures
                        .iter()
                        .map(|f| {
                            json!({
                                "event_id": f.event_id, "event": f.event, "attempts": f.attempts,
                                "last_attempt": timestamp(f.last_attempt_ms), "reason": f.reason,
                            })
                        })
                        .collect(),
                ),
                human: if lines.is_empty() {
                    "no dead letters".into()
                } else {
                    lines.join("\n")
                },
            }
        }
        WebhookAnswer::Redelivered(outcomes) => {
            let taken = outcomes.iter().filter(|(_, e)| e.is_none()).count();
            let mut lines = vec![format!("{taken} of {} taken", outcomes.len())];
            lines.extend(
                outcomes
                    .iter()
                    .filter_map(|(id, e)| e.as_ref().map(|e| format!("{id}: {e}"))),
            );
            Output {
                json: Value::Array(
                    outcomes
                        .iter()
                        .map(
                            |(id, e)| json!({ "event_id": id, "success": e.is_none(), "error": e }),
                        )
                        .collect(),
                ),
                human: lines.join("\n"),
            }
        }
    }
}

/// `tally models reload`.
pub fn models_reloaded(answer: &ModelsReloaded) -> Output {
    Output {
        json: json!({ "models": answer.models }),
        human: format!("model prices reloaded: {}", answer.models.join(", ")),
    }
}

/// `tally top-up`.
pub fn top_up(outcome: &TopUpOutcome) -> Output {
    let customer = customer(&outcome.customer);
    let json = json!({
        "seq": outcome.seq, "duplicate": outcome.duplicate,
        "gross": dollars(outcome.gross_units), "gross_units": outcome.gross_units,
        "transaction": crate::billing_output::transaction_json(&outcome.transaction),
        "credits_added": outcome.credits_added,
        "balance_added_units": outcome.balance_added_units,
        "customer": customer.json,
    });
    let what = if outcome.credits_added > 0 {
        format!("{} credits", outcome.credits_added)
    } else {
        format!("${}", dollars(outcome.balance_added_units))
    };
    let duplicate = if outcome.duplicate {
        " (duplicate: nothing changed)"
    } else {
        ""
    };
    let t = &outcome.transaction;
    Output {
        json,
        human: format!(
            "added {what} for ${} (fee ${}, net ${}){duplicate}\n{}",
            dollars(t.total_units),
            dollars(t.fee_units),
            dollars(t.net_units),
            customer.human
        ),
    }
}

/// `tally customer create|show|change-plan`.
pub fn customer(view: &CustomerView) -> Output {
    let usage: Map<String, Value> = view
        .usage
        .iter()
        .map(|u| (u.feature.clone(), json!(u.used)))
        .collect();
    let held: Vec<Value> = view
        .holds
        .iter()
        .map(|h| {
            json!({
                "hold": hold_id(h.hold), "feature": h.feature, "amount": h.amount,
                "held": h.held, "expires_at": timestamp(h.expires_at_ms),
            })
        })
        .collect();
    let mut o = object(json!({
        "customer": view.customer, "plan": view.plan, "model": model_name(view.model), "seq": view.seq,
        "period_start": timestamp(view.period_start_ms), "period_end": timestamp(view.period_end_ms),
        "usage": usage, "held": held,
    }));
    let held_total: i64 = view.holds.iter().map(|h| h.held).sum();
    let mut lines = vec![format!(
        "{} on plan {} ({}), period {} → {}, seq {}",
        view.customer,
        view.plan,
        model_name(view.model),
        timestamp(view.period_start_ms),
        timestamp(view.period_end_ms),
        view.seq
    )];
    match view.model {
        Model::Metered => {
            let included: Map<String, Value> = view
                .usage
                .iter()
                .map(|u| (u.feature.clone(), json!(u.included)))
                .collect();
            o.insert("included".into(), Value::Object(included));
        }
        Model::Credits => {
            let credits = view.granted_credits + view.purchased_credits - held_total;
            o.insert("credits".into(), json!(credits));
            o.insert("granted_credits".into(), json!(view.granted_credits));
            o.insert("purchased_credits".into(), json!(view.purchased_credits));
            lines.push(format!(
                "  credits: {credits} available ({} granted, {} purchased, {held_total} held)",
                view.granted_credits, view.purchased_credits
            ));
        }
        Model::Balance => {
            o.insert("balance_units".into(), json!(view.balance_units));
            o.insert("balance".into(), json!(dollars(view.balance_units)));
            lines.push(format!(
                "  balance: ${} (${} held)",
                dollars(view.balance_units),
                dollars(held_total)
            ));
        }
    }
    if view.model != Model::Balance && view.balance_units != 0 {
        o.insert("balance_units".into(), json!(view.balance_units));
    }
    for u in &view.usage {
        let included = if view.model == Model::Metered {
            format!(" of {} included", u.included)
        } else {
            String::new()
        };
        lines.push(format!("  {}: {} used{included}", u.feature, u.used));
    }
    let mut models = Vec::new();
    for m in &view.models {
        models.push(json!({
            "feature": m.feature, "model": m.model, "requests": m.requests,
            "input_tokens": m.input_tokens, "output_tokens": m.output_tokens,
            "cache_read_tokens": m.cache_read_tokens, "cache_write_tokens": m.cache_write_tokens,
            "cost_units": m.cost_units, "charged": m.charged,
        }));
        lines.push(format!(
            "  {} · {}: {} requests, {} in, {} out, {} cache read, {} cache write; charged {}",
            m.feature,
            m.model,
            m.requests,
            m.input_tokens,
            m.output_tokens,
            m.cache_read_tokens,
            m.cache_write_tokens,
            m.charged
        ));
    }
    if !models.is_empty() {
        o.insert("models".into(), Value::Array(models));
    }
    for h in &view.holds {
        lines.push(format!(
            "  hold {}: {} {} ({} held) until {}",
            hold_id(h.hold),
            h.amount,
            h.feature,
            h.held,
            timestamp(h.expires_at_ms)
        ));
    }
    Output {
        json: Value::Object(o),
        human: lines.join("\n"),
    }
}

/// Says what a request of an AI model's tokens was: the model and tokens in place of an amount,
/// and the provider's cost (what the feature's counter adds: cost units of 10⁻¹⁰ $) in dollars.
pub fn with_tokens(mut out: Output, usage: &ModelUsage, cost_units: Option<u64>) -> Output {
    let tokens = format!(
        "{} ({} in, {} out{})",
        usage.model,
        usage.input_tokens,
        usage.output_tokens,
        if usage.cache_read_tokens + usage.cache_write_tokens > 0 {
            format!(
                ", {} cache read, {} cache write",
                usage.cache_read_tokens, usage.cache_write_tokens
            )
        } else {
            String::new()
        }
    );
    if let Some(object) = out.json.as_object_mut() {
        object.insert(
            "model".into(),
            json!({
                "model": usage.model, "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
            }),
        );
    }
    out.human = match cost_units {
        Some(units) => {
            let cost = rust_decimal::Decimal::new(units as i64, 10).normalize();
            out.human.replacen(
                &format!("recorded {units} units"),
                &format!("recorded {tokens}, ${cost} before margin"),
                1,
            )
        }
        None => out.human.replacen(" 0 ", &format!(" {tokens} of "), 1),
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_keep_every_rate_unit_and_at_least_cents() {
        assert_eq!(dollars(490_000), "49.00");
        assert_eq!(dollars(499_669), "49.9669");
        assert_eq!(dollars(20), "0.002");
        assert_eq!(dollars(-600), "-0.06");
        assert_eq!(dollars(0), "0.00");
    }

    #[test]
    fn a_denied_check_prints_allowed_false_and_the_seq() {
        let outcome = CheckOutcome {
            allowed: false,
            seq: 4,
            cost: 1,
            standing: Standing::Credits {
                available: 0,
                granted: 0,
                purchased: 0,
                held: 0,
            },
        };
        let output = check("pics", "image-gen", 1, &outcome);
        assert_eq!(output.json["allowed"], json!(false));
        assert_eq!(output.json["seq"], json!(4));
        assert_eq!(output.json["credits"], json!(0));
        assert!(output.human.starts_with("denied"), "{}", output.human);
    }

    #[test]
    fn a_model_request_is_described_by_its_model_tokens_and_cost() {
        let usage = ModelUsage::new("gpt-4o", 1_200, 350);
        let out = Output {
            json: json!({"amount": 65_000_000}),
            human: "recorded 65000000 units, charged 78; balance $0.99 (seq 3)".into(),
        };
        let out = with_tokens(out, &usage, Some(65_000_000));
        assert_eq!(
            out.human,
            "recorded gpt-4o (1200 in, 350 out), $0.0065 before margin, charged 78; balance $0.99 (seq 3)"
        );
        assert_eq!(out.json["model"]["output_tokens"], 350);
    }
}
