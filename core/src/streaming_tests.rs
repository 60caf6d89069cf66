//! Holds of model requests through the shard's one entry, `ShardCore::handle`: settling with the
//! output alone, streaming progress that grows a hold, the cut-off, expiry of an abandoned
//! stream, and — over random interleavings of several streams of one customer — no overspend.

use proptest::prelude::*;
use tally_protocol::message::*;

use crate::billing::BillingTerms;
use crate::engine::ShardCore;

const T0: u64 = 1_800_000_000_000;
/// gpt-4o's shipped example prices, in cost units per token.
const INPUT: u64 = 25_000;
const OUTPUT: u64 = 100_000;
/// The plan `assistant` charges the provider's cost + 20%: rate units = ⌈cost × 12,000 / 10¹⁰⌉.
fn charged(cost_units: u64) -> i64 {
    (u128::from(cost_units) * 12_000).div_ceil(10_000_000_000) as i64
}

fn core_with(customer: &str, balance_units: i64) -> ShardCore {
    let mut core = ShardCore::new(
        crate::shipped::catalogue_of(crate::shipped::CONFIG_TOML),
        60_000,
        BillingTerms::default(),
    );
    core.handle(
        T0,
        Request::CreateCustomer(CustomerPlan {
            customer: customer.into(),
            plan: "assistant".into(),
        }),
    )
    .unwrap();
    core.handle(
        T0,
        Request::TopUp(TopUpRequest {
            customer: customer.into(),
            amount: TopUpAmount::Units(balance_units),
            idempotency_key: None,
        }),
    )
    .unwrap();
    core
}

fn reserve(core: &mut ShardCore, now_ms: u64, input: u64, output: u64) -> Option<u64> {
    let Ok(Response::Reserve(outcome)) = core.handle(
        now_ms,
        Request::Reserve(ReserveRequest {
            customer: "ada".into(),
            feature: "chat".into(),
            amount: 0,
            ttl_ms: 60_000,
            model: Some(ModelUsage::new("gpt-4o", input, output)),
        }),
    ) else {
        panic!("reserve failed")
    };
    outcome.hold
}

fn progress(
    core: &mut ShardCore,
    now_ms: u64,
    hold: u64,
    output: u64,
) -> Result<ProgressOutcome, TallyError> {
    core.handle(
        now_ms,
        Request::Progress(ProgressRequest {
            hold,
            output_tokens: output,
        }),
    )
    .map(|answer| match answer {
        Response::Progress(outcome) => outcome,
        other => panic!("{other:?}"),
    })
}

fn settle_output(core: &mut ShardCore, hold: u64, output: u64) -> ReportOutcome {
    match core.handle(
        T0,
        Request::Settle(SettleRequest {
            hold,
            actual: 0,
            idempotency_key: None,
            model: None,
            output_tokens: Some(output),
        }),
    ) {
        Ok(Response::Report(outcome)) => outcome,
        other => panic!("{other:?}"),
    }
}

