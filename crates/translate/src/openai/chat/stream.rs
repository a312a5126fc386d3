//! The stream translator: Gemini stream events in, OpenAI `chat.completion.chunk`s out
//! (translation.md §6). A pure state machine: one step per upstream event, one finish step at
//! the end of the upstream stream, no I/O, so every rule is tested without a runtime.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::gemini::{FinishReason as GeminiFinish, GenerateContentResponse, UsageMetadata};
use crate::openai::chat::response::{
    EmittedCall, PartOutput, convert_part, map_finish_reason, map_usage,
};
use crate::openai::chat::types::{
    ChatCompletionChunk, ChunkChoice, ChunkUsage, Delta, FinishReason, ToolCallOut,
};
use crate::openai::errors::{OpenAiError, from_stream_error};

/// What the stream needs from the request.
#[derive(Debug, Clone)]
pub struct StreamContext {
    /// The normalised requested model.
    pub model: String,
    /// Unix seconds, taken by the gateway.
    pub created: u64,
    /// Whether to end with a usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// One thing to send downstream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A chunk.
    Chunk(ChatCompletionChunk),
    /// An error payload; the stream ends after it, without `[DONE]`.
    Error(OpenAiError),
    /// The `[DONE]` line.
    Done,
}

/// How a choice ended upstream.
#[derive(Debug, Clone, Copy)]
enum Finish {
    Reason(Option<GeminiFinish>),
    Blocked,
}

#[derive(Debug, Default)]
struct ChoiceState {
    role_sent: bool,
    next_tool_index: u32,
    saw_function_call: bool,
    finish: Option<Finish>,
}

/// The state of one streamed completion.
pub struct StreamTranslator {
    context: StreamContext,
    id: Option<String>,
    last_usage: Option<UsageMetadata>,
    choices: BTreeMap<u32, ChoiceState>,
    emitted: Vec<EmittedCall>,
    ended: bool,
}

impl StreamTranslator {
    /// A translator for one completion.
    pub fn new(context: StreamContext) -> Self {
        Self {
            context,
            id: None,
            last_usage: None,
            choices: BTreeMap::new(),
            emitted: Vec::new(),
            ended: false,
        }
    }

    /// Whether an error or `[DONE]` was produced: nothing more may be sent.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Tool calls sent so far (to remember their signatures), drained.
    pub fn take_emitted_calls(&mut self) -> Vec<EmittedCall> {
        std::mem::take(&mut self.emitted)
    }

    /// The last usage snapshot the upstream sent (cumulative: never summed).
    pub fn usage(&self) -> Option<&UsageMetadata> {
        self.last_usage.as_ref()
    }

