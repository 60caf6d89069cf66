//! For tests: the catalogue of the shipped `config.toml` (its `[features]` and `[plans]`; the
//! daemon's own sections are the daemon's to read).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalogue::{Catalogue, FeatureToml, PlanToml};

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
    }
    let sections: Sections = toml::from_str(text).expect("a config with a valid catalogue");
    Arc::new(Catalogue::build(&sections.features, &sections.plans).expect("a valid catalogue"))
}

/// The shipped catalogue.
pub(crate) fn catalogue() -> Arc<Catalogue> {
    catalogue_of(CONFIG_TOML)
}
