//! Pure conversion between the OpenAI and Gemini wire formats, and the small amount of Gemini
//! request inspection the gateway needs. Nothing here does I/O: every function takes bytes or
//! values and returns bytes or values, so each rule is unit-tested without a runtime.
//!
//! - [`gemini`]: Gemini's wire: the typed `GenerateContentRequest` the translators build,
//!   answers and stream events, error bodies (`RetryInfo`, `QuotaFailure`, key problems), the
//!   SSE decoder, native paths and the resources they name.
//! - [`openai`]: OpenAI's formats, one folder per frontend (`chat`), with embeddings, the model
//!   list and errors in OpenAI's shape.
//! - [`common`]: what frontends share: model ids, media by reference, thought signatures.

pub mod common;
pub mod error;
pub mod gemini;
pub mod openai;

pub use error::TranslateError;
