//! New AI model prices without a restart: on SIGHUP or an admin's `reload_models`, the config
//! file is read and validated again, and its `[models]` — all of them, or none when anything is
//! wrong — are handed to every shard. Plans and everything else keep what the daemon started
//! with (they change at a restart, where price history is recorded). A request is priced at the
//! prices in force when it arrives; an open hold keeps the prices it was opened at.

use std::sync::{Arc, Mutex};

use tally_protocol::message::{ModelsReloaded, TallyError};

use crate::config::ConfigSource;
use crate::metering::catalogue::Catalogue;
use crate::router::Router;

/// The running model prices and where to read new ones.
pub struct ModelPrices {
    source: Option<ConfigSource>,
    current: Mutex<Arc<Catalogue>>,
    router: Router,
}

impl ModelPrices {
    /// Prices in force `current` (the shards' catalogue), re-read from `source`.
    pub fn new(source: Option<ConfigSource>, current: Arc<Catalogue>, router: Router) -> Self {
        Self {
            source,
            current: Mutex::new(current),
            router,
        }
    }

    /// Reads `[models]` again and puts it in force; on any error nothing changes and the error
    /// says why.
    pub async fn reload(&self) -> Result<ModelsReloaded, TallyError> {
        let refused = |reason: String| TallyError::InvalidRequest {
            reason: format!("model prices not reloaded, the old ones stay: {reason}"),
        };
        let source = self.source.as_ref().ok_or_else(|| {
            refused(
                "tallyd started from its embedded config; there is no file to read again".into(),
            )
        })?;
        let config = source.load().map_err(|e| refused(e.to_string()))?;
        let current = self.current.lock().expect("model prices lock").clone();
        let next = current
            .with_models(config.catalogue.models())
            .map_err(|errors| refused(errors.join("; ")))?;
        let next = Arc::new(next);
        self.router.set_catalogue(next.clone()).await?;
        *self.current.lock().expect("model prices lock") = next.clone();
        let models: Vec<String> = next.models().keys().cloned().collect();
        tracing::info!(
            path = %source.path.display(),
            models = %models.join(", "),
            "reloaded the model prices"
        );
        Ok(ModelsReloaded { models })
    }
}
