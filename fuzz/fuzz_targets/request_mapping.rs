//! Any bytes as an OpenAI chat request: parsing and mapping to Gemini never panic, and a
//! mapped request is a JSON object with `contents`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translate::openai::chat::types::ChatCompletionRequest;
use translate::common::signatures::NoMemory;
use translate::openai::chat::request::translate_chat_request;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<ChatCompletionRequest>(data) else {
        return;
    };
    if let Ok(mapped) = translate_chat_request(&request, &NoMemory) {
        assert!(mapped.body.get("contents").is_some_and(|c| c.is_array()));
        let _ = mapped.upstream_path();
    }
});
