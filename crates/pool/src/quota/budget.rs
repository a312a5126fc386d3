//! A retry budget: retries may add at most a fraction of the request rate (plus a small floor)
//! to the upstream traffic, so a 429 storm across the pool does not turn every request into
//! `MAX_RETRIES + 1` upstream calls.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Budget units per retry (thousandths of a retry).
const RETRY_COST: i64 = 1000;
/// Each request earns a fifth of a retry.
const DEPOSIT_PER_REQUEST: i64 = 200;
/// The floor: ten retries per second are always allowed.
const FLOOR_PER_SECOND: i64 = 10 * RETRY_COST;
/// The most that can be saved up.
const CAPACITY: i64 = 100 * RETRY_COST;

/// A lock-free token bucket of retries.
#[derive(Debug)]
pub struct RetryBudget {
    balance: AtomicI64,
    last_refill_ms: AtomicU64,
}

impl RetryBudget {
    /// A full budget at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        Self {
            balance: AtomicI64::new(CAPACITY),
            last_refill_ms: AtomicU64::new(now_ms),
        }
    }

    fn add(&self, amount: i64) {
        let _ = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                Some((balance + amount).min(CAPACITY))
            });
    }

    /// A new request (not a retry) earns part of a retry.
    pub fn deposit(&self) {
        self.add(DEPOSIT_PER_REQUEST);
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn try_withdraw(&self, now_ms: u64) -> bool {
        let last = self.last_refill_ms.load(Ordering::Relaxed);
        if now_ms > last
            && self
                .last_refill_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let elapsed = i64::try_from(now_ms - last).unwrap_or(i64::MAX / FLOOR_PER_SECOND);
            self.add(elapsed.saturating_mul(FLOOR_PER_SECOND) / 1000);
        }
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                (balance >= RETRY_COST).then_some(balance - RETRY_COST)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_spends_the_budget_and_requests_and_time_refill_it() {
        let budget = RetryBudget::new(0);
        let mut granted = 0;
        while budget.try_withdraw(0) {
            granted += 1;
        }
        assert_eq!(granted, 100, "the saved-up capacity");
        // Five requests earn one retry.
        for _ in 0..5 {
            budget.deposit();
        }
        assert!(budget.try_withdraw(0));
        assert!(!budget.try_withdraw(0));
        // A second later the floor of ten retries is there.
        let granted = (0..20).filter(|_| budget.try_withdraw(1000)).count();
        assert_eq!(granted, 10);
    }
}
