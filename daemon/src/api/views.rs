//! Tally's answers in Commet's JSON shapes. Units per field are listed in docs/http-api.md:
//! live money (balances, unit prices, estimates) in rate units (10,000 = $1.00, Commet's
//! `scale`), invoices, transactions, packs and top-ups in cents (Commet's minor units).

use serde_json::{json, Value};
use tally_protocol::message::{
    CloseReason, CustomerView, InvoiceView, LineKind, Model, TransactionKind, TransactionView,
    RATE_UNITS_PER_DOLLAR,
};

use super::extract::ListShape;
use crate::metering::billing::UNITS_PER_CENT;
use crate::metering::catalogue::{Catalogue, FeatureKind, ModelTerms, Plan, UsageTerms};
use crate::metering::period::Period;

/// Milliseconds since the epoch as RFC 3339 (what Commet's `date-time` fields hold).
pub(crate) fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Rate units as whole cents (amounts Tally stores are already rounded to cents where they
/// are money that changed hands).
pub(super) fn cents(units: i64) -> i64 {
    units / UNITS_PER_CENT
}

/// The model's name as Commet spells it.
pub(super) fn model_name(model: Model) -> &'static str {
    match model {
        Model::Metered => "metered",
        Model::Credits => "credits",
        Model::Balance => "balance",
    }
}

/// The subscription id of a customer: Tally has one subscription per customer.
pub(crate) fn subscription_id(customer: &str) -> String {
    format!("sub_{customer}")
}

fn interval(period: Period) -> Value {
    match period {
        Period::Months(1) => json!("monthly"),
        Period::Months(3) => json!("quarterly"),
        Period::Months(12) => json!("yearly"),
        Period::Fixed { length_ms } if length_ms == 7 * 24 * 3_600_000 => json!("weekly"),
        _ => Value::Null,
    }
}

/// A usage feature's per-unit price in rate units (fractional when priced per a quantity).
fn unit_price(terms: &UsageTerms) -> Option<f64> {
    match terms {
        UsageTerms::Metered {
            overage: Some(price),
            ..
        }
        | UsageTerms::Balance { price } => Some(price.units as f64 / price.per as f64),
        _ => None,
    }
}

/// `Subscription`: the customer on its plan.
pub(super) fn subscription(view: &CustomerView, catalogue: &Catalogue, now_ms: u64) -> Value {
    let plan = catalogue.plan(&view.plan);
    let mut features: Vec<Value> = view
        .usage
        .iter()
        .map(|usage| {
            let overage_price = plan
                .and_then(|p| p.usage.get(&usage.feature))
                .and_then(unit_price);
            json!({
                "code": usage.feature,
                "name": usage.feature,
                "type": "usage",
                "enabled": true,
                "usage": {
                    "current": usage.used,
                    "included": usage.included,
                    "overageQuantity": usage.used.saturating_sub(usage.included),
                    "overageUnitPrice": overage_price,
                },
            })
        })
        .collect();
    if let Some(plan) = plan {
        features.extend(
            plan.flags.iter().map(
                |flag| json!({"code": flag, "name": flag, "type": "boolean", "enabled": true}),
            ),
        );
    }
    let credits = (view.model == Model::Credits).then(|| {
        json!({
            "remaining": view.granted_credits + view.purchased_credits,
            "included": view.granted_credits,
            "purchased": view.purchased_credits,
        })
    });
    let balance = (view.model == Model::Balance)
        .then(|| json!({"remaining": view.balance_units, "included": 0, "currency": "USD"}));
    let days_remaining = view
        .period_end_ms
        .saturating_sub(now_ms)
        .div_ceil(86_400_000);
    json!({
        "id": subscription_id(&view.customer),
        "customerId": view.customer,
        "plan": {
            "id": view.plan,
            "name": view.plan,
            "basePrice": plan.map(|p| cents(p.base_price_units)),
        },
        "name": view.plan,
        "description": null,
        "status": "active",
        "billingInterval": plan.map_or(Value::Null, |p| interval(p.period)),
        "consumptionModel": model_name(view.model),
        "trialEndsAt": null,
        "currentPeriod": {
            "start": iso(view.period_start_ms),
            "end": iso(view.period_end_ms),
            "daysRemaining": days_remaining,
        },
        "features": features,
        "credits": credits,
        "balance": balance,
        "cancellation": null,
        "cancelAtPeriodEnd": false,
        "scheduledPlanChange": null,
        "discount": null,
        "startDate": iso(view.period_start_ms),
        "endDate": null,
        "billingDayOfMonth": null,
        "nextBillingDate": iso(view.period_end_ms),
        "checkoutUrl": null,
        "seq": view.seq,
        "object": "subscription",
        "livemode": false,
    })
}

