//! What the mock answers to a generate call, shaped like Gemini's answers.
//!
//! - a history ending in function responses gets a text answer quoting them;
//! - declared functions (unless `toolConfig` mode NONE) get a function call, signed with a
//!   thought signature on thinking models; a later turn must send that signature back, and
//!   Gemini 3 models refuse a first call without one (as the real API does);
//! - JSON mode answers JSON (following `responseJsonSchema` properties);
//! - `includeThoughts` adds a thought part; `maxOutputTokens` truncates (thinking counts);
//! - `candidateCount` gives several candidates; a prompt containing `BLOCK_ME` is blocked;
//! - a `googleSearch` tool grounds the answer: `groundingMetadata` with one query, one web page
//!   and a support spanning the whole text (on the last event when streamed).

use axum::response::Response;
use serde_json::{Value, json};

use crate::http::google_error;

/// The signature the mock issues for a call of `name`, and accepts back.
pub(crate) fn signature_for(name: &str) -> String {
    format!("mock-sig:{name}")
}

/// Gemini's documented stand-in for a signature it never issued.
const SENTINEL: &str = "skip_thought_signature_validator";

pub(crate) struct CandidatePlan {
    pub parts: Vec<Value>,
    pub finish: &'static str,
    pub grounding: Option<Value>,
}

pub(crate) struct Answer {
    pub candidates: Vec<CandidatePlan>,
    pub block_reason: Option<&'static str>,
    pub prompt_tokens: u64,
    pub thoughts_tokens: u64,
}

