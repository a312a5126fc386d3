//! gemini-pool: one endpoint over a pool of Google Gemini API keys.
//!
//! [`build_router`] assembles the HTTP application; [`serve`] runs it until SIGTERM or SIGINT.
//! The binary (`main.rs`) only reads the configuration and calls them.

pub mod cli;
pub mod config;
pub(crate) mod http;
pub mod service;
pub mod serving;
pub mod state;
pub mod telemetry;

use axum::Router;
use axum::extract::Request;
use axum::http::header;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::http::error::{ApiError, Dialect};
use crate::http::{admin, auth, health, metrics, native, openai, uploads, web};
pub use crate::state::AppState;

/// The whole HTTP application.
pub fn build_router(state: AppState) -> Router {
    crate::service::metrics::install();
    let api = Router::new()
        .route("/v1beta/{*path}", any(native::relay))
        .route("/v1/{*path}", any(dispatch_v1))
        .route("/upload/v1beta/files", any(uploads::relay))
        .route("/upload/v1/files", any(uploads::relay))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_client,
        ));
    let public = Router::new()
        .route("/healthz", get(health::alive))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(metrics::render))
        .route("/", get(web::root))
        .route("/login.html", get(web::login_page))
        .route("/management.html", get(web::management_page))
        .route("/assets/{*file}", get(web::asset_file))
        .route("/api/openapi.json", get(web::openapi))
        .merge(admin::router());
    // Outermost first: hide credentials from everything below, trace with the route template
    // only, give every request an id, and turn a panic into a 500 instead of a dropped
    // connection.
    let layers = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
            header::HeaderName::from_static("x-goog-api-key"),
            header::HeaderName::from_static("x-api-key"),
        ]))
        .layer(SetRequestIdLayer::x_request_id(
            telemetry::RequestIds::default(),
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(telemetry::request_span)
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Millis),
                ),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".to_owned()).into_response_for(Dialect::Gemini)
        }));
    api.merge(public)
        .fallback(not_found)
        .layer(layers)
        .with_state(state)
}

/// `/v1/…` is shared: OpenAI routes go to the OpenAI handlers, Gemini paths to the passthrough.
async fn dispatch_v1(state: axum::extract::State<AppState>, request: Request) -> Response {
    let rest = request.uri().path().trim_start_matches("/v1/");
    let gemini_auth =
        crate::http::dialect::uses_gemini_auth(request.headers(), request.uri().query());
    if crate::http::dialect::is_openai_path(rest, gemini_auth) {
        openai::handle(state.0, request).await
    } else {
        native::relay(state, request).await
    }
}

async fn not_found(request: Request) -> Response {
    let dialect = crate::http::dialect::dialect_of(
        request.uri().path(),
        request.headers(),
        request.uri().query(),
    );
    ApiError::NotFound("Unknown route.".to_owned())
        .into_response_for(dialect)
        .into_response()
}

/// Serves `router` on `listener` with `state`'s connection limits until SIGTERM or SIGINT,
/// then lets in-flight requests finish for up to `SHUTDOWN_GRACE_SECS` (see [`serving`]).
pub async fn serve(listener: TcpListener, router: Router, state: &AppState) -> std::io::Result<()> {
    let limits = serving::ConnectionLimits {
        header_timeout: state.config.client_header_timeout,
        idle_timeout: state.config.client_idle_timeout,
        max_connections: serving::connections_that_fit(state.config.max_connections as usize),
        shutdown_grace: state.config.shutdown_grace,
    };
    if limits.max_connections < state.config.max_connections as usize {
        tracing::warn!(
            max_connections = limits.max_connections,
            "MAX_CONNECTIONS lowered to what the open-file limit allows"
        );
    }
    serving::serve(
        listener,
        router,
        limits,
        state.relay.cutoff().clone(),
        serving::shutdown_signal(),
    )
    .await
}
