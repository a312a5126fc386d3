//! A byte-level Server-Sent Events decoder.
//!
//! Gemini's `streamGenerateContent?alt=sse` frames events as `data: <json>` lines ending in
//! `\r\n\r\n`, while other servers (and our tests) use bare `\n`. Reads from the network split
//! events, and even UTF-8 sequences, at arbitrary byte offsets, so the decoder keeps raw bytes
//! until a whole event has arrived and only then turns it into text.
//!
//! The upstream is untrusted: an event is looked for only in the bytes not scanned yet (so one
//! huge event costs time linear in its size, not quadratic), and an event larger than
//! [`MAX_EVENT_BYTES`] is not kept: the decoder drops it and reports it as
//! [`SseDecoder::is_overflowed`], and the caller ends the stream with an error.

use bytes::{Buf, BytesMut};

/// The largest event kept: room for an inline image of several megapixels in base64 (Gemini's
/// image models answer with one such event), far below what would exhaust memory.
pub const MAX_EVENT_BYTES: usize = 64 * 1024 * 1024;

/// One decoded event: the `event:` name (if any) and the `data:` lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the server named the event.
    pub event: Option<String>,
    /// The `data:` lines of the event, joined with `\n` as the SSE specification says.
    pub data: String,
}

/// Incremental decoder: feed it bytes as they arrive, take complete events out.
#[derive(Debug)]
pub struct SseDecoder {
    buffer: BytesMut,
    /// Bytes of `buffer` already searched for an event's end without finding one.
    scanned: usize,
    /// The largest event kept.
    limit: usize,
    /// An event grew past `limit`: it was dropped, and everything after it is ignored.
    overflowed: bool,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    /// A decoder with an empty buffer, keeping events up to [`MAX_EVENT_BYTES`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder keeping events up to `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            scanned: 0,
            limit,
            overflowed: false,
        }
    }

    /// Appends bytes read from the network (ignored once an event overflowed).
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.overflowed {
            self.buffer.extend_from_slice(bytes);
        }
    }

    /// Returns the next complete event, or `None` until more bytes arrive. Events without any
    /// `data:` line (comments, keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let Some((end, separator_len)) = find_event_end(&self.buffer, self.scanned) else {
                // Nothing ends here: next time, search only what arrives after this (from the
                // start of a trailing line break, which the next bytes may complete).
                let mut resume = self.buffer.len();
                while resume > 0 && matches!(self.buffer[resume - 1], b'\r' | b'\n') {
                    resume -= 1;
                }
                self.scanned = resume;
                if self.buffer.len() > self.limit {
                    self.overflowed = true;
                    self.buffer = BytesMut::new();
                    self.scanned = 0;
                }
                return None;
            };
            let raw = self.buffer.split_to(end);
            self.buffer.advance(separator_len);
            self.scanned = 0;
            if let Some(event) = parse_event(&raw) {
                return Some(event);
            }
        }
    }

    /// Whether an event grew past the limit (the stream cannot be read further).
    pub fn is_overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes received that do not yet form a complete event. Non-empty at end of stream means
    /// the upstream cut the stream in the middle of an event.
    pub fn pending(&self) -> &[u8] {
        &self.buffer
    }
}

/// Finds the blank line that ends the first event, searching from `from` (which is never in the
/// middle of a line break): the earliest of `\n\n`, `\r\n\r\n`, `\r\r` (and the mixed forms),
/// returning where the event ends and how long the separator is.
fn find_event_end(buffer: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut index = from;
    while index < buffer.len() {
        // Jump to the next line break (memchr is far faster than a byte loop).
        index += memchr::memchr2(b'\n', b'\r', &buffer[index..])?;
        let first_len = line_break_len(&buffer[index..])?;
        let after = index + first_len;
        match line_break_len(&buffer[after..]) {
            Some(0) => {}
            Some(second_len) => return Some((index, first_len + second_len)),
            // A lone `\r` at the very end may still become `\r\n`: wait for more bytes.
            None => return None,
        }
        index = after;
    }
    None
}

/// Length of the line break at the start of `bytes` (1 or 2), 0 when there is none, and `None`
/// when a trailing `\r` cannot be told apart from the start of `\r\n` yet.
fn line_break_len(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [b'\r', b'\n', ..] => Some(2),
        [b'\r'] => None,
        [b'\r', ..] | [b'\n', ..] => Some(1),
        _ => Some(0),
    }
}

