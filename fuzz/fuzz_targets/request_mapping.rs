//! Any bytes as an OpenAI chat request: parsing and mapping to Gemini never panic, a mapped
//! request serialises to a JSON object with `contents`, and the resources it names are those
//! found in that JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translate::openai::chat::types::ChatCompletionRequest;
use translate::common::signatures::NoMemory;
use translate::gemini::native::referenced_resources;
use translate::openai::chat::request::translate_chat_request;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<ChatCompletionRequest>(data) else {
        return;
    };
    if let Ok(mapped) = translate_chat_request(&request, &NoMemory) {
        let body = serde_json::to_value(&mapped.body).unwrap();
        assert!(body.get("contents").is_some_and(|c| c.is_array()));
        assert_eq!(mapped.body.referenced_resources(), referenced_resources(&body));
        let _ = mapped.upstream_path();
    }
});
