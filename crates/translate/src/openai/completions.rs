//! OpenAI's legacy Completions API (`/v1/completions`), which LlamaIndex's `OpenAILike`, older
//! LangChain `OpenAI` LLMs and many editor plugins still call.
//!
//! A completion is a chat turn with one user message: the request becomes a chat request (so
//! every rule of the chat translation applies) and the chat answer becomes a `text_completion`
//! (streamed: `text_completion` chunks ending with `[DONE]`). Several prompts are several chat
//! requests, whose choices are numbered prompt after prompt (`n` choices per prompt), as OpenAI
//! numbers them. What has no Gemini equivalent is refused naming the field: token-id prompts,
//! `suffix` (fill-in-the-middle), `best_of` above 1 and `logit_bias`.
//!
//! Unlike OpenAI (16 tokens), no default `max_tokens` is imposed: a client that sets none gets
//! the model's whole answer, as from chat.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::TranslateError;
use crate::openai::chat::types::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkUsage, FinishReason, Usage,
};

/// OpenAI caps `logprobs` of a completion at 5.
const MAX_LOGPROBS: u32 = 5;
/// Prompts in one request: each is an upstream call.
pub const MAX_PROMPTS: usize = 16;

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

/// One prompt of a completion request as a chat request, and the prompt to echo back.
#[derive(Debug)]
pub struct PromptPlan {
    /// The chat request to translate.
    pub chat: ChatCompletionRequest,
    /// The prompt, when the client asked for it to be repeated before the answer.
    pub echo: Option<String>,
}

/// Plans a completion: one chat request per prompt.
pub fn plan(request: &CompletionRequest) -> Result<Vec<PromptPlan>, TranslateError> {
    let prompts = prompt_texts(request.prompt.as_ref())?;
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
    if request.best_of.is_some_and(|best_of| best_of > 1) {
        return Err(TranslateError::invalid(
            "'best_of' above 1 is not supported: Gemini returns every candidate it generates (use 'n').",
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
    prompts
        .into_iter()
        .map(|prompt| {
            Ok(PromptPlan {
                chat: chat_request(request, &prompt)?,
                echo: request.echo.unwrap_or(false).then_some(prompt),
            })
        })
        .collect()
}

/// The chat request asking for the completion of `prompt`.
fn chat_request(
    request: &CompletionRequest,
    prompt: &str,
) -> Result<ChatCompletionRequest, TranslateError> {
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
    serde_json::from_value(Value::Object(chat)).map_err(|error| TranslateError::InvalidRequest {
        message: format!("Invalid request: {error}."),
        param: None,
    })
}

/// The prompts as texts: a string, or a list of strings.
fn prompt_texts(prompt: Option<&Value>) -> Result<Vec<String>, TranslateError> {
    let not_text =
        || TranslateError::invalid("'prompt' must be a string or a list of strings.", "prompt");
    match prompt {
        // OpenAI's default prompt is `<|endoftext|>`, the start of a document: Gemini has no
        // such token, so a missing prompt asks for text from nothing.
        None | Some(Value::Null) => Ok(vec![String::new()]),
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) => {
            if matches!(items.first(), Some(Value::Number(_) | Value::Array(_))) {
                return Err(TranslateError::invalid(
                    "Prompts of token ids are not supported: Gemini reads text. Send the prompt as a string.",
                    "prompt",
                ));
            }
            if items.len() > MAX_PROMPTS {
                return Err(TranslateError::invalid(
                    format!("At most {MAX_PROMPTS} prompts may be sent in one request."),
                    "prompt",
                ));
            }
            if items.is_empty() {
                return Ok(vec![String::new()]);
            }
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned).ok_or_else(not_text))
                .collect()
        }
        Some(_) => Err(not_text()),
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

/// The chat completions of a request's prompts (in order, each with its echo) as one
/// `text_completion` named `id`.
pub fn completion_from_chats(id: &str, answers: &[(ChatCompletion, Option<String>)]) -> Value {
    let mut choices = Vec::new();
    let mut usage = Usage::default();
    let mut base = 0;
    for (chat, echo) in answers {
        let prefix = echo.as_deref().unwrap_or("");
        for choice in &chat.choices {
            let text = format!(
                "{prefix}{}",
                choice.message.content.as_deref().unwrap_or("")
            );
            choices.push(json!({
                "text": text,
                "index": base + choice.index,
                "logprobs": choice.logprobs.as_ref().map(|lp| completion_logprobs(lp, prefix.chars().count())),
                "finish_reason": finish_reason(choice.finish_reason),
            }));
        }
        base += u32::try_from(chat.choices.len()).unwrap_or(u32::MAX);
        add_usage(&mut usage, &chat.usage);
    }
    let (created, model) = answers
        .first()
        .map(|(chat, _)| (chat.created, chat.model.clone()))
        .unwrap_or_default();
    json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_json(&usage),
    })
}

