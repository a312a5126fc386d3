//! `/api/client-keys`: keys for teammates and applications. Stored as SHA-256 digests; the whole
//! key is in the answer that creates it and nowhere else, ever.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::AdminSession;
use super::common::{AdminError, parse_body, parse_id};
use super::keys::present;
use crate::service::clients::{digest_hex, display_prefix};
use crate::state::{App, AppState};
use store::{ClientKeyAdminRow, UsageDimension, UsageTotals};

async fn reload_clients(app: &App) -> Result<(), AdminError> {
    app.clients.replace(app.storage.client_keys().await?);
    app.announce(crate::service::cluster::Announcement::Clients);
    Ok(())
}

fn client_json(row: &ClientKeyAdminRow, usage: &UsageTotals) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "prefix": row.prefix,
        "enabled": row.enabled,
        "source": row.source,
        "requests": usage.requests,
        "requests_today": usage.requests_today,
        "errors": usage.errors,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at_ms,
        "rpm_limit": row.limits.rpm,
        "rpd_limit": row.limits.rpd,
        "daily_token_limit": row.limits.daily_tokens,
        "allowed_models": row.limits.allowed_models,
        "expires_at": row.limits.expires_at_ms,
        "max_concurrent": row.limits.max_concurrent,
    })
}

async fn all_clients(app: &App) -> Result<Vec<Value>, AdminError> {
    let rows = app.storage.client_key_rows().await?;
    let totals = app
        .storage
        .usage_totals(
            UsageDimension::ClientKey,
            pool::pacific_day(app.pool.now_ms()),
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| client_json(row, &totals.get(&row.id).cloned().unwrap_or_default()))
        .collect())
}

/// `GET /api/client-keys`.
pub async fn list_client_keys(
    _: AdminSession,
    State(app): State<AppState>,
) -> Result<Json<Value>, AdminError> {
    let items = all_clients(&app).await?;
    Ok(Json(json!({"items": items, "total": items.len()})))
}

/// `POST /api/client-keys` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateClientKey {
    name: String,
    rpm_limit: Option<u32>,
    rpd_limit: Option<u32>,
    daily_token_limit: Option<u64>,
    allowed_models: Option<Vec<String>>,
    /// Expiry, ms since the epoch.
    expires_at: Option<u64>,
    max_concurrent: Option<u32>,
}

fn check_name(name: &str) -> Result<String, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AdminError::invalid(
            "The name must be 1 to 100 printable characters.",
            "name",
        ));
    }
    Ok(name.to_owned())
}

fn check_limits(limits: &pool::ClientLimits) -> Result<(), AdminError> {
    if limits.rpm == Some(0) {
        return Err(AdminError::invalid(
            "Limits must be at least 1 (leave them out for no limit).",
            "rpm_limit",
        ));
    }
    if limits.rpd == Some(0) {
        return Err(AdminError::invalid(
            "Limits must be at least 1 (leave them out for no limit).",
            "rpd_limit",
        ));
    }
    if limits.max_concurrent == Some(0) {
        return Err(AdminError::invalid(
            "Limits must be at least 1 (leave them out for no limit).",
            "max_concurrent",
        ));
    }
    if limits.daily_tokens == Some(0) {
        return Err(AdminError::invalid(
            "Limits must be at least 1 (leave them out for no limit).",
            "daily_token_limit",
        ));
    }
    if let Some(models) = &limits.allowed_models {
        for (i, model) in models.iter().enumerate() {
            if translate::common::model::normalize_model(model)
                .ok()
                .as_deref()
                != Some(model.as_str())
            {
                return Err(AdminError::invalid(
                    format!("'{model}' is not a model id."),
                    format!("allowed_models[{i}]"),
                ));
            }
        }
    }
    Ok(())
}

/// A new client key: `gp-` and 40 random letters and digits.
fn new_client_key() -> String {
    let body: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("gp-{body}")
}

/// `POST /api/client-keys`: creates a key; the answer holds the whole key, once.
pub async fn create_client_key(
    _: AdminSession,
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let request: CreateClientKey = parse_body(&body)?;
    let name = check_name(&request.name)?;
    let limits = pool::ClientLimits {
        rpm: request.rpm_limit,
        rpd: request.rpd_limit,
        daily_tokens: request.daily_token_limit,
        allowed_models: request.allowed_models,
        expires_at_ms: request.expires_at,
        max_concurrent: request.max_concurrent,
    };
    check_limits(&limits)?;
    let key = new_client_key();
    let id = app
        .storage
        .create_client_key(
            store::NewClientKey {
                name: &name,
                digest: &digest_hex(&key),
                prefix: &display_prefix(&key),
            },
            &limits,
        )
        .await?;
    reload_clients(&app).await?;
    let mut item = all_clients(&app)
        .await?
        .into_iter()
        .find(|item| item["id"] == id)
        .ok_or_else(|| AdminError::Internal("the new key is missing".to_owned()))?;
    item["key"] = json!(key);
    Ok((StatusCode::CREATED, Json(item)).into_response())
}

/// `PATCH /api/client-keys/{id}` body: fields sent are changed; `null` removes a limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateClientKey {
    name: Option<String>,
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    rpm_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    rpd_limit: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    daily_token_limit: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    allowed_models: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_concurrent: Option<Option<u32>>,
}

/// `PATCH /api/client-keys/{id}`.
pub async fn update_client_key(
    _: AdminSession,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let id = parse_id(&id)?;
    let update: UpdateClientKey = parse_body(&body)?;
    let name = update.name.as_deref().map(check_name).transpose()?;
    let current = app
        .storage
        .client_keys()
        .await?
        .into_iter()
        .find(|row| row.id == id)
        .ok_or_else(|| AdminError::NotFound(format!("No client key {id}.")))?;
    let mut limits = current.limits;
    if let Some(rpm) = update.rpm_limit {
        limits.rpm = rpm;
    }
    if let Some(rpd) = update.rpd_limit {
        limits.rpd = rpd;
    }
    if let Some(tokens) = update.daily_token_limit {
        limits.daily_tokens = tokens;
    }
    if let Some(models) = update.allowed_models {
        limits.allowed_models = models;
    }
    if let Some(expires) = update.expires_at {
        limits.expires_at_ms = expires;
    }
    if let Some(concurrent) = update.max_concurrent {
        limits.max_concurrent = concurrent;
    }
    check_limits(&limits)?;
    app.storage
        .update_client_key(id, name.as_deref(), update.enabled)
        .await?;
    app.storage.set_client_limits(id, &limits).await?;
    reload_clients(&app).await?;
    all_clients(&app)
        .await?
        .into_iter()
        .find(|item| item["id"] == id)
        .map(Json)
        .ok_or_else(|| AdminError::NotFound(format!("No client key {id}.")))
}

/// `DELETE /api/client-keys/{id}`: revokes a key at once.
pub async fn delete_client_key(
    _: AdminSession,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    let id = parse_id(&id)?;
    if !app.storage.delete_client_key(id).await? {
        return Err(AdminError::NotFound(format!("No client key {id}.")));
    }
    reload_clients(&app).await?;
    Ok(StatusCode::NO_CONTENT)
}
