//! Managing endpoints, for both doors: the HTTP API's `/webhooks` and the QUIC `webhooks`
//! command (`tally webhooks …`). Endpoints added here are kept in the store and start at the
//! outbox's head; those of `config.toml` are listed and tested but changed only there.

use std::sync::Arc;

use tally_protocol::message::{
    TallyError, WebhookAnswer, WebhookCommand, WebhookEndpointView, WebhookFailureView,
};

use super::delivery::{DeliveryControl, Endpoint};
use super::endpoints::{self, EVENTS};
use super::payload::event_id;
use crate::clock::Clock;
use crate::store::outbox::{StoredEndpoint, StoredFailure};
use crate::store::Store;

/// What endpoint management acts on.
#[derive(Clone)]
pub struct WebhookAdmin {
    /// Starts, stops and tests endpoints on the delivery thread.
    pub control: DeliveryControl,
    /// The endpoints of `config.toml`.
    pub configured: Vec<Endpoint>,
    /// Where added endpoints, cursors and dead letters are kept.
    pub store: Arc<Store>,
    /// For when an endpoint was created.
    pub clock: Arc<dyn Clock>,
}

fn internal(e: impl std::fmt::Display) -> TallyError {
    TallyError::Internal {
        reason: e.to_string(),
    }
}

fn invalid(reason: String) -> TallyError {
    TallyError::InvalidRequest { reason }
}

/// Checks a URL given for an endpoint.
pub fn check_url(url: &str) -> Result<(), TallyError> {
    match endpoints::parse_url(url) {
        Some(_) => Ok(()),
        None => Err(invalid(format!(
            "`{url}` is not an http:// or https:// URL"
        ))),
    }
}

/// Checks the event names given for an endpoint.
pub fn check_events(events: &[String]) -> Result<(), TallyError> {
    match events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        Some(unknown) => Err(invalid(format!(
            "Tally never sends `{unknown}`; it sends {}",
            EVENTS.join(", ")
        ))),
        None => Ok(()),
    }
}

impl WebhookAdmin {
    /// The endpoint of `config.toml` with this id.
    pub fn configured(&self, id: &str) -> Option<&Endpoint> {
        self.configured.iter().find(|e| e.id == id)
    }

    /// The endpoints added through the API or the command.
    pub fn stored(&self) -> Result<Vec<StoredEndpoint>, TallyError> {
        self.store.webhook_endpoints().map_err(internal)
    }

