//! For tests: the catalogue of the shipped `config.toml` (its `[features]`, `[plans]` and `[models]`; the
//! daemon's own sections are the daemon's to read).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalogue::{Catalogue, FeatureToml, PlanToml};
use crate::models::ModelToml;

/// The shipped config, as the daemon embeds it.
pub(crate) const CONFIG_TOML: &str = include_str!("../../config.toml");

/// The catalogue of `text` (a config file, or part of one).
pub(crate) fn catalogue_of(text: &str) -> Arc<Catalogue> {
    #[derive(serde::Deserialize)]
    struct Sections {
        #[serde(default)]
        features: BTreeMap<String, FeatureToml>,
        #[serde(default)]
        plans: BTreeMap<String, PlanToml>,
        #[serde(default)]
        models: BTreeMap<String, ModelToml>,
    }
    let sections: Sections = toml::from_str(text).expect("a config with a valid catalogue");
    let mut catalogue =
        Catalogue::build(&sections.features, &sections.plans).expect("a valid catalogue");
    catalogue
        .set_models(&sections.models)
        .expect("valid models");
    Arc::new(catalogue)
}

/// The shipped catalogue.
pub(crate) fn catalogue() -> Arc<Catalogue> {
    catalogue_of(CONFIG_TOML)
}
