//! What the pool tells the operator and the other instances: plain structs, built on demand
//! (never on the request path).

use crate::failure::CoolingReason;
use crate::keys::KeyId;
use crate::quota::limits::Limits;

/// One project's state for one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectModelState {
    /// The project.
    pub project: String,
    /// The model (empty for calls without model quota).
    pub model: String,
    /// Requests in the last minute (counted only under a per-minute limit).
    pub minute_used: u32,
    /// Requests on this Pacific day.
    pub day_used: u32,
    /// Tokens in the last minute (counted only under a tokens-per-minute limit).
    pub tokens_used: u64,
    /// The limits in force for this project and model.
    pub limits: Limits,
    /// Limits the upstream named for it (`QuotaFailure.quotaValue`), and when they were learned.
    pub learned: Option<(Limits, u64)>,
    /// It takes no requests until this time, for this reason.
    pub cooling: Option<Cooldown>,
}

/// A cooldown in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cooldown {
    /// Until when (ms since the epoch).
    pub until_ms: u64,
    /// Why.
    pub reason: CoolingReason,
}

/// How one model stands across the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOverview {
    /// The model.
    pub model: String,
    /// Projects with at least one key in service.
    pub projects: usize,
    /// Of those, how many can take a request now.
    pub serving: usize,
    /// Cooling for a used-up quota.
    pub cooling_quota: usize,
    /// Cooling after capacity failures.
    pub cooling_capacity: usize,
    /// Every project cools for capacity: one probe goes through per interval, next at this time.
    pub next_probe_ms: Option<u64>,
}

/// A learned limit, for persistence and the other instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnedLimits {
    /// The project.
    pub project: String,
    /// The model.
    pub model: String,
    /// The limits learned (unset fields: nothing learned).
    pub limits: Limits,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// How many keys are in which state: for honest error messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCensus {
    /// Keys in the table.
    pub total: usize,
    /// Disabled by the operator.
    pub disabled: usize,
    /// Out of service (invalid, suspended, leaked).
    pub out_of_service: usize,
    /// Being checked after a key error, back in seconds if the check passes.
    pub checking: usize,
}

/// What a failure taught the pool, for the server to persist, log and share.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lesson {
    /// The cooldown it started, if any: project, model, until, why.
    pub cooled: Option<(String, String, Cooldown)>,
    /// The limits now learned for a project and model, if the failure named one.
    pub learned: Option<LearnedLimits>,
    /// The key taken out of service, if any.
    pub out_of_service: Option<KeyId>,
}

/// Today's count of requests for one project and model (for persistence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    /// The project.
    pub project: String,
    /// The model (empty for calls without model quota).
    pub model: String,
    /// The Pacific day number.
    pub day: i32,
    /// Requests counted.
    pub count: u32,
}

/// What this instance learned that the other instances must hear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Learned {
    /// A project is cooling down for a model after a quota 429.
    Cooldown {
        /// The project.
        project: String,
        /// The model.
        model: String,
        /// Until when (ms since the epoch).
        until_ms: u64,
        /// Until the daily reset.
        daily: bool,
    },
    /// The upstream named a project's limit for a model (`QuotaFailure.quotaValue`).
    Limits(LearnedLimits),
    /// A key was taken out of service (invalid, suspended, permission denied).
    KeyOutOfService {
        /// The key.
        key: KeyId,
        /// Why.
        reason: String,
    },
}
