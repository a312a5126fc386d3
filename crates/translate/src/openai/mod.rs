//! OpenAI's wire formats: chat completions, embeddings, the model list, and upstream errors in
//! OpenAI's shape. A new OpenAI frontend (Responses, legacy Completions) is a folder beside
//! `chat`.

pub mod chat;
pub mod embeddings;
pub mod errors;
pub mod models;
