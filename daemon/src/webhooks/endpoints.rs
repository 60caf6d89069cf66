//! Endpoints as the API keeps and shows them: a stored endpoint's delivery form, new ids and
//! secrets, and which event names Tally sends.

use std::collections::BTreeSet;

use super::delivery::Endpoint;
use crate::store::outbox::StoredEndpoint;

/// The event names Tally sends, as Commet names them.
pub use crate::metering::alerts::EVENT_NAMES as EVENTS;

/// A stored endpoint as delivery takes it (`None`: its URL no longer parses).
pub fn from_stored(stored: &StoredEndpoint) -> Option<Endpoint> {
    Some(Endpoint {
        id: stored.id.clone(),
        url: parse_url(&stored.url)?,
        secret: stored.secret.clone(),
        events: stored
            .events
            .as_ref()
            .filter(|events| !events.is_empty())
            .map(|events| events.iter().cloned().collect::<BTreeSet<_>>()),
    })
}

/// An http:// or https:// URL with a host.
pub fn parse_url(text: &str) -> Option<hyper::Uri> {
    text.parse::<hyper::Uri>()
        .ok()
        .filter(|url| matches!(url.scheme_str(), Some("http" | "https")) && url.host().is_some())
}

/// `prefix` and 16 random bytes in hex: a new endpoint id or secret.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the system's random source");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}
