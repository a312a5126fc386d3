//! Every fixture pair of the spec through the converters: OpenAI requests to Gemini bodies,
//! Gemini answers to `chat.completion`s, Gemini SSE transcripts to chunk sequences. Tool-call ids
//! come from a counter, so outputs are compared exactly with the expected files; each output is
//! also kept as an insta snapshot.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use serde_json::{Value, json};
use translate::common::signatures::NoMemory;
use translate::gemini::sse::SseDecoder;
use translate::openai::chat::request::translate_chat_request;
use translate::openai::chat::response::{ResponseContext, chat_completion};
use translate::openai::chat::stream::{StreamContext, StreamItem, StreamTranslator};
use translate::openai::chat::types::ChatCompletionRequest;

fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{full}: {error}"))
}

fn json_fixture(path: &str) -> Value {
    serde_json::from_str(&fixture(path)).unwrap()
}

/// Ids `call_000000000000000000000001`, `…2`, … in emission order, as the fixtures number them.
fn counter() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("call_{n:024}")
    }
}

#[test]
fn request_fixtures_translate_to_their_gemini_bodies() {
    let names = [
        "req_basic_params",
        "req_tool_roundtrip",
        "req_multimodal_tools",
        "req_gemini3_missing_signature",
    ];
    for name in names {
        let pair = json_fixture(&format!("requests/{name}.json"));
        let request: ChatCompletionRequest =
            serde_json::from_value(pair["openai_request"].clone()).unwrap();
        let translated = translate_chat_request(request, &NoMemory).unwrap();
        assert_eq!(
            format!("/{}", translated.upstream_path()),
            pair["gemini_path"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(
            serde_json::to_value(&translated.body).unwrap(),
            pair["gemini_body"],
            "{name}"
        );
        insta::assert_json_snapshot!(format!("request_{name}"), translated.body);
    }
}

/// `(gemini answer, expected chat.completion, logprobs asked)`.
const RESPONSE_PAIRS: [(&str, &str, bool); 13] = [
    ("generate_text", "chat_completion_text", false),
    (
        "generate_function_call",
        "chat_completion_function_call",
        false,
    ),
    (
        "generate_parallel_function_calls",
        "chat_completion_parallel_function_calls",
        false,
    ),
    ("generate_thoughts", "chat_completion_thoughts", false),
    (
        "generate_prompt_blocked",
        "chat_completion_prompt_blocked",
        false,
    ),
    (
        "generate_prompt_blocked_safety",
        "chat_completion_prompt_blocked_safety",
        false,
    ),
    (
        "generate_candidate_safety",
        "chat_completion_candidate_safety",
        false,
    ),
    ("generate_max_tokens", "chat_completion_max_tokens", false),
    (
        "generate_max_tokens_no_content",
        "chat_completion_max_tokens_no_content",
        false,
    ),
    ("generate_n2_candidates", "chat_completion_n2", false),
    (
        "generate_malformed_function_call",
        "chat_completion_malformed_function_call",
        false,
    ),
    ("generate_logprobs", "chat_completion_logprobs", true),
    ("generate_text", "chat_completion_text", false),
];

#[test]
fn response_fixtures_translate_to_their_chat_completions() {
    for (gemini, openai, logprobs) in RESPONSE_PAIRS {
        let answer = serde_json::from_str(&fixture(&format!("gemini/{gemini}.json"))).unwrap();
        let expected = json_fixture(&format!("openai/{openai}.json"));
        let context = ResponseContext {
            model: expected["model"].as_str().unwrap().to_owned(),
            created: 0,
            logprobs,
        };
        let (completion, _) = chat_completion(&answer, &context, &mut counter()).unwrap();
        let mut actual = serde_json::to_value(&completion).unwrap();
        if expected["id"]
            .as_str()
            .is_some_and(|id| id != actual["id"].as_str().unwrap())
        {
            // Answers without a responseId get a generated id.
            assert!(actual["id"].as_str().unwrap().starts_with("chatcmpl-"));
            actual["id"] = expected["id"].clone();
        }
        assert_eq!(actual, expected, "{gemini}");
        insta::assert_json_snapshot!(format!("response_{gemini}_{}", u8::from(logprobs)), actual, {".id" => "[id]"});
    }
}

/// Runs an SSE transcript through the decoder and the stream translator; returns the `data:`
/// payloads and whether the stream ended with `[DONE]`.
fn run_stream(transcript: &str, include_usage: bool, model: &str) -> (Vec<Value>, bool) {
    let mut decoder = SseDecoder::new();
    decoder.push(transcript.as_bytes());
    let mut translator = StreamTranslator::new(StreamContext {
        model: model.to_owned(),
        created: 0,
        include_usage,
    });
    let mut ids = counter();
    let mut items = Vec::new();
    while let Some(event) = decoder.next_event() {
        items.extend(translator.on_event(&event.data, &mut ids));
    }
    items.extend(translator.finish());
    let mut payloads = Vec::new();
    let mut done = false;
    for item in items {
        match item {
            StreamItem::Chunk(chunk) => payloads.push(serde_json::to_value(chunk).unwrap()),
            StreamItem::Error(error) => payloads.push(error.body()),
            StreamItem::Done => done = true,
        }
    }
    (payloads, done)
}

#[test]
fn stream_fixtures_translate_to_their_chunk_sequences() {
    let pairs = [
        ("stream_text", "chunks_stream_text", true),
        ("stream_text", "chunks_stream_text_no_include_usage", false),
        (
            "stream_text_usage_last_only",
            "chunks_stream_text_usage_last_only",
            true,
        ),
        ("stream_function_call", "chunks_stream_function_call", true),
        (
            "stream_parallel_function_calls_gemini3",
            "chunks_stream_parallel_function_calls_gemini3",
            true,
        ),
        (
            "stream_text_and_function_call_same_chunk",
            "chunks_stream_text_and_function_call_same_chunk",
            true,
        ),
        ("stream_thoughts", "chunks_stream_thoughts", true),
        (
            "stream_prompt_blocked",
            "chunks_stream_prompt_blocked",
            true,
        ),
        (
            "stream_malformed_function_call",
            "chunks_stream_malformed_function_call",
            true,
        ),
        (
            "stream_midstream_error",
            "chunks_stream_midstream_error",
            true,
        ),
    ];
    for (gemini, openai, include_usage) in pairs {
        let expected = json_fixture(&format!("openai/{openai}.json"));
        let expected = expected.as_array().unwrap();
        let model = expected[0]["model"].as_str().unwrap();
        let (mut payloads, done) = run_stream(
            &fixture(&format!("gemini/{gemini}.sse")),
            include_usage,
            model,
        );
        let is_error = openai.contains("error");
        assert_eq!(done, !is_error, "{openai}: [DONE] only after a clean end");
        // Streams without a responseId get a generated completion id: compare the rest.
        let expected_id = expected[0]["id"].clone();
        for payload in payloads.iter_mut().filter(|p| p.get("id").is_some()) {
            payload["id"] = expected_id.clone();
        }
        assert_eq!(&payloads, expected, "{openai}");
        insta::assert_json_snapshot!(format!("stream_{openai}"), payloads, {"[].id" => "[id]"});
    }
}

#[test]
fn a_stream_cut_before_its_finish_reason_ends_with_an_error_and_no_done() {
    let transcript = fixture("gemini/stream_text.sse");
    let first_event = transcript.split("\r\n\r\n").next().unwrap().to_owned() + "\r\n\r\n";
    let (payloads, done) = run_stream(&first_event, true, "gemini-2.5-flash");
    assert!(!done);
    assert_eq!(
        payloads.last().unwrap(),
        &json!({"error": {"message": "The upstream stream ended before the answer was complete.", "type": "server_error", "param": null, "code": "upstream_stream_error"}})
    );
}