fn add_usage(total: &mut Usage, usage: &Usage) {
    total.prompt_tokens += usage.prompt_tokens;
    total.completion_tokens += usage.completion_tokens;
    total.total_tokens += usage.total_tokens;
    total.completion_tokens_details.reasoning_tokens +=
        usage.completion_tokens_details.reasoning_tokens;
}

/// Turns the chunks of the streamed chat completions of a request's prompts, one prompt after
/// the other, into `text_completion` chunks under one id; the usage of every prompt is added up
/// into one last usage chunk.
#[derive(Debug)]
pub struct CompletionChunks {
    id: String,
    created: u64,
    model: String,
    /// Choices per prompt (`n`): prompt `p`'s choice `i` is choice `p * n + i`.
    per_prompt: u32,
    /// The prompt being streamed and its echo (when `echo`).
    prompt: u32,
    echo: Option<String>,
    echoed: Vec<u32>,
    usage: Option<Usage>,
}

impl CompletionChunks {
    /// A converter for a completion `id` with `per_prompt` choices per prompt.
    pub fn new(id: String, created: u64, model: String, per_prompt: u32) -> Self {
        Self {
            id,
            created,
            model,
            per_prompt: per_prompt.max(1),
            prompt: 0,
            echo: None,
            echoed: Vec::new(),
            usage: None,
        }
    }

    /// The next prompt starts (number `prompt`), repeating `echo` before its text.
    pub fn start_prompt(&mut self, prompt: u32, echo: Option<String>) {
        self.prompt = prompt;
        self.echo = echo;
        self.echoed.clear();
    }

