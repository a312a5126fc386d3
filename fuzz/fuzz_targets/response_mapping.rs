//! Any bytes as a Gemini answer: parsing and mapping to an OpenAI completion never panic, and
//! a mapped completion has one choice at least and serialises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translate::gemini::GenerateContentResponse;
use translate::response::{ResponseContext, chat_completion};

fuzz_target!(|data: &[u8]| {
    let Ok(answer) = serde_json::from_slice::<GenerateContentResponse>(data) else {
        return;
    };
    let context = ResponseContext {
        model: "gemini-2.5-flash".to_owned(),
        created: 0,
        logprobs: true,
    };
    let mut next = 0u32;
    let mut new_id = || {
        next += 1;
        format!("call_{next}")
    };
    if let Ok((completion, _)) = chat_completion(&answer, &context, &mut new_id) {
        assert!(!completion.choices.is_empty());
        let _ = serde_json::to_string(&completion);
    }
});
