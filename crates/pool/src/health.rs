//! Learning from the upstream's answers: a failure cools a project for a model or takes a key
//! out of service (see [`Failure`]), a success ends a capacity backoff, and the tokens a call
//! used count against its project's window.

use crate::failure::{
    CoolingReason, Failure, LearnedLimit, MAX_QUOTA_COOLDOWN, QuotaWindow, millis,
};
use crate::keys::KeyId;
use crate::pool::{Pool, lock};
use crate::quota::limits::Limits;
use crate::quota::pacific::next_pacific_midnight_ms;
use crate::report::{Cooldown, Learned, LearnedLimits, Lesson};

/// The longest a key stays out of the pick while a probe checks a key error it met.
pub const SUSPECT_MS: u64 = 30_000;

/// The start of the next minute: when a per-minute quota without a `RetryInfo` frees up.
fn next_minute_ms(now: u64) -> u64 {
    (now / 60_000).saturating_add(1).saturating_mul(60_000)
}

impl Pool {
    /// Holds `key` back from the pick while a probe checks a key error met with it (for at
    /// most [`SUSPECT_MS`]). Returns whether it was not already being checked, so one probe
    /// runs per key.
    pub fn suspect(&self, key: KeyId) -> bool {
        let Some(pool_key) = self.key(key) else {
            return false;
        };
        let now = self.clock.now_ms();
        let previous = pool_key.hold_until(now.saturating_add(SUSPECT_MS));
        previous <= now
    }

    /// The probe found nothing wrong with `key`: it serves again.
    pub fn clear_suspect(&self, key: KeyId) {
        if let Some(pool_key) = self.key(key) {
            pool_key.end_hold();
        }
    }

    /// Learns from a failed upstream call made with `key` for `model`; returns what it learned.
    pub fn record_failure(&self, key: KeyId, model: Option<&str>, failure: &Failure) -> Lesson {
        let mut lesson = Lesson::default();
        let Some(pool_key) = self.key(key) else {
            return lesson;
        };
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let project = pool_key.project();
        match failure {
            Failure::KeyInvalid { reason } => {
                pool_key.take_out_of_service(reason);
                lesson.out_of_service = Some(key);
                self.tell_others(|| Learned::KeyOutOfService {
                    key,
                    reason: reason.clone(),
                });
            }
            Failure::Quota(quota) => {
                // The quota named in the error wins; it is per project *and* model.
                let model = quota.model.as_deref().or(model).unwrap_or("");
                let book = self.book((!model.is_empty()).then_some(model));
                let mut book = lock(&book);
                let (until, reason) = match quota.window {
                    // RetryInfo is misleading for daily quotas: they reset at Pacific midnight.
                    QuotaWindow::Day => (next_pacific_midnight_ms(now), CoolingReason::QuotaDay),
                    QuotaWindow::Minute => {
                        let until = match quota.retry_after {
                            Some(delay) => {
                                now.saturating_add(millis(delay.min(MAX_QUOTA_COOLDOWN)))
                            }
                            None => next_minute_ms(now),
                        };
                        (until, CoolingReason::QuotaMinute)
                    }
                };
                book.cool(project, until, reason, today);
                if let Some(limit) = quota.limit {
                    let learned = match limit {
                        LearnedLimit::RequestsPerMinute(rpm) => Limits {
                            rpm: Some(rpm),
                            ..Limits::UNLIMITED
                        },
                        LearnedLimit::RequestsPerDay(rpd) => Limits {
                            rpd: Some(rpd),
                            ..Limits::UNLIMITED
                        },
                        LearnedLimit::TokensPerMinute(tpm) => Limits {
                            tpm: Some(tpm),
                            ..Limits::UNLIMITED
                        },
                    };
                    let limits = book.learn_limits(project, learned, now, today);
                    let learned = LearnedLimits {
                        project: project.to_string(),
                        model: model.to_owned(),
                        limits,
                        at_ms: now,
                    };
                    self.tell_others(|| Learned::Limits(learned.clone()));
                    lesson.learned = Some(learned);
                }
                drop(book);
                let daily = reason == CoolingReason::QuotaDay;
                self.tell_others(|| Learned::Cooldown {
                    project: project.to_string(),
                    model: model.to_owned(),
                    until_ms: until,
                    daily,
                });
                lesson.cooled = Some((
                    project.to_string(),
                    model.to_owned(),
                    Cooldown {
                        until_ms: until,
                        reason,
                    },
                ));
            }
            Failure::Capacity { .. } | Failure::Connection => {
                let status = match failure {
                    Failure::Capacity { status } => *status,
                    _ => 502,
                };
                let book = self.book(model);
                let until = lock(&book).cool_for_capacity(project, status, now, today);
                lesson.cooled = Some((
                    project.to_string(),
                    model.unwrap_or("").to_owned(),
                    Cooldown {
                        until_ms: until,
                        reason: CoolingReason::Capacity(status),
                    },
                ));
            }
        }
        lesson
    }

    /// Learns from a successful call: the project's capacity backoff resets, and a model whose
    /// every project was cooling for capacity serves again at once.
    pub fn record_success(&self, key: KeyId, model: Option<&str>) {
        let Some(pool_key) = self.key(key) else {
            return;
        };
        lock(&self.book(model)).succeeded(pool_key.project());
    }

    /// Counts tokens a call used against its project's per-minute token window.
    pub fn record_tokens(&self, key: KeyId, model: &str, tokens: u64) {
        let Some(pool_key) = self.key(key) else {
            return;
        };
        let now = self.clock.now_ms();
        lock(&self.book(Some(model))).record_tokens(
            pool_key.project(),
            now,
            self.today.day(now),
            tokens,
        );
    }
}
