//! The one error type of the crate: what is wrong with a request (a 400 for the client, with the
//! OpenAI `param` it concerns) or with an upstream answer (a 502).

/// A translation failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request cannot be translated; nothing is sent upstream.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong, in words a client developer can act on.
        message: String,
        /// The request field at fault, such as `messages[2].tool_calls[0].function.arguments`.
        param: Option<String>,
    },
    /// The upstream answered 200 with a body that is not a Gemini response.
    #[error("the upstream answer could not be read: {0}")]
    UpstreamResponse(String),
}

impl TranslateError {
    /// An invalid-request error about `param`.
    pub fn invalid(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.into()),
        }
    }
}