fn view(core: &mut ShardCore, now_ms: u64) -> CustomerView {
    match core.handle(
        now_ms,
        Request::GetCustomer(CustomerRef {
            customer: "ada".into(),
        }),
    ) {
        Ok(Response::Customer(view)) => view,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stream_grows_its_hold_and_is_cut_off_at_the_last_token_the_customer_can_pay_for() {
    // $1.00: after 1,000 prompt tokens (30 rate units), 83,083 answer tokens fit, 83,084 do not.
    let mut core = core_with("ada", 10_000);
    let hold = reserve(&mut core, T0, 1_000, 256).unwrap();
    let within = progress(&mut core, T0, hold, 200).unwrap();
    assert_eq!((within.cut_off, within.output_tokens_allowed), (false, 256));
    assert!(
        !core.did_last_request_change_state(),
        "a note, answered at once"
    );
    let grown = progress(&mut core, T0, hold, 300).unwrap();
    assert_eq!((grown.cut_off, grown.output_tokens_allowed), (false, 556));
    assert!(
        core.did_last_request_change_state(),
        "growth waits to persist"
    );
    assert_eq!(grown.held, charged(1_000 * INPUT + 556 * OUTPUT));
    let again = progress(&mut core, T0, hold, 300).unwrap();
    assert_eq!(again, grown, "a retried running total changes nothing");
    let stale = progress(&mut core, T0, hold, 100).unwrap();
    assert_eq!(stale, grown, "an older total arriving late changes nothing");

    let mut last = grown;
    for output in (600..=100_000).step_by(500) {
        last = progress(&mut core, T0, hold, output).unwrap();
        if last.cut_off {
            break;
        }
    }
    assert!(last.cut_off);
    assert_eq!(last.output_tokens_allowed, 83_083);
    assert_eq!(last.held, 10_000, "the whole balance, and no more");
    assert_eq!(charged(1_000 * INPUT + 83_083 * OUTPUT), 10_000);
    assert!(charged(1_000 * INPUT + 83_084 * OUTPUT) > 10_000);
    let after = progress(&mut core, T0, hold, 90_000).unwrap();
    assert!(after.cut_off && after.output_tokens_allowed == 83_083);

    let settled = settle_output(&mut core, hold, 83_083);
    assert_eq!(settled.charged, 10_000);
    let view = view(&mut core, T0);
    assert_eq!(view.balance_units, 0);
    assert!(view.holds.is_empty());
    assert_eq!(view.models.len(), 1);
    let line = &view.models[0];
    assert_eq!(
        (line.model.as_str(), line.requests, line.input_tokens),
        ("gpt-4o", 1, 1_000)
    );
    assert_eq!((line.output_tokens, line.charged), (83_083, 10_000));
}

#[test]
fn an_abandoned_stream_is_charged_what_it_reported_when_its_hold_expires() {
    let mut core = core_with("ada", 10_000);
    let hold = reserve(&mut core, T0, 1_000, 4_096).unwrap();
    progress(&mut core, T0 + 10, hold, 700).unwrap();
    let unreported = reserve(&mut core, T0, 500, 100).unwrap();
    let view = view(&mut core, T0 + 60_000);
    assert!(view.holds.is_empty(), "both expired");
    let cost = charged(1_000 * INPUT + 700 * OUTPUT);
    assert_eq!(
        view.balance_units,
        10_000 - cost,
        "the unreported one charges nothing"
    );
    assert_eq!(view.models[0].output_tokens, 700);
    let events = core.take_changes().events;
    let last = events.last().unwrap();
    assert_eq!(
        (last.amount, last.charged),
        (1_000 * INPUT + 700 * OUTPUT, cost)
    );
    assert!(matches!(
        progress(&mut core, T0 + 60_000, unreported, 1),
        Err(TallyError::UnknownHold { .. })
    ));
}

#[test]
fn holds_of_units_take_neither_progress_nor_output_alone() {
    let mut core = ShardCore::new(
        crate::shipped::catalogue_of(crate::shipped::CONFIG_TOML),
        60_000,
        BillingTerms::default(),
    );
    core.handle(
        T0,
        Request::CreateCustomer(CustomerPlan {
            customer: "pro".into(),
            plan: "pro".into(),
        }),
    )
    .unwrap();
    let Ok(Response::Reserve(outcome)) = core.handle(
        T0,
        Request::Reserve(ReserveRequest {
            customer: "pro".into(),
            feature: "tokens".into(),
            amount: 10,
            ttl_ms: 1_000,
            model: None,
        }),
    ) else {
        panic!()
    };
    let hold = outcome.hold.unwrap();
    assert!(matches!(
        progress(&mut core, T0, hold, 5),
        Err(TallyError::InvalidRequest { .. })
    ));
    let output_alone = core.handle(
        T0,
        Request::Settle(SettleRequest {
            hold,
            actual: 0,
            idempotency_key: None,
            model: None,
            output_tokens: Some(5),
        }),
    );
    assert!(matches!(
        output_alone,
        Err(TallyError::InvalidRequest { .. })
    ));
    let Response::Customer(view) = core
        .handle(
            T0,
            Request::GetCustomer(CustomerRef {
                customer: "pro".into(),
            }),
        )
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(view.holds.len(), 1, "refusals change nothing");
}

/// One step of a random run: which stream, and what it does.
#[derive(Debug, Clone)]
enum Step {
    Open { input: u64, output: u64 },
    Progress { stream: usize, tokens: u64 },
    Finish { stream: usize },
    Wait { ms: u64 },
    Report { output: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u64..30_000, 1u64..20_000).prop_map(|(input, output)| Step::Open { input, output }),
        (0usize..4, 1u64..60_000).prop_map(|(stream, tokens)| Step::Progress { stream, tokens }),
        (0usize..4).prop_map(|stream| Step::Finish { stream }),
        (1u64..40_000).prop_map(|ms| Step::Wait { ms }),
        (1u64..500).prop_map(|output| Step::Report { output }),
    ]
}

/// A stream as the product sees it: its hold, what it has delivered, and the most the last
/// answer allows.
struct Stream {
    hold: u64,
    delivered: u64,
    allowed: u64,
}

proptest! {
    /// Several streams of one balance customer, opened, advanced, cut off, settled and
    /// abandoned in any order, with checked reports between them: what is available never goes
    /// below zero, no stream delivers past its cut-off, and the balance falls by exactly the
    /// cost of the tokens delivered.
    #[test]
    fn concurrent_streams_never_overspend_and_charge_exactly_what_was_delivered(
        balance_cents in 100i64..400,
        steps in proptest::collection::vec(step(), 1..120),
    ) {
        let balance = balance_cents * 100;
        let mut core = core_with("ada", balance);
        let mut now = T0;
        let mut streams: Vec<Stream> = Vec::new();
        let mut spent = 0i64;
        for step in steps {
            match step {
                Step::Open { input, output } => {
                    if let Some(hold) = reserve(&mut core, now, input, output) {
                        streams.push(Stream { hold, delivered: 0, allowed: output });
                    }
                }
                Step::Progress { stream, tokens } => {
                    if let Some(s) = streams.get_mut(stream) {
                        // The product streams up to what it was allowed, no further, and
                        // reports what it delivered.
                        s.delivered = (s.delivered + tokens).min(s.allowed);
                        match progress(&mut core, now, s.hold, s.delivered) {
                            Ok(answer) => {
                                prop_assert!(answer.output_tokens_allowed >= s.delivered);
                                s.allowed = answer.output_tokens_allowed;
                            }
                            Err(TallyError::UnknownHold { .. }) => {
                                // Expired: it was charged its last reported total.
                                streams.remove(stream);
                            }
                            Err(other) => prop_assert!(false, "{other:?}"),
                        }
                    }
                }
                Step::Finish { stream } => {
                    if stream < streams.len() {
                        let s = streams.remove(stream);
                        match core.handle(now, Request::Settle(SettleRequest {
                            hold: s.hold, actual: 0, idempotency_key: None, model: None,
                            output_tokens: Some(s.delivered),
                        })) {
                            Ok(Response::Report(outcome)) => {
                                prop_assert_eq!(outcome.charged, outcome_cost(&core, &outcome));
                            }
                            Err(TallyError::UnknownHold { .. }) => {}
                            other => prop_assert!(false, "{other:?}"),
                        }
                    }
                }
                Step::Wait { ms } => now += ms,
                Step::Report { output } => {
                    let item = ReportItem::tokens("ada", "chat", ModelUsage::new("gpt-4o", 0, output))
                        .only_if_allowed();
                    let _ = core.handle(now, Request::Report(item));
                }
            }
            let view = view(&mut core, now);
            let held: i64 = view.holds.iter().map(|h| h.held).sum();
            prop_assert!(view.balance_units - held >= 0, "available went below zero: {view:?}");
            spent = balance - view.balance_units;
        }
        // Every usage recorded is in the model lines: the balance fell by what they charged.
        let view = view(&mut core, now);
        let charged_total: i64 = view.models.iter().map(|l| l.charged).sum();
        prop_assert_eq!(spent, charged_total);
        prop_assert!(view.balance_units >= 0);
    }
}

/// A settle's charge recomputed from what it recorded (the cumulative rounding makes a single
/// event's charge the difference of the rounded totals before and after).
fn outcome_cost(core: &ShardCore, outcome: &ReportOutcome) -> i64 {
    let customer = core.customer("ada").unwrap();
    let used = customer.used("chat");
    charged(used) - charged(used - outcome.amount)
}
