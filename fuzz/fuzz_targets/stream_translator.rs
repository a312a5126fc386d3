//! Any bytes as the events of a Gemini stream (split on newlines): the stream state machine
//! never panics, emits nothing after it ended, and ends with `[DONE]` or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translate::openai::chat::stream::{StreamContext, StreamItem, StreamTranslator};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut translator = StreamTranslator::new(StreamContext {
        model: "gemini-2.5-flash".to_owned(),
        created: 0,
        include_usage: true,
    });
    let mut next = 0u32;
    let mut new_id = || {
        next += 1;
        format!("call_{next}")
    };
    let mut items = Vec::new();
    for event in text.split('\n') {
        let ended_before = translator.is_ended();
        let emitted = translator.on_event(event, &mut new_id);
        assert!(!ended_before || emitted.is_empty(), "items after the end");
        items.extend(emitted);
    }
    items.extend(translator.finish());
    assert!(matches!(
        items.last(),
        Some(StreamItem::Done | StreamItem::Error(_))
    ));
    for item in &items {
        if let StreamItem::Chunk(chunk) = item {
            let _ = serde_json::to_string(chunk);
        }
    }
});
