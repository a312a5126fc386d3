//! The Responses translation over the spec's fixtures: Responses requests to Gemini bodies, and
//! Gemini SSE transcripts and whole answers to Responses events and objects, kept as insta
//! snapshots. Every transcript is also fed in pieces of every size from 1 to 64 bytes: the events
//! must not depend on how the upstream's bytes were cut.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use serde_json::{Value, json};
use translate::common::signatures::NoMemory;
use translate::gemini::GenerateContentResponse;
use translate::gemini::sse::SseDecoder;
use translate::openai::responses::request::{History, translate_responses_request};
use translate::openai::responses::stream::{OutputOptions, ResponseStream, response_from_answer};
use translate::openai::responses::types::{CreateResponse, Response};

fn fixture(path: &str) -> String {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{full}: {error}"))
}

/// Ids `msg_1`, `fc_2`, … in emission order.
fn counter() -> impl FnMut(&str) -> String {
    let mut n = 0;
    move |prefix: &str| {
        n += 1;
        format!("{prefix}_{n}")
    }
}

fn frame(model: &str) -> Response {
    let request: CreateResponse =
        serde_json::from_value(json!({"model": model, "input": "x"})).unwrap();
    Response::started(&request, "resp_1".into(), model.into(), 1_700_000_000)
}

const EVERYTHING: OutputOptions = OutputOptions {
    summaries: true,
    signatures: true,
};

/// The events of `transcript` fed to the decoder `piece` bytes at a time.
fn run(transcript: &str, piece: usize) -> Vec<Value> {
    let mut decoder = SseDecoder::new();
    let mut machine = ResponseStream::new(frame("gemini-2.5-flash"), EVERYTHING);
    let mut ids = counter();
    let mut events = Vec::new();
    for bytes in transcript.as_bytes().chunks(piece) {
        decoder.push(bytes);
        while let Some(event) = decoder.next_event() {
            events.extend(machine.on_data(&event.data, &mut ids));
        }
    }
    let tail = String::from_utf8_lossy(decoder.pending()).trim().to_owned();
    if let Some(data) = tail.strip_prefix("data:") {
        events.extend(machine.on_data(data.trim_start(), &mut ids));
    }
    events.extend(machine.finish(&mut ids));
    events
}

#[test]
fn stream_transcripts_give_the_same_events_however_their_bytes_are_cut() {
    for name in [
        "stream_text",
        "stream_text_usage_last_only",
        "stream_function_call",
        "stream_parallel_function_calls_gemini3",
        "stream_text_and_function_call_same_chunk",
        "stream_thoughts",
        "stream_prompt_blocked",
        "stream_malformed_function_call",
        "stream_midstream_error",
    ] {
        let transcript = fixture(&format!("gemini/{name}.sse"));
        let whole = run(&transcript, transcript.len().max(1));
        for piece in 1..=64 {
            assert_eq!(
                run(&transcript, piece),
                whole,
                "{name} in pieces of {piece}"
            );
        }
        let kinds: Vec<&str> = whole.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds[..2],
            ["response.created", "response.in_progress"],
            "{name}"
        );
        let last = *kinds.last().unwrap();
        assert!(
            matches!(
                last,
                "response.completed" | "response.incomplete" | "response.failed"
            ),
            "{name}: {last}"
        );
        for (index, event) in whole.iter().enumerate() {
            assert_eq!(event["sequence_number"], index, "{name}");
        }
        insta::assert_json_snapshot!(format!("responses_{name}"), whole);
    }
}

#[test]
fn whole_answers_give_finished_responses() {
    for name in [
        "generate_text",
        "generate_function_call",
        "generate_parallel_function_calls",
        "generate_thoughts",
        "generate_max_tokens",
        "generate_prompt_blocked",
        "generate_candidate_safety",
    ] {
        let answer: GenerateContentResponse =
            serde_json::from_str(&fixture(&format!("gemini/{name}.json"))).unwrap();
        let (response, _) = response_from_answer(
            frame("gemini-2.5-flash"),
            EVERYTHING,
            &answer,
            &mut counter(),
        );
        insta::assert_json_snapshot!(format!("responses_{name}"), response);
    }
}

#[test]
fn a_stream_cut_before_its_finish_reason_fails_the_response() {
    let transcript = fixture("gemini/stream_text.sse");
    let first = transcript.split("\r\n\r\n").next().unwrap().to_owned() + "\r\n\r\n";
    let events = run(&first, first.len());
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed");
    assert_eq!(last["response"]["error"]["code"], "server_error");
    assert_eq!(events[events.len() - 2]["type"], "error");
}

#[test]
fn responses_requests_translate_to_their_gemini_bodies() {
    for name in [
        "text_with_instructions",
        "image_and_file_parts",
        "function_round_trip",
        "json_schema_and_reasoning",
        "web_search",
    ] {
        let request: CreateResponse =
            serde_json::from_str(&fixture(&format!("responses/{name}.json"))).unwrap();
        let translated =
            translate_responses_request(&request, &History::default(), &NoMemory).unwrap();
        insta::assert_json_snapshot!(
            format!("responses_request_{name}"),
            json!({"path": translated.upstream_path(), "body": translated.body})
        );
    }
}
