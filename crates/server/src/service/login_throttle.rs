//! Throttling of admin logins, by address and by user name.
//!
//! - An attempt takes its place before argon2 runs (it is "in flight" until its verdict), so
//!   parallel guesses cannot all slip past a check made before any of them failed: until the
//!   backoff starts, as many attempts may be in flight as failures are left; after, one at a time.
//! - [`FREE_FAILURES`] failures cost nothing; the fifth starts a wait of one second, and each
//!   further failure doubles it, up to a cap. A success starts the count again. An attempt refused
//!   with 429 is not a failure, so hammering during a wait does not lengthen it.
//! - A record is forgotten once it has had no failure for [`FORGET_AFTER`] past the end of its
//!   wait: failures decay, and no count can hold an address or a name forever.
//! - At most a few argon2 verifications run at once ([`hashing_slots`]): each holds about 19 MiB
//!   and a CPU for tens of milliseconds, and an attempt that finds no free slot is refused at
//!   once instead of queueing.
//!
//! Nothing here does I/O, and callers pass `now` (only an attempt dropped unsettled reads the
//! clock), so tests can move time.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Failed logins an address, or a user name, may have before the backoff starts.
pub const FREE_FAILURES: u32 = 5;
/// The wait the fifth failure starts; each further failure doubles it.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait of an address, reached at the fifteenth failure: from then on a single
/// address gets one guess per 15 minutes.
const ADDRESS_LONGEST_WAIT: Duration = Duration::from_secs(15 * 60);
/// The longest wait of a user name: shorter than an address's, because a distributed guesser
/// holds the name at this cap and everyone trying that name waits with it, the admin included
/// (unless logging in from an address known from an earlier login, see [`KNOWN_ADDRESS_LIFETIME`]).
/// Five minutes holds such a guesser to about 12 guesses an hour on the name, while a locked-out
/// admin on a new address waits five minutes at worst.
const USERNAME_LONGEST_WAIT: Duration = Duration::from_secs(5 * 60);
/// A record with no failure for this long after the end of its wait is forgotten (the decay): an
/// admin who mistyped a few times has a clean slate after a short break, while a guesser who
/// keeps trying never decays and stays at the longest wait.
pub const FORGET_AFTER: Duration = Duration::from_secs(5 * 60);
/// Records kept per address. Past it, forgotten and idle records go first, then the
/// longest-quiet one, so countless addresses cannot grow the map without limit.
const ADDRESS_RECORDS: usize = 10_000;
/// Records kept per user name (any name can be sent, so these are bounded too).
const USERNAME_RECORDS: usize = 1_000;
/// Addresses remembered from successful logins.
const KNOWN_ADDRESSES: usize = 64;
/// How long an address that logged in stays spared the user name's backoff: a distributed
/// guesser keeps the admin's name at its longest wait, and without this the real admin would
/// have to win a race against the guessers for every slot. The address's own backoff still
/// applies to it.
const KNOWN_ADDRESS_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The wait suggested when the allowed attempts are already in flight or no hashing slot is
/// free: both clear as soon as a verification ends.
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// How many argon2 verifications may run at once: the number of CPUs, at least 2 (so one
/// login can run beside another), at most 4 (about 76 MiB of argon2 memory).
pub fn hashing_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(2, 4)
}

/// The counters are plain numbers that a panic cannot leave half-updated in a harmful way, so a
/// poisoned lock is used as it is rather than failing every later login.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The unit an address is throttled by: the IPv4 address, or the /64 prefix of an IPv6 one. One
/// subscriber usually holds a whole /64, and counting single IPv6 addresses would give an
/// attacker 2^64 fresh starts.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

/// User names are kept as digests: a fixed size whatever a body holds.
fn username_key(username: &str) -> [u8; 32] {
    Sha256::digest(username.as_bytes()).into()
}

/// What is known about one address or one user name.
#[derive(Debug)]
struct Record {
    failures: u32,
    in_flight: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
    last_seen: Instant,
}

impl Record {
    fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            in_flight: 0,
            last_failure: None,
            blocked_until: None,
            last_seen: now,
        }
    }

    /// Forgets the failures once they are [`FORGET_AFTER`] past the end of the wait.
    fn decay(&mut self, now: Instant) {
        if let Some(last_failure) = self.last_failure {
            let wait_end = self.blocked_until.unwrap_or(last_failure);
            if now.saturating_duration_since(wait_end) >= FORGET_AFTER {
                self.reset();
            }
        }
    }

    fn reset(&mut self) {
        self.failures = 0;
        self.last_failure = None;
        self.blocked_until = None;
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.failures == 0
    }
}

