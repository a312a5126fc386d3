//! Any bytes as a Responses request (and as the history it continues): reading and translating
//! never panic, and a refusal always names what is wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use translate::TranslateError;
use translate::common::signatures::NoMemory;
use translate::openai::responses::request::{
    History, items_to_store, referenced_ids, translate_responses_request,
};
use translate::openai::responses::types::CreateResponse;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<CreateResponse>(data) else {
        return;
    };
    // The request's own items double as a stored history, references resolving to themselves.
    let mut history = History::default();
    if let Some(Value::Array(items)) = &request.input {
        history.items = items.clone();
        for id in referenced_ids(&request) {
            if let Some(item) = items.first() {
                history.by_id.insert(id, item.clone());
            }
        }
    }
    let mut next = 0u32;
    let stored = items_to_store(&request, &history, &mut |prefix| {
        next += 1;
        format!("{prefix}_{next}")
    });
    assert!(stored.iter().all(|item| !item.is_object() || item.get("id").is_some()));
    match translate_responses_request(&request, &history, &NoMemory) {
        Ok(translated) => {
            let _ = serde_json::to_vec(&translated.body);
        }
        Err(TranslateError::InvalidRequest { message, .. }) => assert!(!message.is_empty()),
        Err(other) => panic!("a request can only be invalid, not {other:?}"),
    }
});
