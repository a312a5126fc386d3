//! OpenAI's legacy Completions API (`/v1/completions`), which LlamaIndex's `OpenAILike`, older
//! LangChain `OpenAI` LLMs and many editor plugins still call.
//!
//! A completion is a chat turn with one user message: the request becomes a chat request (so
//! every rule of the chat translation applies) and the chat answer becomes a `text_completion`
//! (streamed: `text_completion` chunks ending with `[DONE]`). What has no Gemini equivalent is
//! refused naming the field: several prompts in one request, token-id prompts, `suffix`
//! (fill-in-the-middle) and `best_of` above `n`.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::TranslateError;
use crate::openai::chat::types::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkUsage, FinishReason, Usage,
};

/// OpenAI caps `logprobs` of a completion at 5.
const MAX_LOGPROBS: u32 = 5;

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Default, Deserialize)]
#[expect(
    missing_docs,
    reason = "fields are OpenAI's, named as in its API reference"
)]
pub struct CompletionRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: Option<Value>,
    pub suffix: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub n: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<Value>,
    pub logprobs: Option<u32>,
    pub echo: Option<bool>,
    pub stop: Option<Value>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    pub best_of: Option<u32>,
    pub logit_bias: Option<Map<String, Value>>,
    pub seed: Option<i64>,
    pub user: Option<String>,
    /// Everything else: accepted and not forwarded.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A completion request as a chat request, and the prompt to echo back (when `echo`).
#[derive(Debug)]
pub struct CompletionPlan {
    /// The chat request to translate.
    pub chat: ChatCompletionRequest,
    /// The prompt, when the client asked for it to be repeated before the answer.
    pub echo: Option<String>,
}

/// Plans a completion: the chat request that gives it.
pub fn plan(request: &CompletionRequest) -> Result<CompletionPlan, TranslateError> {
    let prompt = prompt_text(request.prompt.as_ref())?;
    if request
        .suffix
        .as_deref()
        .is_some_and(|suffix| !suffix.is_empty())
    {
        return Err(TranslateError::invalid(
            "'suffix' (fill-in-the-middle) is not supported by Gemini models.",
            "suffix",
        ));
    }
    let n = request.n.unwrap_or(1);
    if request.best_of.is_some_and(|best_of| best_of > n) {
        return Err(TranslateError::invalid(
            "'best_of' above 'n' is not supported: Gemini returns every candidate it generates.",
            "best_of",
        ));
    }
    if request
        .logprobs
        .is_some_and(|logprobs| logprobs > MAX_LOGPROBS)
    {
        return Err(TranslateError::invalid(
            format!("'logprobs' must be at most {MAX_LOGPROBS}."),
            "logprobs",
        ));
    }
    let mut chat = Map::new();
    chat.insert("model".into(), json!(request.model));
    chat.insert(
        "messages".into(),
        json!([{"role": "user", "content": prompt}]),
    );
    let copy = |chat: &mut Map<String, Value>, name: &str, value: Option<Value>| {
        if let Some(value) = value {
            chat.insert(name.to_owned(), value);
        }
    };
    copy(&mut chat, "stream", request.stream.map(Value::Bool));
    copy(&mut chat, "stream_options", request.stream_options.clone());
    copy(&mut chat, "max_tokens", request.max_tokens.map(Value::from));
    copy(
        &mut chat,
        "temperature",
        request.temperature.map(Value::from),
    );
    copy(&mut chat, "top_p", request.top_p.map(Value::from));
    copy(&mut chat, "n", request.n.map(Value::from));
    copy(&mut chat, "stop", request.stop.clone());
    copy(
        &mut chat,
        "presence_penalty",
        request.presence_penalty.map(Value::from),
    );
    copy(
        &mut chat,
        "frequency_penalty",
        request.frequency_penalty.map(Value::from),
    );
    copy(
        &mut chat,
        "logit_bias",
        request.logit_bias.clone().map(Value::Object),
    );
    copy(&mut chat, "seed", request.seed.map(Value::from));
    copy(&mut chat, "user", request.user.clone().map(Value::String));
    if let Some(top) = request.logprobs {
        chat.insert("logprobs".into(), json!(true));
        chat.insert("top_logprobs".into(), json!(top));
    }
    let chat: ChatCompletionRequest =
        serde_json::from_value(Value::Object(chat)).map_err(|error| {
            TranslateError::InvalidRequest {
                message: format!("Invalid request: {error}."),
                param: None,
            }
        })?;
    Ok(CompletionPlan {
        chat,
        echo: request.echo.unwrap_or(false).then_some(prompt),
    })
}

