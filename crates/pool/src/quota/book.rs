//! The quota book of one model: for every project, its request windows, learned limits and
//! cooldown, the set of projects that can take a request now, and the capacity gate (see
//! [`capacity`](super::capacity)).
//!
//! Projects that cannot (quota used up, cooling down after a 429 or an overload, or without a
//! healthy key) are moved out of the available set into a heap ordered by when they free up, so
//! a pick looks at available projects only: with 99 % of the pool cooling down, a pick costs the
//! same as with none. Entries of the heap may be stale (a project cooled again later, or was
//! brought back early); they are checked against the project's own `cooling_until` when they
//! come out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use super::capacity::{self, CapacityGate, Gate};
use super::lease;
use super::limits::Limits;
use crate::failure::CoolingReason;
use crate::maps::FastMap;

const MINUTE_MS: u64 = 60_000;
/// How long a learned limit is believed: after a day the operator's limits apply again until
/// the upstream says otherwise (so a quota Google raised is found again).
pub(crate) const LEARNED_LIMIT_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// `repr(C)`: what every check reads comes first (see [`Slot`]).
#[derive(Debug)]
#[repr(C)]
struct ProjectQuota {
    cooling_until: u64,
    learned_at_ms: u64,
    day: i32,
    day_count: u32,
    cooling: CoolingReason,
    /// Capacity failures in a row (the exponent of the next capacity backoff).
    capacity_level: u32,
    minute: VecDeque<u64>,
    tokens: VecDeque<(u64, u64)>,
    tokens_in_window: u64,
    /// Limits the upstream named for this project (`QuotaFailure.quotaValue`), and since
    /// `learned_at_ms`.
    learned: Limits,
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
            cooling: CoolingReason::Health,
            capacity_level: 0,
            learned: Limits::UNLIMITED,
            learned_at_ms: 0,
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
            self.tokens_in_window = self.tokens_in_window.saturating_sub(n);
        }
        if self.day != today {
            self.day = today;
            self.day_count = 0;
        }
    }

    fn learned_in_force(&self, now: u64) -> Option<Limits> {
        let fresh = now.saturating_sub(self.learned_at_ms) < LEARNED_LIMIT_LIFETIME_MS;
        (fresh && self.learned != Limits::UNLIMITED).then_some(self.learned)
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
    Closed { until: u64, cooling: CoolingReason },
}

/// One project's state for this model, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProjectView {
    pub project: Arc<str>,
    pub minute_used: u32,
    pub day_used: u32,
    pub tokens_used: u64,
    pub limits: Limits,
    pub learned: Option<(Limits, u64)>,
    pub cooling: Option<(u64, CoolingReason)>,
}

/// Marks a slot that is not in the available set, or not a project of the key table.
const NONE: usize = usize::MAX;

/// A project as the book knows it.
///
/// In a large pool a slot is rarely in cache when a pick looks at it, so its layout is fixed
/// (`repr(C)`, on cache lines of its own): what a check reads (the quota's cooldown, day and
/// windows) lies in the first two lines, the name last. With the compiler's layout those reads
/// fell on three lines.
#[derive(Debug)]
#[repr(C, align(64))]
struct Slot {
    /// Its position in `available` (`NONE`: not available).
    available_at: usize,
    /// Its quota for this model, made when first used, so that the operator's list shows the
    /// projects the book has used rather than every project of the table.
    quota: Option<ProjectQuota>,
    name: Arc<str>,
}

impl Slot {
    fn new(name: &Arc<str>) -> Self {
        Self {
            available_at: NONE,
            quota: None,
            name: Arc::clone(name),
        }
    }
}