fn is_thinking(model: &str) -> bool {
    model.starts_with("gemini-2.5") || model.starts_with("gemini-3")
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn contents(body: &Value) -> &[Value] {
    body.get("contents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn parts(content: &Value) -> &[Value] {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Checks the signatures of the function calls in the history.
fn check_signatures(model: &str, body: &Value) -> Result<(), Response> {
    for content in contents(body) {
        if content.get("role").and_then(Value::as_str) != Some("model") {
            continue;
        }
        let Some(first_call) = parts(content)
            .iter()
            .find(|p| p.get("functionCall").is_some())
        else {
            continue;
        };
        let name = first_call
            .pointer("/functionCall/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        match first_call.get("thoughtSignature").and_then(Value::as_str) {
            Some(signature) if signature == signature_for(name) || signature == SENTINEL => {}
            Some(_) => {
                return Err(google_error(
                    400,
                    "Thought signature is not valid.",
                    "INVALID_ARGUMENT",
                    Vec::new(),
                ));
            }
            None if model.starts_with("gemini-3") => {
                return Err(google_error(
                    400,
                    &format!(
                        "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , position 2. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
                    ),
                    "INVALID_ARGUMENT",
                    Vec::new(),
                ));
            }
            None => {}
        }
    }
    Ok(())
}

/// Fills a JSON schema's properties with plain values.
fn sample_of(schema: &Value, text: &str) -> Value {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return json!({ "echo": text });
    };
    let object = properties
        .iter()
        .map(|(name, property)| {
            let value = match property.get("type").and_then(Value::as_str) {
                Some("integer" | "number") => json!(1),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => json!(text),
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(object)
}

pub(crate) fn compose(model: &str, body: &Value) -> Result<Answer, Response> {
    check_signatures(model, body)?;
    let all_texts: Vec<&str> = contents(body)
        .iter()
        .flat_map(parts)
        .filter_map(|p| p.get("text")?.as_str())
        .collect();
    let prompt_tokens = all_texts.iter().map(|t| words(t)).sum::<u64>().max(1);
    let last = contents(body).last().cloned().unwrap_or(Value::Null);
    let last_text: String = parts(&last)
        .iter()
        .filter_map(|p| p.get("text")?.as_str())
        .next_back()
        .unwrap_or("")
        .to_owned();
    let config = body.get("generationConfig").cloned().unwrap_or(Value::Null);
    let thinking = is_thinking(model)
        && config
            .pointer("/thinkingConfig/thinkingBudget")
            .and_then(Value::as_i64)
            != Some(0);
    let thoughts_tokens = if thinking { 5 } else { 0 };
    if last_text.contains("BLOCK_ME") {
        return Ok(Answer {
            candidates: Vec::new(),
            block_reason: Some("SAFETY"),
            prompt_tokens,
            thoughts_tokens: 0,
        });
    }

    let responses: Vec<String> = parts(&last)
        .iter()
        .filter_map(|p| p.get("functionResponse"))
        .map(|r| {
            format!(
                "{}={}",
                r.get("name").and_then(Value::as_str).unwrap_or(""),
                r.get("response").cloned().unwrap_or(Value::Null)
            )
        })
        .collect();
    let declarations: Vec<&Value> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|tool| tool.get("functionDeclarations")?.as_array())
        .flatten()
        .collect();
    let mode = body
        .pointer("/toolConfig/functionCallingConfig/mode")
        .and_then(Value::as_str)
        .unwrap_or("AUTO");
    let allowed: Vec<&str> = body
        .pointer("/toolConfig/functionCallingConfig/allowedFunctionNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();

    let mut answer_parts = Vec::new();
    if config
        .pointer("/thinkingConfig/includeThoughts")
        .and_then(Value::as_bool)
        == Some(true)
        && thinking
    {
        answer_parts.push(json!({"text": "Thinking about the question.", "thought": true}));
    }
    let mut calls = false;
    if responses.is_empty() && !declarations.is_empty() && mode != "NONE" {
        let chosen: Vec<&Value> = declarations
            .iter()
            .copied()
            .filter(|d| {
                allowed.is_empty()
                    || d.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| allowed.contains(&n))
            })
            .collect();
        let how_many = if last_text.contains("PARALLEL") {
            chosen.len()
        } else {
            1
        };
        for (k, declaration) in chosen.iter().take(how_many).enumerate() {
            let name = declaration
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("f");
            let schema = declaration
                .get("parametersJsonSchema")
                .cloned()
                .unwrap_or(Value::Null);
            let mut part =
                json!({"functionCall": {"name": name, "args": sample_of(&schema, &last_text)}});
            // Only the first of parallel calls is signed.
            if k == 0 && thinking {
                part["thoughtSignature"] = json!(signature_for(name));
            }
            answer_parts.push(part);
            calls = true;
        }
    }
    let mut finish = "STOP";
    if !calls {
        let mut text = if !responses.is_empty() {
            format!("Tool results: {}", responses.join("; "))
        } else if config.get("responseMimeType").and_then(Value::as_str) == Some("application/json")
        {
            sample_of(
                config.get("responseJsonSchema").unwrap_or(&Value::Null),
                &last_text,
            )
            .to_string()
        } else if last_text.is_empty() {
            "Hello from the mock Gemini API.".to_owned()
        } else {
            format!("Echo: {last_text}")
        };
        let inline: Vec<&str> = parts(&last)
            .iter()
            .filter_map(|p| p.pointer("/inlineData/mimeType")?.as_str())
            .collect();
        if !inline.is_empty() {
            text.push_str(&format!(" [inline: {}]", inline.join(", ")));
        }
        if let Some(max) = config.get("maxOutputTokens").and_then(Value::as_u64) {
            // Thinking counts inside the output budget, as on the real API.
            let available = max.saturating_sub(thoughts_tokens) as usize;
            let all: Vec<&str> = text.split_inclusive(' ').collect();
            if all.len() > available {
                text = all[..available].concat().trim_end().to_owned();
                finish = "MAX_TOKENS";
            }
        }
        if !text.is_empty() {
            answer_parts.push(json!({ "text": text }));
        }
    }
    let searched = body
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|tools| tools.iter().any(|tool| tool.get("googleSearch").is_some()));
    let grounding = |parts: &[Value]| {
        let text: String = parts
            .iter()
            .filter(|p| p.get("thought").is_none())
            .filter_map(|p| p.get("text")?.as_str())
            .collect();
        searched.then(|| {
            json!({
                "webSearchQueries": [last_text.clone()],
                "groundingChunks": [{"web": {"uri": "https://example.com/result", "title": "example.com"}}],
                // Byte offsets into the answer's text, as Gemini counts them.
                "groundingSupports": [{"segment": {"startIndex": 0, "endIndex": text.len(), "text": text},
                    "groundingChunkIndices": [0]}],
            })
        })
    };
    let count = config
        .get("candidateCount")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1);
    let candidates = (0..count)
        .map(|index| {
            let mut parts = answer_parts.clone();
            if index > 0
                && let Some(part) = parts
                    .iter_mut()
                    .rev()
                    .find(|p| p.get("thought").is_none() && p.get("text").is_some())
            {
                let text = part["text"].as_str().unwrap_or("").to_owned();
                part["text"] = json!(format!("{text} (candidate {index})"));
            }
            let grounding = grounding(&parts);
            CandidatePlan {
                parts,
                finish,
                grounding,
            }
        })
        .collect();
    Ok(Answer {
        candidates,
        block_reason: None,
        prompt_tokens,
        thoughts_tokens,
    })
}

fn visible_tokens(parts: &[Value]) -> u64 {
    parts
        .iter()
        .map(|p| {
            if p.get("functionCall").is_some() {
                1
            } else if p.get("thought").is_some() {
                0
            } else {
                p.get("text").and_then(Value::as_str).map_or(0, words)
            }
        })
        .sum()
}

fn usage(prompt: u64, candidates: u64, thoughts: u64) -> Value {
    let mut usage = json!({
        "promptTokenCount": prompt,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    });
    // proto3 JSON leaves zero counts out.
    if candidates > 0 {
        usage["candidatesTokenCount"] = json!(candidates);
    }
    if thoughts > 0 {
        usage["thoughtsTokenCount"] = json!(thoughts);
    }
    usage
}

fn candidate_json(
    index: u64,
    parts: Vec<Value>,
    finish: Option<&str>,
    grounding: Option<&Value>,
) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    if let Some(grounding) = grounding {
        candidate["groundingMetadata"] = grounding.clone();
    }
    // proto3 JSON leaves index 0 out.
    if index > 0 {
        candidate["index"] = json!(index);
    }
    candidate
}

impl Answer {
    /// The usage of the whole answer: prompt, visible candidate and thinking tokens.
    pub(crate) fn totals(&self) -> (u64, u64, u64) {
        if self.block_reason.is_some() {
            return (self.prompt_tokens, 0, 0);
        }
        let visible = self
            .candidates
            .iter()
            .map(|c| visible_tokens(&c.parts))
            .sum();
        (self.prompt_tokens, visible, self.thoughts_tokens)
    }

    /// The `generateContent` answer.
    pub(crate) fn body(&self, model: &str, response_id: &str) -> Value {
        if let Some(reason) = self.block_reason {
            return json!({
                "promptFeedback": {"blockReason": reason},
                "usageMetadata": usage(self.prompt_tokens, 0, 0),
                "modelVersion": model,
                "responseId": response_id,
            });
        }
        let visible: u64 = self
            .candidates
            .iter()
            .map(|c| visible_tokens(&c.parts))
            .sum();
        let candidates: Vec<Value> = self
            .candidates
            .iter()
            .enumerate()
            .map(|(index, c)| {
                candidate_json(
                    index as u64,
                    c.parts.clone(),
                    Some(c.finish),
                    c.grounding.as_ref(),
                )
            })
            .collect();
        json!({
            "candidates": candidates,
            "usageMetadata": usage(self.prompt_tokens, visible, self.thoughts_tokens),
            "modelVersion": model,
            "responseId": response_id,
        })
    }

    /// The events of `streamGenerateContent`: visible text split into `text_events` pieces, every
    /// other part its own event, the finish reason on each candidate's last event, and the
    /// cumulative usage on every event.
    pub(crate) fn events(&self, model: &str, response_id: &str, text_events: usize) -> Vec<Value> {
        if self.block_reason.is_some() {
            return vec![self.body(model, response_id)];
        }
        let mut events = Vec::new();
        let mut produced = 0;
        for (index, candidate) in self.candidates.iter().enumerate() {
            let mut pieces: Vec<Value> = Vec::new();
            for part in &candidate.parts {
                let text = part
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|_| part.get("thought").is_none());
                match text {
                    Some(text) => {
                        let words: Vec<&str> = text.split_inclusive(' ').collect();
                        let per_event = words.len().div_ceil(text_events.max(1)).max(1);
                        for i in 0..text_events.max(1) {
                            let piece: String = words
                                .iter()
                                .skip(i * per_event)
                                .take(per_event)
                                .copied()
                                .collect();
                            pieces.push(json!({ "text": piece }));
                        }
                    }
                    None => pieces.push(part.clone()),
                }
            }
            let last = pieces.len().saturating_sub(1);
            for (i, piece) in pieces.into_iter().enumerate() {
                produced += visible_tokens(std::slice::from_ref(&piece));
                let finish = (i == last).then_some(candidate.finish);
                let grounding = candidate.grounding.as_ref().filter(|_| i == last);
                events.push(json!({
                    "candidates": [candidate_json(index as u64, vec![piece], finish, grounding)],
                    "usageMetadata": usage(self.prompt_tokens, produced, self.thoughts_tokens),
                    "modelVersion": model,
                    "responseId": response_id,
                }));
            }
        }
        events
    }
}
