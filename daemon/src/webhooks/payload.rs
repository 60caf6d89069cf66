//! An alert as Commet's webhook event: its `data` in the shape of the `…Data` interface of
//! `@commet/node` (customer ids as given, money in the units each field documents), the envelope
//! (`event`, `timestamp`, `mode`, `apiVersion`, `data`, and a unique `id`), and the signature
//! Commet's `webhooks.verify` checks: HMAC-SHA256 of the raw body with the endpoint's secret, hex.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::api::views::{iso, subscription_id};
use crate::metering::alerts::{Alert, AlertKind};
use crate::metering::billing::UNITS_PER_CENT;
use tally_protocol::message::CloseReason;

/// The API version the envelopes are shaped after.
pub const API_VERSION: &str = "2026-07-11";

/// The event's `data`.
pub fn data(alert: &Alert) -> Value {
    let customer = alert.customer.as_str();
    let subscription = subscription_id(customer);
    match &alert.kind {
        AlertKind::CustomerCreated {
            plan,
            period_start_ms,
        } => json!({
            "id": customer, "externalId": customer, "fullName": null, "email": "",
            "taxDocument": null, "documentType": null, "timezone": null, "metadata": null,
            "createdAt": iso(alert.at_ms), "updatedAt": iso(alert.at_ms),
            "subscriptionId": subscription, "planCode": plan,
            "periodStart": iso(*period_start_ms),
        }),
        AlertKind::PlanChanged { from, to } => json!({
            "subscriptionId": subscription, "customerId": customer,
            "previousPlanCode": from, "planCode": to, "status": "active",
        }),
        AlertKind::BalanceToppedUp {
            amount_units,
            transaction,
        } => json!({
            "subscriptionId": subscription, "customerId": customer,
            "invoiceId": format!("txn_{customer}_{transaction}"),
            "invoiceNumber": transaction.to_string(),
            "amount": amount_units, "currency": "usd",
        }),
        AlertKind::BalanceLow {
            balance_units,
            threshold_units,
        } => json!({
            "subscriptionId": subscription, "customerId": customer,
            "currentBalance": balance_units, "thresholdBalance": threshold_units,
            "currency": "usd",
        }),
        AlertKind::BalanceDepleted { balance_units } => json!({
            "subscriptionId": subscription, "customerId": customer,
            "currentBalance": balance_units, "currency": "usd",
        }),
        AlertKind::CreditsPurchased {
            credits,
            transaction,
        } => json!({
            "subscriptionId": subscription, "customerId": customer,
            "invoiceId": format!("txn_{customer}_{transaction}"),
            "invoiceNumber": transaction.to_string(),
            "creditPackName": "credits", "credits": credits,
        }),
        AlertKind::CreditsLow {
            remaining,
            threshold,
            period_credits,
        } => json!({
            "subscriptionId": subscription, "customerId": customer,
            "remainingCredits": remaining, "thresholdCredits": threshold,
            "periodCredits": period_credits,
        }),
        AlertKind::CreditsDepleted { remaining } => json!({
            "subscriptionId": subscription, "customerId": customer,
            "remainingCredits": remaining,
        }),
        AlertKind::QuotaThresholdReached {
            feature,
            used,
            included,
            period_start_ms,
        } => json!({
            "subscriptionId": subscription, "customerId": customer, "featureCode": feature,
            "currentUsage": used, "includedAmount": included,
            "periodStart": iso(*period_start_ms),
        }),
        AlertKind::QuotaExceeded {
            feature,
            used,
            included,
            overage_enabled,
            period_start_ms,
        } => json!({
            "subscriptionId": subscription, "customerId": customer, "featureCode": feature,
            "currentUsage": used, "includedAmount": included,
            "overageEnabled": overage_enabled, "periodStart": iso(*period_start_ms),
        }),
        AlertKind::InvoiceCreated {
            number,
            period_start_ms,
            period_end_ms,
            total_units,
            reason,
        } => json!({
            "invoiceId": format!("inv_{customer}_{number}"),
            "invoiceNumber": number.to_string(),
            "invoiceStatus": "pending",
            "periodStart": iso(*period_start_ms), "periodEnd": iso(*period_end_ms),
            "issueDate": iso(alert.at_ms), "dueDate": iso(alert.at_ms),
            "currency": "usd",
            "subtotal": total_units / UNITS_PER_CENT, "total": total_units / UNITS_PER_CENT,
            "customerId": customer, "subscriptionId": subscription,
            "closeReason": match reason {
                CloseReason::Scheduled => "scheduled",
                CloseReason::Manual => "manual",
                CloseReason::PlanChange => "plan_change",
            },
        }),
    }
}

/// An event's id: its place in the outbox, unique for the life of the store.
pub fn event_id(number: u64) -> String {
    format!("evt_{number:016x}")
}

/// The body delivered: the envelope around `data` (as stored), compact JSON.
pub fn envelope(
    number: u64,
    event: &str,
    at_ms: u64,
    sandbox: bool,
    data: &[u8],
) -> Result<Vec<u8>, serde_json::Error> {
    let data: Value = serde_json::from_slice(data)?;
    serde_json::to_vec(&json!({
        "id": event_id(number),
        "event": event,
        "timestamp": iso(at_ms),
        "organizationId": "tally",
        "mode": if sandbox { "sandbox" } else { "live" },
        "apiVersion": API_VERSION,
        "data": data,
    }))
}

/// `X-Commet-Signature`: HMAC-SHA256 of `body` with `secret`, lower-case hex.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_hex_as_commets_sdks_compute_it() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn an_alert_becomes_commets_envelope_and_data() {
        let alert = Alert {
            customer: "ada".into(),
            seq: 3,
            index: 0,
            at_ms: 1_800_000_000_000,
            kind: AlertKind::BalanceLow {
                balance_units: 880,
                threshold_units: 1_000,
            },
        };
        let data = serde_json::to_vec(&data(&alert)).unwrap();
        let body = envelope(7, "balance.low", alert.at_ms, true, &data).unwrap();
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["id"], "evt_0000000000000007");
        assert_eq!(parsed["event"], "balance.low");
        assert_eq!(parsed["mode"], "sandbox");
        assert_eq!(parsed["apiVersion"], API_VERSION);
        assert_eq!(parsed["timestamp"], "2027-01-15T08:00:00.000Z");
        assert_eq!(parsed["data"]["customerId"], "ada");
        assert_eq!(parsed["data"]["currentBalance"], 880);
        assert_eq!(parsed["data"]["thresholdBalance"], 1_000);
    }
}
