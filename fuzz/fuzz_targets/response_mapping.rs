//! Any bytes as a Gemini answer: parsing, telling an empty answer from a real one, and mapping
//! to an OpenAI completion never panic, and a mapped completion has one choice at least and
//! serialises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translate::gemini::{AnswerShape, GenerateContentResponse};
use translate::openai::chat::response::{ResponseContext, chat_completion};

fuzz_target!(|data: &[u8]| {
    let shape_empty = AnswerShape::read(data).map(|shape| shape.is_empty());
    let Ok(answer) = serde_json::from_slice::<GenerateContentResponse>(data) else {
        return;
    };
    // The light reading of the relay and the full one agree on what is empty.
    if let Some(empty) = shape_empty {
        assert_eq!(empty, answer.is_empty_answer());
    }
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
