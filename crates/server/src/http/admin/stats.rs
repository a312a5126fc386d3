//! `/api/stats` and `/api/logs`: usage over time, breakdowns, and the request log.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::AdminSession;
use super::common::{AdminError, AdminQuery};
use crate::state::AppState;
use store::{Breakdown, BreakdownDimension, LogFilter, SeriesPoint, UsageFilter};

/// `GET /api/stats` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// Days of daily series and breakdowns (1 to 365, default 7).
    days: Option<u32>,
    /// Only this model's usage.
    model: Option<String>,
    /// Only this client key's usage.
    client_key_id: Option<i64>,
    /// Only this upstream key's usage.
    upstream_key_id: Option<i64>,
}

fn sum(points: &[SeriesPoint]) -> Value {
    let requests: i64 = points.iter().map(|p| p.requests).sum();
    let errors: i64 = points.iter().map(|p| p.errors).sum();
    json!({
        "requests": requests,
        "errors": errors,
        "tokens": points.iter().map(|p| p.tokens).sum::<i64>(),
        "error_rate": if requests > 0 { errors as f64 / requests as f64 } else { 0.0 },
    })
}

/// Replaces key ids by names (client keys) or masked keys (upstream keys).
fn named(mut rows: Vec<Breakdown>, names: &HashMap<String, String>) -> Vec<Breakdown> {
    for row in &mut rows {
        row.name = match names.get(&row.name) {
            Some(name) => name.clone(),
            None if row.name == "0" => "(none)".to_owned(),
            None => format!("#{} (deleted)", row.name),
        };
    }
    rows
}

/// `GET /api/stats`: today and all-time totals, pool health, hourly (24 h) and daily series,
/// and usage by model, client key and upstream key; the usage figures of one model, client key
/// or upstream key when asked (`model`, `client_key_id`, `upstream_key_id`).
pub async fn stats(
    _: AdminSession,
    State(app): State<AppState>,
    AdminQuery(query): AdminQuery<StatsQuery>,
) -> Result<Json<Value>, AdminError> {
    let days = query.days.unwrap_or(7);
    if !(1..=365).contains(&days) {
        return Err(AdminError::invalid(
            "'days' must be between 1 and 365.",
            "days",
        ));
    }
    let now = app.pool.now_ms();
    let today = pool::pacific_day(now);
    let since_day = today - i32::try_from(days).unwrap_or(7) + 1;
    // An empty parameter (as forms send them) filters nothing.
    let filter = UsageFilter {
        model: query.model.filter(|model| !model.is_empty()),
        client_key_id: query.client_key_id,
        upstream_key_id: query.upstream_key_id,
    };
    let all_days = app.storage.daily_series(0, &filter).await?;
    let today_points: Vec<SeriesPoint> = all_days
        .iter()
        .filter(|p| p.bucket == i64::from(today))
        .cloned()
        .collect();
    let daily: Vec<SeriesPoint> = all_days
        .iter()
        .filter(|p| p.bucket >= i64::from(since_day))
        .cloned()
        .collect();
    let since_hour = i64::try_from(now).unwrap_or(0) - 24 * 3_600_000;
    let hourly = app.storage.hourly_series(since_hour, &filter).await?;

    let keys = app.pool.keys();
    let cooling_projects: std::collections::HashSet<String> =
        app.pool.cooldowns().into_iter().map(|c| c.0).collect();
    // Usable means the pool would pick it now: in service, not being checked, and its project
    // not cooling (for any model).
    let usable = keys
        .iter()
        .filter(|k| k.is_available(now) && !cooling_projects.contains(&**k.project()))
        .count();
    let health = json!({
        "keys": keys.len(),
        "usable": usable,
        "cooling": keys.iter().filter(|k| k.is_usable() && cooling_projects.contains(&**k.project())).count(),
        "out_of_service": keys.iter().filter(|k| k.out_of_service_reason().is_some()).count(),
        "disabled": keys.iter().filter(|k| !k.is_usable() && k.out_of_service_reason().is_none()).count(),
        // Per model: how many projects can serve now, and why the others cannot.
        "models": super::keys::models_json(&app),
    });
    let client_names: HashMap<String, String> = app
        .storage
        .client_key_rows()
        .await?
        .into_iter()
        .map(|row| (row.id.to_string(), row.name))
        .collect();
    let key_names: HashMap<String, String> = keys
        .iter()
        .map(|k| (k.id().to_string(), k.masked()))
        .collect();
    // Whether request rows and totals are being written (a failing database holds them in
    // memory, up to a bound, and says so here).
    let accounting = {
        let health = app.accountant.health();
        json!({
            "writing": health.failing_since_ms.is_none() && app.storage.file_is_in_place(),
            "failing_since_ms": health.failing_since_ms,
            "pending": health.pending,
            "dropped": health.dropped,
        })
    };
    Ok(Json(json!({
        "now_ms": now,
        "today_day": today,
        "today": sum(&today_points),
        "total": sum(&all_days),
        "pool": health,
        "accounting": accounting,
        "hourly": hourly,
        "daily": daily,
        "by_model": app.storage.breakdown(BreakdownDimension::Model, since_day, &filter).await?,
        "by_client_key": named(app.storage.breakdown(BreakdownDimension::ClientKey, since_day, &filter).await?, &client_names),
        "by_upstream_key": named(app.storage.breakdown(BreakdownDimension::UpstreamKey, since_day, &filter).await?, &key_names),
    })))
}

/// `GET /api/logs`: the request log, newest first, paged and filtered.
pub async fn logs(
    _: AdminSession,
    State(app): State<AppState>,
    AdminQuery(filter): AdminQuery<LogFilter>,
) -> Result<Json<Value>, AdminError> {
    if let Some(status) = filter.status.as_deref()
        && !matches!(status, "" | "ok" | "error")
        && status.parse::<u16>().is_err()
    {
        return Err(AdminError::invalid(
            "'status' is 'ok', 'error' or a status code.",
            "status",
        ));
    }
    let (rows, total) = app.storage.request_logs(&filter).await?;
    let clients: HashMap<i64, String> = app
        .storage
        .client_key_rows()
        .await?
        .into_iter()
        .map(|row| (row.id, row.name))
        .collect();
    let items: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let client = row.client_key_id.and_then(|id| clients.get(&id).cloned());
            let key = row
                .upstream_key_id
                .and_then(|id| app.pool.key(pool::KeyId(id)))
                .map(|k| k.masked());
            let mut item = json!(row);
            item["client_name"] = json!(client);
            item["upstream_key_masked"] = json!(key);
            item
        })
        .collect();
    Ok(Json(json!({
        "items": items,
        "total": total,
        "page": filter.page.unwrap_or(1).max(1),
        "per_page": filter.per_page.unwrap_or(50).clamp(1, 200),
    })))
}
