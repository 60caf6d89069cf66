//! `watch_alerts`: alerts followed over QUIC as they are committed — a long poll on the outbox
//! that answers as soon as a matching alert is persisted, so a subscriber hears of it within the
//! commit's own latency, and resumes after any outbox number it saw (within `retention`).

use std::time::Duration;

use tally_protocol::message::{AlertBatch, AlertView, TallyError, WatchRequest};
use tokio::sync::watch;

use super::payload::event_id;
use crate::store::Store;

/// Most outbox events one answer looks at (the client continues after the last).
const WATCH_BATCH: usize = 512;

/// The newest `limit` alerts, newest first (none if the outbox cannot be read: they are only
/// for the console).
pub fn recent_alerts(store: &Store, limit: usize) -> Vec<AlertView> {
    store
        .recent_outbox(limit)
        .unwrap_or_default()
        .into_iter()
        .map(|(number, alert)| view(number, alert))
        .collect()
}

fn view(number: u64, alert: crate::store::outbox::StoredAlert) -> AlertView {
    AlertView {
        id: event_id(number),
        number,
        event: alert.event,
        customer: alert.customer,
        at_ms: alert.at_ms,
        data: String::from_utf8_lossy(&alert.data).into_owned(),
    }
}

/// The alerts after `request.after` that match, waiting up to `request.wait_ms` for one; an
/// answer with none says how far it looked. Ends early, empty, when `draining` turns true.
pub async fn watch_alerts(
    store: &Store,
    request: WatchRequest,
    mut draining: watch::Receiver<bool>,
) -> Result<AlertBatch, TallyError> {
    let mut head = store.watch_outbox();
    if request.from_now {
        let next = *head.borrow_and_update();
        return Ok(AlertBatch {
            alerts: Vec::new(),
            next_after: next.checked_sub(1),
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_millis(request.wait_ms.into());
    let mut after = request.after;
    loop {
        head.mark_unchanged();
        let events = store
            .read_outbox(after, WATCH_BATCH)
            .map_err(|e| TallyError::Internal {
                reason: e.to_string(),
            })?;
        let looked = events.len();
        let mut alerts = Vec::new();
        for (number, alert) in events {
            after = Some(number);
            let customer_matches = request
                .customer
                .as_ref()
                .is_none_or(|c| *c == alert.customer);
            let event_matches = request.events.is_empty() || request.events.contains(&alert.event);
            if customer_matches && event_matches {
                alerts.push(view(number, alert));
            }
        }
        if !alerts.is_empty() || looked == WATCH_BATCH {
            return Ok(AlertBatch {
                alerts,
                next_after: after,
            });
        }
        tokio::select! {
            _ = head.changed() => {}
            () = tokio::time::sleep_until(deadline) => {
                return Ok(AlertBatch { alerts, next_after: after });
            }
            _ = draining.changed() => return Ok(AlertBatch { alerts, next_after: after }),
        }
    }
}
