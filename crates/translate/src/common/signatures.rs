//! The thought-signature memory every frontend shares: Gemini 3 wants each function call of a
//! history sent back with the `thoughtSignature` it came with, and clients (OpenAI's formats have
//! no place for it) drop it. The gateway remembers what it returned, by call id.

/// Gemini 3 accepts this in place of a thought signature it never issued (a history from another
/// model or a client that dropped the signature); see Google's thought-signature FAQ.
pub const SIGNATURE_SENTINEL: &str = "skip_thought_signature_validator";

/// What the gateway remembers about a tool call it returned: the thought signature that came
/// with it, and whether its id was the upstream's own (and so may be echoed back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RememberedCall {
    /// The `thoughtSignature` of the call's part.
    pub signature: Option<String>,
    /// Whether the id came from `functionCall.id`.
    pub upstream_id: bool,
}

/// Looks up tool calls the gateway returned earlier, by id.
pub trait CallMemory {
    /// What is remembered of the call `id`.
    fn recall(&self, id: &str) -> Option<RememberedCall>;
}

/// No memory: only what the client sends back counts.
pub struct NoMemory;

impl CallMemory for NoMemory {
    fn recall(&self, _: &str) -> Option<RememberedCall> {
        None
    }
}