/// Records by key (an address or a user name digest), bounded.
#[derive(Debug)]
struct Records<K> {
    map: HashMap<K, Record>,
    capacity: usize,
    longest_wait: Duration,
}

impl<K: Hash + Eq + Copy> Records<K> {
    fn new(capacity: usize, longest_wait: Duration) -> Self {
        Self {
            map: HashMap::new(),
            capacity,
            longest_wait,
        }
    }

    fn record(&mut self, key: K, now: Instant) -> &mut Record {
        if !self.map.contains_key(&key) {
            self.make_room(now);
        }
        self.map.entry(key).or_insert_with(|| Record::new(now))
    }

    /// Takes a place for an attempt, or says how long to wait.
    fn reserve(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        let record = self.record(key, now);
        record.decay(now);
        record.last_seen = now;
        if let Some(until) = record.blocked_until
            && until > now
        {
            return Err(until.saturating_duration_since(now));
        }
        let allowed_in_flight = FREE_FAILURES.saturating_sub(record.failures).max(1);
        if record.in_flight >= allowed_in_flight {
            return Err(BUSY_WAIT);
        }
        record.in_flight += 1;
        Ok(())
    }

    /// Gives back a place whose attempt was never checked.
    fn release(&mut self, key: K) {
        if let Some(record) = self.map.get_mut(&key) {
            record.in_flight = record.in_flight.saturating_sub(1);
            if record.is_idle() {
                self.map.remove(&key);
            }
        }
    }

