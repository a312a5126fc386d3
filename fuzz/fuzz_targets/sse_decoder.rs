//! Any bytes, fed to the SSE decoder in pieces whose sizes come from the input: the decoder
//! never panics, and the events do not depend on where the bytes were split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translate::gemini::sse::SseDecoder;

fn decode(pieces: &[&[u8]]) -> Vec<String> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        while let Some(event) = decoder.next_event() {
            events.push(format!("{event:?}"));
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else {
        return;
    };
    let whole = decode(&[body]);
    let size = usize::from(split % 16) + 1;
    let pieces: Vec<&[u8]> = body.chunks(size).collect();
    assert_eq!(whole, decode(&pieces), "split every {size} bytes");
});
