//! Gemini answers as Responses output, event by event: a pure state machine that takes Gemini's
//! stream events (or one whole answer, as a single event) and produces OpenAI's Responses events
//! in the order its SDKs require (see the module docs of `responses`), while building the final
//! `Response`. A whole answer is the same machine with its events discarded, so streamed and
//! non-streamed output never differ.
//!
//! Items, in the order Gemini's parts come: a `reasoning` item for thought summaries (only when
//! the client asked for a summary) and for the thought signature of a function call (Gemini 3
//! must get it back; it rides in `encrypted_content`), a `message` item for text, a
//! `function_call` item per call, and a `web_search_call` item when the answer was grounded by
//! Google Search, whose spans become `url_citation` annotations of the text.

use serde_json::{Value, json};

use super::types::{
    Annotation, IncompleteDetails, InputTokensDetails, OutputItem, OutputText, OutputTokensDetails,
    Response, ResponseError, Source, Status, SummaryText, Usage, WebSearchAction,
};
use crate::common::signatures::RememberedCall;
use crate::gemini::{FinishReason, GenerateContentResponse, GroundingMetadata, UsageMetadata};

/// What the client asked to see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputOptions {
    /// Thought summaries as `reasoning` items (`reasoning.summary`).
    pub summaries: bool,
    /// Thought signatures shown in `encrypted_content` (`include:
    /// ["reasoning.encrypted_content"]`); the stored response keeps them either way.
    pub signatures: bool,
}

/// The item being written.
#[derive(Debug)]
enum Open {
    Reasoning { index: usize, text: String },
    Message { index: usize, text: String },
}

/// The state of one response.
pub struct ResponseStream {
    response: Response,
    options: OutputOptions,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    usage: Option<UsageMetadata>,
    finish: Option<FinishReason>,
    blocked: bool,
    grounding: Option<GroundingMetadata>,
    remembered: Vec<(String, RememberedCall)>,
    ended: bool,
    /// A stream must bring a finish reason before it ends; a whole answer need not.
    expect_finish: bool,
}

/// New ids: `new_id("msg")` gives `msg_…`.
pub type NewId<'a> = dyn FnMut(&str) -> String + 'a;

impl ResponseStream {
    /// A machine filling `frame` (from [`Response::started`]).
    pub fn new(frame: Response, options: OutputOptions) -> Self {
        Self {
            response: frame,
            options,
            sequence: 0,
            started: false,
            open: None,
            usage: None,
            finish: None,
            blocked: false,
            grounding: None,
            remembered: Vec::new(),
            ended: false,
            expect_finish: true,
        }
    }

    /// Whether the last event (completed, incomplete or failed) was produced.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// The response as it stands, with every signature (for storing).
    pub fn response(&self) -> &Response {
        &self.response
    }

    /// The latest usage the upstream reported.
    pub fn usage(&self) -> Option<&UsageMetadata> {
        self.usage.as_ref()
    }

    /// The function calls returned so far, for the gateway's memory of signatures.
    pub fn take_remembered(&mut self) -> Vec<(String, RememberedCall)> {
        std::mem::take(&mut self.remembered)
    }

    fn event(&mut self, kind: &str, mut fields: Value) -> Value {
        if let Value::Object(map) = &mut fields {
            map.insert("type".into(), json!(kind));
            map.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        fields
    }

    /// The response as the client may see it (signatures only when asked for).
    pub fn visible(&self) -> Response {
        visible(&self.response, self.options.signatures)
    }

    fn item_json(&self, item: &OutputItem) -> Value {
        let mut value = serde_json::to_value(item).unwrap_or_default();
        if !self.options.signatures
            && let Some(object) = value.as_object_mut()
        {
            object.remove("encrypted_content");
        }
        value
    }

    /// `response.created` and `response.in_progress`, once, before anything else.
    fn start(&mut self, events: &mut Vec<Value>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = serde_json::to_value(self.visible()).unwrap_or_default();
        let created = self.event("response.created", json!({"response": response}));
        events.push(created);
        let in_progress = self.event("response.in_progress", json!({"response": response}));
        events.push(in_progress);
    }

    /// Takes one upstream event (its JSON data); an upstream error event fails the response.
    pub fn on_data(&mut self, data: &str, new_id: &mut NewId<'_>) -> Vec<Value> {
        if self.ended {
            return Vec::new();
        }
        let value: Value = match serde_json::from_str(data) {
            Ok(value) => value,
            Err(_) => return self.fail("server_error", "The upstream sent an unreadable event."),
        };
        if let Some(error) = value.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The upstream failed.")
                .to_owned();
            let code = match error.get("code").and_then(Value::as_u64) {
                Some(429) => "rate_limit_exceeded",
                _ => "server_error",
            };
            return self.fail(code, &message);
        }
        match serde_json::from_value::<GenerateContentResponse>(value) {
            Ok(answer) => self.on_event(&answer, new_id),
            Err(_) => self.fail("server_error", "The upstream sent an unreadable event."),
        }
    }

