//! The pool of upstream Gemini keys: which key serves a request, and what the upstream's answers
//! teach about keys, quotas and capacity.
//!
//! Quota is counted per **project and model** (keys of one Google Cloud project share it; a key
//! without a project is its own project): requests per minute in a sliding window, requests per
//! Pacific day, tokens per minute. A pick goes to the project the request is bound to (affinity),
//! else to the project with the most quota left among two drawn at random from the projects that
//! can serve now (the power of two choices: even spreading at O(1) per pick), then to the next
//! healthy key of that project. When more than 32 projects can serve, the two are drawn from a
//! window of 32 of them that moves on one place per pick: in a large pool what a pick reads is
//! then in cache (read ahead of the window beyond a few thousand projects), while over a pass
//! each project is in the window for as many picks as any other. A project the window has not
//! reached is still looked at before a pick gives up.
//!
//! What failures teach (see [`Failure`]): a used-up quota cools that project for that model
//! (until the upstream's delay, clamped to an hour, or the next minute; until Pacific midnight
//! for a daily quota) and its `quotaValue` becomes the project's learned limit; a capacity
//! failure cools the project for seconds, and when every project of a model cools for capacity
//! one probe per second goes through (see `quota::book`); a key error confirmed by a probe takes the key
//! out of service. Capacity never touches a key: an overloaded model says nothing about keys.
//!
//! No I/O and no system clock: the server reports what happened and a [`Clock`] is injected.
//! The key table is swapped whole (`ArcSwap`); each model's book has its own lock, held for a
//! few hundred nanoseconds per pick.

mod affinity;
mod clients;
mod clock;
mod failure;
mod health;
mod keys;
mod maps;
mod overview;
mod pick;
mod pool;
mod quota;
mod report;
mod shared;

pub use affinity::{Affinity, AffinityLimits, ResourceOwner, UploadSession};
pub use clients::{ClientGate, ClientLimits, ClientRefusal, InFlight};
pub use clock::{Clock, ManualClock, SystemClock};
pub use failure::{
    CoolingReason, Failure, LearnedLimit, MAX_QUOTA_COOLDOWN, QuotaExhausted, QuotaWindow,
};
pub use health::SUSPECT_MS;
pub use keys::{KeyId, KeyRecord, PoolKey, mask_secret};
pub use pick::{PickError, PickRequest};
pub use pool::Pool;
pub use quota::budget::RetryBudget;
pub use quota::lease::{self, LeaseWant};
pub use quota::limits::{Limits, LimitsTable};
pub use quota::pacific::{PacificDayCache, next_pacific_midnight_ms, pacific_day};
pub use report::{
    Cooldown, DayCount, KeyCensus, Learned, LearnedLimits, Lesson, ModelOverview, ProjectModelState,
};