/// `Plan`.
pub(super) fn plan(plan: &Plan, sort_order: usize) -> Value {
    let mut features: Vec<Value> = plan
        .usage
        .iter()
        .map(|(feature, terms)| {
            let mut entry = json!({
                "code": feature,
                "name": feature,
                "type": "usage",
                "enabled": true,
                "unlimited": false,
                "pricingMode": "fixed",
            });
            if let Some(ai) = plan.ai.get(feature) {
                entry["pricingMode"] = json!("ai_model");
                entry["margin"] = json!(ai.margin_basis_points);
                entry["models"] = json!(ai.models);
            }
            match terms {
                UsageTerms::Metered { included, overage } => {
                    entry["includedAmount"] = json!(included);
                    entry["overage"] = json!({
                        "enabled": overage.is_some(),
                        "unitPrice": overage.map(|price| json!({
                            "amount": price.units, "per": price.per,
                            "currency": "USD", "scale": RATE_UNITS_PER_DOLLAR,
                        })),
                    });
                }
                UsageTerms::Credits { price } => {
                    entry["creditsPerUnit"] = json!(price.units as f64 / price.per as f64);
                }
                UsageTerms::Balance { price } => {
                    entry["unitPrice"] = json!({
                        "amount": price.units, "per": price.per,
                        "currency": "USD", "scale": RATE_UNITS_PER_DOLLAR,
                    });
                }
            }
            entry
        })
        .collect();
    features.extend(
        plan.flags
            .iter()
            .map(|flag| json!({"code": flag, "name": flag, "type": "boolean", "enabled": true})),
    );
    let (included_credits, block) = match plan.terms {
        ModelTerms::Credits { grant_credits, .. } => (json!(grant_credits), true),
        ModelTerms::Balance { .. } => (Value::Null, true),
        ModelTerms::Metered { .. } => (Value::Null, false),
    };
    json!({
        "id": plan.slug,
        "name": plan.slug,
        "code": plan.slug,
        "description": null,
        "consumptionModel": model_name(plan.model()),
        "isPublic": true,
        "isDefault": false,
        "isFree": plan.base_price_units == 0,
        "blockOnExhaustion": block,
        "sortOrder": sort_order,
        "planGroupId": null,
        "metadata": null,
        "features": features,
        "prices": [{
            "id": format!("price_{}", plan.slug),
            "planId": plan.slug,
            "billingInterval": interval(plan.period),
            "price": cents(plan.base_price_units),
            "isDefault": true,
            "trialDays": 0,
            "includedBalance": null,
            "includedCredits": included_credits,
            "object": "plan_price",
            "livemode": false,
        }],
        "exchangeRates": [],
        "priceVersion": plan.version,
        "object": "plan",
        "livemode": false,
    })
}

/// `Feature`, from the catalogue.
pub(super) fn feature(code: &str, kind: FeatureKind) -> Value {
    json!({
        "id": code,
        "name": code,
        "code": code,
        "type": match kind { FeatureKind::Usage => "usage", FeatureKind::Flag => "boolean" },
        "description": null,
        "unitName": null,
        "object": "feature",
        "livemode": false,
    })
}

/// The credit pack a credits plan sells.
pub(super) fn credit_pack(plan: &Plan) -> Option<Value> {
    let ModelTerms::Credits {
        pack_credits,
        pack_price_units,
        ..
    } = plan.terms
    else {
        return None;
    };
    Some(json!({
        "id": format!("pack_{}", plan.slug),
        "name": format!("{pack_credits} credits"),
        "description": format!("a credit pack of plan {}", plan.slug),
        "credits": pack_credits,
        "price": cents(pack_price_units),
        "currency": "USD",
        "isActive": true,
        "planCode": plan.slug,
        "object": "credit_pack",
        "livemode": false,
    }))
}

/// An invoice's public id: its number and customer.
pub(super) fn invoice_id(customer: &str, number: u64) -> String {
    format!("inv_{number}_{customer}")
}

/// A transaction's public id: its number and customer.
pub(super) fn transaction_id(customer: &str, number: u64) -> String {
    format!("txn_{number}_{customer}")
}

/// Splits `prefix_{number}_{customer}`.
pub(super) fn parse_numbered_id<'a>(id: &'a str, prefix: &str) -> Option<(u64, &'a str)> {
    let (number, customer) = id.strip_prefix(prefix)?.split_once('_')?;
    Some((number.parse().ok()?, customer)).filter(|(_, c)| !c.is_empty())
}

