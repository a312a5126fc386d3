//! The floor: the least a gateway of this design can do — the same runtime, HTTP stack, client
//! and socket options as gemini-pool, swapping the key and piping the bytes, nothing else.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;

struct Floor {
    client: reqwest::Client,
    upstream: String,
}

/// Serves the floor proxy on `listen`, forwarding to `upstream`.
pub async fn serve(listen: &str, upstream: String) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let state = Arc::new(Floor {
        client: reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?,
        upstream: upstream.trim_end_matches('/').to_owned(),
    });
    let router = Router::new().fallback(forward).with_state(state);
    {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "floor listening on http://{addr}");
    }
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, router)
        .await
        .map_err(|e| e.to_string())
}

async fn forward(State(floor): State<Arc<Floor>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = match axum::body::to_bytes(body, 256 * 1024 * 1024).await {
        Ok(body) => body,
        Err(_) => return (axum::http::StatusCode::PAYLOAD_TOO_LARGE, "").into_response(),
    };
    let mut upstream = floor
        .client
        .request(parts.method, format!("{}{path}", floor.upstream))
        .body(body);
    if let Some(content_type) = parts.headers.get("content-type") {
        upstream = upstream.header("content-type", content_type);
    }
    match upstream.header("x-goog-api-key", "floor-key").send().await {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer.headers().get("content-type").cloned();
            let mut response = Response::new(Body::from_stream(
                answer.bytes_stream().map_err(std::io::Error::other),
            ));
            *response.status_mut() = status;
            if let Some(content_type) = content_type {
                response.headers_mut().insert("content-type", content_type);
            }
            response
        }
        Err(_) => (axum::http::StatusCode::BAD_GATEWAY, "").into_response(),
    }
}
