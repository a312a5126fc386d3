//! Pure conversion between the OpenAI and Gemini wire formats, and the small amount of Gemini
//! request inspection the gateway needs. Nothing here does I/O: every function takes bytes or
//! values and returns bytes or values, so each rule is unit-tested without a runtime.
//!
//! - [`sse`]: a byte-level Server-Sent Events decoder (CRLF, split reads, split UTF-8).
//! - [`native`]: validation of native Gemini paths and the resource names a request refers to.

pub mod native;
pub mod sse;
