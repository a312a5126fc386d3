//! Which API a request speaks, from its path and how it authenticates: its errors come in that
//! dialect (OpenAI's shape on `/v1` routes, Google's everywhere else).

use axum::http::HeaderMap;

use crate::http::error::Dialect;

/// The dialect of a request, from its path: OpenAI routes under `/v1`, Gemini everywhere else.
pub fn dialect_of(path: &str, headers: &HeaderMap, query: Option<&str>) -> Dialect {
    match path.strip_prefix("/v1/") {
        Some(rest) if is_openai_path(rest, uses_gemini_auth(headers, query)) => Dialect::OpenAi,
        _ => Dialect::Gemini,
    }
}

/// Whether a path below `/v1/` is an OpenAI route. `models` and `models/{id}` are shared with
/// Gemini: a request authenticated the Gemini way (`x-goog-api-key` or `?key=`) is native. A
/// path outside the Gemini API from an OpenAI-style client is OpenAI's too, so that its 404
/// comes in the client's dialect.
pub fn is_openai_path(rest: &str, gemini_auth: bool) -> bool {
    match rest {
        "chat/completions" | "embeddings" | "completions" => true,
        _ if is_responses_path(rest) => true,
        "models" => !gemini_auth,
        _ => match rest.strip_prefix("models/") {
            Some(id) => !gemini_auth && !id.contains([':', '/']),
            None => {
                !gemini_auth
                    && matches!(
                        translate::gemini::native::NativePath::parse(rest),
                        Err(translate::gemini::native::PathError::UnknownCollection(_))
                    )
            }
        },
    }
}

/// Whether `rest` (the path below `/v1/`) is a Responses route.
pub fn is_responses_path(rest: &str) -> bool {
    rest == "responses" || rest.starts_with("responses/")
}

/// Whether the request authenticates the way Gemini SDKs do (`x-goog-api-key` or `?key=`),
/// which tells a native `GET /v1/models` from the OpenAI one.
pub fn uses_gemini_auth(headers: &HeaderMap, query: Option<&str>) -> bool {
    headers.contains_key("x-goog-api-key") || query.is_some_and(|q| query_value(q, "key").is_some())
}

/// The decoded value of `name` in a raw query string.
pub fn query_value(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, axum::http::HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_dialect_follows_the_route() {
        let none = HeaderMap::new();
        let goog = headers(&[("x-goog-api-key", "k")]);
        assert_eq!(
            dialect_of("/v1/chat/completions", &none, None),
            Dialect::OpenAi
        );
        assert_eq!(dialect_of("/v1/models", &none, None), Dialect::OpenAi);
        assert_eq!(dialect_of("/v1/models", &goog, None), Dialect::Gemini);
        assert_eq!(
            dialect_of("/v1/models", &none, Some("key=k")),
            Dialect::Gemini
        );
        assert_eq!(
            dialect_of("/v1/models/gemini-2.5-flash", &none, None),
            Dialect::OpenAi
        );
        assert_eq!(
            dialect_of("/v1/models/gemini-2.5-flash:generateContent", &none, None),
            Dialect::Gemini
        );
        assert_eq!(dialect_of("/v1beta/models", &none, None), Dialect::Gemini);
        assert_eq!(
            dialect_of("/upload/v1beta/files", &none, None),
            Dialect::Gemini
        );
    }
}
