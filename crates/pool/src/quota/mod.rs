//! Quota: the limits the operator sets, the Pacific day that daily quotas count in, the book of
//! each model (windows, cooldowns, learned limits, the capacity gate), the leases of a quota
//! shared by several instances, and the budget of retries.

pub(crate) mod book;
pub(crate) mod budget;
pub(crate) mod capacity;
pub mod lease;
pub(crate) mod limits;
pub(crate) mod pacific;