/// `Invoice`.
pub(super) fn invoice(view: &InvoiceView) -> Value {
    let lines: Vec<Value> = view
        .lines
        .iter()
        .map(|line| {
            let line_type = match line.kind {
                LineKind::Base => "plan_base",
                LineKind::Metered | LineKind::Usage => "feature_overage",
                LineKind::Debt => "balance_overage",
            };
            json!({
                "lineType": line_type,
                "featureName": (!line.feature.is_empty()).then_some(&line.feature),
                "description": match line.kind {
                    LineKind::Base => format!("plan {}", view.plan),
                    LineKind::Debt => "balance below zero at the period's close".to_string(),
                    _ => format!("{} usage", line.feature),
                },
                "quantity": line.overage.max(u64::from(line.kind == LineKind::Base)),
                "unitAmount": line.price_units,
                "per": line.per,
                "amount": cents(line.amount_units),
                "amountUnits": line.amount_units,
                "includedAmount": line.included,
                "usedAmount": line.used,
                "overageAmount": line.overage,
                "consumed": line.consumed,
                "discountType": null,
                "discountValue": null,
                "discountName": null,
                "chargeType": "standard",
            })
        })
        .collect();
    json!({
        "id": invoice_id(&view.customer, view.number),
        "customerId": view.customer,
        "subscriptionId": subscription_id(&view.customer),
        "invoiceNumber": format!("{}-{:04}", view.customer, view.number),
        "status": "outstanding",
        "invoiceType": match view.reason {
            CloseReason::PlanChange => "plan_change",
            CloseReason::Scheduled | CloseReason::Manual => "recurring",
        },
        "currency": "USD",
        "subtotal": cents(view.total_units),
        "discountAmount": 0,
        "creditApplied": 0,
        "taxAmount": 0,
        "total": cents(view.total_units),
        "fee": cents(view.fee_units),
        "net": cents(view.net_units),
        "periodStart": iso(view.period_start_ms),
        "periodEnd": iso(view.period_end_ms),
        "issueDate": iso(view.closed_at_ms),
        "dueDate": iso(view.closed_at_ms),
        "planName": view.plan,
        "consumptionModel": model_name(view.model),
        "memo": null,
        "poNumber": null,
        "reference": null,
        "metadata": {},
        "createdAt": iso(view.closed_at_ms),
        "updatedAt": iso(view.closed_at_ms),
        "lineItems": lines,
        "object": "invoice",
        "livemode": false,
    })
}

/// `Transaction`.
pub(super) fn transaction(view: &TransactionView) -> Value {
    json!({
        "id": transaction_id(&view.customer, view.number),
        "customerId": view.customer,
        "invoiceId": null,
        "kind": match view.kind {
            TransactionKind::CreditPurchase => "credit_purchase",
            TransactionKind::BalanceTopUp => "balance_topup",
        },
        "quantity": view.quantity,
        "grossAmount": cents(view.total_units),
        "subtotal": cents(view.total_units),
        "taxAmount": 0,
        "presentmentAmount": cents(view.total_units),
        "fee": cents(view.fee_units),
        "net": cents(view.net_units),
        "currency": "USD",
        "provider": "commet",
        "paymentMethod": null,
        "subPaymentMethod": null,
        "status": "succeeded",
        "customerEmail": null,
        "customerName": null,
        "paidAt": iso(view.at_ms),
        "createdAt": iso(view.at_ms),
        "updatedAt": iso(view.at_ms),
        "availableAt": iso(view.at_ms),
        "object": "transaction",
        "livemode": false,
    })
}

/// A successful answer: `{success: true, data}`.
pub(super) fn ok(data: Value) -> axum::Json<Value> {
    axum::Json(json!({"success": true, "data": data}))
}

/// A page of a list, shaped for the caller's API version: `{success, data: [...], hasMore,
/// nextCursor}`, or (since 2026-08-27) `{success, data: {object: "list", data: [...], hasMore,
/// nextCursor}}`.
pub(super) fn page(
    data: Vec<Value>,
    next_cursor: Option<String>,
    shape: ListShape,
) -> axum::Json<Value> {
    let has_more = next_cursor.is_some();
    if shape.nested {
        return ok(json!({
            "object": "list",
            "data": data,
            "hasMore": has_more,
            "nextCursor": next_cursor,
        }));
    }
    axum::Json(json!({
        "success": true,
        "data": data,
        "hasMore": has_more,
        "nextCursor": next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_ids_round_trip_with_any_customer_id() {
        for customer in ["acme", "a_b_c", "user@example.com"] {
            let id = invoice_id(customer, 7);
            assert_eq!(parse_numbered_id(&id, "inv_"), Some((7, customer)));
        }
        assert_eq!(parse_numbered_id("inv_x_acme", "inv_"), None);
        assert_eq!(parse_numbered_id("inv_3_", "inv_"), None);
        assert_eq!(parse_numbered_id("txn_3_a", "inv_"), None);
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(cents(12_345), 123);
    }
}
