//! `/api/keys`: the upstream keys. Only masked forms ever leave the server.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::AdminSession;
use super::common::{AdminError, AdminQuery, parse_body, parse_id};
use crate::config::{is_valid_project, parse_upstream_keys};
use crate::state::{App, AppState};
use store::NewUpstreamKey;
use store::{UpstreamKeyRow, UsageDimension, UsageTotals};

/// Reloads the pool from the database after a change.
pub async fn reload_pool(app: &App) -> Result<(), AdminError> {
    app.pool.replace_keys(app.storage.upstream_keys().await?);
    app.announce(crate::service::cluster::Announcement::Keys);
    Ok(())
}

/// `GET /api/keys` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    page: Option<u32>,
    per_page: Option<u32>,
    /// Part of the masked key or of the project.
    q: Option<String>,
    /// One of [`KEY_STATUSES`].
    status: Option<String>,
}

/// What a key's status can be: serving; its project cooling (a quota used up, or the upstream
/// short of capacity) for some model; held back while a probe checks a key error; out of
/// service; disabled by the operator.
const KEY_STATUSES: [&str; 5] = ["active", "cooling", "checking", "invalid", "disabled"];

/// One project's quota for one model, as `/api/keys` shows it.
fn quota_json(state: &pool::ProjectModelState) -> Value {
    json!({
        "model": state.model,
        "minute_used": state.minute_used,
        "minute_limit": state.limits.rpm,
        "day_used": state.day_used,
        "day_limit": state.limits.rpd,
        "tokens_minute_used": state.tokens_used,
        "tokens_minute_limit": state.limits.tpm,
        "learned": state.learned.map(|(limits, at_ms)| json!({
            "rpm": limits.rpm, "rpd": limits.rpd, "tpm": limits.tpm, "at_ms": at_ms,
        })),
        "cooling_until": state.cooling.map(|c| c.until_ms),
        "cooling_reason": state.cooling.map(|c| c.reason.as_str()),
    })
}

/// Per model: how many projects can serve now, and how many cool for which reason.
pub fn models_json(app: &App) -> Vec<Value> {
    app.pool
        .model_overview()
        .iter()
        .map(|model| {
            json!({
                "model": model.model,
                "projects": model.projects,
                "serving": model.serving,
                "cooling_quota": model.cooling_quota,
                "cooling_capacity": model.cooling_capacity,
                "next_probe_ms": model.next_probe_ms,
            })
        })
        .collect()
}

fn key_json(
    row: &UpstreamKeyRow,
    app: &App,
    totals: &HashMap<i64, UsageTotals>,
    states: &[pool::ProjectModelState],
) -> Value {
    let masked = pool::mask_secret(secrecy::ExposeSecret::expose_secret(&row.key));
    let live = app.pool.key(pool::KeyId(row.id));
    let now = app.pool.now_ms();
    let project = live.as_ref().map_or_else(
        || row.project.clone().unwrap_or_default(),
        |k| k.project().to_string(),
    );
    let own: Vec<&pool::ProjectModelState> = states
        .iter()
        .filter(|state| state.project == project && !state.model.is_empty())
        .collect();
    let cooling: Vec<Value> = own
        .iter()
        .filter_map(|state| {
            state
                .cooling
                .filter(|c| c.reason != pool::CoolingReason::Health)
                .map(|c| {
                    json!({
                        "model": state.model,
                        "until_ms": c.until_ms,
                        "daily": c.reason == pool::CoolingReason::QuotaDay,
                        "reason": c.reason.as_str(),
                    })
                })
        })
        .collect();
    let checking_until = live.as_ref().map_or(0, |k| k.checking_until_ms());
    let out_reason = live.as_ref().and_then(|k| k.out_of_service_reason());
    let status = if !row.enabled {
        "disabled"
    } else if out_reason.is_some() {
        "invalid"
    } else if checking_until > now {
        "checking"
    } else if !cooling.is_empty() {
        "cooling"
    } else {
        "active"
    };
    let usage = totals.get(&row.id).cloned().unwrap_or_default();
    let cooldown_until = cooling.iter().filter_map(|c| c["until_ms"].as_u64()).min();
    let last_failure = live.as_ref().and_then(|k| k.last_failure());
    json!({
        "id": row.id,
        "masked": masked,
        "project": row.project,
        "enabled": row.enabled,
        "source": row.source,
        "status": status,
        "requests_today": usage.requests_today,
        "requests": usage.requests,
        "errors": usage.errors,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "last_error": out_reason.or_else(|| last_failure.as_ref().map(|(_, what)| what.clone())).or_else(|| row.last_error.clone()),
        "last_error_at_ms": last_failure.map(|(at, _)| at),
        "cooldown_until": cooldown_until,
        "cooldowns": cooling,
        "checking_until": (checking_until > now).then_some(checking_until),
        "quota": own.iter().map(|state| quota_json(state)).collect::<Vec<_>>(),
        "created_at": row.created_at,
    })
}