/// The book of one model.
///
/// Projects are numbered by slot, and the projects of the key table the book was last synced
/// with come first, in table order: the slot of a table project *is* its index in the table.
/// The pick works on these numbers only (hashing project names and counting references to them
/// were most of its cost), and a pick reads the project's keys without waiting for its slot.
/// Names are looked up only by the calls that come with one (failures, leases, the operator's
/// views). Slots are renumbered only by `sync`, which rebuilds everything that holds them.
#[derive(Debug)]
pub(crate) struct ModelBook {
    /// The operator's limits for this model (the defaults or a per-model override).
    pub limits: Limits,
    /// Whether `limits` is a per-model override the operator set: a learned limit is never
    /// applied below it.
    pub explicit: bool,
    /// Requests need a lease of the shared quota (several instances).
    pub leased: bool,
    generation: u64,
    /// The table's projects (`table_len` of them), then the others the book has met.
    slots: Vec<Slot>,
    table_len: usize,
    slot_of: FastMap<Arc<str>, usize>,
    /// The slots of the projects that can take a request now, as far as the book knows.
    available: Vec<usize>,
    /// Slots out of `available`, by when they may come back.
    cooling: BinaryHeap<Reverse<(u64, usize)>>,
    /// Which projects cool for capacity, and the gate over them.
    capacity: CapacityGate,
    /// Where the next pick's window of `available` starts (see [`Self::next_window`]).
    cursor: usize,
}

impl ModelBook {
    pub fn new(limits: Limits, explicit: bool) -> Self {
        Self {
            limits,
            explicit,
            leased: false,
            generation: u64::MAX,
            slots: Vec::new(),
            table_len: 0,
            slot_of: FastMap::default(),
            available: Vec::new(),
            cooling: BinaryHeap::new(),
            capacity: CapacityGate::default(),
            cursor: 0,
        }
    }