    /// Takes one upstream answer or stream event.
    pub fn on_event(
        &mut self,
        answer: &GenerateContentResponse,
        new_id: &mut NewId<'_>,
    ) -> Vec<Value> {
        let mut events = Vec::new();
        if self.ended {
            return events;
        }
        self.start(&mut events);
        if let Some(usage) = &answer.usage_metadata {
            self.usage = Some(usage.clone());
        }
        if answer.is_prompt_blocked() {
            self.blocked = true;
        }
        // Responses has one answer: the first candidate.
        let Some(candidate) = answer.candidates.iter().find(|c| c.index == 0) else {
            return events;
        };
        for part in candidate.content.iter().flat_map(|content| &content.parts) {
            if let Some(call) = &part.function_call {
                self.close(&mut events);
                if let Some(signature) = &part.thought_signature {
                    // The call's signature rides in a reasoning item just before it.
                    let id = new_id("rs");
                    let item = OutputItem::Reasoning {
                        id,
                        summary: Vec::new(),
                        encrypted_content: Some(signature.clone()),
                    };
                    self.add_and_finish(item, &mut events);
                }
                let upstream_id = call.id.clone().filter(|id| !id.is_empty());
                let call_id = upstream_id.clone().unwrap_or_else(|| new_id("call"));
                let arguments = call
                    .args
                    .as_ref()
                    .map_or_else(|| "{}".to_owned(), Value::to_string);
                self.remembered.push((
                    call_id.clone(),
                    RememberedCall {
                        signature: part.thought_signature.clone(),
                        upstream_id: upstream_id.is_some(),
                    },
                ));
                let id = new_id("fc");
                let index = self.response.output.len();
                let added = OutputItem::FunctionCall {
                    id: id.clone(),
                    call_id: call_id.clone(),
                    name: call.name.clone(),
                    // The deltas follow: clients append them to what `added` carried.
                    arguments: String::new(),
                    status: Status::InProgress,
                };
                self.response.output.push(added.clone());
                let item = self.item_json(&added);
                let e = self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                events.push(e);
                let e = self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": arguments}),
                );
                events.push(e);
                let e = self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "arguments": arguments}),
                );
                events.push(e);
                let done = OutputItem::FunctionCall {
                    id,
                    call_id,
                    name: call.name.clone(),
                    arguments,
                    status: Status::Completed,
                };
                self.response.output[index] = done.clone();
                let item = self.item_json(&done);
                let e = self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                events.push(e);
                continue;
            }
            let Some(text) = part.text.as_deref().filter(|text| !text.is_empty()) else {
                continue;
            };
            if part.thought {
                if self.options.summaries {
                    self.reasoning_delta(text, new_id, &mut events);
                }
            } else {
                self.text_delta(text, new_id, &mut events);
            }
        }
        if let Some(grounding) = &candidate.grounding_metadata {
            self.grounding = Some(grounding.clone());
        }
        if let Some(reason) = candidate.finish_reason {
            self.finish = Some(reason);
        }
        events
    }

    fn reasoning_delta(&mut self, text: &str, new_id: &mut NewId<'_>, events: &mut Vec<Value>) {
        if !matches!(self.open, Some(Open::Reasoning { .. })) {
            self.close(events);
            let index = self.response.output.len();
            let item = OutputItem::Reasoning {
                id: new_id("rs"),
                summary: Vec::new(),
                encrypted_content: None,
            };
            let id = item.id().to_owned();
            self.response.output.push(item.clone());
            let item = self.item_json(&item);
            let e = self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            events.push(e);
            let e = self.event(
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0,
                    "part": {"type": "summary_text", "text": ""}}),
            );
            events.push(e);
            self.open = Some(Open::Reasoning {
                index,
                text: String::new(),
            });
        }
        if let Some(Open::Reasoning { index, text: all }) = &mut self.open {
            all.push_str(text);
            let index = *index;
            let id = self.response.output[index].id().to_owned();
            let e = self.event(
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": text}),
            );
            events.push(e);
        }
    }

    fn text_delta(&mut self, text: &str, new_id: &mut NewId<'_>, events: &mut Vec<Value>) {
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(events);
            let index = self.response.output.len();
            let item = OutputItem::Message {
                id: new_id("msg"),
                status: Status::InProgress,
                role: "assistant".to_owned(),
                content: Vec::new(),
            };
            let id = item.id().to_owned();
            self.response.output.push(item.clone());
            let item = self.item_json(&item);
            let e = self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            );
            events.push(e);
            let part = serde_json::to_value(OutputText::new(String::new(), Vec::new()))
                .unwrap_or_default();
            let e = self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
            );
            events.push(e);
            self.open = Some(Open::Message {
                index,
                text: String::new(),
            });
        }
        if let Some(Open::Message { index, text: all }) = &mut self.open {
            all.push_str(text);
            let index = *index;
            let id = self.response.output[index].id().to_owned();
            let e = self.event(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                    "delta": text, "logprobs": []}),
            );
            events.push(e);
        }
    }

    /// Ends the item being written.
    fn close(&mut self, events: &mut Vec<Value>) {
        match self.open.take() {
            None => {}
            Some(Open::Reasoning { index, text }) => {
                let id = self.response.output[index].id().to_owned();
                let e = self.event(
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                events.push(e);
                let e = self.event(
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0,
                        "part": {"type": "summary_text", "text": text}}),
                );
                events.push(e);
                let item = OutputItem::Reasoning {
                    id,
                    summary: vec![SummaryText::new(text)],
                    encrypted_content: None,
                };
                self.response.output[index] = item.clone();
                let item = self.item_json(&item);
                let e = self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                events.push(e);
            }
            Some(Open::Message { index, text }) => {
                let id = self.response.output[index].id().to_owned();
                let annotations = self.citations(&text);
                for (annotation_index, annotation) in annotations.iter().enumerate() {
                    let e = self.event(
                        "response.output_text.annotation.added",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                            "annotation_index": annotation_index, "annotation": annotation}),
                    );
                    events.push(e);
                }
                let e = self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                        "text": text, "logprobs": []}),
                );
                events.push(e);
                let part = OutputText::new(text, annotations);
                let part_json = serde_json::to_value(&part).unwrap_or_default();
                let e = self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part_json}),
                );
                events.push(e);
                let item = OutputItem::Message {
                    id,
                    status: Status::Completed,
                    role: "assistant".to_owned(),
                    content: vec![part],
                };
                self.response.output[index] = item.clone();
                let item = self.item_json(&item);
                let e = self.event(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item}),
                );
                events.push(e);
            }
        }
    }

    /// Adds a finished item at once (added, then done).
    fn add_and_finish(&mut self, item: OutputItem, events: &mut Vec<Value>) {
        let index = self.response.output.len();
        self.response.output.push(item.clone());
        let value = self.item_json(&item);
        let e = self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": value}),
        );
        events.push(e);
        let e = self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": value}),
        );
        events.push(e);
    }

    /// The `url_citation` annotations of `text` from the grounding metadata: Gemini counts
    /// bytes of UTF-8, OpenAI characters.
    fn citations(&self, text: &str) -> Vec<Annotation> {
        let Some(grounding) = &self.grounding else {
            return Vec::new();
        };
        let chars_before = |byte: usize| {
            let mut byte = byte.min(text.len());
            while !text.is_char_boundary(byte) {
                byte -= 1;
            }
            text[..byte].chars().count()
        };
        let mut annotations = Vec::new();
        for support in &grounding.grounding_supports {
            let (start, end) = (
                chars_before(support.segment.start_index),
                chars_before(support.segment.end_index),
            );
            if end <= start {
                continue;
            }
            for web in support
                .grounding_chunk_indices
                .iter()
                .filter_map(|&i| grounding.grounding_chunks.get(i))
                .filter_map(|chunk| chunk.web.as_ref())
            {
                annotations.push(Annotation {
                    kind: "url_citation".to_owned(),
                    start_index: start,
                    end_index: end,
                    url: web.uri.clone(),
                    title: web.title.clone(),
                });
            }
        }
        annotations
    }

    /// The end of the upstream stream: every item closed, then `response.completed` (or
    /// `response.incomplete` when the answer was cut or filtered).
    pub fn finish(&mut self, new_id: &mut NewId<'_>) -> Vec<Value> {
        if self.expect_finish && self.finish.is_none() && !self.blocked {
            // The upstream's stream ended without its finish reason: the answer may be cut.
            return self.fail(
                "server_error",
                "The upstream stream ended before the answer was complete.",
            );
        }
        let mut events = Vec::new();
        if self.ended {
            return events;
        }
        self.start(&mut events);
        self.close(&mut events);
        if let Some(grounding) = self.grounding.clone()
            && (!grounding.web_search_queries.is_empty() || !grounding.grounding_chunks.is_empty())
        {
            let sources = grounding
                .grounding_chunks
                .iter()
                .filter_map(|chunk| chunk.web.as_ref())
                .map(|web| Source {
                    kind: "url".to_owned(),
                    url: web.uri.clone(),
                })
                .collect();
            let item = OutputItem::WebSearchCall {
                id: new_id("ws"),
                status: Status::Completed,
                action: WebSearchAction {
                    kind: "search".to_owned(),
                    query: grounding
                        .web_search_queries
                        .first()
                        .cloned()
                        .unwrap_or_default(),
                    queries: grounding.web_search_queries.clone(),
                    sources,
                },
            };
            self.add_and_finish(item, &mut events);
        }
        let incomplete = if self.blocked {
            Some("content_filter")
        } else {
            match self.finish {
                Some(FinishReason::MaxTokens) => Some("max_output_tokens"),
                Some(
                    FinishReason::Safety
                    | FinishReason::Recitation
                    | FinishReason::Blocklist
                    | FinishReason::ProhibitedContent
                    | FinishReason::Spii
                    | FinishReason::ImageSafety
                    | FinishReason::ImageProhibitedContent
                    | FinishReason::ImageRecitation,
                ) => Some("content_filter"),
                _ => None,
            }
        };
        self.response.usage = Some(map_usage(self.usage.as_ref()));
        let kind = match incomplete {
            Some(reason) => {
                self.response.status = Status::Incomplete;
                self.response.incomplete_details = Some(IncompleteDetails {
                    reason: reason.to_owned(),
                });
                "response.incomplete"
            }
            None => {
                self.response.status = Status::Completed;
                "response.completed"
            }
        };
        self.response.completed_at = Some(self.response.created_at);
        let response = serde_json::to_value(self.visible()).unwrap_or_default();
        let e = self.event(kind, json!({"response": response}));
        events.push(e);
        self.ended = true;
        events
    }

    /// The response failed after it started: an `error` event, then `response.failed`.
    pub fn fail(&mut self, code: &str, message: &str) -> Vec<Value> {
        let mut events = Vec::new();
        if self.ended {
            return events;
        }
        self.start(&mut events);
        self.close(&mut events);
        let error = self.event(
            "error",
            json!({"error": {"type": code, "code": code, "message": message, "param": null}}),
        );
        events.push(error);
        self.response.status = Status::Failed;
        self.response.error = Some(ResponseError {
            code: code.to_owned(),
            message: message.to_owned(),
        });
        self.response.usage = self.usage.as_ref().map(|usage| map_usage(Some(usage)));
        let response = serde_json::to_value(self.visible()).unwrap_or_default();
        let e = self.event("response.failed", json!({"response": response}));
        events.push(e);
        self.ended = true;
        events
    }
}

