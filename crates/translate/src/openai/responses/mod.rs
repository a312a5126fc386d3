//! OpenAI's Responses API (`/v1/responses`) over Gemini.
//!
//! A request is rewritten as a chat request and goes through the chat translation (`request`);
//! Gemini's answer, whole or streamed, goes through one state machine (`stream`) that writes the
//! Responses events in the order OpenAI's SDKs require: `response.created`, then
//! `response.in_progress`, then per item `output_item.added`, its parts and deltas, their `done`
//! events and `output_item.done`, and last `response.completed` (or `incomplete`, or `failed`
//! after an `error` event). Every event carries a `sequence_number` counting from 0; the stream
//! has no `[DONE]`. Storing responses (for `previous_response_id`, `item_reference`, `GET` and
//! `DELETE`) is the server's business; this module says what to store.

pub mod request;
pub mod stream;
pub mod types;
