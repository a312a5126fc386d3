//! `/api/resources`: the files and cached contents the gateway remembers, each with the Google
//! Cloud project that holds it and the client key that created it. Client keys see only their
//! own (see `ownership`); the admin sees them all.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::auth::AdminSession;
use super::common::{AdminError, AdminQuery};
use crate::state::AppState;
use store::ResourceFilter;

/// `GET /api/resources`: remembered files and cached contents, newest first, paged, of one
/// client key when asked (`client_key_id`). Expired owners (a week old) are not listed even
/// before the hourly prune deletes them.
pub async fn list_resources(
    _: AdminSession,
    State(app): State<AppState>,
    AdminQuery(filter): AdminQuery<ResourceFilter>,
) -> Result<Json<Value>, AdminError> {
    let since =
        crate::service::ownership::expired_before_ms(app.pool.affinity(), app.pool.now_ms());
    let (rows, total) = app.storage.resource_owner_rows(&filter, since).await?;
    Ok(Json(json!({
        "items": rows,
        "total": total,
        "page": filter.page.unwrap_or(1).max(1),
        "per_page": filter.per_page.unwrap_or(50).clamp(1, 200),
    })))
}