    /// Renumbers the slots after the key table (`projects`, in table order) and rebuilds the
    /// available set when the table changed. Projects the table no longer has keep their quota
    /// after the table's (a later table may bring them back).
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
        let mut old: Vec<Option<Slot>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(Some)
            .collect();
        let mut old_of = std::mem::take(&mut self.slot_of);
        for project in projects {
            let slot = old_of
                .remove(project)
                .and_then(|i| old.get_mut(i).and_then(Option::take))
                .unwrap_or_else(|| Slot::new(project));
            self.push_slot(slot);
        }
        self.table_len = self.slots.len();
        for slot in old.into_iter().flatten() {
            self.push_slot(slot);
        }
        self.available.clear();
        self.cooling.clear();
        for slot in 0..self.table_len {
            let until = self.cooling_until(slot);
            if until > now {
                self.cooling.push(Reverse((until, slot)));
            } else {
                self.insert_available(slot);
            }
        }
    }

    fn push_slot(&mut self, mut slot: Slot) -> usize {
        let index = self.slots.len();
        slot.available_at = NONE;
        self.slot_of.insert(Arc::clone(&slot.name), index);
        self.slots.push(slot);
        index
    }

    /// The slot of `project`, made if the book has not met it yet.
    fn slot(&mut self, project: &Arc<str>) -> usize {
        match self.slot_of.get(project) {
            Some(&slot) => slot,
            None => self.push_slot(Slot::new(project)),
        }
    }

    /// The slot of the key table's project at `table_index` (the table the book was last
    /// synced with): the same number.
    pub fn table_slot(&self, table_index: usize) -> Option<usize> {
        (table_index < self.table_len).then_some(table_index)
    }

    /// The key table's index of the project in `slot`, if it is in the table: the same number.
    pub fn table_index(&self, slot: usize) -> Option<usize> {
        (slot < self.table_len).then_some(slot)
    }

    fn cooling_until(&self, slot: usize) -> u64 {
        self.slots[slot]
            .quota
            .as_ref()
            .map_or(0, |quota| quota.cooling_until)
    }

    fn insert_available(&mut self, slot: usize) {
        if self.slots[slot].available_at == NONE {
            self.slots[slot].available_at = self.available.len();
            self.available.push(slot);
        }
    }

    fn remove_available(&mut self, slot: usize) {
        let index = std::mem::replace(&mut self.slots[slot].available_at, NONE);
        if index == NONE {
            return;
        }
        self.available.swap_remove(index);
        if let Some(&moved) = self.available.get(index) {
            self.slots[moved].available_at = index;
        }
    }

    /// Brings back the projects whose cooldown has passed.
    pub fn release(&mut self, now: u64) {
        while let Some(Reverse((until, _))) = self.cooling.peek() {
            if *until > now {
                break;
            }
            let Some(Reverse((until, slot))) = self.cooling.pop() else {
                break;
            };
            if self.cooling_until(slot) == until {
                self.capacity.forget(&self.slots[slot].name);
                self.insert_available(slot);
            }
        }
    }

    pub fn available_len(&self) -> usize {
        self.available.len()
    }

    /// Where this pick's window of the available list starts; the next pick's starts one
    /// further, so that over a round of picks the window passes every position once.
    pub fn next_window(&mut self) -> usize {
        let len = self.available.len();
        let start = if self.cursor < len {
            self.cursor
        } else {
            // The list shrank since the last pick.
            self.cursor % len.max(1)
        };
        self.cursor = if start + 1 < len { start + 1 } else { 0 };
        start
    }

    /// Reads what a check reads of the project in `slot`, so that it is in cache by then (see
    /// the pick's `warm_ahead`).
    pub fn warm_slot(&self, slot: usize) {
        if let Some(quota) = &self.slots[slot].quota {
            std::hint::black_box((quota.cooling_until, quota.minute.len(), quota.tokens.len()));
        }
    }

    /// The slot at `index` of the available list.
    pub fn available_at(&self, index: usize) -> usize {
        self.available[index]
    }

    /// Swaps two entries of the available list (the pick keeps excluded ones at the end).
    pub fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.available.swap(a, b);
        self.slots[self.available[a]].available_at = a;
        self.slots[self.available[b]].available_at = b;
    }

    fn quota_mut(&mut self, slot: usize, today: i32) -> &mut ProjectQuota {
        self.slots[slot]
            .quota
            .get_or_insert_with(|| ProjectQuota::new(today))
    }

    /// The quota of every project the book has used, with its name.
    fn quotas(&self) -> impl Iterator<Item = (&Arc<str>, &ProjectQuota)> {
        self.slots
            .iter()
            .filter_map(|slot| slot.quota.as_ref().map(|quota| (&slot.name, quota)))
    }

    fn quotas_mut(&mut self) -> impl Iterator<Item = (&Arc<str>, &mut ProjectQuota)> {
        self.slots
            .iter_mut()
            .filter_map(|slot| slot.quota.as_mut().map(|quota| (&slot.name, quota)))
    }

    /// The limits in force for a project: what the upstream said of it (for a day), else the
    /// operator's. A learned limit replaces the default guess both ways, but is never applied
    /// below a per-model limit the operator set (Google's figure may belong to another tier),
    /// and an upstream figure of 0 is not believed.
    fn limits_of(limits: Limits, explicit: bool, learned: Option<Limits>) -> Limits {
        let Some(learned) = learned else {
            return limits;
        };
        fn pick<T: Ord + Copy>(
            operator: Option<T>,
            learned: Option<T>,
            explicit: bool,
        ) -> Option<T> {
            match (learned, explicit) {
                (None, _) => operator,
                (Some(learned), false) => Some(learned),
                // The operator's figure is the floor; an operator's "unlimited" stays.
                (Some(learned), true) => operator.map(|operator| operator.max(learned)),
            }
        }
        Limits {
            rpm: pick(limits.rpm, learned.rpm, explicit),
            rpd: pick(limits.rpd, learned.rpd, explicit),
            tpm: pick(limits.tpm, learned.tpm, explicit),
        }
    }

    /// The limits in force for the project in `slot` now.
    fn effective_limits(&self, slot: usize, now: u64) -> Limits {
        let learned = self.slots[slot]
            .quota
            .as_ref()
            .and_then(|quota| quota.learned_in_force(now));
        Self::limits_of(self.limits, self.explicit, learned)
    }

    /// Whether `project` can take a request now, and how much it has left.
    pub fn check(
        &mut self,
        project: &Arc<str>,
        now: u64,
        today: i32,
        next_midnight: impl Fn() -> u64,
    ) -> Check {
        let slot = self.slot(project);
        self.check_slot(slot, now, today, next_midnight)
    }

    /// [`Self::check`] of the project in `slot`.
    pub fn check_slot(
        &mut self,
        slot: usize,
        now: u64,
        today: i32,
        next_midnight: impl Fn() -> u64,
    ) -> Check {
        let (operator, explicit, leased) = (self.limits, self.explicit, self.leased);
        let quota = self.quota_mut(slot, today);
        quota.roll(now, today);
        if quota.cooling_until > now {
            return Check::Closed {
                until: quota.cooling_until,
                cooling: quota.cooling,
            };
        }
        let limits = Self::limits_of(operator, explicit, quota.learned_in_force(now));
        if limits.rpd.is_some_and(|limit| quota.day_count >= limit) {
            return Check::Closed {
                until: next_midnight(),
                cooling: CoolingReason::QuotaDay,
            };
        }
        if let Some(limit) = limits.rpm
            && quota.minute.len() >= limit as usize
        {
            let until = quota.minute.front().map_or(now, |t| t + MINUTE_MS);
            return Check::Closed {
                until,
                cooling: CoolingReason::QuotaMinute,
            };
        }
        if let Some(limit) = limits.tpm
            && quota.tokens_in_window >= limit
        {
            let until = quota.tokens.front().map_or(now, |(t, _)| t + MINUTE_MS);
            return Check::Closed {
                until,
                cooling: CoolingReason::QuotaMinute,
            };
        }
        let needs_lease = leased && (limits.rpm.is_some() || limits.rpd.is_some());
        if needs_lease && (quota.lease_left == 0 || quota.lease_until <= now) {
            quota.lease_wanted = true;
            return Check::Closed {
                until: now + lease::LEASE_WAIT_MS,
                cooling: CoolingReason::Lease,
            };
        }
        let day_left = limits
            .rpd
            .map_or(u32::MAX, |limit| limit.saturating_sub(quota.day_count));
        let minute_left = limits.rpm.map_or(u32::MAX, |limit| {
            limit.saturating_sub(u32::try_from(quota.minute.len()).unwrap_or(u32::MAX))
        });
        Check::Open((day_left, minute_left))
    }

    /// Counts a request against the project in `slot`.
    pub fn reserve(&mut self, slot: usize, now: u64, today: i32) {
        let limits = self.effective_limits(slot, now);
        let leased = self.leased && (limits.rpm.is_some() || limits.rpd.is_some());
        let refill_below = lease::refill_below(limits);
        let quota = self.quota_mut(slot, today);
        quota.roll(now, today);
        // The minute window is kept only under a per-minute limit: without one it would hold
        // every request of the last minute for nothing (a limit set later starts counting then).
        if limits.rpm.is_some() {
            quota.minute.push_back(now);
        }
        quota.day_count = quota.day_count.saturating_add(1);
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
    /// [`lease`] needs.
    pub fn grant_lease(
        &mut self,
        project: &Arc<str>,
        count: u32,
        until: u64,
        now: u64,
        today: i32,
    ) {
        let slot = self.slot(project);
        let quota = self.quota_mut(slot, today);
        if quota.lease_left > 0 && quota.lease_until > now {
            quota.lease_left = quota.lease_left.saturating_add(count);
            quota.lease_until = quota.lease_until.min(until);
        } else {
            quota.lease_left = count;
            quota.lease_until = until;
        }
        quota.lease_wanted = false;
        if quota.cooling == CoolingReason::Lease {
            quota.cooling_until = 0;
            self.insert_available(slot);
        }
    }

    /// Projects whose lease is empty or low, with the limits they are granted against,
    /// clearing the flags (the refiller asks once).
    pub fn take_lease_wants(&mut self, now: u64) -> Vec<(Arc<str>, Limits)> {
        let (operator, explicit) = (self.limits, self.explicit);
        self.quotas_mut()
            .filter(|(_, quota)| quota.lease_wanted)
            .map(|(project, quota)| {
                quota.lease_wanted = false;
                let limits = Self::limits_of(operator, explicit, quota.learned_in_force(now));
                (Arc::clone(project), limits)
            })
            .collect()
    }

    /// Whether some project waits for a lease now.
    pub fn waits_for_lease(&self, now: u64) -> bool {
        self.quotas()
            .any(|(_, quota)| quota.cooling == CoolingReason::Lease && quota.cooling_until > now)
    }

    /// Counts tokens against `project`'s per-minute token window.
    pub fn record_tokens(&mut self, project: &Arc<str>, now: u64, today: i32, tokens: u64) {
        // Kept only under a tokens-per-minute limit, for the same reason as the minute window.
        let slot = self.slot(project);
        if tokens == 0 || self.effective_limits(slot, now).tpm.is_none() {
            return;
        }
        let quota = self.quota_mut(slot, today);
        quota.roll(now, today);
        quota.tokens.push_back((now, tokens));
        quota.tokens_in_window = quota.tokens_in_window.saturating_add(tokens);
    }

    /// Takes `project` out of the available set until `until` (a later cooldown wins).
    pub fn cool(&mut self, project: &Arc<str>, until: u64, cooling: CoolingReason, today: i32) {
        let slot = self.slot(project);
        self.cool_slot(slot, until, cooling, today);
    }

    /// [`Self::cool`] of the project in `slot`.
    pub fn cool_slot(&mut self, slot: usize, until: u64, cooling: CoolingReason, today: i32) {
        let quota = self.quota_mut(slot, today);
        if until <= quota.cooling_until {
            return;
        }
        quota.cooling_until = until;
        quota.cooling = cooling;
        let project = &self.slots[slot].name;
        if let CoolingReason::Capacity(status) = cooling {
            self.capacity.cooling(project, until, status);
        } else {
            self.capacity.forget(project);
        }
        self.remove_available(slot);
        self.cooling.push(Reverse((until, slot)));
    }

    /// Cools `project` after a capacity failure: a second, doubling with each failure in a
    /// row up to [`CAPACITY_BACKOFF_MAX_MS`](capacity::CAPACITY_BACKOFF_MAX_MS), with jitter so that projects do not come back
    /// (and fail) in lockstep. Returns when it ends.
    pub fn cool_for_capacity(
        &mut self,
        project: &Arc<str>,
        status: u16,
        now: u64,
        today: i32,
    ) -> u64 {
        let slot = self.slot(project);
        let quota = self.quota_mut(slot, today);
        let full = capacity::backoff_ms(quota.capacity_level);
        quota.capacity_level = quota.capacity_level.saturating_add(1);
        // Between half and all of the backoff.
        let delay = full / 2 + fastrand::u64(..=full / 2);
        let until = now.saturating_add(delay);
        self.cool_slot(slot, until, CoolingReason::Capacity(status), today);
        until
    }

    /// The capacity gate, for a request that found no open project: see [`capacity`].
    pub fn capacity_gate(&mut self, now: u64) -> Gate {
        self.capacity.gate(now)
    }

    /// The projects cooling for capacity, soonest back first: where a probe goes.
    pub fn capacity_cooled(&self) -> Vec<Arc<str>> {
        self.capacity.cooled()
    }

    /// A success: the project's capacity backoff resets, and when the model was in a storm
    /// every project cooling for capacity comes back at once.
    pub fn succeeded(&mut self, project: &Arc<str>) {
        if let Some(&slot) = self.slot_of.get(project)
            && let Some(quota) = self.slots[slot].quota.as_mut()
        {
            quota.capacity_level = 0;
            if matches!(quota.cooling, CoolingReason::Capacity(_)) && quota.cooling_until > 0 {
                quota.cooling_until = 0;
                self.capacity.forget(project);
                self.insert_available(slot);
            }
        }
        let Some(cooled) = self.capacity.end_storm() else {
            return;
        };
        for project in cooled {
            if let Some(&slot) = self.slot_of.get(&project)
                && let Some(quota) = self.slots[slot].quota.as_mut()
                && matches!(quota.cooling, CoolingReason::Capacity(_))
            {
                quota.cooling_until = 0;
                quota.capacity_level = 0;
                self.insert_available(slot);
            }
        }
    }

    /// Remembers a limit the upstream named for `project` (a later figure replaces an earlier
    /// one, so a raised quota is learned too). Returns the learned limits now in force.
    pub fn learn_limits(
        &mut self,
        project: &Arc<str>,
        learned: Limits,
        at_ms: u64,
        today: i32,
    ) -> Limits {
        let slot = self.slot(project);
        let quota = self.quota_mut(slot, today);
        if quota.learned_in_force(at_ms).is_none() {
            quota.learned = Limits::UNLIMITED;
        }
        // A figure of 0 would stop the project for good: not believed.
        if let Some(rpm) = learned.rpm.filter(|v| *v > 0) {
            quota.learned.rpm = Some(rpm);
        }
        if let Some(rpd) = learned.rpd.filter(|v| *v > 0) {
            quota.learned.rpd = Some(rpd);
        }
        if let Some(tpm) = learned.tpm.filter(|v| *v > 0) {
            quota.learned.tpm = Some(tpm);
        }
        quota.learned_at_ms = at_ms;
        quota.learned
    }

    /// The earliest quota cooldown still in force: when it ends and whether it is a daily one.
    pub fn next_quota_release(&self, now: u64) -> Option<(u64, bool)> {
        self.quotas()
            .filter(|(_, quota)| quota.cooling_until > now)
            .filter_map(|(_, quota)| match quota.cooling {
                CoolingReason::QuotaMinute => Some((quota.cooling_until, false)),
                CoolingReason::QuotaDay => Some((quota.cooling_until, true)),
                CoolingReason::Capacity(_) | CoolingReason::Health | CoolingReason::Lease => None,
            })
            .min_by_key(|(until, _)| *until)
    }

    /// Every project seen, as the operator sees it.
    pub fn views(&mut self, now: u64, today: i32) -> Vec<ProjectView> {
        let (operator, explicit) = (self.limits, self.explicit);
        self.quotas_mut()
            .map(|(project, quota)| {
                quota.roll(now, today);
                let learned = quota.learned_in_force(now);
                ProjectView {
                    project: Arc::clone(project),
                    minute_used: u32::try_from(quota.minute.len()).unwrap_or(u32::MAX),
                    day_used: quota.day_count,
                    tokens_used: quota.tokens_in_window,
                    limits: Self::limits_of(operator, explicit, learned),
                    learned: learned.map(|limits| (limits, quota.learned_at_ms)),
                    cooling: (quota.cooling_until > now && quota.cooling != CoolingReason::Lease)
                        .then_some((quota.cooling_until, quota.cooling)),
                }
            })
            .collect()
    }

    /// Learned limits in force, by project (for persistence).
    pub fn learned(&self, now: u64) -> Vec<(Arc<str>, Limits, u64)> {
        self.quotas()
            .filter_map(|(project, quota)| {
                quota
                    .learned_in_force(now)
                    .map(|limits| (Arc::clone(project), limits, quota.learned_at_ms))
            })
            .collect()
    }

    /// Whether the gate is closed for capacity now, and when it probes next.
    pub fn storm(&self) -> Option<u64> {
        self.capacity.storm()
    }

    /// Today's request counts, by project.
    pub fn day_counts(&self, today: i32) -> Vec<(Arc<str>, u32)> {
        self.quotas()
            .filter(|(_, quota)| quota.day == today && quota.day_count > 0)
            .map(|(project, quota)| (Arc::clone(project), quota.day_count))
            .collect()
    }

    /// Sets a project's count for `day` (after a restart).
    pub fn restore_day_count(&mut self, project: &Arc<str>, day: i32, count: u32) {
        let slot = self.slot(project);
        let quota = self.quota_mut(slot, day);
        if quota.day == day {
            quota.day_count = quota.day_count.max(count);
        }
    }
}

