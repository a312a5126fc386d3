//! Background health probes: a key taken out of service (suspended, revoked, …) is probed with
//! a cheap call (`models.get`) at a gentle, backed-off rate (10 minutes, doubling up to 6 hours),
//! and comes back into service when the upstream accepts it again.
//!
//! Keys cooling down after a 429 are not probed: their cooldown ends at the time the upstream
//! named (or at Pacific midnight), and a probe would spend the quota it waits for. Keys whose
//! circuit is open come back on their own after the circuit's timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, Method};
use pool::KeyId;

use crate::state::{App, AppState};

/// When a key is probed next, and the wait after that.
#[derive(Debug, Clone, Copy)]
struct Next {
    at_ms: u64,
    wait: Duration,
}

/// The probe schedule.
pub struct Prober {
    schedule: Mutex<HashMap<KeyId, Next>>,
    first_wait: Duration,
    longest_wait: Duration,
}

/// What one round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProbeRound {
    /// Keys probed.
    pub probed: usize,
    /// Keys put back into service.
    pub restored: usize,
}

impl Prober {
    /// A schedule whose first probe of a key comes `first_wait` after it left service.
    pub fn new(first_wait: Duration, longest_wait: Duration) -> Self {
        Self {
            schedule: Mutex::new(HashMap::new()),
            first_wait,
            longest_wait,
        }
    }

    /// The production schedule: 10 minutes, doubling up to 6 hours.
    pub fn gentle() -> Self {
        Self::new(Duration::from_secs(600), Duration::from_secs(6 * 3600))
    }

    fn due(&self, app: &App, now: u64) -> Vec<KeyId> {
        let mut schedule = self
            .schedule
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out: Vec<KeyId> = app
            .pool
            .keys()
            .iter()
            .filter(|key| !key.is_usable() && key.out_of_service_reason().is_some())
            .map(|key| key.id())
            .collect();
        schedule.retain(|id, _| out.contains(id));
        let first = u64::try_from(self.first_wait.as_millis()).unwrap_or(u64::MAX);
        out.into_iter()
            .filter(|id| {
                let next = schedule.entry(*id).or_insert(Next {
                    at_ms: now.saturating_add(first),
                    wait: self.first_wait,
                });
                next.at_ms <= now
            })
            .collect()
    }

    /// Probes every key that is due; returns what it did.
    pub async fn round(&self, app: &App) -> ProbeRound {
        let now = app.pool.now_ms();
        let mut round = ProbeRound::default();
        for id in self.due(app, now) {
            let Some(key) = app.pool.key(id) else {
                continue;
            };
            round.probed += 1;
            let request = app.upstream.request(
                Method::GET,
                "v1beta/models?pageSize=1",
                HeaderMap::new(),
                &key,
            );
            let healthy = matches!(app.upstream.send(request, false).await, Ok(response) if response.status().is_success());
            {
                let mut schedule = self
                    .schedule
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if healthy {
                    schedule.remove(&id);
                } else if let Some(next) = schedule.get_mut(&id) {
                    // Double the wait, from at least a minute, up to the longest.
                    next.wait = (next.wait * 2)
                        .max(Duration::from_secs(60))
                        .min(self.longest_wait);
                    next.at_ms = now
                        .saturating_add(u64::try_from(next.wait.as_millis()).unwrap_or(u64::MAX));
                }
            }
            if healthy {
                key.restore();
                round.restored += 1;
                tracing::info!(key_id = %id, key = %key.masked(), "upstream key back in service");
                if let Err(error) = app.storage.mark_key_active(id).await {
                    tracing::error!(%error, "could not persist a key's state");
                }
            }
        }
        round
    }
}

/// Runs probe rounds every `tick` for as long as the process lives.
pub fn spawn(app: AppState, prober: Prober, tick: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            prober.round(&app).await;
        }
    });
}