/// `response` without its signatures unless `signatures` is asked for.
pub fn visible(response: &Response, signatures: bool) -> Response {
    let mut response = response.clone();
    if !signatures {
        for item in &mut response.output {
            if let OutputItem::Reasoning {
                encrypted_content, ..
            } = item
            {
                *encrypted_content = None;
            }
        }
    }
    response
}

/// A whole Gemini answer as a finished response, and the calls to remember.
pub fn response_from_answer(
    frame: Response,
    options: OutputOptions,
    answer: &GenerateContentResponse,
    new_id: &mut NewId<'_>,
) -> (Response, Vec<(String, RememberedCall)>) {
    let mut machine = ResponseStream::new(frame, options);
    machine.expect_finish = false;
    machine.on_event(answer, new_id);
    machine.finish(new_id);
    let remembered = machine.take_remembered();
    (machine.response, remembered)
}

/// Gemini's token counts in OpenAI's shape: thinking is part of the output, as OpenAI counts
/// reasoning.
pub fn map_usage(usage: Option<&UsageMetadata>) -> Usage {
    let Some(usage) = usage else {
        return Usage::default();
    };
    let input = usage.prompt_token_count + usage.tool_use_prompt_token_count;
    let output = usage.candidates_token_count + usage.thoughts_token_count;
    Usage {
        input_tokens: input,
        input_tokens_details: InputTokensDetails {
            cached_tokens: usage.cached_content_token_count,
            cache_write_tokens: 0,
        },
        output_tokens: output,
        output_tokens_details: OutputTokensDetails {
            reasoning_tokens: usage.thoughts_token_count,
        },
        total_tokens: input + output,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::responses::types::CreateResponse;

    fn frame() -> Response {
        let request: CreateResponse =
            serde_json::from_value(json!({"model": "gemini-2.5-flash", "input": "x"})).unwrap();
        Response::started(
            &request,
            "resp_1".into(),
            "gemini-2.5-flash".into(),
            1_700_000_000,
        )
    }

    fn ids() -> impl FnMut(&str) -> String {
        let mut next = 0;
        move |prefix: &str| {
            next += 1;
            format!("{prefix}_{next}")
        }
    }

    fn kinds(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn streamed_text_follows_openais_event_order_with_counted_sequence_numbers() {
        let mut machine = ResponseStream::new(frame(), OutputOptions::default());
        let mut new_id = ids();
        let mut events = machine.on_data(
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]},"index":0}]}"#,
            &mut new_id,
        );
        events.extend(machine.on_data(
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"lo"}]},"finishReason":"STOP","index":0}],
               "usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"thoughtsTokenCount":4,"totalTokenCount":9}}"#,
            &mut new_id,
        ));
        events.extend(machine.finish(&mut new_id));
        assert_eq!(
            kinds(&events),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        for (index, event) in events.iter().enumerate() {
            assert_eq!(event["sequence_number"], index as u64);
        }
        let done = &events[9]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][0]["content"][0]["annotations"], json!([]));
        assert_eq!(
            done["usage"],
            json!({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 9})
        );
        assert_eq!(events[0]["response"]["status"], "in_progress");
        assert!(machine.is_ended());
        assert!(machine.on_data("{}", &mut new_id).is_empty());
    }

    #[test]
    fn a_signed_call_brings_its_signature_in_a_reasoning_item_shown_only_when_asked() {
        let answer: GenerateContentResponse = serde_json::from_value(json!({"candidates": [{"index": 0,
            "content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "SIG"}]},
            "finishReason": "STOP"}]}))
        .unwrap();
        let (hidden, remembered) =
            response_from_answer(frame(), OutputOptions::default(), &answer, &mut ids());
        assert_eq!(hidden.output.len(), 2);
        let OutputItem::FunctionCall {
            call_id,
            arguments,
            status,
            ..
        } = &hidden.output[1]
        else {
            panic!("{:?}", hidden.output);
        };
        assert_eq!(arguments, r#"{"city":"Paris"}"#);
        assert_eq!(*status, Status::Completed);
        assert_eq!(remembered[0].0, *call_id);
        assert_eq!(remembered[0].1.signature.as_deref(), Some("SIG"));
        // The stored form keeps the signature; the visible form hides it unless included.
        assert!(
            matches!(&hidden.output[0], OutputItem::Reasoning { encrypted_content: Some(s), .. } if s == "SIG")
        );
        assert!(matches!(
            &visible(&hidden, false).output[0],
            OutputItem::Reasoning {
                encrypted_content: None,
                ..
            }
        ));
        let mut machine = ResponseStream::new(frame(), OutputOptions::default());
        let events = machine.on_event(&answer, &mut ids());
        let added = events
            .iter()
            .find(|e| {
                e["type"] == "response.output_item.added" && e["item"]["type"] == "function_call"
            })
            .unwrap();
        assert_eq!(added["item"]["arguments"], "");
        assert!(
            events
                .iter()
                .all(|e| e["item"].get("encrypted_content").is_none())
        );
    }

    #[test]
    fn thoughts_become_summaries_only_when_asked_and_count_as_reasoning() {
        let answer: GenerateContentResponse = serde_json::from_value(json!({"candidates": [{"index": 0,
            "content": {"role": "model", "parts": [{"text": "Thinking…", "thought": true}, {"text": "42"}]},
            "finishReason": "STOP"}]}))
        .unwrap();
        let (without, _) =
            response_from_answer(frame(), OutputOptions::default(), &answer, &mut ids());
        assert_eq!(without.output.len(), 1);
        let asked = OutputOptions {
            summaries: true,
            signatures: false,
        };
        let (with, _) = response_from_answer(frame(), asked, &answer, &mut ids());
        assert!(
            matches!(&with.output[0], OutputItem::Reasoning { summary, .. } if summary[0].text == "Thinking…")
        );
        assert!(
            matches!(&with.output[1], OutputItem::Message { content, .. } if content[0].text == "42")
        );
    }

    #[test]
    fn grounding_becomes_a_web_search_item_and_citations_counted_in_characters() {
        // "Café ok": 'é' is two bytes, so bytes 6..8 are characters 5..7.
        let answer: GenerateContentResponse = serde_json::from_value(json!({"candidates": [{"index": 0,
            "content": {"role": "model", "parts": [{"text": "Café ok"}]}, "finishReason": "STOP",
            "groundingMetadata": {"webSearchQueries": ["cafe"],
                "groundingChunks": [{"web": {"uri": "https://example.com/a", "title": "example.com"}}],
                "groundingSupports": [{"segment": {"startIndex": 6, "endIndex": 8}, "groundingChunkIndices": [0, 7]}]}}]}))
        .unwrap();
        let (response, _) =
            response_from_answer(frame(), OutputOptions::default(), &answer, &mut ids());
        let OutputItem::Message { content, .. } = &response.output[0] else {
            panic!()
        };
        assert_eq!(content[0].annotations.len(), 1);
        assert_eq!(
            (
                content[0].annotations[0].start_index,
                content[0].annotations[0].end_index
            ),
            (5, 7)
        );
        assert!(
            matches!(&response.output[1], OutputItem::WebSearchCall { action, .. } if action.query == "cafe" && action.sources.len() == 1)
        );
    }

    #[test]
    fn cut_and_blocked_answers_are_incomplete_and_upstream_errors_fail_the_response() {
        let cut: GenerateContentResponse = serde_json::from_value(json!({"candidates": [{"index": 0,
            "content": {"role": "model", "parts": [{"text": "Once upon"}]}, "finishReason": "MAX_TOKENS"}]}))
        .unwrap();
        let (response, _) =
            response_from_answer(frame(), OutputOptions::default(), &cut, &mut ids());
        assert_eq!(response.status, Status::Incomplete);
        assert_eq!(
            response.incomplete_details.unwrap().reason,
            "max_output_tokens"
        );
        let blocked: GenerateContentResponse =
            serde_json::from_value(json!({"promptFeedback": {"blockReason": "SAFETY"}})).unwrap();
        let (response, _) =
            response_from_answer(frame(), OutputOptions::default(), &blocked, &mut ids());
        assert_eq!(
            response.incomplete_details.unwrap().reason,
            "content_filter"
        );

        let mut machine = ResponseStream::new(frame(), OutputOptions::default());
        let mut new_id = ids();
        let mut events = machine.on_data(
            r#"{"candidates":[{"content":{"parts":[{"text":"Hi"}]},"index":0}]}"#,
            &mut new_id,
        );
        events.extend(machine.on_data(r#"{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}"#, &mut new_id));
        let tail = &kinds(&events)[events.len() - 5..];
        assert_eq!(
            tail,
            [
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "error",
                "response.failed"
            ]
        );
        assert_eq!(
            events.last().unwrap()["response"]["error"]["code"],
            "rate_limit_exceeded"
        );
        assert!(machine.finish(&mut new_id).is_empty());
    }
}
