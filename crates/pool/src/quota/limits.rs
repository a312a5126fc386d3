//! Quota limits per project and model: requests per minute, requests per Pacific day, and
//! tokens per minute. Defaults come from the configuration; per-model overrides can be changed
//! while the gateway runs.

use std::collections::HashMap;

/// The limits of one project for one model. `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute (sliding window).
    pub rpm: Option<u32>,
    /// Requests per Pacific calendar day.
    pub rpd: Option<u32>,
    /// Tokens per minute (sliding window).
    pub tpm: Option<u64>,
}

impl Limits {
    /// No limit at all (for calls that use no model quota: files, model lists).
    pub const UNLIMITED: Self = Self {
        rpm: None,
        rpd: None,
        tpm: None,
    };
}

/// The default limits and the per-model overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitsTable {
    /// Limits of models without an override.
    pub default: Limits,
    /// Overrides by model id.
    pub per_model: HashMap<String, Limits>,
}

impl LimitsTable {
    /// The limits that apply to `model`.
    pub fn for_model(&self, model: &str) -> Limits {
        self.per_model.get(model).copied().unwrap_or(self.default)
    }
}