/// The prompt as one text: a string, or a list holding one string.
fn prompt_text(prompt: Option<&Value>) -> Result<String, TranslateError> {
    match prompt {
        // OpenAI's default prompt is `<|endoftext|>`, the start of a document: Gemini has no
        // such token, so an empty prompt asks for text from nothing.
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(items)) => match items.as_slice() {
            [] => Ok(String::new()),
            [Value::String(text)] => Ok(text.clone()),
            [Value::Number(_), ..] | [Value::Array(_), ..] => Err(TranslateError::invalid(
                "Prompts of token ids are not supported: Gemini reads text. Send the prompt as a string.",
                "prompt",
            )),
            [Value::String(_), ..] => Err(TranslateError::invalid(
                "Several prompts in one request are not supported by this gateway: send one request per prompt.",
                "prompt",
            )),
            _ => Err(TranslateError::invalid(
                "'prompt' must be a string or a list of strings.",
                "prompt",
            )),
        },
        Some(_) => Err(TranslateError::invalid(
            "'prompt' must be a string or a list of strings.",
            "prompt",
        )),
    }
}

/// A completion's finish reason (a completion has no tool calls).
fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Stop | FinishReason::ToolCalls => "stop",
    }
}

fn usage_json(usage: &Usage) -> Value {
    json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "completion_tokens_details": {"reasoning_tokens": usage.completion_tokens_details.reasoning_tokens},
    })
}

/// Chat log probabilities (`{"content": [{token, logprob, top_logprobs}]}`) in the
/// completions shape (`tokens`, `token_logprobs`, `top_logprobs` as maps, `text_offset`).
fn completion_logprobs(chat: &Value, offset: usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top_logprobs = Vec::new();
    let mut text_offset = Vec::new();
    let mut at = offset;
    for entry in chat
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let token = entry.get("token").and_then(Value::as_str).unwrap_or("");
        tokens.push(json!(token));
        token_logprobs.push(entry.get("logprob").cloned().unwrap_or(Value::Null));
        let top: Map<String, Value> = entry
            .get("top_logprobs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|top| {
                Some((
                    top.get("token")?.as_str()?.to_owned(),
                    top.get("logprob")?.clone(),
                ))
            })
            .collect();
        top_logprobs.push(Value::Object(top));
        text_offset.push(json!(at));
        at += token.chars().count();
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs, "text_offset": text_offset})
}

/// A chat completion as a `text_completion`.
pub fn completion_from_chat(chat: &ChatCompletion, echo: Option<&str>) -> Value {
    let prefix = echo.unwrap_or("");
    let choices: Vec<Value> = chat
        .choices
        .iter()
        .map(|choice| {
            let text = format!(
                "{prefix}{}",
                choice.message.content.as_deref().unwrap_or("")
            );
            json!({
                "text": text,
                "index": choice.index,
                "logprobs": choice.logprobs.as_ref().map(|lp| completion_logprobs(lp, prefix.chars().count())),
                "finish_reason": finish_reason(choice.finish_reason),
            })
        })
        .collect();
    json!({
        "id": chat.id.replacen("chatcmpl-", "cmpl-", 1),
        "object": "text_completion",
        "created": chat.created,
        "model": chat.model,
        "choices": choices,
        "usage": usage_json(&chat.usage),
    })
}

/// Turns the chunks of a streamed chat completion into `text_completion` chunks.
#[derive(Debug, Default)]
pub struct CompletionChunks {
    /// The prompt still to send before the first text of each choice (when `echo`).
    echo: Option<String>,
    echoed: Vec<u32>,
}

impl CompletionChunks {
    /// A converter repeating `echo` before each choice's text.
    pub fn new(echo: Option<String>) -> Self {
        Self {
            echo,
            echoed: Vec::new(),
        }
    }