fn parse_event(raw: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(raw);
    let mut event = None;
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut data {
                Some(existing) => {
                    existing.push('\n');
                    existing.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "event" => event = Some(value.to_owned()),
            _ => {}
        }
    }
    data.map(|data| SseEvent { event, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEMINI_STREAM: &[u8] = include_bytes!("../../tests/fixtures/gemini/stream_text.sse");

    fn decode_all(chunks: &[&[u8]]) -> (Vec<SseEvent>, Vec<u8>) {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            while let Some(event) = decoder.next_event() {
                events.push(event);
            }
        }
        (events, decoder.pending().to_vec())
    }

    #[test]
    fn crlf_framed_gemini_stream_decodes_to_one_event_per_data_line() {
        let (events, rest) = decode_all(&[GEMINI_STREAM]);
        let expected = GEMINI_STREAM
            .windows(6)
            .filter(|window| window == b"data: ")
            .count();
        assert!(expected >= 2);
        assert_eq!(events.len(), expected);
        assert!(rest.is_empty());
        for event in &events {
            serde_json::from_str::<serde_json::Value>(&event.data).expect("each event is JSON");
        }
    }

    #[test]
    fn every_fixture_split_at_every_byte_offset_gives_the_same_events() {
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gemini");
        let mut checked = 0;
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("sse") {
                continue;
            }
            let stream = std::fs::read(&path).unwrap();
            let (whole, rest) = decode_all(&[&stream]);
            assert!(!whole.is_empty() && rest.is_empty(), "{}", path.display());
            for offset in 0..=stream.len() {
                let (head, tail) = stream.split_at(offset);
                let (events, rest) = decode_all(&[head, tail]);
                assert_eq!(events, whole, "{} split at byte {offset}", path.display());
                assert!(rest.is_empty());
            }
            checked += 1;
        }
        assert!(checked >= 9, "only {checked} SSE fixtures found");
    }

    #[test]
    fn byte_by_byte_feeding_keeps_multibyte_utf8_intact() {
        let stream = "data: {\"text\":\"héllo 世界 🌍\"}\r\n\r\n".as_bytes();
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let (events, _) = decode_all(&chunks);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "{\"text\":\"héllo 世界 🌍\"}");
    }

    #[test]
    fn lf_framing_multiline_data_event_names_and_comments() {
        let stream = b": keep-alive\n\nevent: error\ndata: line one\ndata: line two\n\ndata:x\n\n";
        let (events, rest) = decode_all(&[stream]);
        assert_eq!(
            events,
            vec![
                SseEvent {
                    event: Some("error".into()),
                    data: "line one\nline two".into()
                },
                SseEvent {
                    event: None,
                    data: "x".into()
                },
            ]
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn truncated_stream_leaves_the_partial_event_pending() {
        let (events, rest) = decode_all(&[b"data: {\"a\":1}\r\n\r\ndata: {\"b\""]);
        assert_eq!(events.len(), 1);
        assert_eq!(rest, b"data: {\"b\"");
    }

    #[test]
    fn a_huge_event_is_scanned_once_and_dropped_past_the_limit() {
        // 1 MiB limit, 8 MiB without a line break in 4 KiB reads: each read is searched once
        // (linear), the buffer never holds much more than the limit, and the overflow is told.
        let mut decoder = SseDecoder::with_limit(1024 * 1024);
        decoder.push(b"data: {\"a\":1}\r\n\r\ndata: \"");
        assert_eq!(
            decoder.next_event().map(|e| e.data),
            Some("{\"a\":1}".into())
        );
        let chunk = vec![b'x'; 4096];
        let mut peak = 0;
        for _ in 0..2048 {
            decoder.push(&chunk);
            assert_eq!(decoder.next_event(), None);
            peak = peak.max(decoder.pending().len());
            // Only the bytes of the last read are left to search.
            assert!(decoder.scanned + 4096 >= decoder.buffer.len() || decoder.is_overflowed());
        }
        assert!(decoder.is_overflowed());
        assert!(peak <= 1024 * 1024 + 4096, "{peak}");
        assert!(decoder.pending().is_empty());
        decoder.push(b"\r\n\r\ndata: 2\r\n\r\n");
        assert_eq!(
            decoder.next_event(),
            None,
            "nothing is read past an overflow"
        );
    }

    #[test]
    fn a_separator_split_over_reads_is_found_from_where_the_scan_stopped() {
        for split in ["data: 1\r", "data: 1\r\n", "data: 1\r\n\r", "data: 1\n"] {
            let mut decoder = SseDecoder::new();
            decoder.push(split.as_bytes());
            assert_eq!(decoder.next_event(), None, "{split:?}");
            let rest = &"data: 1\r\n\r\n"[split.len()..];
            let rest = if split.ends_with('\n') && !split.contains('\r') {
                "\n"
            } else {
                rest
            };
            decoder.push(rest.as_bytes());
            assert_eq!(
                decoder.next_event().map(|e| e.data),
                Some("1".into()),
                "{split:?}"
            );
        }
    }

    #[test]
    fn a_trailing_carriage_return_waits_for_its_line_feed() {
        let mut decoder = SseDecoder::new();
        decoder.push(b"data: 1\r\n\r");
        assert_eq!(decoder.next_event(), None);
        decoder.push(b"\ndata: 2\r\n\r\n");
        assert_eq!(decoder.next_event().map(|e| e.data), Some("1".into()));
        assert_eq!(decoder.next_event().map(|e| e.data), Some("2".into()));
        assert!(decoder.pending().is_empty());
    }
}
