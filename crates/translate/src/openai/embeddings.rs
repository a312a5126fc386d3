//! `/v1/embeddings` ⇄ `embedContent` / `batchEmbedContents` (translation.md §7.1).

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::common::model::normalize_model;
use crate::error::TranslateError;

/// The model used when the request names none.
pub const DEFAULT_EMBEDDING_MODEL: &str = "gemini-embedding-001";
/// `batchEmbedContents` takes at most 100 requests.
pub const BATCH_LIMIT: usize = 100;

/// `POST /v1/embeddings` body.
#[derive(Debug, Clone, Deserialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct EmbeddingsRequest {
    pub model: Option<String>,
    pub input: Value,
    pub dimensions: Option<u32>,
    pub encoding_format: Option<String>,
    pub task_type: Option<String>,
    pub extra_body: Option<Value>,
    pub google: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A translated embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsPlan {
    /// The normalised model.
    pub model: String,
    /// The texts, in order.
    pub inputs: Vec<String>,
    /// Whether the input was one string (one `embedContent` call).
    pub single: bool,
    /// `outputDimensionality`.
    pub dimensions: Option<u32>,
    /// `taskType`.
    pub task_type: Option<String>,
    /// Whether vectors go back base64-encoded.
    pub base64: bool,
}

/// Checks and translates an embeddings request.
pub fn plan(request: &EmbeddingsRequest) -> Result<EmbeddingsPlan, TranslateError> {
    let model = normalize_model(request.model.as_deref().unwrap_or(DEFAULT_EMBEDDING_MODEL))?;
    let (inputs, single) = match &request.input {
        Value::String(text) => (vec![text.clone()], true),
        Value::Array(items) if !items.is_empty() => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(text) => texts.push(text.clone()),
                    _ => {
                        return Err(TranslateError::invalid(
                            "Token arrays are not supported: send the input as text.",
                            format!("input[{i}]"),
                        ));
                    }
                }
            }
            (texts, false)
        }
        _ => {
            return Err(TranslateError::invalid(
                "'input' must be a string or a non-empty array of strings.",
                "input",
            ));
        }
    };
    if let Some(i) = inputs.iter().position(String::is_empty) {
        let param = if single {
            "input".to_owned()
        } else {
            format!("input[{i}]")
        };
        return Err(TranslateError::invalid(
            "'input' cannot contain an empty string.",
            param,
        ));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(TranslateError::invalid(
                "'encoding_format' must be 'float' or 'base64'.",
                "encoding_format",
            ));
        }
    };
    let google = request
        .extra_body
        .as_ref()
        .and_then(|extra| extra.get("google"))
        .or(request.google.as_ref());
    let task_type = request.task_type.clone().or_else(|| {
        let google = google?;
        google
            .get("task_type")
            .or_else(|| google.get("taskType"))?
            .as_str()
            .map(str::to_owned)
    });
    Ok(EmbeddingsPlan {
        model,
        inputs,
        single,
        dimensions: request.dimensions,
        task_type,
        base64,
    })
}

impl EmbeddingsPlan {
    fn content_request(&self, text: &str, with_model: bool) -> Value {
        let mut request = json!({"content": {"parts": [{"text": text}]}});
        if with_model {
            request["model"] = json!(format!("models/{}", self.model));
        }
        if let Some(dimensions) = self.dimensions {
            request["outputDimensionality"] = json!(dimensions);
        }
        if let Some(task_type) = &self.task_type {
            request["taskType"] = json!(task_type);
        }
        request
    }

    /// The upstream calls: `(path, body)` for one `embedContent`, or one `batchEmbedContents`
    /// per slice of at most 100 inputs, in order.
    pub fn upstream_calls(&self) -> Vec<(String, Value)> {
        if self.single {
            return vec![(
                format!("v1beta/models/{}:embedContent", self.model),
                self.content_request(&self.inputs[0], false),
            )];
        }
        self.inputs
            .chunks(BATCH_LIMIT)
            .map(|slice| {
                let requests: Vec<Value> = slice
                    .iter()
                    .map(|text| self.content_request(text, true))
                    .collect();
                (
                    format!("v1beta/models/{}:batchEmbedContents", self.model),
                    json!({ "requests": requests }),
                )
            })
            .collect()
    }

