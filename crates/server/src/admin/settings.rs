//! `/api/settings`: limits, retries and log retention, changed while the gateway runs. They are kept in the
//! database and win over `DEFAULT_RPM_LIMIT`, `DEFAULT_RPD_LIMIT` and `MAX_RETRIES` once set.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::auth::AdminSession;
use super::{AdminError, parse_body};
use crate::state::{App, AppState};

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
    crate::accounting::DEFAULT_RETENTION_DAYS
}

impl RuntimeSettings {
    fn current(app: &App) -> Self {
        let limits = app.pool.limits();
        Self {
            default_rpm_limit: limits.default.rpm,
            default_rpd_limit: limits.default.rpd,
            default_tpm_limit: limits.default.tpm,
            max_retries: app.upstream.max_retries(),
            log_retention_days: app.accountant.retention_days(),
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

    fn validate(&self) -> Result<(), AdminError> {
        let positive = |value: Option<u64>, field: &str| {
            if value == Some(0) {
                Err(AdminError::invalid(
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
            return Err(AdminError::invalid(
                "'log_retention_days' is between 1 and 3650.",
                "log_retention_days",
            ));
        }
        if self.max_retries > 20 {
            return Err(AdminError::invalid(
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
                return Err(AdminError::invalid(
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

/// Puts settings in force.
pub fn apply_runtime_settings(app: &App, settings: &RuntimeSettings) {
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
    app.pool.set_limits(limits);
    app.upstream.set_max_retries(settings.max_retries);
    app.accountant
        .set_retention_days(settings.log_retention_days);
}

/// Loads saved settings at start, if any were saved.
pub async fn load_runtime_settings(app: &App) -> Result<(), store::StorageError> {
    if let Some(saved) = app.storage.setting(SETTINGS_KEY).await?
        && let Ok(settings) = serde_json::from_str::<RuntimeSettings>(&saved)
    {
        apply_runtime_settings(app, &settings);
    }
    Ok(())
}

/// `GET /api/settings`.
pub async fn get_settings(_: AdminSession, State(app): State<AppState>) -> Json<RuntimeSettings> {
    Json(RuntimeSettings::current(&app))
}

/// `PATCH /api/settings`: the fields sent replace the current ones.
pub async fn update_settings(
    _: AdminSession,
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<RuntimeSettings>, AdminError> {
    let patch: serde_json::Value = parse_body(&body)?;
    let mut merged = serde_json::to_value(RuntimeSettings::current(&app))
        .map_err(|e| AdminError::Internal(e.to_string()))?;
    let (Some(target), Some(changes)) = (merged.as_object_mut(), patch.as_object()) else {
        return Err(AdminError::invalid(
            "The body must be a JSON object.",
            "body",
        ));
    };
    for (field, value) in changes {
        target.insert(field.clone(), value.clone());
    }
    let settings: RuntimeSettings = parse_body(merged.to_string().as_bytes())?;
    settings.validate()?;
    app.storage
        .set_setting(
            SETTINGS_KEY,
            &serde_json::to_string(&settings).map_err(|e| AdminError::Internal(e.to_string()))?,
        )
        .await?;
    apply_runtime_settings(&app, &settings);
    app.announce(crate::cluster::Announcement::Settings);
    Ok(Json(settings))
}
