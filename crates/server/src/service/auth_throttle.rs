//! Slowing down client-key guessing from one address without slowing the valid keys used from
//! it.
//!
//! Every address has a bucket of [`FAILURES_ALLOWED`] failed authentications that refills at
//! one per [`REFILL`]. While it is empty the address is *backing off*: a request from it is
//! answered 429 with `Retry-After` without telling whether its key is valid — unless the key is
//! one that already worked from this address lately ([`KNOWN_FOR`]), so the teammates behind a
//! shared address keep working while a guesser beside them gets no verdicts at all. (Answering
//! a valid guess with 200 during the backoff would tell the guesser it found a key, and a
//! throttle that still gives verdicts slows nothing.)
//!
//! Both maps are sharded (no global lock on the request path: a request with a known key reads
//! one shard) and bounded: past [`MAX_ADDRESSES`] entries the quietest are swept out.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Failed authentications an address may make in a burst.
pub const FAILURES_ALLOWED: u32 = 20;
/// One more failure is allowed per this interval.
const REFILL: Duration = Duration::from_secs(3);
/// How long a key that worked from an address stays known there.
const KNOWN_FOR: Duration = Duration::from_secs(24 * 3600);
/// Client keys remembered per address.
const KNOWN_PER_ADDRESS: usize = 8;
/// Addresses tracked in each map at most.
const MAX_ADDRESSES: usize = 100_000;

/// An address: IPv4 as it is, IPv6 by its /64 (one host has a whole /64 to rotate through).
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Failures still allowed, as of `at`.
    left: f64,
    at: Instant,
}

impl Bucket {
    fn refilled(self, now: Instant) -> Self {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / REFILL.as_secs_f64();
        Self {
            left: (self.left + earned).min(f64::from(FAILURES_ALLOWED)),
            at: now,
        }
    }
}

#[derive(Debug, Clone)]
struct Known {
    clients: Vec<(i64, Instant)>,
}

/// The throttle of failed client authentications.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: DashMap<IpAddr, Bucket>,
    known: DashMap<IpAddr, Known>,
}

/// What the throttle says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on and check the key.
    Check,
    /// The address is backing off: answer 429 after this long, whatever the key.
    BackOff(Duration),
}

impl AuthThrottle {
    /// Whether a request from `address` whose key resolved to `client` (or to nothing) may be
    /// answered on its merits.
    pub fn judge(&self, address: IpAddr, client: Option<i64>, now: Instant) -> Verdict {
        let address = address_key(address);
        let Some(bucket) = self
            .failures
            .get(&address)
            .map(|bucket| bucket.refilled(now))
        else {
            return Verdict::Check;
        };
        if bucket.left >= 1.0 {
            return Verdict::Check;
        }
        let known = client.is_some_and(|client| {
            self.known.get(&address).is_some_and(|known| {
                known
                    .clients
                    .iter()
                    .any(|(id, at)| *id == client && now.saturating_duration_since(*at) < KNOWN_FOR)
            })
        });
        if known {
            Verdict::Check
        } else {
            let wait = REFILL.mul_f64((1.0 - bucket.left).max(0.0));
            Verdict::BackOff(wait.max(Duration::from_secs(1)))
        }
    }

    /// A request from `address` authenticated as `client`.
    pub fn succeeded(&self, address: IpAddr, client: i64, now: Instant) {
        let address = address_key(address);
        // The common case reads one shard and writes nothing.
        if let Some(known) = self.known.get(&address)
            && known
                .clients
                .iter()
                .any(|(id, at)| *id == client && now.saturating_duration_since(*at) < KNOWN_FOR / 2)
        {
            return;
        }
        Self::sweep_if_full(&self.known, |known| {
            known
                .clients
                .iter()
                .all(|(_, at)| now.saturating_duration_since(*at) >= KNOWN_FOR)
        });
        let mut known = self.known.entry(address).or_insert_with(|| Known {
            clients: Vec::new(),
        });
        known.clients.retain(|(id, _)| *id != client);
        if known.clients.len() >= KNOWN_PER_ADDRESS {
            known.clients.remove(0);
        }
        known.clients.push((client, now));
    }

    /// A request from `address` with a missing or unknown key.
    pub fn failed(&self, address: IpAddr, now: Instant) {
        let address = address_key(address);
        Self::sweep_if_full(&self.failures, |bucket| {
            bucket.refilled(now).left >= f64::from(FAILURES_ALLOWED)
        });
        let mut bucket = self.failures.entry(address).or_insert(Bucket {
            left: f64::from(FAILURES_ALLOWED),
            at: now,
        });
        let refilled = bucket.refilled(now);
        *bucket = Bucket {
            left: (refilled.left - 1.0).max(0.0),
            at: now,
        };
    }

    /// Keeps `map` under [`MAX_ADDRESSES`]: entries that say nothing any more go first, then
    /// (under an attack from very many addresses) half of the rest.
    fn sweep_if_full<V>(map: &DashMap<IpAddr, V>, idle: impl Fn(&V) -> bool) {
        if map.len() < MAX_ADDRESSES {
            return;
        }
        map.retain(|_, value| !idle(value));
        if map.len() >= MAX_ADDRESSES {
            let mut keep = true;
            map.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_backs_the_address_off_but_not_the_keys_known_there() {
        let throttle = AuthThrottle::default();
        let now = Instant::now();
        let guesser: IpAddr = "203.0.113.7".parse().unwrap();
        // A teammate behind the same address used key 1 before the guessing started.
        throttle.succeeded(guesser, 1, now);
        for _ in 0..FAILURES_ALLOWED {
            assert_eq!(throttle.judge(guesser, None, now), Verdict::Check);
            throttle.failed(guesser, now);
        }
        assert!(matches!(
            throttle.judge(guesser, None, now),
            Verdict::BackOff(_)
        ));
        // A valid key guessed now gets no verdict either; the known one goes through.
        assert!(matches!(
            throttle.judge(guesser, Some(2), now),
            Verdict::BackOff(_)
        ));
        assert_eq!(throttle.judge(guesser, Some(1), now), Verdict::Check);
        // Other addresses are untouched; the bucket refills with time.
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(throttle.judge(other, None, now), Verdict::Check);
        assert_eq!(throttle.judge(guesser, None, now + REFILL), Verdict::Check);
    }

    #[test]
    fn an_ipv6_host_cannot_rotate_through_its_64() {
        let throttle = AuthThrottle::default();
        let now = Instant::now();
        for i in 0..FAILURES_ALLOWED {
            let address: IpAddr = format!("2001:db8::{i:x}").parse().unwrap();
            throttle.failed(address, now);
        }
        let next: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert!(matches!(
            throttle.judge(next, None, now),
            Verdict::BackOff(_)
        ));
    }
}
