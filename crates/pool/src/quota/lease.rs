//! Sharing one quota among several gateway instances (PostgreSQL deployments).
//!
//! Each instance sends a request for a limited model only under a **lease**: a slice of a
//! project's quota for that model, granted by the shared database. The database grants a slice
//! only while the slices granted in the last [`GRANT_WINDOW_MS`] (one minute plus a lease's
//! lifetime) stay within the per-minute limit and the slices granted on this Pacific day within
//! the daily limit. A lease lapses after [`LEASE_LIFETIME_MS`], so every request sent in any
//! 60-second window comes from slices granted within a window of 60 s + the lifetime, whose sum
//! is bounded by the limit: the instances together never send more than the limit. The price is
//! that a lapsed remainder is wasted until it leaves the window; slices are small (a tenth of the
//! per-minute limit) to keep that waste small and the spread between instances fair.
//!
//! Leases are refilled in the background before they run out, so most requests never wait for
//! the database; a request finds an empty lease only when its instance had no traffic for that
//! project and model lately, and then waits for one round trip.
//!
//! What an instance learns that the others need to know (a 429 cooldown, a key taken out of
//! service) goes to an outbox that the server publishes; the others apply it with
//! [`crate::Pool::apply_remote_cooldown`].

use super::limits::Limits;

/// How long a lease may be used.
pub const LEASE_LIFETIME_MS: u64 = 10_000;
/// The window over which granted slices are summed against the per-minute limit.
pub const GRANT_WINDOW_MS: u64 = 60_000 + LEASE_LIFETIME_MS;
/// How long a project without a lease stays out of the available set before it is looked at
/// again (a granted lease brings it back at once).
pub const LEASE_WAIT_MS: u64 = 1_000;

/// The size of the slice to ask for: a tenth of the per-minute limit and a hundredth of the
/// daily one, at least one request.
pub fn lease_size(limits: Limits) -> u32 {
    let by_minute = limits.rpm.map(|rpm| (rpm / 10).max(1));
    let by_day = limits.rpd.map(|rpd| (rpd / 100).max(1));
    match (by_minute, by_day) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => u32::MAX,
    }
}

/// Below how many requests left a lease is refilled.
pub fn refill_below(limits: Limits) -> u32 {
    lease_size(limits) / 2
}

/// A lease the refiller should ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseWant {
    /// The project.
    pub project: String,
    /// The model.
    pub model: String,
    /// The limits in force for that model.
    pub limits: Limits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_a_tenth_of_the_minute_and_a_hundredth_of_the_day() {
        let limits = |rpm, rpd| Limits {
            rpm,
            rpd,
            tpm: None,
        };
        assert_eq!(lease_size(limits(Some(100), None)), 10);
        assert_eq!(lease_size(limits(Some(5), None)), 1);
        assert_eq!(lease_size(limits(Some(1000), Some(500))), 5);
        assert_eq!(lease_size(limits(None, Some(20))), 1);
        assert_eq!(refill_below(limits(Some(100), None)), 5);
        assert_eq!(refill_below(limits(Some(10), None)), 0);
    }
}
