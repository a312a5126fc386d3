//! OpenAI's wire formats: chat completions, Responses, legacy completions, embeddings, the model
//! list, and upstream errors in OpenAI's shape. Responses and legacy completions are written as
//! chat requests, so the chat translation's rules serve all three.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod errors;
pub mod models;
pub mod responses;