#[cfg(test)]
impl ModelBook {
    /// Panics unless the book's indices agree: `slot_of`, each slot's position in `available`,
    /// and that every project of the table is either available or waits in the heap for the
    /// end of its cooldown (else it would never come back).
    fn assert_consistent(&self) {
        assert_eq!(self.slot_of.len(), self.slots.len());
        for (name, &slot) in &self.slot_of {
            assert_eq!(&self.slots[slot].name, name);
        }
        for (index, &slot) in self.available.iter().enumerate() {
            assert_eq!(self.slots[slot].available_at, index, "slot {slot}");
        }
        for (slot, entry) in self.slots.iter().enumerate() {
            if entry.available_at != NONE {
                assert_eq!(self.available.get(entry.available_at), Some(&slot));
            }
            if slot < self.table_len {
                let until = self.cooling_until(slot);
                let waits = self
                    .cooling
                    .iter()
                    .any(|Reverse((at, waiting))| *waiting == slot && *at == until);
                assert!(
                    entry.available_at != NONE || waits,
                    "slot {slot} ({}) is lost",
                    entry.name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::capacity::{CAPACITY_BACKOFF_MAX_MS, PROBE_INTERVAL_MS};

    #[test]
    fn the_slots_stay_consistent_through_table_changes_cooldowns_and_leases() {
        let names: Vec<Arc<str>> = (0..12).map(|i| format!("p{i}").into()).collect();
        let mut book = ModelBook::new(limits(Some(3)), false);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut now = NOW;
        let mut generation = 0;
        let mut table: Vec<Arc<str>> = names[..6].to_vec();
        book.sync(generation, table.iter(), now);
        book.assert_consistent();
        for step in 0..5_000 {
            let name = &names[rng.usize(..names.len())];
            match rng.u8(..9) {
                // A new key table: some projects go, others come, the order changes.
                0 => {
                    generation += 1;
                    rng.shuffle(&mut table);
                    table.truncate(rng.usize(..=table.len()));
                    for name in &names {
                        if !table.contains(name) && rng.bool() {
                            table.push(Arc::clone(name));
                        }
                    }
                    book.sync(generation, table.iter(), now);
                }
                1 => book.cool(name, now + rng.u64(1..5_000), CoolingReason::QuotaMinute, 1),
                2 => {
                    book.cool_for_capacity(name, 503, now, 1);
                }
                3 => book.succeeded(name),
                4 => book.grant_lease(name, rng.u32(..3), now + 10_000, now, 1),
                5 if book.available_len() > 1 => {
                    let len = book.available_len();
                    book.swap(rng.usize(..len), rng.usize(..len));
                }
                6 if book.available_len() > 0 => {
                    // What a pick does: check, then reserve or cool.
                    let slot = book.available_at(rng.usize(..book.available_len()));
                    match book.check_slot(slot, now, 1, || now + 3_600_000) {
                        Check::Open(_) => book.reserve(slot, now, 1),
                        Check::Closed { until, cooling } => {
                            book.cool_slot(slot, until, cooling, 1);
                        }
                    }
                }
                7 => {
                    book.check(name, now, 1, || now + 3_600_000);
                }
                _ => {
                    now += rng.u64(..2_000);
                    book.release(now);
                }
            }
            book.assert_consistent();
            for (index, name) in table.iter().enumerate() {
                let slot = book
                    .table_slot(index)
                    .expect("a slot for every table project");
                assert_eq!(&book.slots[slot].name, name, "step {step}");
                assert_eq!(book.table_index(slot), Some(index));
            }
        }
    }

    const NOW: u64 = 1_795_636_800_000;

    fn limits(rpm: Option<u32>) -> Limits {
        Limits {
            rpm,
            rpd: None,
            tpm: None,
        }
    }

    #[test]
    fn a_learned_limit_replaces_the_default_but_not_below_an_operator_override() {
        let learned = limits(Some(2));
        assert_eq!(
            ModelBook::limits_of(limits(Some(10)), false, Some(learned)),
            limits(Some(2))
        );
        assert_eq!(
            ModelBook::limits_of(limits(Some(10)), true, Some(learned)),
            limits(Some(10)),
            "the operator's own figure is the floor"
        );
        assert_eq!(
            ModelBook::limits_of(limits(Some(10)), true, Some(limits(Some(50)))),
            limits(Some(50)),
            "a higher figure from the upstream is used"
        );
        assert_eq!(
            ModelBook::limits_of(limits(None), true, Some(learned)),
            limits(None)
        );
    }

    #[test]
    fn a_zero_from_the_upstream_is_not_learned_and_learning_expires() {
        let mut book = ModelBook::new(limits(Some(10)), false);
        let project: Arc<str> = "p".into();
        let slot = book.slot(&project);
        book.learn_limits(&project, limits(Some(0)), NOW, 1);
        assert_eq!(book.effective_limits(slot, NOW), limits(Some(10)));
        book.learn_limits(&project, limits(Some(3)), NOW, 1);
        assert_eq!(book.effective_limits(slot, NOW), limits(Some(3)));
        assert_eq!(
            book.effective_limits(slot, NOW + LEARNED_LIMIT_LIFETIME_MS),
            limits(Some(10))
        );
    }

    #[test]
    fn capacity_backoff_is_seconds_jittered_and_capped() {
        let mut book = ModelBook::new(Limits::UNLIMITED, false);
        let project: Arc<str> = "p".into();
        let mut previous_full = 0;
        for level in 0..12u32 {
            let until = book.cool_for_capacity(&project, 503, NOW, 1);
            let full = (1_000u64 << level.min(8)).min(CAPACITY_BACKOFF_MAX_MS);
            let delay = until - NOW;
            assert!(delay >= full / 2 && delay <= full, "level {level}: {delay}");
            assert!(full >= previous_full);
            previous_full = full;
            book.succeeded(&"other".into());
            // Each cooldown must be later than the last to take effect; advance the book.
            let slot = book.slot(&project);
            if let Some(quota) = book.slots[slot].quota.as_mut() {
                quota.cooling_until = 0;
            }
        }
        assert_eq!(previous_full, CAPACITY_BACKOFF_MAX_MS);
    }

    #[test]
    fn the_window_moves_on_one_place_per_pick_and_stays_within_a_shrinking_list() {
        let names: Vec<Arc<str>> = (0..5).map(|i| format!("p{i}").into()).collect();
        let mut book = ModelBook::new(Limits::UNLIMITED, false);
        book.sync(1, names.iter(), NOW);
        let starts: Vec<usize> = (0..7).map(|_| book.next_window()).collect();
        assert_eq!(starts, [0, 1, 2, 3, 4, 0, 1]);
        for name in &names[..3] {
            book.cool(name, NOW + 1_000, CoolingReason::QuotaMinute, 1);
        }
        assert_eq!(book.available_len(), 2);
        // The cursor (2) is past the end of the list: it goes on from within it.
        let starts: Vec<usize> = (0..3).map(|_| book.next_window()).collect();
        assert_eq!(starts, [0, 1, 0]);
        for name in &names[3..] {
            book.cool(name, NOW + 1_000, CoolingReason::QuotaMinute, 1);
        }
        assert_eq!(book.next_window(), 0, "an empty list");
    }

    #[test]
    fn the_gate_probes_once_per_interval_and_a_success_reopens_everything() {
        let mut book = ModelBook::new(Limits::UNLIMITED, false);
        let (p, q): (Arc<str>, Arc<str>) = ("p".into(), "q".into());
        book.sync(1, [&p, &q].into_iter(), NOW);
        // Three failures in a row: cooling for two to four seconds.
        for _ in 0..3 {
            book.cool_for_capacity(&p, 503, NOW, 1);
            book.cool_for_capacity(&q, 503, NOW, 1);
        }
        assert_eq!(book.available_len(), 0);
        assert_eq!(book.capacity_gate(NOW), Gate::Probe);
        assert_eq!(
            book.capacity_gate(NOW + 10),
            Gate::Refuse {
                until: NOW + PROBE_INTERVAL_MS,
                status: 503
            }
        );
        assert_eq!(book.capacity_gate(NOW + PROBE_INTERVAL_MS), Gate::Probe);
        book.succeeded(&p);
        assert_eq!(book.available_len(), 2, "every project is back");
        assert_eq!(
            book.capacity_gate(NOW + PROBE_INTERVAL_MS),
            Gate::NotCooling
        );
    }
}