/// `GET /api/keys`: a page of keys, filtered, with a summary of the whole pool.
pub async fn list_keys(
    _: AdminSession,
    State(app): State<AppState>,
    AdminQuery(query): AdminQuery<KeyQuery>,
) -> Result<Json<Value>, AdminError> {
    let rows = app.storage.upstream_key_rows().await?;
    let totals = app
        .storage
        .usage_totals(
            UsageDimension::UpstreamKey,
            pool::pacific_day(app.pool.now_ms()),
        )
        .await?;
    let states = app.pool.project_states();
    let all: Vec<Value> = rows
        .iter()
        .map(|row| key_json(row, &app, &totals, &states))
        .collect();
    let mut summary: HashMap<&str, usize> = HashMap::new();
    for item in &all {
        *summary
            .entry(item["status"].as_str().unwrap_or("active"))
            .or_default() += 1;
    }
    // An empty filter (`?q=&status=`, as forms send them) filters nothing.
    let needle = query
        .q
        .as_deref()
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .map(str::to_lowercase);
    let status = query.status.as_deref().filter(|s| !s.is_empty());
    if let Some(unknown) = status.filter(|s| !KEY_STATUSES.contains(s)) {
        return Err(AdminError::invalid(
            format!(
                "'{unknown}' is not a key status ({}).",
                KEY_STATUSES.join(", ")
            ),
            "status",
        ));
    }
    let matching: Vec<&Value> = all
        .iter()
        .filter(|item| status.is_none_or(|s| item["status"] == s))
        .filter(|item| {
            needle.as_deref().is_none_or(|needle| {
                item["masked"]
                    .as_str()
                    .is_some_and(|m| m.to_lowercase().contains(needle))
                    || item["project"]
                        .as_str()
                        .is_some_and(|p| p.to_lowercase().contains(needle))
            })
        })
        .collect();
    let per_page = query.per_page.unwrap_or(50).clamp(1, 500) as usize;
    let page = query.page.unwrap_or(1).max(1) as usize;
    let items: Vec<&Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .copied()
        .collect();
    Ok(Json(json!({
        "items": items,
        "total": matching.len(),
        "page": page,
        "per_page": per_page,
        // Per model: how many projects can serve now, and why the others cannot.
        "models": models_json(&app),
        "summary": {
            "total": all.len(),
            "active": summary.get("active").copied().unwrap_or(0),
            "cooling": summary.get("cooling").copied().unwrap_or(0),
            "checking": summary.get("checking").copied().unwrap_or(0),
            "invalid": summary.get("invalid").copied().unwrap_or(0),
            "disabled": summary.get("disabled").copied().unwrap_or(0),
        },
    })))
}

/// `POST /api/keys` body: one key, or many pasted in bulk.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddKeys {
    key: Option<String>,
    keys: Option<String>,
    project: Option<String>,
}

