//! Chat completions: the wire types, the request translation, the answer and the stream.

pub mod request;
pub mod response;
pub mod stream;
pub mod types;
