//! The quota book of one model: for every project, its request windows and cooldown, and the set
//! of projects that can take a request now.
//!
//! Projects that cannot (quota used up, cooling down after a 429, or without a healthy key) are
//! moved out of the available set into a heap ordered by when they free up, so a pick looks at
//! available projects only: with 99 % of the pool cooling down, a pick costs the same as with
//! none. Entries of the heap may be stale (a project cooled again later); they are checked
//! against the project's own `cooling_until` when they come out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use crate::FastMap;
use crate::limits::Limits;

const MINUTE_MS: u64 = 60_000;

/// Why a project is out of the available set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cooling {
    /// Its quota for this model is used up (or the upstream said so with a 429).
    Quota {
        /// Until the Pacific-midnight reset.
        daily: bool,
    },
    /// None of its keys can serve now (invalid, disabled, or circuit open).
    Health,
    /// Several instances share the quota and this one holds no lease of it now: it waits for
    /// the lease refill (see [`crate::lease`]).
    Lease,
}

#[derive(Debug)]
struct ProjectQuota {
    minute: VecDeque<u64>,
    tokens: VecDeque<(u64, u64)>,
    tokens_in_window: u64,
    day: i32,
    day_count: u32,
    cooling_until: u64,
    cooling: Cooling,
    backoff_level: u32,
    /// Requests this instance may still send under its current lease (shared quota only).
    lease_left: u32,
    /// When the current lease lapses.
    lease_until: u64,
    /// The lease is empty or running low: the refiller should ask for more.
    lease_wanted: bool,
}

impl ProjectQuota {
    fn new(day: i32) -> Self {
        Self {
            minute: VecDeque::new(),
            tokens: VecDeque::new(),
            tokens_in_window: 0,
            day,
            day_count: 0,
            cooling_until: 0,
            cooling: Cooling::Health,
            backoff_level: 0,
            lease_left: 0,
            lease_until: 0,
            lease_wanted: false,
        }
    }

    /// Drops what left the windows and resets the day count on a new Pacific day.
    fn roll(&mut self, now: u64, today: i32) {
        while self
            .minute
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= MINUTE_MS)
        {
            self.minute.pop_front();
        }
        while let Some((t, n)) = self.tokens.front().copied() {
            if now.saturating_sub(t) < MINUTE_MS {
                break;
            }
            self.tokens.pop_front();
            self.tokens_in_window -= n;
        }
        if self.day != today {
            self.day = today;
            self.day_count = 0;
        }
    }
}

/// How much a project has left for this model, best first: requests today, then this minute.
pub(crate) type Headroom = (u32, u32);

/// The result of checking a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// It can take a request; this much is left.
    Open(Headroom),
    /// It cannot until `until`.
    Closed { until: u64, cooling: Cooling },
}

/// The book of one model.
#[derive(Debug)]
pub(crate) struct ModelBook {
    pub limits: Limits,
    /// Requests need a lease of the shared quota (several instances).
    pub leased: bool,
    generation: u64,
    available: Vec<Arc<str>>,
    position: FastMap<Arc<str>, usize>,
    cooling: BinaryHeap<Reverse<(u64, Arc<str>)>>,
    quota: FastMap<Arc<str>, ProjectQuota>,
}

