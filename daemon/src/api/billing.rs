//! `/invoices` and `/transactions`: what closed periods and top-ups recorded. Listing a
//! customer's invoices first has its shard close any period that has ended (as every operation
//! on a customer does), so an invoice is listed from the instant its period is over.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tally_protocol::message::{
    CustomerRef, InvoiceView, Request, Response as Answer, TransactionView,
};

use super::error::ApiError;
use super::extract::{Caller, ListShape, Query};
use super::views::{self, ok, page, parse_numbered_id};
use super::{admin_only, unexpected, ApiState};

/// `GET /invoices` and `GET /transactions` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListQuery {
    customer_id: Option<String>,
}

fn customer_required(query: ListQuery) -> Result<String, ApiError> {
    query.customer_id.ok_or_else(|| {
        ApiError::invalid(
            "customerId",
            "Tally lists invoices and transactions per customer; give customerId",
        )
    })
}

async fn invoices_of(
    state: &ApiState,
    caller: Caller,
    customer: &str,
) -> Result<Vec<InvoiceView>, ApiError> {
    state.customer(customer).await?;
    let request = Request::ListInvoices(CustomerRef {
        customer: customer.into(),
    });
    match state.call(caller, request).await? {
        Answer::Invoices(invoices) => Ok(invoices),
        other => Err(unexpected(&other)),
    }
}

async fn transactions_of(
    state: &ApiState,
    caller: Caller,
    customer: &str,
) -> Result<Vec<TransactionView>, ApiError> {
    let request = Request::ListTransactions(CustomerRef {
        customer: customer.into(),
    });
    match state.call(caller, request).await? {
        Answer::Transactions(transactions) => Ok(transactions),
        other => Err(unexpected(&other)),
    }
}

/// `GET /invoices?customerId=`: newest last.
pub(super) async fn invoices(
    State(state): State<ApiState>,
    caller: Caller,
    shape: ListShape,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    admin_only(caller, "list_invoices")?;
    let customer = customer_required(query)?;
    let invoices = invoices_of(&state, caller, &customer).await?;
    Ok(page(invoices.iter().map(views::invoice).collect(), None, shape).into_response())
}

/// `GET /invoices/{id}`.
pub(super) async fn invoice(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "get_invoice")?;
    let not_found = || ApiError::not_found("invoice_not_found", "id", format!("no invoice `{id}`"));
    let (number, customer) = parse_numbered_id(&id, "inv_").ok_or_else(not_found)?;
    let invoices = invoices_of(&state, caller, customer).await?;
    let found = invoices
        .iter()
        .find(|i| i.number == number)
        .ok_or_else(not_found)?;
    Ok(ok(views::invoice(found)).into_response())
}

/// `GET /transactions?customerId=`: newest last.
pub(super) async fn transactions(
    State(state): State<ApiState>,
    caller: Caller,
    shape: ListShape,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    admin_only(caller, "list_transactions")?;
    let customer = customer_required(query)?;
    let found = transactions_of(&state, caller, &customer).await?;
    Ok(page(found.iter().map(views::transaction).collect(), None, shape).into_response())
}

/// `GET /transactions/{id}`.
pub(super) async fn transaction(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    admin_only(caller, "get_transaction")?;
    let not_found = || {
        ApiError::not_found(
            "transaction_not_found",
            "id",
            format!("no transaction `{id}`"),
        )
    };
    let (number, customer) = parse_numbered_id(&id, "txn_").ok_or_else(not_found)?;
    let found = transactions_of(&state, caller, customer).await?;
    let found = found
        .iter()
        .find(|t| t.number == number)
        .ok_or_else(not_found)?;
    Ok(ok(views::transaction(found)).into_response())
}
