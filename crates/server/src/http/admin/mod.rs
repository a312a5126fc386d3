//! The management API (`/api/…`): login, upstream keys, client keys, statistics, the request log,
//! the files and cached contents of each client key, and runtime settings. Every route but
//! login, logout and the OpenAPI description needs an admin session ([`auth::AdminSession`]).
//! Upstream keys are only ever shown masked; a client key is shown whole once, in the answer
//! that creates it.

pub mod auth;
mod client_keys;
pub mod common;
mod keys;
mod resources;
mod settings;
mod stats;

use axum::Router;
use axum::routing::{get, patch, post};

use crate::state::AppState;
pub use common::AdminError;

/// The management API's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login", post(auth::login))
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/session", get(auth::session))
        .route("/api/keys", get(keys::list_keys).post(keys::add_keys))
        .route(
            "/api/keys/{id}",
            patch(keys::update_key).delete(keys::delete_key),
        )
        .route("/api/keys/{id}/test", post(keys::test_key))
        .route(
            "/api/client-keys",
            get(client_keys::list_client_keys).post(client_keys::create_client_key),
        )
        .route(
            "/api/client-keys/{id}",
            patch(client_keys::update_client_key).delete(client_keys::delete_client_key),
        )
        .route("/api/stats", get(stats::stats))
        .route("/api/logs", get(stats::logs))
        .route("/api/resources", get(resources::list_resources))
        .route(
            "/api/settings",
            get(settings::get_settings).patch(settings::update_settings),
        )
}