    /// A failed attempt: counts it and, past the free failures, doubles the wait.
    fn fail(&mut self, key: K, now: Instant, reserved: bool) {
        let longest_wait = self.longest_wait;
        let record = self.record(key, now);
        if reserved {
            record.in_flight = record.in_flight.saturating_sub(1);
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = Some(now);
        record.last_seen = now;
        if let Some(doublings) = record.failures.checked_sub(FREE_FAILURES) {
            let wait = FIRST_WAIT
                .saturating_mul(2u32.saturating_pow(doublings))
                .min(longest_wait);
            if let Some(until) = now.checked_add(wait) {
                // The later of the two: a failure decided in parallel must not shorten the
                // wait another one just set.
                record.blocked_until = Some(record.blocked_until.map_or(until, |b| b.max(until)));
            }
        }
    }

    /// A successful login: the count starts again.
    fn succeed(&mut self, key: K, reserved: bool) {
        if let Some(record) = self.map.get_mut(&key) {
            if reserved {
                record.in_flight = record.in_flight.saturating_sub(1);
            }
            record.reset();
            if record.is_idle() {
                self.map.remove(&key);
            }
        }
    }

    fn make_room(&mut self, now: Instant) {
        if self.map.len() < self.capacity {
            return;
        }
        self.map.retain(|_, record| {
            record.decay(now);
            !record.is_idle()
        });
        if self.map.len() < self.capacity {
            return;
        }
        // Full of live records (that many addresses failing at once): the one quiet the longest
        // goes, one with an attempt in flight last.
        let quietest = self
            .map
            .iter()
            .min_by_key(|(_, record)| (record.in_flight > 0, record.last_seen))
            .map(|(key, _)| *key);
        if let Some(key) = quietest {
            self.map.remove(&key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The login throttle of one gateway process.
#[derive(Debug)]
pub struct LoginThrottle {
    addresses: Mutex<Records<IpAddr>>,
    usernames: Mutex<Records<[u8; 32]>>,
    known_addresses: Mutex<HashMap<IpAddr, Instant>>,
    hashing: Arc<Semaphore>,
}

impl LoginThrottle {
    /// A throttle letting `hashing_slots` verifications run at once.
    pub fn new(hashing_slots: usize) -> Self {
        Self {
            addresses: Mutex::new(Records::new(ADDRESS_RECORDS, ADDRESS_LONGEST_WAIT)),
            usernames: Mutex::new(Records::new(USERNAME_RECORDS, USERNAME_LONGEST_WAIT)),
            known_addresses: Mutex::new(HashMap::new()),
            hashing: Arc::new(Semaphore::new(hashing_slots)),
        }
    }

    /// Lets a login from `address` for `username` be checked, with the hashing slot to check it
    /// in, or says how long to wait. The attempt counts as a failure unless it is settled
    /// otherwise, so a client that hangs up mid-check does not get a free guess.
    pub fn admit(
        &self,
        address: IpAddr,
        username: &str,
        now: Instant,
    ) -> Result<(LoginAttempt<'_>, OwnedSemaphorePermit), Duration> {
        let address = address_key(address);
        lock(&self.addresses).reserve(address, now)?;
        let username = username_key(username);
        let name_reserved = !self.is_known(address, now);
        if name_reserved && let Err(wait) = lock(&self.usernames).reserve(username, now) {
            lock(&self.addresses).release(address);
            return Err(wait);
        }
        let mut attempt = LoginAttempt {
            throttle: self,
            address,
            username,
            name_reserved,
            settled: false,
        };
        match Arc::clone(&self.hashing).try_acquire_owned() {
            Ok(permit) => Ok((attempt, permit)),
            Err(_) => {
                attempt.settle(Outcome::Unchecked, now);
                Err(BUSY_WAIT)
            }
        }
    }

    fn is_known(&self, address: IpAddr, now: Instant) -> bool {
        lock(&self.known_addresses)
            .get(&address)
            .is_some_and(|since| now.saturating_duration_since(*since) < KNOWN_ADDRESS_LIFETIME)
    }

    fn remember(&self, address: IpAddr, now: Instant) {
        let mut known = lock(&self.known_addresses);
        if !known.contains_key(&address) && known.len() >= KNOWN_ADDRESSES {
            known.retain(|_, since| now.saturating_duration_since(*since) < KNOWN_ADDRESS_LIFETIME);
            if known.len() >= KNOWN_ADDRESSES
                && let Some(oldest) = known
                    .iter()
                    .min_by_key(|(_, since)| **since)
                    .map(|(a, _)| *a)
            {
                known.remove(&oldest);
            }
        }
        known.insert(address, now);
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Refused before the password was checked.
    Unchecked,
}

/// A login attempt admitted by [`LoginThrottle::admit`]; dropped unsettled, it is a failure.
#[derive(Debug)]
pub struct LoginAttempt<'a> {
    throttle: &'a LoginThrottle,
    address: IpAddr,
    username: [u8; 32],
    /// Whether the attempt holds a place on the user name (not from a known address).
    name_reserved: bool,
    settled: bool,
}

impl LoginAttempt<'_> {
    /// The password and user name were right: both counts start again, and the address is
    /// remembered as the admin's.
    pub fn succeeded(mut self, now: Instant) {
        self.settle(Outcome::Success, now);
    }

    /// The password or the user name was wrong.
    pub fn failed(mut self, now: Instant) {
        self.settle(Outcome::Failure, now);
    }

    fn settle(&mut self, outcome: Outcome, now: Instant) {
        if std::mem::replace(&mut self.settled, true) {
            return;
        }
        let throttle = self.throttle;
        match outcome {
            Outcome::Success => {
                lock(&throttle.addresses).succeed(self.address, true);
                lock(&throttle.usernames).succeed(self.username, self.name_reserved);
                throttle.remember(self.address, now);
            }
            Outcome::Failure => {
                lock(&throttle.addresses).fail(self.address, now, true);
                // A known address's mistakes count on the address only: they must not hold
                // the name back for everyone else.
                if self.name_reserved {
                    lock(&throttle.usernames).fail(self.username, now, true);
                }
            }
            Outcome::Unchecked => {
                lock(&throttle.addresses).release(self.address);
                if self.name_reserved {
                    lock(&throttle.usernames).release(self.username);
                }
            }
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        self.settle(Outcome::Failure, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const AWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn fail_once(throttle: &LoginThrottle, address: IpAddr, now: Instant) {
        fail_as(throttle, address, "admin", now);
    }

    fn fail_as(throttle: &LoginThrottle, address: IpAddr, username: &str, now: Instant) {
        let (attempt, _slot) = throttle.admit(address, username, now).unwrap();
        attempt.failed(now);
    }

    #[test]
    fn parallel_attempts_get_at_most_the_free_failures_in_flight() {
        let throttle = LoginThrottle::new(64);
        let now = Instant::now();
        let admitted: Vec<_> = (0..64)
            .filter_map(|_| throttle.admit(HOME, "admin", now).ok())
            .collect();
        assert_eq!(admitted.len(), FREE_FAILURES as usize);
        assert_eq!(
            throttle.admit(HOME, "admin", now).err(),
            Some(BUSY_WAIT),
            "the rest wait for the ones in flight"
        );
        for (attempt, _slot) in admitted {
            attempt.failed(now);
        }
        assert_eq!(
            throttle.admit(HOME, "admin", now).err(),
            Some(FIRST_WAIT),
            "five failures start the backoff"
        );
    }

    #[test]
    fn the_wait_doubles_to_its_cap_and_decays_after_a_quiet_spell() {
        let throttle = LoginThrottle::new(2);
        let mut now = Instant::now();
        for _ in 0..FREE_FAILURES {
            fail_once(&throttle, HOME, now);
        }
        let mut waits = Vec::new();
        for _ in 0..14 {
            let wait = throttle.admit(HOME, "root", now).err().unwrap();
            waits.push(wait.as_secs());
            now += wait;
            // Each try during the wait is refused without lengthening it.
            assert!(
                throttle
                    .admit(HOME, "root", now - Duration::from_millis(1))
                    .is_err()
            );
            let (attempt, _slot) = throttle.admit(HOME, "root", now).unwrap();
            attempt.failed(now);
        }
        assert_eq!(
            waits,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900, 900, 900]
        );
        // Quiet for FORGET_AFTER past the wait: forgotten.
        now += ADDRESS_LONGEST_WAIT + FORGET_AFTER;
        for _ in 0..FREE_FAILURES {
            fail_once(&throttle, HOME, now);
        }
    }

    #[test]
    fn a_success_resets_the_counts_and_an_unchecked_attempt_is_free() {
        let throttle = LoginThrottle::new(1);
        let now = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            fail_once(&throttle, HOME, now);
        }
        let (attempt, slot) = throttle.admit(HOME, "admin", now).unwrap();
        // No hashing slot: refused at once, and not counted.
        assert_eq!(throttle.admit(AWAY, "other", now).err(), Some(BUSY_WAIT));
        attempt.succeeded(now);
        drop(slot);
        for _ in 0..FREE_FAILURES - 1 {
            fail_once(&throttle, HOME, now);
        }
        assert!(throttle.admit(HOME, "admin", now).is_ok());
        assert!(
            !lock(&throttle.addresses)
                .map
                .contains_key(&address_key(AWAY)),
            "an unchecked attempt leaves no record"
        );
    }

    #[test]
    fn an_attempt_dropped_unsettled_counts_as_a_failure() {
        let throttle = LoginThrottle::new(2);
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            drop(throttle.admit(HOME, "admin", now).unwrap());
        }
        assert!(throttle.admit(HOME, "admin", now).is_err());
    }

    #[test]
    fn the_name_backs_off_across_addresses_but_not_for_a_known_address() {
        let throttle = LoginThrottle::new(2);
        let now = Instant::now();
        let (attempt, _slot) = throttle.admit(HOME, "admin", now).unwrap();
        attempt.succeeded(now);
        for host in 10..10 + FREE_FAILURES {
            let address = IpAddr::from([198, 51, 100, u8::try_from(host).unwrap()]);
            fail_once(&throttle, address, now);
        }
        let fresh = IpAddr::from([198, 51, 100, 99]);
        assert_eq!(throttle.admit(fresh, "admin", now).err(), Some(FIRST_WAIT));
        assert!(throttle.admit(fresh, "root", now).is_ok());
        assert!(
            throttle.admit(HOME, "admin", now).is_ok(),
            "the known address"
        );
    }

    #[test]
    fn the_name_wait_is_capped_lower_than_an_address_wait() {
        let throttle = LoginThrottle::new(2);
        let mut now = Instant::now();
        let mut host = 0u8;
        let mut next_address = || {
            host += 1;
            IpAddr::from([203, 0, 113, host])
        };
        for _ in 0..20 {
            let address = next_address();
            loop {
                match throttle.admit(address, "admin", now) {
                    Ok((attempt, _slot)) => {
                        attempt.failed(now);
                        break;
                    }
                    Err(wait) => {
                        assert!(wait <= USERNAME_LONGEST_WAIT);
                        now += wait;
                    }
                }
            }
        }
        let wait = throttle.admit(next_address(), "admin", now).err().unwrap();
        assert_eq!(wait, USERNAME_LONGEST_WAIT);
    }

    #[test]
    fn the_maps_stay_bounded_and_ipv6_counts_by_prefix() {
        let throttle = LoginThrottle::new(2);
        let now = Instant::now();
        for n in 0..(ADDRESS_RECORDS as u32 + 500) {
            let address = IpAddr::from((0x0a00_0000u32 + n).to_be_bytes());
            fail_as(&throttle, address, &format!("user{n}"), now);
        }
        assert_eq!(lock(&throttle.addresses).len(), ADDRESS_RECORDS);
        assert_eq!(lock(&throttle.usernames).len(), USERNAME_RECORDS);

        let throttle = LoginThrottle::new(2);
        for n in 0..u128::from(FREE_FAILURES) {
            let address = IpAddr::from(Ipv6Addr::from(
                0x2001_0db8_0000_0001_0000_0000_0000_0000 + n,
            ));
            fail_once(&throttle, address, now);
        }
        let neighbour = IpAddr::from(Ipv6Addr::from(
            0x2001_0db8_0000_0001_ffff_ffff_ffff_ffffu128,
        ));
        assert!(throttle.admit(neighbour, "root", now).is_err(), "same /64");
        let mapped = IpAddr::from(Ipv6Addr::from(0xffff_c000_0201u128));
        assert_eq!(address_key(mapped), HOME);
    }
}