    /// The added endpoint `id`.
    pub fn stored_one(&self, id: &str) -> Result<StoredEndpoint, TallyError> {
        self.stored()?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| TallyError::UnknownWebhook { id: id.into() })
    }

    /// Endpoint `id` as delivery takes it, from the config or the store.
    pub fn endpoint(&self, id: &str) -> Result<Endpoint, TallyError> {
        match self.configured(id) {
            Some(endpoint) => Ok(endpoint.clone()),
            None => endpoints::from_stored(&self.stored_one(id)?)
                .ok_or_else(|| invalid(format!("endpoint `{id}`'s URL does not parse"))),
        }
    }

    /// A new endpoint taking `events` (empty: every one) from the outbox's head on.
    pub fn add(
        &self,
        url: String,
        events: Vec<String>,
        description: Option<String>,
        api_version: Option<String>,
    ) -> Result<StoredEndpoint, TallyError> {
        check_url(&url)?;
        check_events(&events)?;
        let endpoint = StoredEndpoint {
            id: endpoints::random_token("wh_"),
            url,
            secret: endpoints::random_token("whsec_"),
            events: Some(events).filter(|events| !events.is_empty()),
            description,
            active: true,
            api_version,
            created_at_ms: self.clock.now_ms(),
        };
        self.store
            .put_webhook_endpoint(&endpoint)
            .and_then(|()| self.store.start_webhook_at_head(&endpoint.id))
            .map_err(internal)?;
        if let Some(delivery) = endpoints::from_stored(&endpoint) {
            self.control.start(delivery);
        }
        Ok(endpoint)
    }

    /// Keeps `endpoint`'s new values; delivery restarts with them (or stops, inactive).
    pub fn update(&self, endpoint: &StoredEndpoint) -> Result<(), TallyError> {
        self.store
            .put_webhook_endpoint(endpoint)
            .map_err(internal)?;
        match endpoints::from_stored(endpoint).filter(|_| endpoint.active) {
            Some(delivery) => self.control.start(delivery),
            None => self.control.stop(&endpoint.id),
        }
        Ok(())
    }

    /// Forgets the added endpoint `id`.
    pub fn remove(&self, id: &str) -> Result<(), TallyError> {
        if !self.store.remove_webhook_endpoint(id).map_err(internal)? {
            return Err(TallyError::UnknownWebhook { id: id.into() });
        }
        self.control.stop(id);
        Ok(())
    }

    /// One signed `webhook.test` event to endpoint `id`: `None` when it answered 2xx.
    pub async fn test(&self, id: &str) -> Result<Option<String>, TallyError> {
        let endpoint = self.endpoint(id)?;
        Ok(self.control.test(endpoint).await.err())
    }

    /// Endpoint `id`'s dead letters.
    pub fn failures(&self, id: &str) -> Result<Vec<StoredFailure>, TallyError> {
        self.endpoint(id)?;
        self.store.webhook_failures(id).map_err(internal)
    }

    /// Endpoint `id`'s dead letters sent again: each one's number and, if refused, why.
    pub async fn redeliver(&self, id: &str) -> Result<Vec<(u64, Option<String>)>, TallyError> {
        let endpoint = self.endpoint(id)?;
        let outcomes = self.control.redeliver(endpoint).await.map_err(internal)?;
        Ok(outcomes
            .into_iter()
            .map(|(number, outcome)| (number, outcome.err()))
            .collect())
    }

    /// The QUIC `webhooks` command.
    pub async fn run(&self, command: WebhookCommand) -> Result<WebhookAnswer, TallyError> {
        Ok(match command {
            WebhookCommand::List => {
                let mut all: Vec<WebhookEndpointView> = self
                    .configured
                    .iter()
                    .map(|e| WebhookEndpointView {
                        id: e.id.clone(),
                        url: e.url.to_string(),
                        events: e.events.iter().flatten().cloned().collect(),
                        configured: true,
                        active: true,
                    })
                    .collect();
                all.extend(self.stored()?.iter().map(view));
                WebhookAnswer::Endpoints(all)
            }
            WebhookCommand::Add { url, events } => {
                let endpoint = self.add(url, events, None, None)?;
                WebhookAnswer::Added {
                    endpoint: view(&endpoint),
                    secret: endpoint.secret,
                }
            }
            WebhookCommand::Remove { id } => {
                if self.configured(&id).is_some() {
                    return Err(in_config(&id));
                }
                self.remove(&id)?;
                WebhookAnswer::Removed
            }
            WebhookCommand::Test { id } => WebhookAnswer::Tested(self.test(&id).await?),
            WebhookCommand::Failed { id } => WebhookAnswer::Failures(
                self.failures(&id)?
                    .into_iter()
                    .map(|f| WebhookFailureView {
                        event_id: event_id(f.number),
                        event: f.event,
                        attempts: f.attempts,
                        last_attempt_ms: f.last_attempt_ms,
                        reason: f.reason,
                    })
                    .collect(),
            ),
            WebhookCommand::Redeliver { id } => WebhookAnswer::Redelivered(
                self.redeliver(&id)
                    .await?
                    .into_iter()
                    .map(|(number, error)| (event_id(number), error))
                    .collect(),
            ),
        })
    }
}

/// A configured endpoint changed through a door: it is the file's.
pub fn in_config(id: &str) -> TallyError {
    TallyError::Conflict {
        reason: format!("webhook endpoint `{id}` is defined in config.toml; change it there"),
    }
}

fn view(stored: &StoredEndpoint) -> WebhookEndpointView {
    WebhookEndpointView {
        id: stored.id.clone(),
        url: stored.url.clone(),
        events: stored.events.clone().unwrap_or_default(),
        configured: false,
        active: stored.active,
    }
}
