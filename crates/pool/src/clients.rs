//! Per-client limits: a client key may carry its own requests per minute, requests per day,
//! tokens per day, allowed models and an expiry. Over a limit it is refused before any key of the
//! pool is touched. Days are Pacific days, like the upstream quotas.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use crate::quota::pacific::{next_pacific_midnight_ms, pacific_day};

const MINUTE_MS: u64 = 60_000;

/// The limits of one client key; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientLimits {
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Requests per Pacific day.
    pub rpd: Option<u32>,
    /// Tokens (prompt and completion) per Pacific day.
    pub daily_tokens: Option<u64>,
    /// Models the key may use (`None`: all).
    pub allowed_models: Option<Vec<String>>,
    /// When the key stops working (ms since the epoch).
    pub expires_at_ms: Option<u64>,
    /// Requests the key may have in flight at once (streams count until they end).
    pub max_concurrent: Option<u32>,
}

impl ClientLimits {
    /// Whether the key may use `model`.
    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models
            .as_ref()
            .is_none_or(|models| models.iter().any(|allowed| allowed == model))
    }
}

/// Why a client was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientRefusal {
    /// The key has expired.
    #[error("this API key has expired")]
    Expired,
    /// Its requests-per-minute limit is reached.
    #[error("this API key's limit of {limit} requests per minute is reached")]
    PerMinute {
        /// The limit.
        limit: u32,
        /// When a request is allowed again.
        retry_after: Duration,
    },
    /// Its requests-per-day limit is reached.
    #[error("this API key's limit of {limit} requests per day is reached")]
    PerDay {
        /// The limit.
        limit: u32,
        /// Until the Pacific-midnight reset.
        retry_after: Duration,
    },
    /// It has as many requests in flight as it may.
    #[error("this API key's limit of {limit} requests at once is reached")]
    Concurrency {
        /// The limit.
        limit: u32,
    },
    /// Its daily token budget is spent.
    #[error("this API key's budget of {limit} tokens per day is spent")]
    Tokens {
        /// The budget.
        limit: u64,
        /// Until the Pacific-midnight reset.
        retry_after: Duration,
    },
}

impl ClientRefusal {
    /// When the client may try again (none for an expired key).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Expired => None,
            // A request in flight ends soon, usually.
            Self::Concurrency { .. } => Some(Duration::from_secs(1)),
            Self::PerMinute { retry_after, .. }
            | Self::PerDay { retry_after, .. }
            | Self::Tokens { retry_after, .. } => Some(*retry_after),
        }
    }
}

#[derive(Debug, Default)]
struct ClientUsage {
    minute: VecDeque<u64>,
    day: i32,
    requests_today: u32,
    tokens_today: u64,
}

impl ClientUsage {
    fn roll(&mut self, now: u64, today: i32) {
        while self
            .minute
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= MINUTE_MS)
        {
            self.minute.pop_front();
        }
        if self.day != today {
            self.day = today;
            self.requests_today = 0;
            self.tokens_today = 0;
        }
    }
}

/// The live usage of every client key (a sharded map: no global lock). foldhash instead of
/// SipHash: the keys are the store's ids, not chosen by clients, and each request looks them up
/// three times.
#[derive(Debug, Default)]
pub struct ClientGate {
    usage: DashMap<i64, Mutex<ClientUsage>, foldhash::fast::RandomState>,
    in_flight: DashMap<i64, Arc<AtomicU32>, foldhash::fast::RandomState>,
}

