//! The calls answered from a request's texts alone: token counts and embeddings.

use axum::response::Response;
use serde_json::{Value, json};

use crate::http::{google_error, json_response};

const BATCH_EMBED_LIMIT: usize = 100;

const DEFAULT_EMBEDDING_SIZE: usize = 768;

/// Every text part of the request, in order.
pub(crate) fn request_texts(body: &Value) -> Vec<String> {
    let contents = body
        .get("contents")
        .or_else(|| body.pointer("/generateContentRequest/contents"));
    let mut texts = Vec::new();
    match contents {
        Some(Value::Array(contents)) => {
            for content in contents {
                collect_texts(content, &mut texts);
            }
        }
        Some(Value::String(text)) => texts.push(text.clone()),
        Some(other) => collect_texts(other, &mut texts),
        None => {}
    }
    texts
}

fn collect_texts(content: &Value, texts: &mut Vec<String>) {
    if let Some(parts) = content.get("parts").and_then(Value::as_array) {
        texts.extend(
            parts
                .iter()
                .filter_map(|part| part.get("text")?.as_str().map(str::to_owned)),
        );
    }
}

pub(crate) fn word_count(texts: &[String]) -> u64 {
    texts
        .iter()
        .map(|text| text.split_whitespace().count() as u64)
        .sum::<u64>()
        .max(1)
}

pub(crate) fn count_tokens(body: &Value) -> Response {
    let total = word_count(&request_texts(body));
    json_response(&json!({
        "totalTokens": total,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": total}]
    }))
}

fn embedding_of(content: &Value, size: usize) -> Value {
    let mut texts = Vec::new();
    collect_texts(content, &mut texts);
    let seed = texts.join(" ").bytes().fold(7u64, |acc, byte| {
        acc.wrapping_mul(31).wrapping_add(u64::from(byte))
    });
    let values: Vec<f64> = (0..size)
        .map(|i| {
            let x = seed
                .wrapping_add(i as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                >> 40;
            (x as f64 / (1u64 << 24) as f64) * 2.0 - 1.0
        })
        .collect();
    json!({ "values": values })
}

fn dimension(request: &Value) -> usize {
    request
        .get("outputDimensionality")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_EMBEDDING_SIZE, |size| size as usize)
}

pub(crate) fn embed_content(body: &Value) -> Response {
    let content = body.get("content").cloned().unwrap_or(Value::Null);
    json_response(&json!({ "embedding": embedding_of(&content, dimension(body)) }))
}

pub(crate) fn batch_embed_contents(body: &Value) -> Response {
    let Some(requests) = body.get("requests").and_then(Value::as_array) else {
        return google_error(
            400,
            "* BatchEmbedContentsRequest.requests: requests is required",
            "INVALID_ARGUMENT",
            Vec::new(),
        );
    };
    if requests.len() > BATCH_EMBED_LIMIT {
        return google_error(
            400,
            &format!(
                "* BatchEmbedContentsRequest.requests: at most {BATCH_EMBED_LIMIT} requests can be in one batch"
            ),
            "INVALID_ARGUMENT",
            Vec::new(),
        );
    }
    let embeddings: Vec<Value> = requests
        .iter()
        .map(|request| {
            let content = request.get("content").cloned().unwrap_or(Value::Null);
            embedding_of(&content, dimension(request))
        })
        .collect();
    json_response(&json!({ "embeddings": embeddings }))
}
