//! Any bytes as the events of a Gemini stream (split on newlines) through the Responses state
//! machine: it never panics, numbers its events 0, 1, 2, … without a gap, starts with
//! `response.created`, emits nothing after it ended, and ends with `response.completed`,
//! `response.incomplete` or `response.failed`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use translate::openai::responses::stream::{OutputOptions, ResponseStream};
use translate::openai::responses::types::{CreateResponse, Response};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let request: CreateResponse =
        serde_json::from_value(json!({"model": "gemini-2.5-flash", "input": "x"})).unwrap();
    let frame = Response::started(&request, "resp_1".into(), "gemini-2.5-flash".into(), 0);
    let options = OutputOptions {
        summaries: true,
        signatures: data.first().is_some_and(|byte| byte % 2 == 0),
    };
    let mut machine = ResponseStream::new(frame, options);
    let mut next = 0u32;
    let mut new_id = |prefix: &str| {
        next += 1;
        format!("{prefix}_{next}")
    };
    let mut events = Vec::new();
    for event in text.split('\n') {
        let ended_before = machine.is_ended();
        let emitted = machine.on_data(event, &mut new_id);
        assert!(!ended_before || emitted.is_empty(), "events after the end");
        events.extend(emitted);
    }
    events.extend(machine.finish(&mut new_id));
    assert!(machine.is_ended());
    assert_eq!(events[0]["type"], "response.created");
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], index as u64);
    }
    let last = events.last().and_then(|event| event["type"].as_str()).unwrap_or("");
    assert!(matches!(
        last,
        "response.completed" | "response.incomplete" | "response.failed"
    ));
});