    /// A chat chunk as a completion chunk; `None` when it carries nothing a completion shows
    /// (the role announcement, thoughts, usage: see [`Self::usage_chunk`]).
    pub fn convert(&mut self, chunk: &ChatCompletionChunk) -> Option<Value> {
        if let ChunkUsage::Totals(usage) = &chunk.usage {
            add_usage(self.usage.get_or_insert_with(Usage::default), usage);
        }
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
                "index": self.prompt * self.per_prompt + choice.index,
                "logprobs": choice.logprobs.as_ref().map(|lp| completion_logprobs(lp, 0)),
                "finish_reason": choice.finish_reason.map(finish_reason),
            }));
        }
        if choices.is_empty() {
            return None;
        }
        Some(json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }))
    }

    /// The last chunk, with no choices and every prompt's usage (when usage was asked for).
    pub fn usage_chunk(&self) -> Option<Value> {
        let usage = self.usage.as_ref()?;
        Some(json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_json(usage),
        }))
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
    fn each_prompt_is_one_user_turn_with_the_sampling_settings() {
        let planned = plan(&request(
            json!({"model": "gemini-2.5-flash", "prompt": ["Say hi", "Say bye"],
            "max_tokens": 16, "temperature": 0.1, "stop": ["\n"], "echo": true}),
        ))
        .unwrap();
        assert_eq!(planned.len(), 2);
        assert_eq!(planned[1].echo.as_deref(), Some("Say bye"));
        let translated = translate_chat_request(planned[0].chat.clone(), &NoMemory).unwrap();
        let body = serde_json::to_value(translated.body).unwrap();
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "Say hi"}]}])
        );
        assert_eq!(body["generationConfig"]["maxOutputTokens"], 16);
        assert_eq!(body["generationConfig"]["stopSequences"], json!(["\n"]));
        // No default length: OpenAI's 16 tokens would cut the answer of a client that sets none.
        let plain = plan(&request(
            json!({"model": "gemini-2.5-flash", "prompt": "x"}),
        ))
        .unwrap();
        let translated = translate_chat_request(plain[0].chat.clone(), &NoMemory).unwrap();
        let body = serde_json::to_value(translated.body).unwrap();
        assert!(
            body["generationConfig"].get("maxOutputTokens").is_none(),
            "{body}"
        );
    }

    #[test]
    fn what_gemini_cannot_do_is_refused_naming_the_field() {
        assert_eq!(
            refused(json!({"model": "m", "prompt": vec!["a"; 17]})),
            "prompt"
        );
        assert_eq!(refused(json!({"model": "m", "prompt": ["a", 2]})), "prompt");
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
            refused(json!({"model": "m", "prompt": "a", "best_of": 2, "n": 2})),
            "best_of"
        );
        assert_eq!(
            refused(json!({"model": "m", "prompt": "a", "logprobs": 6})),
            "logprobs"
        );
        let plan = plan(&request(
            json!({"model": "gemini-2.5-flash", "prompt": "a", "logit_bias": {"1": 5}}),
        ))
        .unwrap();
        assert!(matches!(
            translate_chat_request(plan[0].chat.clone(), &NoMemory),
            Err(TranslateError::InvalidRequest { param: Some(p), .. }) if p == "logit_bias"
        ));
    }

    #[test]
    fn answers_become_one_text_completion_with_echo_logprobs_and_summed_usage() {
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
        let completion =
            completion_from_chats("cmpl-1", &[(chat.clone(), Some("Hi".into())), (chat, None)]);
        assert_eq!(completion["object"], "text_completion");
        assert_eq!(completion["id"], "cmpl-1");
        assert_eq!(completion["choices"][1]["index"], 1);
        assert_eq!(completion["choices"][1]["text"], " there");
        assert_eq!(completion["usage"]["total_tokens"], 6);
        let choice = &completion["choices"][0];
        assert_eq!(choice["text"], "Hi there");
        assert_eq!(choice["finish_reason"], "length");
        assert_eq!(choice["logprobs"]["tokens"], json!([" there"]));
        assert_eq!(choice["logprobs"]["text_offset"], json!([2]));
        assert_eq!(choice["logprobs"]["top_logprobs"][0][" you"], -1.5);
    }

    #[test]
    fn streamed_chunks_carry_text_echo_once_numbered_by_prompt_and_one_usage_chunk() {
        let mut translator = StreamTranslator::new(StreamContext {
            model: "gemini-2.5-flash".into(),
            created: 7,
            include_usage: true,
        });
        let mut converter = CompletionChunks::new("cmpl-1".into(), 7, "gemini-2.5-flash".into(), 1);
        converter.start_prompt(1, Some("Q: ".into()));
        let mut items = translator.on_event(
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"A"}]},"index":0}]}"#,
            &mut || "c".to_owned(),
        );
        items.extend(translator.on_event(
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"B"}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2,"totalTokenCount":3}}"#,
            &mut || "c".to_owned(),
        ));
        items.extend(translator.finish());
        let mut out = Vec::new();
        for item in &items {
            match item {
                StreamItem::Chunk(chunk) => out.extend(converter.convert(chunk)),
                StreamItem::Done => {}
                StreamItem::Error(error) => panic!("{error:?}"),
            }
        }
        out.extend(converter.usage_chunk());
        let texts: Vec<&str> = out
            .iter()
            .flat_map(|chunk| chunk["choices"].as_array().into_iter().flatten())
            .map(|choice| choice["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts.concat(), "Q: AB");
        assert_eq!(out[0]["choices"][0]["index"], 1);
        assert_eq!(out.last().unwrap()["usage"]["total_tokens"], 3);
        assert_eq!(out.last().unwrap()["choices"], json!([]));
        assert!(
            out.iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop")
        );
    }
}
