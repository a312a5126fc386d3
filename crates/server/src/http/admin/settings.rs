//! `/api/settings`: read and change the runtime settings (`service::settings`).

use axum::Json;
use axum::extract::State;

use super::auth::AdminSession;
use super::common::{AdminError, parse_body};
use crate::service::settings::RuntimeSettings;
use crate::state::AppState;

/// `GET /api/settings`.
pub async fn get_settings(_: AdminSession, State(app): State<AppState>) -> Json<RuntimeSettings> {
    Json(app.settings.current())
}

/// `PATCH /api/settings`: the fields sent replace the current ones.
pub async fn update_settings(
    _: AdminSession,
    State(app): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<RuntimeSettings>, AdminError> {
    let patch: serde_json::Value = parse_body(&body)?;
    let mut merged = serde_json::to_value(app.settings.current())
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
    settings
        .validate()
        .map_err(|invalid| AdminError::invalid(invalid.message, &invalid.field))?;
    app.settings.save(&settings).await?;
    app.announce(crate::service::cluster::Announcement::Settings);
    Ok(Json(settings))
}