/// `POST /api/keys`: adds one key (`{key, project?}`) or many (`{keys: "…", project?}`, separated
/// as `GEMINI_API_KEYS` is, each `KEY` or `KEY@PROJECT`).
pub async fn add_keys(
    _: AdminSession,
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    let request: AddKeys = parse_body(&body)?;
    let (text, field) = match (&request.key, &request.keys) {
        (Some(key), None) => (key.clone(), "key"),
        (None, Some(keys)) => (keys.clone(), "keys"),
        _ => return Err(AdminError::invalid("Give either 'key' or 'keys'.", "key")),
    };
    if let Some(project) = &request.project
        && !is_valid_project(project)
    {
        return Err(AdminError::invalid(
            "Projects use letters, digits, '.', '-' and '_' (at most 128).",
            "project",
        ));
    }
    let specs: Vec<NewUpstreamKey> = parse_upstream_keys(&text)
        .map_err(|error| AdminError::invalid(error.problem, field))?
        .into_iter()
        .map(|spec| NewUpstreamKey {
            project: spec.project.or_else(|| request.project.clone()),
            ..spec
        })
        .collect();
    if specs.is_empty() {
        return Err(AdminError::invalid("No key given.", field));
    }
    if field == "key" && specs.len() > 1 {
        return Err(AdminError::invalid(
            "'key' takes one key; use 'keys' for several.",
            "key",
        ));
    }
    let (added, duplicates) = app.storage.add_upstream_keys(&specs).await?;
    reload_pool(&app).await?;
    tracing::info!(added, duplicates, "upstream keys added");
    Ok((
        StatusCode::CREATED,
        Json(json!({"added": added, "duplicates": duplicates})),
    )
        .into_response())
}

/// `PATCH /api/keys/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    project: Option<Option<String>>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
pub fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

async fn one_key(app: &App, id: i64) -> Result<Value, AdminError> {
    let rows = app.storage.upstream_key_rows().await?;
    let row = rows
        .iter()
        .find(|row| row.id == id)
        .ok_or_else(|| AdminError::NotFound(format!("No key {id}.")))?;
    let totals = app
        .storage
        .usage_totals(
            UsageDimension::UpstreamKey,
            pool::pacific_day(app.pool.now_ms()),
        )
        .await?;
    Ok(key_json(row, app, &totals, &app.pool.project_states()))
}

/// `PATCH /api/keys/{id}`: enables, disables or moves a key to another project.
pub async fn update_key(
    _: AdminSession,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, AdminError> {
    let id = parse_id(&id)?;
    let update: UpdateKey = parse_body(&body)?;
    if let Some(Some(project)) = &update.project
        && !is_valid_project(project)
    {
        return Err(AdminError::invalid(
            "Projects use letters, digits, '.', '-' and '_' (at most 128).",
            "project",
        ));
    }
    if !app
        .storage
        .update_upstream_key(id, update.enabled, update.project)
        .await?
    {
        return Err(AdminError::NotFound(format!("No key {id}.")));
    }
    reload_pool(&app).await?;
    Ok(Json(one_key(&app, id).await?))
}

/// `DELETE /api/keys/{id}`.
pub async fn delete_key(
    _: AdminSession,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AdminError> {
    let id = parse_id(&id)?;
    if !app.storage.delete_upstream_key(id).await? {
        return Err(AdminError::NotFound(format!("No key {id}.")));
    }
    reload_pool(&app).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/keys/{id}/test`: one cheap upstream call with the key; a key found healthy again
/// comes back into service.
pub async fn test_key(
    _: AdminSession,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AdminError> {
    let id = parse_id(&id)?;
    let key = app
        .pool
        .key(pool::KeyId(id))
        .ok_or_else(|| AdminError::NotFound(format!("No key {id}.")))?;
    let request = app.upstream.request(
        Method::GET,
        "v1beta/models?pageSize=1",
        HeaderMap::new(),
        &key,
    );
    let (ok, status, message) = match app.upstream.send(request, false).await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                (true, status.as_u16(), "The key works.".to_owned())
            } else {
                let body = crate::service::upstream::read_error_body(response, &key).await;
                let error = translate::gemini::UpstreamError::parse(&body);
                (
                    false,
                    status.as_u16(),
                    crate::service::classify::redact_secrets(&error.message, &[key.secret()]),
                )
            }
        }
        Err(_) => (false, 502, "The upstream could not be reached.".to_owned()),
    };
    if ok && !key.is_usable() && key.out_of_service_reason().is_some() {
        key.restore();
        app.storage.mark_key_active(key.id()).await?;
    }
    Ok(Json(
        json!({"ok": ok, "status": status, "message": message}),
    ))
}
