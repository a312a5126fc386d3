//! What a failed upstream call teaches the pool, as typed facts. Reading Gemini's error bodies
//! and deciding which of these a failure is belongs to the server (`classify`): the pool knows
//! no wire format, it only learns.

use std::time::Duration;

/// The longest a quota cooldown named by the upstream is believed: a `RetryInfo` beyond it is
/// clamped (a hostile or broken upstream must not cool a project for years).
pub const MAX_QUOTA_COOLDOWN: Duration = Duration::from_secs(3600);

/// A failure that says something about a key, a project's quota or the upstream's capacity,
/// not about the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The key itself cannot be used (invalid, expired, suspended, leaked), on structured
    /// evidence confirmed by a probe of the gateway's own: it leaves service.
    KeyInvalid {
        /// Google's `ErrorInfo.reason` or a short description, kept for the operator.
        reason: String,
    },
    /// A project's quota for a model is used up (a 429 whose `QuotaFailure` names the quota).
    Quota(QuotaExhausted),
    /// The upstream lacks capacity for the model: a 429 without quota details (shared capacity
    /// or the caller's address throttled), 500, 503 (overloaded), 504. It says nothing about any
    /// key and passes within seconds.
    Capacity {
        /// The upstream's status, answered to clients while every project is cooling for it.
        status: u16,
    },
    /// No HTTP answer at all (refused, reset, timed out before the head, a stream that broke
    /// before its first event). Treated as a capacity failure of the model.
    Connection,
}

/// Which quota window is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaWindow {
    /// A per-minute quota (requests or tokens): back after `RetryInfo` or the next minute.
    Minute,
    /// A per-day quota: back at the next Pacific midnight, whatever `RetryInfo` says.
    Day,
}

/// A used-up quota, as the upstream described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExhausted {
    /// Which window.
    pub window: QuotaWindow,
    /// `RetryInfo.retryDelay`, when given (the pool clamps it to [`MAX_QUOTA_COOLDOWN`]).
    pub retry_after: Option<Duration>,
    /// The model the quota belongs to (`QuotaFailure.quotaDimensions.model`), when named.
    pub model: Option<String>,
    /// The limit the upstream enforces (`QuotaFailure.quotaValue`), when it said.
    pub limit: Option<LearnedLimit>,
}

/// A limit learned from the upstream's `quotaValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnedLimit {
    /// Requests per minute.
    RequestsPerMinute(u32),
    /// Requests per Pacific day.
    RequestsPerDay(u32),
    /// Input tokens per minute.
    TokensPerMinute(u64),
}

/// Why a project is not taking a model's requests now (for the operator and error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoolingReason {
    /// A per-minute quota (counted here, or a 429 said so).
    QuotaMinute,
    /// The daily quota: back at Pacific midnight.
    QuotaDay,
    /// The upstream lacked capacity (the status it answered).
    Capacity(u16),
    /// None of the project's keys can serve now (invalid, disabled, being checked).
    Health,
    /// Several instances share the quota and this one holds no lease of it now.
    Lease,
}

impl CoolingReason {
    /// A short word for the API and the dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuotaMinute | Self::QuotaDay => "quota",
            Self::Capacity(_) => "capacity",
            Self::Health => "health",
            Self::Lease => "lease",
        }
    }
}

/// Milliseconds of a duration, saturating (durations from the upstream can be absurd).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