impl ModelBook {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            leased: false,
            generation: u64::MAX,
            available: Vec::new(),
            position: FastMap::default(),
            cooling: BinaryHeap::new(),
            quota: FastMap::default(),
        }
    }

    /// Rebuilds the available set when the key table changed.
    pub fn sync<'a>(
        &mut self,
        generation: u64,
        projects: impl Iterator<Item = &'a Arc<str>>,
        now: u64,
    ) {
        if self.generation == generation {
            return;
        }
        self.generation = generation;
        self.available.clear();
        self.position.clear();
        self.cooling.clear();
        for project in projects {
            match self.quota.get(project) {
                Some(quota) if quota.cooling_until > now => {
                    self.cooling
                        .push(Reverse((quota.cooling_until, Arc::clone(project))));
                }
                _ => self.insert_available(Arc::clone(project)),
            }
        }
    }

    fn insert_available(&mut self, project: Arc<str>) {
        if !self.position.contains_key(&project) {
            self.position
                .insert(Arc::clone(&project), self.available.len());
            self.available.push(project);
        }
    }

    fn remove_available(&mut self, project: &Arc<str>) {
        let Some(index) = self.position.remove(project) else {
            return;
        };
        self.available.swap_remove(index);
        if let Some(moved) = self.available.get(index) {
            self.position.insert(Arc::clone(moved), index);
        }
    }

    /// Brings back the projects whose cooldown has passed.
    pub fn release(&mut self, now: u64) {
        while let Some(Reverse((until, _))) = self.cooling.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((until, project))) = self.cooling.pop() else {
                break;
            };
            let current = self.quota.get(&project).map_or(0, |q| q.cooling_until);
            if current == until {
                self.insert_available(project);
            }
        }
    }

    pub fn available_len(&self) -> usize {
        self.available.len()
    }

    pub fn available_at(&self, index: usize) -> &Arc<str> {
        &self.available[index]
    }

    /// Swaps two entries of the available list (the pick keeps excluded ones at the end).
    pub fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.available.swap(a, b);
        self.position.insert(Arc::clone(&self.available[a]), a);
        self.position.insert(Arc::clone(&self.available[b]), b);
    }

    fn quota_mut(&mut self, project: &Arc<str>, today: i32) -> &mut ProjectQuota {
        self.quota
            .entry(Arc::clone(project))
            .or_insert_with(|| ProjectQuota::new(today))
    }

    /// Whether `project` can take a request now, and how much it has left.
    pub fn check(
        &mut self,
        project: &Arc<str>,
        now: u64,
        today: i32,
        next_midnight: impl Fn() -> u64,
    ) -> Check {
        let limits = self.limits;
        let needs_lease = self.needs_lease();
        let quota = self.quota_mut(project, today);
        quota.roll(now, today);
        if quota.cooling_until > now {
            return Check::Closed {
                until: quota.cooling_until,
                cooling: quota.cooling,
            };
        }
        if limits.rpd.is_some_and(|limit| quota.day_count >= limit) {
            return Check::Closed {
                until: next_midnight(),
                cooling: Cooling::Quota { daily: true },
            };
        }
        if let Some(limit) = limits.rpm
            && quota.minute.len() >= limit as usize
        {
            let until = quota.minute.front().map_or(now, |t| t + MINUTE_MS);
            return Check::Closed {
                until,
                cooling: Cooling::Quota { daily: false },
            };
        }
        if let Some(limit) = limits.tpm
            && quota.tokens_in_window >= limit
        {
            let until = quota.tokens.front().map_or(now, |(t, _)| t + MINUTE_MS);
            return Check::Closed {
                until,
                cooling: Cooling::Quota { daily: false },
            };
        }
        if needs_lease && (quota.lease_left == 0 || quota.lease_until <= now) {
            quota.lease_wanted = true;
            return Check::Closed {
                until: now + crate::lease::LEASE_WAIT_MS,
                cooling: Cooling::Lease,
            };
        }
        let day_left = limits.rpd.map_or(u32::MAX, |limit| limit - quota.day_count);
        let minute_left = limits.rpm.map_or(u32::MAX, |limit| {
            limit.saturating_sub(u32::try_from(quota.minute.len()).unwrap_or(u32::MAX))
        });
        Check::Open((day_left, minute_left))
    }

    /// Whether requests need a lease: the quota is shared and this model has a request limit.
    fn needs_lease(&self) -> bool {
        self.leased && (self.limits.rpm.is_some() || self.limits.rpd.is_some())
    }

    /// Counts a request against `project`.
    pub fn reserve(&mut self, project: &Arc<str>, now: u64, today: i32) {
        let leased = self.needs_lease();
        let refill_below = crate::lease::refill_below(self.limits);
        let per_minute = self.limits.rpm.is_some();
        let quota = self.quota_mut(project, today);
        quota.roll(now, today);
        // The minute window is kept only under a per-minute limit: without one it would hold
        // every request of the last minute for nothing (a limit set later starts counting then).
        if per_minute {
            quota.minute.push_back(now);
        }
        quota.day_count += 1;
        if leased {
            quota.lease_left = quota.lease_left.saturating_sub(1);
            // Ask for the next lease before this one runs out, so requests rarely wait.
            if quota.lease_left <= refill_below {
                quota.lease_wanted = true;
            }
        }
    }

    /// Adds a lease of `count` requests until `until`, and brings the project back if it waited
    /// for it. What is left of the current lease is kept, and the sum lapses when the current
    /// one does: no request is ever sent after its own lease lapsed, which is what the bound of
    /// [`crate::lease`] needs.
    pub fn grant_lease(
        &mut self,
        project: &Arc<str>,
        count: u32,
        until: u64,
        now: u64,
        today: i32,
    ) {
        let quota = self.quota_mut(project, today);
        if quota.lease_left > 0 && quota.lease_until > now {
            quota.lease_left = quota.lease_left.saturating_add(count);
            quota.lease_until = quota.lease_until.min(until);
        } else {
            quota.lease_left = count;
            quota.lease_until = until;
        }
        quota.lease_wanted = false;
        if quota.cooling == Cooling::Lease {
            quota.cooling_until = 0;
            self.insert_available(Arc::clone(project));
        }
    }

    /// Projects whose lease is empty or low, clearing the flags (the refiller asks once).
    pub fn take_lease_wants(&mut self) -> Vec<Arc<str>> {
        self.quota
            .iter_mut()
            .filter(|(_, quota)| quota.lease_wanted)
            .map(|(project, quota)| {
                quota.lease_wanted = false;
                Arc::clone(project)
            })
            .collect()
    }

    /// Whether some project waits for a lease now.
    pub fn waits_for_lease(&self, now: u64) -> bool {
        self.quota
            .values()
            .any(|quota| quota.cooling == Cooling::Lease && quota.cooling_until > now)
    }

    /// Counts tokens against `project`'s per-minute token window.
    pub fn record_tokens(&mut self, project: &Arc<str>, now: u64, today: i32, tokens: u64) {
        // Kept only under a tokens-per-minute limit, for the same reason as the minute window.
        if tokens == 0 || self.limits.tpm.is_none() {
            return;
        }
        let quota = self.quota_mut(project, today);
        quota.roll(now, today);
        quota.tokens.push_back((now, tokens));
        quota.tokens_in_window += tokens;
    }

    /// Takes `project` out of the available set until `until` (a later cooldown wins).
    pub fn cool(&mut self, project: &Arc<str>, until: u64, cooling: Cooling, today: i32) {
        let quota = self.quota_mut(project, today);
        if until <= quota.cooling_until {
            return;
        }
        quota.cooling_until = until;
        quota.cooling = cooling;
        self.remove_available(project);
        self.cooling.push(Reverse((until, Arc::clone(project))));
    }

    /// The next exponential backoff for a 429 that named no delay: 60 s, doubling, at most 1 h.
    pub fn next_backoff_ms(&mut self, project: &Arc<str>, today: i32) -> u64 {
        let quota = self.quota_mut(project, today);
        let delay = (60_000u64 << quota.backoff_level.min(6)).min(3_600_000);
        quota.backoff_level += 1;
        delay
    }

    /// A success resets the 429 backoff.
    pub fn reset_backoff(&mut self, project: &Arc<str>) {
        if let Some(quota) = self.quota.get_mut(project) {
            quota.backoff_level = 0;
        }
    }

    /// The earliest quota cooldown still in force: when it ends and whether it is a daily one.
    pub fn next_quota_release(&self, now: u64) -> Option<(u64, bool)> {
        self.quota
            .values()
            .filter(|quota| quota.cooling_until > now)
            .filter_map(|quota| match quota.cooling {
                Cooling::Quota { daily } => Some((quota.cooling_until, daily)),
                Cooling::Health | Cooling::Lease => None,
            })
            .min_by_key(|(until, _)| *until)
    }

    /// Requests left this minute and today for each project seen (`None`: unlimited).
    pub fn quota_left(
        &mut self,
        now: u64,
        today: i32,
    ) -> Vec<(Arc<str>, Option<u32>, Option<u32>)> {
        let limits = self.limits;
        self.quota
            .iter_mut()
            .map(|(project, quota)| {
                quota.roll(now, today);
                let minute_used = u32::try_from(quota.minute.len()).unwrap_or(u32::MAX);
                (
                    Arc::clone(project),
                    limits.rpm.map(|limit| limit.saturating_sub(minute_used)),
                    limits
                        .rpd
                        .map(|limit| limit.saturating_sub(quota.day_count)),
                )
            })
            .collect()
    }

    /// Quota cooldowns in force: project, until, daily.
    pub fn cooldowns(&self, now: u64) -> Vec<(Arc<str>, u64, bool)> {
        self.quota
            .iter()
            .filter(|(_, quota)| quota.cooling_until > now)
            .filter_map(|(project, quota)| match quota.cooling {
                Cooling::Quota { daily } => Some((Arc::clone(project), quota.cooling_until, daily)),
                Cooling::Health | Cooling::Lease => None,
            })
            .collect()
    }

    /// Today's request counts, by project.
    pub fn day_counts(&self, today: i32) -> Vec<(Arc<str>, u32)> {
        self.quota
            .iter()
            .filter(|(_, quota)| quota.day == today && quota.day_count > 0)
            .map(|(project, quota)| (Arc::clone(project), quota.day_count))
            .collect()
    }

    /// Sets a project's count for `day` (after a restart).
    pub fn restore_day_count(&mut self, project: &Arc<str>, day: i32, count: u32) {
        let quota = self.quota_mut(project, day);
        if quota.day == day {
            quota.day_count = quota.day_count.max(count);
        }
    }
}
