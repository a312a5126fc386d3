//! What instances tell each other over the cluster: the leases of a shared quota (see
//! [`crate::lease`]), and what one instance learns (a quota cooldown, a learned limit, a key out
//! of service) kept for the others and applied there.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::failure::{CoolingReason, MAX_QUOTA_COOLDOWN, millis};
use crate::keys::KeyId;
use crate::pool::{Pool, lock};
use crate::quota::lease::LeaseWant;
use crate::quota::pacific::next_pacific_midnight_ms;
use crate::report::Learned;

impl Pool {
    /// Makes requests for limited models need leases of a quota shared with other instances
    /// (see [`lease`](crate::lease)), and keeps what this instance learns for the others.
    pub fn share_quota(&self) {
        self.shared.store(true, Ordering::Relaxed);
        for entry in &self.books {
            lock(entry.value()).leased = true;
        }
    }

    /// Keeps what this instance learned for the others, when it shares the quota with any.
    pub(crate) fn tell_others(&self, learned: impl FnOnce() -> Learned) {
        if self.shared.load(Ordering::Relaxed)
            && let Ok(mut outbox) = self.outbox.lock()
        {
            outbox.push(learned());
        }
    }

    /// What this instance learned since the last call, for the other instances.
    pub fn take_learned(&self) -> Vec<Learned> {
        self.outbox
            .lock()
            .map(|mut outbox| std::mem::take(&mut *outbox))
            .unwrap_or_default()
    }

    /// Applies a quota cooldown another instance learned (clamped like one learned here: a
    /// per-minute one to an hour, a daily one to the next Pacific midnight).
    pub fn apply_remote_cooldown(&self, project: &str, model: &str, until_ms: u64, daily: bool) {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let (bound, reason) = if daily {
            (next_pacific_midnight_ms(now), CoolingReason::QuotaDay)
        } else {
            (
                now.saturating_add(millis(MAX_QUOTA_COOLDOWN)),
                CoolingReason::QuotaMinute,
            )
        };
        let model = (!model.is_empty()).then_some(model);
        lock(&self.book(model)).cool(&project.into(), until_ms.min(bound), reason, today);
    }

    /// Takes a key out of service because another instance found it unusable.
    pub fn apply_remote_out_of_service(&self, key: KeyId, reason: &str) {
        if let Some(pool_key) = self.key(key) {
            pool_key.take_out_of_service(reason);
        }
    }

    /// The leases to ask for: projects whose lease is empty or running low, with the limits in
    /// force for each (learned ones included).
    pub fn lease_wants(&self) -> Vec<LeaseWant> {
        let now = self.clock.now_ms();
        let mut wants = Vec::new();
        for entry in &self.books {
            let mut book = lock(entry.value());
            for (project, limits) in book.take_lease_wants(now) {
                wants.push(LeaseWant {
                    project: project.to_string(),
                    model: entry.key().clone(),
                    limits,
                });
            }
        }
        wants
    }

    /// Installs a lease of `count` requests (see [`lease`](crate::lease)); `count` 0 means the shared quota
    /// is used up until `until_ms`, and the project cools down until then.
    pub fn grant_lease(&self, want: &LeaseWant, count: u32, until_ms: u64, daily: bool) {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let model = (!want.model.is_empty()).then_some(want.model.as_str());
        let project: Arc<str> = want.project.as_str().into();
        let book = self.book(model);
        let mut book = lock(&book);
        if count == 0 {
            let reason = if daily {
                CoolingReason::QuotaDay
            } else {
                CoolingReason::QuotaMinute
            };
            book.cool(&project, until_ms, reason, today);
        } else {
            book.grant_lease(&project, count, until_ms, now, today);
        }
    }
}