    /// Reads the vectors of one upstream answer (`embedding` or `embeddings`).
    pub fn vectors_of(answer: &Value) -> Result<Vec<Vec<f64>>, TranslateError> {
        let values = |embedding: &Value| -> Option<Vec<f64>> {
            embedding
                .get("values")?
                .as_array()?
                .iter()
                .map(Value::as_f64)
                .collect()
        };
        let unreadable =
            || TranslateError::UpstreamResponse("the embedding answer has no vectors".to_owned());
        if let Some(embedding) = answer.get("embedding") {
            return Ok(vec![values(embedding).ok_or_else(unreadable)?]);
        }
        answer
            .get("embeddings")
            .and_then(Value::as_array)
            .ok_or_else(unreadable)?
            .iter()
            .map(|embedding| values(embedding).ok_or_else(unreadable))
            .collect()
    }

    /// The OpenAI answer. Gemini reports no token counts for embeddings, so usage is zero.
    pub fn response(&self, vectors: Vec<Vec<f64>>) -> Value {
        let data: Vec<Value> = vectors
            .into_iter()
            .enumerate()
            .map(|(index, vector)| {
                let embedding = if self.base64 {
                    // OpenAI's base64 form: little-endian float32.
                    let bytes: Vec<u8> = vector
                        .iter()
                        .flat_map(|v| (*v as f32).to_le_bytes())
                        .collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(vector)
                };
                json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        json!({
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": 0, "total_tokens": 0}
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> EmbeddingsRequest {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_array_becomes_batches_of_at_most_100_in_order() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/requests/req_embeddings.json"
        ))
        .unwrap();
        let plan = plan(&request(fixture["openai_request"].clone())).unwrap();
        let calls = plan.upstream_calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(
            format!("/{}", calls[0].0),
            fixture["gemini_path"].as_str().unwrap()
        );
        assert_eq!(calls[0].1, fixture["gemini_body"]);

        let inputs: Vec<String> = (0..250).map(|i| format!("text {i}")).collect();
        let big = plan_of(json!({"input": inputs}));
        let calls = big.upstream_calls();
        let sizes: Vec<usize> = calls
            .iter()
            .map(|(_, body)| body["requests"].as_array().unwrap().len())
            .collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        assert_eq!(
            calls[2].1["requests"][49]["content"]["parts"][0]["text"],
            "text 249"
        );
    }

    fn plan_of(value: Value) -> EmbeddingsPlan {
        plan(&request(value)).unwrap()
    }

    #[test]
    fn a_single_string_uses_embed_content_with_the_task_type() {
        let plan = plan_of(
            json!({"model": "models/text-embedding-004", "input": "hi", "dimensions": 256, "extra_body": {"google": {"task_type": "RETRIEVAL_QUERY"}}}),
        );
        assert_eq!(
            plan.upstream_calls(),
            vec![(
                "v1beta/models/text-embedding-004:embedContent".to_owned(),
                json!({"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 256, "taskType": "RETRIEVAL_QUERY"})
            )]
        );
    }

    #[test]
    fn bad_inputs_are_refused_with_their_param() {
        let cases = [
            (json!({"input": [1, 2, 3]}), "input[0]"),
            (json!({"input": ""}), "input"),
            (json!({"input": ["a", ""]}), "input[1]"),
            (json!({"input": []}), "input"),
            (
                json!({"input": "a", "encoding_format": "int8"}),
                "encoding_format",
            ),
            (json!({"input": "a", "model": "../x"}), "model"),
        ];
        for (body, param) in cases {
            match plan(&request(body.clone())) {
                Err(TranslateError::InvalidRequest { param: Some(p), .. }) => {
                    assert_eq!(p, param, "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn base64_is_little_endian_float32() {
        let gemini: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/gemini/batch_embed_contents.json"
        ))
        .unwrap();
        let expected: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/openai/embeddings_response_base64.json"
        ))
        .unwrap();
        let plan = plan_of(
            json!({"model": "gemini-embedding-001", "input": ["a", "b", "c"], "encoding_format": "base64"}),
        );
        let vectors = EmbeddingsPlan::vectors_of(&gemini).unwrap();
        assert_eq!(plan.response(vectors), expected);
        let floats: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/openai/embeddings_response.json"
        ))
        .unwrap();
        let plan = plan_of(json!({"model": "gemini-embedding-001", "input": ["a", "b", "c"]}));
        assert_eq!(
            plan.response(EmbeddingsPlan::vectors_of(&gemini).unwrap()),
            floats
        );
    }
}
