//! The rules a well-formed request follows, checked by both ends before anything looks it up.

use super::*;

/// Checks the rules a well-formed request must follow before anything looks it up.
pub fn validate_request(request: &Request) -> Result<(), TallyError> {
    match request {
        Request::Report(item) => validate_report(item),
        Request::ReportBatch(items) => {
            if items.is_empty() || items.len() > BATCH_ITEMS_MAX {
                return Err(invalid(format!(
                    "batch has {} items; it must have 1 to {BATCH_ITEMS_MAX}",
                    items.len()
                )));
            }
            items.iter().try_for_each(validate_report)
        }
        Request::Check(c) => {
            validate_customer(&c.customer)?;
            validate_slug("feature", &c.feature)?;
            validate_amount("amount", c.amount)?;
            validate_model("amount", c.amount, c.model.as_ref())
        }
        Request::Reserve(r) => {
            validate_customer(&r.customer)?;
            validate_slug("feature", &r.feature)?;
            validate_amount("amount", r.amount)?;
            validate_model("amount", r.amount, r.model.as_ref())?;
            if r.ttl_ms == 0 || r.ttl_ms > HOLD_TTL_MS_MAX {
                return Err(invalid(format!(
                    "ttl is {} ms; it must be 1 to {HOLD_TTL_MS_MAX} ms",
                    r.ttl_ms
                )));
            }
            Ok(())
        }
        Request::Settle(s) => {
            validate_amount("actual", s.actual)?;
            validate_model("actual", s.actual, s.model.as_ref())?;
            match s.output_tokens {
                Some(_) if s.actual != 0 || s.model.is_some() => Err(invalid(
                    "give output tokens alone: the hold has the model request".into(),
                )),
                Some(output) => validate_amount("output tokens", output),
                None => Ok(()),
            }
        }
        Request::Progress(p) => validate_amount("output tokens", p.output_tokens),
        Request::Release(_) | Request::Stats | Request::ReloadModels | Request::Webhooks(_) => {
            Ok(())
        }
        Request::WatchAlerts(w) => {
            if let Some(customer) = &w.customer {
                validate_customer(customer)?;
            }
            if w.wait_ms > WATCH_WAIT_MS_MAX {
                return Err(invalid(format!(
                    "wait is {} ms; it must be at most {WATCH_WAIT_MS_MAX} ms",
                    w.wait_ms
                )));
            }
            Ok(())
        }
        Request::CreateCustomer(cp) | Request::ChangePlan(cp) => {
            validate_customer(&cp.customer)?;
            validate_slug("plan", &cp.plan)
        }
        Request::TopUp(t) => {
            validate_customer(&t.customer)?;
            match t.amount {
                TopUpAmount::Packs(p) if p == 0 || p > TOP_UP_PACKS_MAX => Err(invalid(format!(
                    "top-up is {p} packs; it must be 1 to {TOP_UP_PACKS_MAX}"
                ))),
                TopUpAmount::Units(u) if u <= 0 || u > TOP_UP_UNITS_MAX => Err(invalid(format!(
                    "top-up is {u} rate units; it must be 1 to {TOP_UP_UNITS_MAX}"
                ))),
                _ => Ok(()),
            }
        }
        Request::GetCustomer(c)
        | Request::ListInvoices(c)
        | Request::ListTransactions(c)
        | Request::ClosePeriod(c) => validate_customer(&c.customer),
        Request::ListEvents(e) => validate_customer(&e.customer),
    }
}

fn validate_report(item: &ReportItem) -> Result<(), TallyError> {
    validate_customer(&item.customer)?;
    validate_slug("feature", &item.feature)?;
    validate_amount("amount", item.amount)?;
    validate_model("amount", item.amount, item.model.as_ref())
}

/// Model tokens come instead of an amount, each count within [`AMOUNT_MAX`].
fn validate_model(what: &str, amount: u64, model: Option<&ModelUsage>) -> Result<(), TallyError> {
    let Some(usage) = model else { return Ok(()) };
    if amount != 0 {
        return Err(invalid(format!(
            "give {what} or model tokens, not both ({what} is {amount})"
        )));
    }
    validate_slug("model", &usage.model)?;
    for (kind, tokens) in [
        ("input tokens", usage.input_tokens),
        ("output tokens", usage.output_tokens),
        ("cache read tokens", usage.cache_read_tokens),
        ("cache write tokens", usage.cache_write_tokens),
    ] {
        validate_amount(kind, tokens)?;
    }
    Ok(())
}

fn validate_customer(customer: &str) -> Result<(), TallyError> {
    if customer.is_empty() || customer.len() > CUSTOMER_ID_BYTES_MAX {
        return Err(invalid(format!(
            "customer id is {} bytes; it must be 1 to {CUSTOMER_ID_BYTES_MAX}",
            customer.len()
        )));
    }
    if customer.chars().any(char::is_control) {
        return Err(invalid("customer id contains a control character".into()));
    }
    Ok(())
}

fn validate_slug(what: &str, slug: &str) -> Result<(), TallyError> {
    if slug.is_empty() || slug.len() > SLUG_BYTES_MAX {
        return Err(invalid(format!(
            "{what} slug is {} bytes; it must be 1 to {SLUG_BYTES_MAX}",
            slug.len()
        )));
    }
    Ok(())
}

/// Zero is a normal amount (an empty completion): it is allowed and changes nothing.
fn validate_amount(what: &str, amount: u64) -> Result<(), TallyError> {
    if amount > AMOUNT_MAX {
        return Err(invalid(format!(
            "{what} is {amount}; the limit is {AMOUNT_MAX}"
        )));
    }
    Ok(())
}

fn invalid(reason: String) -> TallyError {
    TallyError::InvalidRequest { reason }
}
