//! Sampling, length, stop, format and reasoning fields as Gemini `generationConfig`.

use serde_json::{Value, json};

use super::tools::schema_of;
use super::validate::field;
use crate::common::model::{BudgetVariant, ModelFamily};
use crate::error::TranslateError;
use crate::gemini::request::{GenerationConfig, ThinkingConfig};
use crate::openai::chat::types::{ChatCompletionRequest, Stop};

/// Model-id prefixes that reject presence/frequency penalties ("Penalty is not enabled").
pub(crate) const DROP_PENALTIES_FOR: [&str; 1] = ["gemini-3"];

pub(crate) fn generation_config(
    request: &ChatCompletionRequest,
    model: &str,
    family: ModelFamily,
    google: Option<&Value>,
) -> Result<GenerationConfig, TranslateError> {
    // `max_completion_tokens` wins over the legacy `max_tokens`. Gemini counts thinking tokens
    // inside `maxOutputTokens`, as OpenAI counts reasoning tokens inside the completion limit.
    let mut config = GenerationConfig {
        max_output_tokens: request.max_completion_tokens.or(request.max_tokens),
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        // One candidate is Gemini's default: `n: 1` sends nothing.
        candidate_count: request.n.filter(|n| *n > 1),
        stop_sequences: match &request.stop {
            Some(Stop::One(stop)) => Some(vec![stop.clone()]),
            Some(Stop::Many(stops)) if !stops.is_empty() => Some(stops.clone()),
            _ => None,
        },
        seed: request.seed,
        ..GenerationConfig::default()
    };
    // Some models answer 400 "Penalty is not enabled"; for those the penalties are dropped.
    let penalties_allowed = !DROP_PENALTIES_FOR
        .iter()
        .any(|prefix| model.starts_with(prefix));
    if penalties_allowed {
        config.presence_penalty = request.presence_penalty;
        config.frequency_penalty = request.frequency_penalty;
    }
    if request.logprobs.unwrap_or(false) {
        config.response_logprobs = Some(true);
        config.logprobs = request.top_logprobs;
    }
    if let Some(format) = &request.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => config.response_mime_type = Some("application/json".into()),
            Some("json_schema") => {
                // OpenAI requires the `json_schema` object (with its `name`); its `schema` may
                // be left out.
                let Some(json_schema) = format.get("json_schema").filter(|s| s.is_object()) else {
                    return Err(TranslateError::invalid(
                        "'response_format.json_schema' is required when the type is 'json_schema'.",
                        "response_format.json_schema",
                    ));
                };
                config.response_mime_type = Some("application/json".into());
                let schema = json_schema.get("schema");
                config.response_json_schema =
                    schema_of(schema, "response_format.json_schema.schema")?;
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
        config.response_modalities =
            field(google, "response_modalities", "responseModalities").cloned();
        config.media_resolution = field(google, "media_resolution", "mediaResolution").cloned();
    }
    config.thinking_config = thinking_config(request, family, google)?;
    Ok(config)
}

/// `thinkingConfig` from an explicit `thinking_config` extension, else from `reasoning_effort`.
/// Non-thinking models get none (it is a 400 there); budget and level are never both sent.
pub(crate) fn thinking_config(
    request: &ChatCompletionRequest,
    family: ModelFamily,
    google: Option<&Value>,
) -> Result<Option<ThinkingConfig>, TranslateError> {
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
        let mut config = ThinkingConfig {
            include_thoughts: field(explicit, "include_thoughts", "includeThoughts").cloned(),
            ..ThinkingConfig::default()
        };
        match (family, budget, level) {
            // Gemini's levels are upper-case enum values (clients write `high`); a level that is
            // not a string is sent as null, for Gemini to refuse.
            (ModelFamily::LevelBased { .. }, _, Some(level)) | (_, None, Some(level)) => {
                config.thinking_level = Some(json!(level.as_str().map(str::to_uppercase)));
            }
            (_, Some(budget), _) => config.thinking_budget = Some(budget.clone()),
            (_, None, None) => {}
        }
        return Ok(Some(config));
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
            ThinkingConfig {
                thinking_budget: Some(json!(budget)),
                include_thoughts: Some(json!(include)),
                ..ThinkingConfig::default()
            }
        }
        ModelFamily::LevelBased { pro } => {
            // Gemini 3 cannot switch thinking off; Pro models support only LOW and HIGH.
            let level = match (effort.as_str(), pro) {
                ("none" | "minimal", true) | ("low", _) => "LOW",
                ("none" | "minimal", false) => "MINIMAL",
                ("medium", false) => "MEDIUM",
                _ => "HIGH",
            };
            ThinkingConfig {
                thinking_level: Some(json!(level)),
                include_thoughts: Some(json!(include)),
                ..ThinkingConfig::default()
            }
        }
        ModelFamily::NoThinking => return Ok(None),
    };
    Ok(Some(config))
}
