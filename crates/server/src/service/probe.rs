//! Probes of the gateway's own: cheap calls (`models.list` with one entry) that carry no client
//! text, so what the upstream says of them is about the key alone.
//!
//! - **Key checks.** A key error met on a client's request (`API_KEY_INVALID`, a suspension, a
//!   leak) holds the key back and is checked at once: only when the probe meets a key error too
//!   does the key leave service (and the database remembers it). A probe that succeeds puts the
//!   key straight back. So no client can take keys out of service by writing text that Google
//!   quotes back.
//! - **Recovery.** A key out of service is probed at a gentle, backed-off rate (10 minutes,
//!   doubling up to 6 hours), and comes back into service when the upstream accepts it again.
//!
//! Projects cooling after a 429 are not probed: their cooldown ends at the time the upstream
//! named (or at Pacific midnight), and a probe would spend the quota it waits for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use std::sync::{Arc, Weak};

use axum::http::{HeaderMap, Method};
use pool::{KeyId, PoolKey};
use tokio::sync::mpsc;

use crate::service::classify::{About, classify};
use crate::service::relay::Relay;

/// Key checks waiting at most; past it a key error only holds the key back for a while.
pub const KEY_CHECK_QUEUE: usize = 256;

/// What a probe of a key found.
#[derive(Debug)]
enum ProbeResult {
    /// The upstream accepted the key.
    Healthy,
    /// The upstream refused the key itself (the reason it gave).
    KeyError(String),
    /// Nothing to learn about the key (no answer, an overload, a quota).
    Inconclusive,
}

/// One probe call with `key`.
async fn probe(relay: &Relay, key: &PoolKey) -> ProbeResult {
    let request = relay.upstream().request(
        Method::GET,
        "v1beta/models?pageSize=1",
        HeaderMap::new(),
        key,
    );
    match relay.upstream().send(request, false).await {
        Ok(response) if response.status().is_success() => ProbeResult::Healthy,
        Ok(response) => {
            let status = response.status().as_u16();
            let body = crate::service::upstream::read_error_body(response, key).await;
            match classify(status, &body) {
                About::Key { reason } => ProbeResult::KeyError(reason),
                _ => ProbeResult::Inconclusive,
            }
        }
        Err(_) => ProbeResult::Inconclusive,
    }
}

/// Checks the keys that met a key error, one at a time, for as long as the gateway runs.
pub fn check_keys(relay: Weak<Relay>, mut queue: mpsc::Receiver<(Arc<PoolKey>, String)>) {
    tokio::spawn(async move {
        while let Some((key, reason)) = queue.recv().await {
            let Some(relay) = relay.upgrade() else { break };
            confirm_key_error(&relay, &key, &reason).await;
        }
    });
}

/// Probes a key that met a key error on a client's request: out of service if the probe meets
/// one too, back in the pick if it succeeds; otherwise it stays held back until the hold ends.
async fn confirm_key_error(relay: &Relay, key: &Arc<PoolKey>, reason: &str) {
    match probe(relay, key).await {
        ProbeResult::KeyError(confirmed) => {
            tracing::info!(key_id = %key.id(), %reason, %confirmed, "a probe confirmed the key error");
            relay.learn(key, None, &pool::Failure::KeyInvalid { reason: confirmed });
        }
        ProbeResult::Healthy => {
            tracing::warn!(key_id = %key.id(), %reason, "a probe found the key healthy: the key error was about the request, the key stays in service");
            relay.pool().clear_suspect(key.id());
        }
        ProbeResult::Inconclusive => {
            tracing::info!(key_id = %key.id(), %reason, "the key check was inconclusive: the key is held back for a while");
        }
    }
}

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

    fn due(&self, pool: &pool::Pool, now: u64) -> Vec<KeyId> {
        let mut schedule = self
            .schedule
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let out: Vec<KeyId> = pool
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
    pub async fn round(&self, relay: &Relay) -> ProbeRound {
        let pool = relay.pool();
        let now = pool.now_ms();
        let mut round = ProbeRound::default();
        for id in self.due(pool, now) {
            let Some(key) = pool.key(id) else {
                continue;
            };
            round.probed += 1;
            let healthy = matches!(probe(relay, &key).await, ProbeResult::Healthy);
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
                if let Err(error) = relay.storage().mark_key_active(id).await {
                    tracing::error!(%error, "could not persist a key's state");
                }
            }
        }
        round
    }
}

/// Runs probe rounds every `tick` for as long as the process lives.
pub fn spawn(relay: Arc<Relay>, prober: Prober, tick: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            prober.round(&relay).await;
        }
    });
}
