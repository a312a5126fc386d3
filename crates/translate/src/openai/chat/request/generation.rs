//! Sampling, length, stop, format and reasoning fields as Gemini `generationConfig`.

use serde_json::{Map, Value, json};

use super::tools::schema_of;
use super::validate::field;
use crate::common::model::{BudgetVariant, ModelFamily};
use crate::error::TranslateError;
use crate::openai::chat::types::{ChatCompletionRequest, Stop};

/// The most candidates the gateway asks for (Google documents no maximum; 8 is conservative).
pub(crate) const MAX_CANDIDATES: u32 = 8;
/// Gemini allows at most five stop sequences.
pub(crate) const MAX_STOP_SEQUENCES: usize = 5;
/// Model-id prefixes that reject presence/frequency penalties ("Penalty is not enabled").
pub(crate) const DROP_PENALTIES_FOR: [&str; 1] = ["gemini-3"];

pub(crate) fn generation_config(
    request: &ChatCompletionRequest,
    model: &str,
    family: ModelFamily,
    google: Option<&Value>,
) -> Result<Map<String, Value>, TranslateError> {
    let mut config = Map::new();
    let mut set = |name: &str, value: Value| {
        config.insert(name.to_owned(), value);
    };
    // `max_completion_tokens` wins over the legacy `max_tokens`. Gemini counts thinking tokens
    // inside `maxOutputTokens`, as OpenAI counts reasoning tokens inside the completion limit.
    if let Some(max) = request.max_completion_tokens.or(request.max_tokens) {
        set("maxOutputTokens", json!(max));
    }
    if let Some(t) = request.temperature {
        set("temperature", json!(t));
    }
    if let Some(p) = request.top_p {
        set("topP", json!(p));
    }
    if let Some(k) = request.top_k {
        set("topK", json!(k));
    }
    if let Some(n) = request.n.filter(|n| *n > 1) {
        set("candidateCount", json!(n));
    }
    match &request.stop {
        Some(Stop::One(stop)) => set("stopSequences", json!([stop])),
        Some(Stop::Many(stops)) if !stops.is_empty() => set("stopSequences", json!(stops)),
        _ => {}
    }
    if let Some(seed) = request.seed {
        set("seed", json!(seed));
    }
    // Some models answer 400 "Penalty is not enabled"; for those the penalties are dropped.
    let penalties_allowed = !DROP_PENALTIES_FOR
        .iter()
        .any(|prefix| model.starts_with(prefix));
    if penalties_allowed {
        if let Some(p) = request.presence_penalty {
            set("presencePenalty", json!(p));
        }
        if let Some(p) = request.frequency_penalty {
            set("frequencyPenalty", json!(p));
        }
    }
    if request.logprobs.unwrap_or(false) {
        set("responseLogprobs", json!(true));
        if let Some(top) = request.top_logprobs {
            set("logprobs", json!(top));
        }
    }
    if let Some(format) = &request.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => set("responseMimeType", json!("application/json")),
            Some("json_schema") => {
                // OpenAI requires the `json_schema` object (with its `name`); its `schema` may
                // be left out.
                let Some(json_schema) = format.get("json_schema").filter(|s| s.is_object()) else {
                    return Err(TranslateError::invalid(
                        "'response_format.json_schema' is required when the type is 'json_schema'.",
                        "response_format.json_schema",
                    ));
                };
                set("responseMimeType", json!("application/json"));
                let schema = json_schema.get("schema");
                if let Some(schema) = schema_of(schema, "response_format.json_schema.schema")? {
                    set("responseJsonSchema", schema);
                }
            }
            _ => {
                return Err(TranslateError::invalid(
                    "'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
                    "response_format.type",
                ));
            }
        }
    }
    if let Some(google) = google {
        for (snake, camel) in [
            ("response_modalities", "responseModalities"),
            ("media_resolution", "mediaResolution"),
        ] {
            if let Some(value) = field(google, snake, camel) {
                set(camel, value.clone());
            }
        }
    }
    if let Some(thinking) = thinking_config(request, family, google)? {
        set("thinkingConfig", thinking);
    }
    Ok(config)
}

/// `thinkingConfig` from an explicit `thinking_config` extension, else from `reasoning_effort`.
/// Non-thinking models get none (it is a 400 there); budget and level are never both sent.
pub(crate) fn thinking_config(
    request: &ChatCompletionRequest,
    family: ModelFamily,
    google: Option<&Value>,
) -> Result<Option<Value>, TranslateError> {
    let effort = request.reasoning_effort.clone().or_else(|| {
        request
            .reasoning
            .as_ref()?
            .get("effort")?
            .as_str()
            .map(str::to_owned)
    });
    let effort = effort
        .map(|effort| {
            let known = ["none", "minimal", "low", "medium", "high", "xhigh"];
            if known.contains(&effort.as_str()) {
                Ok(effort)
            } else {
                Err(TranslateError::invalid(
                    format!("Invalid 'reasoning_effort' '{effort}': expected none, minimal, low, medium, high or xhigh."),
                    "reasoning_effort",
                ))
            }
        })
        .transpose()?;
    if family == ModelFamily::NoThinking {
        return Ok(None);
    }
    let explicit = google.and_then(|g| field(g, "thinking_config", "thinkingConfig"));
    if let Some(explicit) = explicit {
        let budget = field(explicit, "thinking_budget", "thinkingBudget");
        let level = field(explicit, "thinking_level", "thinkingLevel");
        let mut config = Map::new();
        match (family, budget, level) {
            (ModelFamily::LevelBased { .. }, _, Some(level)) | (_, None, Some(level)) => {
                config.insert(
                    "thinkingLevel".into(),
                    json!(level.as_str().map(str::to_uppercase)),
                );
            }
            (_, Some(budget), _) => {
                config.insert("thinkingBudget".into(), budget.clone());
            }
            (_, None, None) => {}
        }
        if let Some(include) = field(explicit, "include_thoughts", "includeThoughts") {
            config.insert("includeThoughts".into(), include.clone());
        }
        return Ok(Some(Value::Object(config)));
    }
    let Some(effort) = effort else {
        return Ok(None);
    };
    let include = effort != "none";
    let config = match family {
        ModelFamily::BudgetBased(variant) => {
            let budget = match (effort.as_str(), variant) {
                // 2.5 Pro cannot switch thinking off: the least it takes is 128.
                ("none" | "minimal", BudgetVariant::Pro) => 128,
                ("none", _) => 0,
                ("minimal", _) => 512,
                ("low", _) => 1024,
                ("medium", _) => 8192,
                ("xhigh", BudgetVariant::Pro) => 32_768,
                _ => 24_576,
            };
            json!({"thinkingBudget": budget, "includeThoughts": include})
        }
        ModelFamily::LevelBased { pro } => {
            // Gemini 3 cannot switch thinking off; Pro models support only LOW and HIGH.
            let level = match (effort.as_str(), pro) {
                ("none" | "minimal", true) | ("low", _) => "LOW",
                ("none" | "minimal", false) => "MINIMAL",
                ("medium", false) => "MEDIUM",
                _ => "HIGH",
            };
            json!({"thinkingLevel": level, "includeThoughts": include})
        }
        ModelFamily::NoThinking => return Ok(None),
    };
    Ok(Some(config))
}