    /// Translates one upstream event (the `data:` of one SSE event).
    pub fn on_event(&mut self, data: &str, new_id: &mut dyn FnMut() -> String) -> Vec<StreamItem> {
        if self.ended {
            return Vec::new();
        }
        let value: Value = match serde_json::from_str(data) {
            Ok(value) => value,
            Err(_) => {
                return self.fail(OpenAiError::upstream_stream(
                    "The upstream sent an unreadable stream event.",
                ));
            }
        };
        // Gemini may report an error inside a 200 stream.
        if let Some(error) = value.get("error") {
            return self.fail(from_stream_error(error));
        }
        let Ok(event) = serde_json::from_value::<GenerateContentResponse>(value) else {
            return self.fail(OpenAiError::upstream_stream(
                "The upstream sent an unreadable stream event.",
            ));
        };
        if self.id.is_none() {
            self.id = Some(event.completion_id(new_id));
        }
        if let Some(usage) = &event.usage_metadata {
            self.last_usage = Some(usage.clone());
        }
        let mut items = Vec::new();
        let blocked = event.is_prompt_blocked();
        if event.candidates.is_empty() && blocked {
            self.role_chunk(0, &mut items);
            if let Some(state) = self.choices.get_mut(&0) {
                state.finish = Some(Finish::Blocked);
            }
        }
        for candidate in &event.candidates {
            let index = candidate.index;
            self.role_chunk(index, &mut items);
            let parts = candidate
                .content
                .as_ref()
                .map(|c| c.parts.as_slice())
                .unwrap_or_default();
            for part in parts {
                let delta = match convert_part(part, new_id) {
                    PartOutput::Content(text) => Delta {
                        content: Some(text),
                        ..Delta::default()
                    },
                    PartOutput::Reasoning(text) => Delta {
                        reasoning_content: Some(text),
                        ..Delta::default()
                    },
                    PartOutput::ToolCall(call, remembered) => {
                        self.emitted.push(remembered);
                        let state = self.choices.entry(index).or_default();
                        state.saw_function_call = true;
                        let tool_index = state.next_tool_index;
                        state.next_tool_index += 1;
                        // Gemini delivers each call whole: id, name and complete arguments go
                        // in one delta, always with its `index`.
                        let call = ToolCallOut {
                            index: Some(tool_index),
                            ..call
                        };
                        Delta {
                            tool_calls: Some(vec![call]),
                            ..Delta::default()
                        }
                    }
                    PartOutput::Nothing => continue,
                };
                items.push(StreamItem::Chunk(self.chunk(vec![ChunkChoice {
                    index,
                    delta,
                    logprobs: None,
                    finish_reason: None,
                }])));
            }
            // Gemini can send more frames after a finish reason (usage, late tool activity),
            // so the finish chunk waits for the end of the stream.
            if candidate.finish_reason.is_some() {
                self.choices.entry(index).or_default().finish =
                    Some(Finish::Reason(candidate.finish_reason));
            }
        }
        items
    }

    /// The end of the upstream stream: finish chunks, the usage chunk and `[DONE]`, or an error
    /// when the upstream stopped before finishing a choice.
    pub fn finish(&mut self) -> Vec<StreamItem> {
        if self.ended {
            return Vec::new();
        }
        if self.choices.is_empty() || self.choices.values().any(|state| state.finish.is_none()) {
            return self.fail(OpenAiError::upstream_stream(
                "The upstream stream ended before the answer was complete.",
            ));
        }
        let mut items = Vec::new();
        let finishes: Vec<(u32, FinishReason)> = self
            .choices
            .iter()
            .map(|(index, state)| {
                let reason = match state.finish {
                    Some(Finish::Blocked) => FinishReason::ContentFilter,
                    Some(Finish::Reason(reason)) => {
                        map_finish_reason(reason, state.saw_function_call)
                    }
                    None => FinishReason::Stop,
                };
                (*index, reason)
            })
            .collect();
        for (index, reason) in finishes {
            items.push(StreamItem::Chunk(self.chunk(vec![ChunkChoice {
                index,
                delta: Delta::default(),
                logprobs: None,
                finish_reason: Some(reason),
            }])));
        }
        if self.context.include_usage {
            let mut usage_chunk = self.chunk(Vec::new());
            usage_chunk.usage = ChunkUsage::Totals(map_usage(self.last_usage.as_ref()));
            items.push(StreamItem::Chunk(usage_chunk));
        }
        self.ended = true;
        items.push(StreamItem::Done);
        items
    }

    fn fail(&mut self, error: OpenAiError) -> Vec<StreamItem> {
        self.ended = true;
        vec![StreamItem::Error(error)]
    }

    fn role_chunk(&mut self, index: u32, items: &mut Vec<StreamItem>) {
        let state = self.choices.entry(index).or_default();
        if state.role_sent {
            return;
        }
        state.role_sent = true;
        let delta = Delta {
            role: Some("assistant"),
            content: Some(String::new()),
            ..Delta::default()
        };
        items.push(StreamItem::Chunk(self.chunk(vec![ChunkChoice {
            index,
            delta,
            logprobs: None,
            finish_reason: None,
        }])));
    }

    fn chunk(&self, choices: Vec<ChunkChoice>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone().unwrap_or_else(|| "chatcmpl-".to_owned()),
            object: "chat.completion.chunk",
            created: self.context.created,
            model: self.context.model.clone(),
            choices,
            usage: if self.context.include_usage {
                ChunkUsage::Null
            } else {
                ChunkUsage::Absent
            },
        }
    }
}