    /// A chat chunk as a completion chunk; `None` when it carries nothing a completion shows
    /// (the role announcement, thoughts).
    pub fn convert(&mut self, chunk: &ChatCompletionChunk) -> Option<Value> {
        let mut choices = Vec::with_capacity(chunk.choices.len());
        for choice in &chunk.choices {
            let mut text = String::new();
            if let Some(echo) = &self.echo
                && !self.echoed.contains(&choice.index)
                && (choice.delta.content.is_some() || choice.finish_reason.is_some())
            {
                self.echoed.push(choice.index);
                text.push_str(echo);
            }
            text.push_str(choice.delta.content.as_deref().unwrap_or(""));
            if text.is_empty() && choice.finish_reason.is_none() {
                continue;
            }
            choices.push(json!({
                "text": text,
                "index": choice.index,
                "logprobs": choice.logprobs.as_ref().map(|lp| completion_logprobs(lp, 0)),
                "finish_reason": choice.finish_reason.map(finish_reason),
            }));
        }
        let usage = match &chunk.usage {
            ChunkUsage::Totals(usage) => Some(usage_json(usage)),
            ChunkUsage::Absent | ChunkUsage::Null => None,
        };
        if choices.is_empty() && usage.is_none() {
            return None;
        }
        let mut value = json!({
            "id": chunk.id.replacen("chatcmpl-", "cmpl-", 1),
            "object": "text_completion",
            "created": chunk.created,
            "model": chunk.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            value["usage"] = usage;
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::common::signatures::NoMemory;
    use crate::gemini::GenerateContentResponse;
    use crate::openai::chat::request::translate_chat_request;
    use crate::openai::chat::response::{ResponseContext, chat_completion};
    use crate::openai::chat::stream::{StreamContext, StreamItem, StreamTranslator};

    fn request(value: Value) -> CompletionRequest {
        serde_json::from_value(value).unwrap()
    }

    fn refused(value: Value) -> String {
        match plan(&request(value)) {
            Err(TranslateError::InvalidRequest { param, .. }) => param.unwrap_or_default(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_prompt_is_one_user_turn_with_the_sampling_settings() {
        let planned = plan(&request(
            json!({"model": "gemini-2.5-flash", "prompt": ["Say hi"],
            "max_tokens": 16, "temperature": 0.1, "stop": ["\n"], "echo": true}),
        ))
        .unwrap();
        assert_eq!(planned.echo.as_deref(), Some("Say hi"));
        let body = translate_chat_request(&planned.chat, &NoMemory)
            .unwrap()
            .body;
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "Say hi"}]}])
        );
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 16);
        assert_eq!(body["generationConfig"]["stopSequences"], json!(["\n"]));
    }

    #[test]
    fn what_gemini_cannot_do_is_refused_naming_the_field() {
        assert_eq!(
            refused(json!({"model": "m", "prompt": ["a", "b"]})),
            "prompt"
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": [1, 2, 3]})),
            "prompt"
        );
        assert_eq!(refused(json!({"model": "m", "prompt": {"x": 1}})), "prompt");
        assert_eq!(
            refused(json!({"model": "m", "prompt": "a", "suffix": "b"})),
            "suffix"
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": "a", "best_of": 3})),
            "best_of"
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": "a", "logprobs": 6})),
            "logprobs"
        );
    }

    #[test]
    fn answers_become_text_completions_with_echo_and_logprobs() {
        let answer: GenerateContentResponse = serde_json::from_value(json!({
            "candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": " there"}]},
                "finishReason": "MAX_TOKENS",
                "logprobsResult": {"chosenCandidates": [{"token": " there", "logProbability": -0.5}],
                    "topCandidates": [{"candidates": [{"token": " there", "logProbability": -0.5}, {"token": " you", "logProbability": -1.5}]}]}}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1, "totalTokenCount": 3},
            "responseId": "abc"})).unwrap();
        let context = ResponseContext {
            model: "gemini-2.5-flash".into(),
            created: 7,
            logprobs: true,
        };
        let (chat, _) = chat_completion(&answer, &context, &mut || "id".to_owned()).unwrap();
        let completion = completion_from_chat(&chat, Some("Hi"));
        assert_eq!(completion["object"], "text_completion");
        assert!(
            completion["id"].as_str().unwrap().starts_with("cmpl-"),
            "{completion}"
        );
        let choice = &completion["choices"][0];
        assert_eq!(choice["text"], "Hi there");
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(choice["logprobs"]["tokens"], json!([" there"]));
        assert_eq!(choice["logprobs"]["text_offset"], json!([2]));
        assert_eq!(choice["logprobs"]["top_logprobs"][0][" you"], -1.5);
        assert_eq!(completion["usage"]["total_tokens"], 3);
    }

    #[test]
    fn streamed_chunks_carry_text_echo_once_and_the_usage_chunk() {
        let mut translator = StreamTranslator::new(StreamContext {
            model: "gemini-2.5-flash".into(),
            created: 7,
            include_usage: true,
        });
        let mut converter = CompletionChunks::new(Some("Q: ".into()));
        let mut out = Vec::new();
        let mut items = translator.on_event(
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"A"}]},"index":0}]}"#,
            &mut || "c".to_owned(),
        );
        items.extend(translator.on_event(
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"B"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2,"totalTokenCount":3}}"#,
            &mut || "c".to_owned(),
        ));
        items.extend(translator.finish());
        for item in &items {
            match item {
                StreamItem::Chunk(chunk) => out.extend(converter.convert(chunk)),
                StreamItem::Done => out.push(json!("[DONE]")),
                StreamItem::Error(error) => panic!("{error:?}"),
            }
        }
        let texts: Vec<&str> = out
            .iter()
            .flat_map(|chunk| chunk["choices"].as_array().into_iter().flatten())
            .map(|choice| choice["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts.concat(), "Q: AB");
        assert_eq!(out[out.len() - 2]["usage"]["total_tokens"], 3);
        assert_eq!(out[out.len() - 2]["choices"], json!([]));
        assert_eq!(out.last().unwrap(), &json!("[DONE]"));
        assert!(
            out.iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop")
        );
    }
}