/// One request of a client in flight: gives its place back when dropped (with the response,
/// so a stream holds it until it ends).
#[derive(Debug)]
pub struct InFlight(Arc<AtomicU32>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientGate {
    /// Takes a place among the requests client `id` may have in flight (`limit`), or refuses.
    pub fn enter(&self, id: i64, limit: u32) -> Result<InFlight, ClientRefusal> {
        let counter = Arc::clone(self.in_flight.entry(id).or_default().value());
        if counter.fetch_add(1, Ordering::AcqRel) >= limit {
            counter.fetch_sub(1, Ordering::AcqRel);
            return Err(ClientRefusal::Concurrency { limit });
        }
        Ok(InFlight(counter))
    }

    /// Admits one request of client `id` under `limits` at `now`, counting it; or refuses it.
    pub fn admit(&self, id: i64, limits: &ClientLimits, now: u64) -> Result<(), ClientRefusal> {
        if limits.expires_at_ms.is_some_and(|at| at <= now) {
            return Err(ClientRefusal::Expired);
        }
        if limits.rpm.is_none() && limits.rpd.is_none() && limits.daily_tokens.is_none() {
            return Ok(());
        }
        let today = pacific_day(now);
        let entry = self.usage.entry(id).or_default();
        let mut usage = entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        usage.roll(now, today);
        let until_midnight =
            || Duration::from_millis(next_pacific_midnight_ms(now).saturating_sub(now));
        if let Some(limit) = limits.daily_tokens
            && usage.tokens_today >= limit
        {
            return Err(ClientRefusal::Tokens {
                limit,
                retry_after: until_midnight(),
            });
        }
        if let Some(limit) = limits.rpd
            && usage.requests_today >= limit
        {
            return Err(ClientRefusal::PerDay {
                limit,
                retry_after: until_midnight(),
            });
        }
        if let Some(limit) = limits.rpm
            && usage.minute.len() >= limit as usize
        {
            let oldest = usage.minute.front().copied().unwrap_or(now);
            let retry_after = Duration::from_millis((oldest + MINUTE_MS).saturating_sub(now));
            return Err(ClientRefusal::PerMinute { limit, retry_after });
        }
        usage.minute.push_back(now);
        usage.requests_today += 1;
        Ok(())
    }

    /// Counts tokens a request of client `id` used.
    pub fn add_tokens(&self, id: i64, tokens: u64, now: u64) {
        if tokens == 0 {
            return;
        }
        let today = pacific_day(now);
        let entry = self.usage.entry(id).or_default();
        let mut usage = entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        usage.roll(now, today);
        usage.tokens_today += tokens;
    }

    /// Restores today's counts of client `id` after a restart.
    pub fn restore(&self, id: i64, day: i32, requests: u32, tokens: u64) {
        let entry = self.usage.entry(id).or_default();
        let mut usage = entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if usage.day != day {
            *usage = ClientUsage {
                day,
                ..ClientUsage::default()
            };
        }
        usage.requests_today = usage.requests_today.max(requests);
        usage.tokens_today = usage.tokens_today.max(tokens);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn requests_in_flight_are_bounded_and_their_places_come_back() {
        let gate = ClientGate::default();
        let first = gate.enter(7, 2).unwrap();
        let second = gate.enter(7, 2).unwrap();
        assert_eq!(
            gate.enter(7, 2).unwrap_err(),
            ClientRefusal::Concurrency { limit: 2 }
        );
        assert!(gate.enter(8, 2).is_ok(), "other clients have their own");
        drop(first);
        let third = gate.enter(7, 2).unwrap();
        drop((second, third));
        assert!(gate.enter(7, 1).is_ok());
    }

    use super::*;

    const NOON: u64 = 1_795_636_800_000;

    #[test]
    fn each_limit_refuses_with_its_own_reason_and_wait() {
        let gate = ClientGate::default();
        let per_minute = ClientLimits {
            rpm: Some(2),
            ..ClientLimits::default()
        };
        gate.admit(1, &per_minute, NOON).unwrap();
        gate.admit(1, &per_minute, NOON + 10_000).unwrap();
        assert_eq!(
            gate.admit(1, &per_minute, NOON + 20_000),
            Err(ClientRefusal::PerMinute {
                limit: 2,
                retry_after: Duration::from_secs(40)
            })
        );
        gate.admit(1, &per_minute, NOON + 60_000).unwrap();

        let per_day = ClientLimits {
            rpd: Some(1),
            ..ClientLimits::default()
        };
        gate.admit(2, &per_day, NOON).unwrap();
        assert!(matches!(
            gate.admit(2, &per_day, NOON + 1),
            Err(ClientRefusal::PerDay { limit: 1, .. })
        ));
        // Noon to Pacific midnight is twelve hours.
        assert_eq!(
            gate.admit(2, &per_day, NOON).unwrap_err().retry_after(),
            Some(Duration::from_secs(12 * 3600))
        );
        gate.admit(2, &per_day, NOON + 12 * 3600 * 1000).unwrap();

        let tokens = ClientLimits {
            daily_tokens: Some(100),
            ..ClientLimits::default()
        };
        gate.admit(3, &tokens, NOON).unwrap();
        gate.add_tokens(3, 100, NOON);
        assert!(matches!(
            gate.admit(3, &tokens, NOON),
            Err(ClientRefusal::Tokens { limit: 100, .. })
        ));

        let expiring = ClientLimits {
            expires_at_ms: Some(NOON),
            ..ClientLimits::default()
        };
        assert_eq!(gate.admit(4, &expiring, NOON), Err(ClientRefusal::Expired));
        assert!(gate.admit(4, &expiring, NOON - 1).is_ok());

        gate.restore(5, pacific_day(NOON), 1, 0);
        assert!(
            gate.admit(5, &per_day, NOON).is_err(),
            "restored counts are honoured"
        );
    }

    #[test]
    fn allowed_models() {
        let limits = ClientLimits {
            allowed_models: Some(vec!["gemini-2.5-flash".into()]),
            ..ClientLimits::default()
        };
        assert!(limits.allows_model("gemini-2.5-flash"));
        assert!(!limits.allows_model("gemini-2.5-pro"));
        assert!(ClientLimits::default().allows_model("anything"));
    }
}
