//! Pure conversion between the OpenAI and Gemini wire formats, and the small amount of Gemini
//! request inspection the gateway needs. Nothing here does I/O: every function takes bytes or
//! values and returns bytes or values, so each rule is unit-tested without a runtime.
//!
//! - [`sse`]: a byte-level Server-Sent Events decoder (CRLF, split reads, split UTF-8).
//! - [`native`]: validation of native Gemini paths and the resource names a request refers to.
//! - [`model`]: model id normalisation and families.
//! - [`gemini`] and [`openai`]: the wire types.
//! - [`request`], [`response`], [`stream`]: chat completions in both directions.
//! - [`embeddings`], [`models`]: the other OpenAI routes.
//! - [`errors`]: upstream errors in OpenAI's shape.

pub mod embeddings;
pub mod error;
pub mod errors;
pub mod gemini;
pub mod model;
pub mod models;
pub mod native;
pub mod openai;
pub mod request;
pub mod response;
pub mod sse;
pub mod stream;

pub use error::TranslateError;
