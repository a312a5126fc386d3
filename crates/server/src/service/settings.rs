//! Settings changed while the gateway runs (`/api/settings`): limits, retries and log retention.
//! They are kept in the database and win over `DEFAULT_RPM_LIMIT`, `DEFAULT_RPD_LIMIT` and
//! `MAX_RETRIES` once set.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::service::accounting::Accountant;
use crate::service::upstream::Upstream;

/// A setting out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// What is wrong, for the operator.
    pub message: String,
    /// The field.
    pub field: String,
}

impl InvalidSetting {
    fn new(message: impl Into<String>, field: &str) -> Self {
        Self {
            message: message.into(),
            field: field.to_owned(),
        }
    }
}

/// The `settings` row that holds them.
const SETTINGS_KEY: &str = "runtime_settings";

/// Limits of one model (per project); `null` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLimits {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Requests per Pacific day.
    pub rpd: Option<u32>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

/// The settings that can change at runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Requests per minute per project and model, for models without their own limits.
    pub default_rpm_limit: Option<u32>,
    /// Requests per Pacific day per project and model.
    pub default_rpd_limit: Option<u32>,
    /// Tokens per minute per project and model.
    pub default_tpm_limit: Option<u64>,
    /// Other keys tried for one request.
    pub max_retries: u32,
    /// Limits of particular models.
    pub model_limits: BTreeMap<String, ModelLimits>,
    /// Days request log rows are kept (1 to 3650; daily totals are kept for ever).
    #[serde(default = "default_retention_days")]
    pub log_retention_days: u32,
}

fn default_retention_days() -> u32 {
    crate::service::accounting::DEFAULT_RETENTION_DAYS
}

impl RuntimeSettings {
    /// The settings in force.
    fn current(runtime: &Runtime) -> Self {
        let limits = runtime.pool.limits();
        Self {
            default_rpm_limit: limits.default.rpm,
            default_rpd_limit: limits.default.rpd,
            default_tpm_limit: limits.default.tpm,
            max_retries: runtime.upstream.max_retries(),
            log_retention_days: runtime.accountant.retention_days(),
            model_limits: limits
                .per_model
                .iter()
                .map(|(model, l)| {
                    (
                        model.clone(),
                        ModelLimits {
                            rpm: l.rpm,
                            rpd: l.rpd,
                            tpm: l.tpm,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Checks the values; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let positive = |value: Option<u64>, field: &str| {
            if value == Some(0) {
                Err(InvalidSetting::new(
                    "Limits must be at least 1 (null for no limit).",
                    field,
                ))
            } else {
                Ok(())
            }
        };
        positive(self.default_rpm_limit.map(u64::from), "default_rpm_limit")?;
        positive(self.default_rpd_limit.map(u64::from), "default_rpd_limit")?;
        positive(self.default_tpm_limit, "default_tpm_limit")?;
        if !(1..=3650).contains(&self.log_retention_days) {
            return Err(InvalidSetting::new(
                "'log_retention_days' is between 1 and 3650.",
                "log_retention_days",
            ));
        }
        if self.max_retries > 20 {
            return Err(InvalidSetting::new(
                "'max_retries' is at most 20.",
                "max_retries",
            ));
        }
        for (model, limits) in &self.model_limits {
            if translate::common::model::normalize_model(model)
                .ok()
                .as_deref()
                != Some(model.as_str())
            {
                return Err(InvalidSetting::new(
                    format!("'{model}' is not a model id."),
                    "model_limits",
                ));
            }
            positive(
                limits.rpm.map(u64::from),
                &format!("model_limits.{model}.rpm"),
            )?;
            positive(
                limits.rpd.map(u64::from),
                &format!("model_limits.{model}.rpd"),
            )?;
            positive(limits.tpm, &format!("model_limits.{model}.tpm"))?;
        }
        Ok(())
    }
}

/// Where the settings live and what they steer.
#[derive(Clone)]
pub struct Runtime {
    pool: Arc<pool::Pool>,
    upstream: Arc<Upstream>,
    accountant: Accountant,
    storage: store::Storage,
}

impl Runtime {
    /// The settings' handle.
    pub fn new(
        pool: Arc<pool::Pool>,
        upstream: Arc<Upstream>,
        accountant: Accountant,
        storage: store::Storage,
    ) -> Self {
        Self {
            pool,
            upstream,
            accountant,
            storage,
        }
    }

    /// The settings in force.
    pub fn current(&self) -> RuntimeSettings {
        RuntimeSettings::current(self)
    }

    /// Saves `settings` and puts them in force.
    pub async fn save(&self, settings: &RuntimeSettings) -> Result<(), store::StorageError> {
        let text = serde_json::to_string(settings).unwrap_or_default();
        self.storage.set_setting(SETTINGS_KEY, &text).await?;
        self.apply(settings);
        Ok(())
    }

    /// Puts settings in force.
    pub fn apply(&self, settings: &RuntimeSettings) {
        let limits = pool::LimitsTable {
            default: pool::Limits {
                rpm: settings.default_rpm_limit,
                rpd: settings.default_rpd_limit,
                tpm: settings.default_tpm_limit,
            },
            per_model: settings
                .model_limits
                .iter()
                .map(|(model, l)| {
                    (
                        model.clone(),
                        pool::Limits {
                            rpm: l.rpm,
                            rpd: l.rpd,
                            tpm: l.tpm,
                        },
                    )
                })
                .collect(),
        };
        self.pool.set_limits(limits);
        self.upstream.set_max_retries(settings.max_retries);
        self.accountant
            .set_retention_days(settings.log_retention_days);
    }

    /// Loads the saved settings, if any were saved, and puts them in force.
    pub async fn load(&self) -> Result<(), store::StorageError> {
        if let Some(saved) = self.storage.setting(SETTINGS_KEY).await?
            && let Ok(settings) = serde_json::from_str::<RuntimeSettings>(&saved)
        {
            self.apply(&settings);
        }
        Ok(())
    }
}
