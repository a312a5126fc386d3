//! Choosing a key: the project bound to the request, else the better of two projects drawn at
//! random from those that can serve now (from a window of them that moves on with each pick, in
//! a large pool), then the next healthy key of that project (see the crate docs).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::failure::CoolingReason;
use crate::keys::{KeyId, KeyTable, PoolKey};
use crate::pool::{Pool, lock};
use crate::quota::book::{Check, ModelBook};
use crate::quota::capacity::Gate;
use crate::quota::pacific::next_pacific_midnight_ms;

/// How long a project without a usable key stays out before it is looked at again.
const HEALTH_RECHECK_MS: u64 = 30_000;

/// How many positions of the available list a pick draws its two candidates from, when more
/// projects than that can serve.
///
/// Drawn from the whole list, a candidate's slot and key were rarely in cache in a large pool:
/// at 100k keys a pick waited on about three cache misses (393 ns, against 63 ns at 10 keys).
/// The window moves on one position per pick, so a project is read from memory once per pass
/// (ahead of time, see [`warm_ahead`]) and stays in cache while the window goes over it; over a
/// pass every position is in the window for the same number of picks, which keeps the
/// spreading even.
const WINDOW: usize = 32;

/// From how many available projects on a pick reads ahead (see [`warm_ahead`]). Below it a
/// pass over them stays in cache (a core's 2 MB L2 holds about 5,000 projects' slots and keys),
/// and the reads ahead only cost: 5 ns a pick at 1,000 projects, in the measurement that set
/// it; they win from about 8,000 (99 ns against 107).
const WARM_FROM: usize = 4_096;

/// How many picks apart the stages of [`warm_ahead`] run.
const WARM_STAGE: usize = 4;

/// Every `WARM_BATCH`-th pick reads ahead for that many positions at once.
const WARM_BATCH: usize = 2;

// What is read ahead lies past the window, and one pass reads each position once.
const _: () = assert!(WARM_FROM > WINDOW + 2 * WARM_STAGE + WARM_BATCH);

/// A candidate position below `limit`: within the window of [`WINDOW`] positions from `start`
/// (wrapping past `limit`), or anywhere when the list is no longer than the window.
fn draw(start: usize, limit: usize) -> usize {
    if limit <= WINDOW {
        return fastrand::usize(..limit);
    }
    let start = if start < limit { start } else { start % limit };
    let at = start + fastrand::usize(..WINDOW);
    if at < limit { at } else { at - limit }
}

/// Position `start + offset` of a list of `len`, wrapping.
fn wrap(start: usize, offset: usize, len: usize) -> usize {
    let at = start + offset;
    if at < len { at } else { at % len }
}

/// Reads what a pick will read of the projects about to enter the window (from position `start`
/// of the available list, `len` long), so that it is in cache when they are drawn.
///
/// A prefetch instruction would not wait for the data, but `_mm_prefetch` needs `unsafe`, which
/// the crates forbid. A plain read does wait (at the pick's next atomic operation at the
/// latest), so the reads go in stages whose addresses are already in cache, `WARM_STAGE` picks
/// apart: the slot and where its keys start, then the key's entry in the key list, then the key
/// itself; and for `WARM_BATCH` positions at a time, so that their misses overlap. What is read
/// here decides nothing.
fn warm_ahead(table: &KeyTable, book: &ModelBook, start: usize, len: usize) {
    let slot = book.available_at(wrap(start, WINDOW + 2 * WARM_STAGE, len));
    book.warm_slot(slot);
    if let Some(project) = book.table_index(slot) {
        std::hint::black_box(table.keys_of(project).len());
    }
    let slot = book.available_at(wrap(start, WINDOW + WARM_STAGE, len));
    if let Some(project) = book.table_index(slot) {
        let keys = table.keys_of(project);
        if keys.len() > 1 {
            std::hint::black_box(table.projects[project].cursor.load(Ordering::Relaxed));
        }
        if let Some(key) = keys.first() {
            std::hint::black_box(Arc::as_ptr(key));
        }
    }
    let slot = book.available_at(wrap(start, WINDOW, len));
    if let Some(project) = book.table_index(slot) {
        let keys = table.keys_of(project);
        let next = match keys.len() {
            0 => return,
            1 => 0,
            n => table.projects[project].cursor.load(Ordering::Relaxed) % n,
        };
        let key = &keys[next];
        std::hint::black_box((key.is_usable(), key.checking_until_ms()));
    }
}

/// What the caller needs a key for.
#[derive(Debug, Default, Clone, Copy)]
pub struct PickRequest<'a> {
    /// The model whose quota the request uses (`None`: calls without model quota, such as
    /// file and model listings).
    pub model: Option<&'a str>,
    /// Only keys of this project will do (the request names a resource the project owns).
    pub project: Option<&'a str>,
    /// Keys already tried for this request. Their projects are avoided while others can serve.
    pub tried: &'a [KeyId],
}

/// Why no key could be picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No enabled, in-service key can serve (or none in the required project).
    #[error("no usable upstream key")]
    NoUsableKey,
    /// Keys could serve, but each was already tried for this request.
    #[error("every usable upstream key was tried")]
    AllTried,
    /// Several instances share the quota and this one holds no lease for the projects that
    /// could serve: refill the leases and pick again.
    #[error("waiting for a lease of the shared quota")]
    AwaitingLease,
    /// Every project that could serve has used up its quota for the model.
    #[error("every usable upstream key is out of quota")]
    Exhausted {
        /// When the first project frees up.
        retry_after: Duration,
        /// Whether that is the daily reset.
        daily: bool,
    },
    /// Every project that could serve is cooling after capacity failures, and this interval's
    /// probe already went.
    #[error("every project of the model is cooling for capacity")]
    Capacity {
        /// When the next probe may go.
        retry_after: Duration,
        /// The status the upstream answered (429 or a 5xx).
        status: u16,
    },
}

/// Which of the keys of a project can serve.
enum KeyChoice {
    Found(Arc<PoolKey>),
    /// Some could, but this request already tried them.
    OnlyTried,
    /// None can now: until this time (a checked key comes back) or for a health recheck.
    Unhealthy(u64),
}

impl Pool {
    /// Picks a key for `request`.
    pub fn pick(&self, request: &PickRequest<'_>) -> Result<Arc<PoolKey>, PickError> {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let table = self.table.load();
        self.with_book(request.model, |book| {
            self.pick_in(&table, &mut lock(book), request, now, today)
        })
    }

    /// [`Self::pick`], with the model's book locked.
    fn pick_in(
        &self,
        table: &KeyTable,
        book: &mut ModelBook,
        request: &PickRequest<'_>,
        now: u64,
        today: i32,
    ) -> Result<Arc<PoolKey>, PickError> {
        let midnight = || next_pacific_midnight_ms(now);
        book.sync(
            table.generation,
            table.projects.iter().map(|p| &p.name),
            now,
        );
        book.release(now);

        if let Some(project) = request.project {
            let Some(&index) = table.project_index.get(project) else {
                return Err(PickError::NoUsableKey);
            };
            let Some(slot) = book.table_slot(index) else {
                return Err(PickError::NoUsableKey);
            };
            return match book.check_slot(slot, now, today, midnight) {
                Check::Closed {
                    cooling: CoolingReason::Lease,
                    ..
                } => Err(PickError::AwaitingLease),
                Check::Closed {
                    until,
                    cooling: cooling @ (CoolingReason::QuotaMinute | CoolingReason::QuotaDay),
                } => Err(PickError::Exhausted {
                    retry_after: Duration::from_millis(until.saturating_sub(now)),
                    daily: cooling == CoolingReason::QuotaDay,
                }),
                Check::Closed {
                    cooling: CoolingReason::Capacity(_),
                    ..
                } => match book.capacity_gate(now) {
                    Gate::Refuse { until, status } => Err(PickError::Capacity {
                        retry_after: Duration::from_millis(until.saturating_sub(now)),
                        status,
                    }),
                    Gate::Probe | Gate::NotCooling => self.take_from_project(
                        table,
                        book,
                        (index, slot),
                        request.tried,
                        now,
                        today,
                    ),
                },
                Check::Closed {
                    cooling: CoolingReason::Health,
                    ..
                }
                | Check::Open(_) => {
                    self.take_from_project(table, book, (index, slot), request.tried, now, today)
                }
            };
        }

        // The projects of the tried keys, as indices of the key table (a project's name and its
        // index name the same project within one table).
        let tried_projects: Vec<usize> = request
            .tried
            .iter()
            .filter_map(|id| table.key_index.get(id))
            .filter_map(|&i| table.project_index.get(table.keys[i].project()))
            .copied()
            .collect();
        let mut to_cool: Vec<(usize, u64, CoolingReason)> = Vec::new();
        let mut skipped_tried = false;
        let mut picked = None;
        let start = book.next_window();
        let len = book.available_len();
        if len > WARM_FROM && start.is_multiple_of(WARM_BATCH) {
            for k in 0..WARM_BATCH {
                warm_ahead(table, book, start + k, len);
            }
        }
        // First among projects not tried yet; then, if none can serve, the tried projects'
        // other keys.
        'phases: for avoid_tried_projects in [true, false] {
            let mut limit = book.available_len();
            while limit > 0 {
                // Two candidates at random from the window (see `WINDOW`); the one with more
                // quota left goes first.
                let a = draw(start, limit);
                let b = draw(start, limit);
                let mut order = [a, b];
                let headroom = |book: &mut ModelBook, i: usize| {
                    let slot = book.available_at(i);
                    book.check_slot(slot, now, today, midnight)
                };
                let (check_a, check_b) = (headroom(book, a), headroom(book, b));
                if let (Check::Open(ha), Check::Open(hb)) = (check_a, check_b)
                    && hb > ha
                {
                    order = [b, a];
                }
                let index = order[0];
                let check = if index == a { check_a } else { check_b };
                let slot = book.available_at(index);
                let project_index = book.table_index(slot);
                let excluded = if avoid_tried_projects
                    && project_index.is_some_and(|i| tried_projects.contains(&i))
                {
                    true
                } else {
                    match check {
                        Check::Closed { until, cooling } => {
                            to_cool.push((slot, until, cooling));
                            true
                        }
                        Check::Open(_) => match project_index {
                            None => true,
                            Some(project_index) => {
                                match self.key_in_project(table, project_index, request.tried, now)
                                {
                                    KeyChoice::Found(key) => {
                                        book.reserve(slot, now, today);
                                        picked = Some(key);
                                        break 'phases;
                                    }
                                    KeyChoice::OnlyTried => {
                                        skipped_tried = true;
                                        true
                                    }
                                    KeyChoice::Unhealthy(until) => {
                                        to_cool.push((slot, until, CoolingReason::Health));
                                        true
                                    }
                                }
                            }
                        },
                    }
                };
                if excluded {
                    // Excluded candidates move behind `limit`, so each is looked at once. The
                    // window lies below `limit` and covers all of it once `limit` is down to
                    // `WINDOW`: every available project is looked at before the pick gives up.
                    book.swap(index, limit - 1);
                    limit -= 1;
                }
            }
            if tried_projects.is_empty() {
                break;
            }
        }
        for (slot, until, cooling) in to_cool {
            book.cool_slot(slot, until, cooling, today);
        }
        if let Some(key) = picked {
            return Ok(key);
        }
        if skipped_tried {
            return Err(PickError::AllTried);
        }
        if book.waits_for_lease(now) {
            return Err(PickError::AwaitingLease);
        }
        // Projects cooling for capacity: this interval's probe goes to one of them.
        match book.capacity_gate(now) {
            Gate::NotCooling => {}
            Gate::Refuse { until, status } => {
                return Err(PickError::Capacity {
                    retry_after: Duration::from_millis(until.saturating_sub(now)),
                    status,
                });
            }
            Gate::Probe => {
                let mut only_tried = false;
                for project in book.capacity_cooled() {
                    let Some(&index) = table.project_index.get(&project) else {
                        continue;
                    };
                    let Some(slot) = book.table_slot(index) else {
                        continue;
                    };
                    match self.key_in_project(table, index, request.tried, now) {
                        KeyChoice::Found(key) => {
                            book.reserve(slot, now, today);
                            return Ok(key);
                        }
                        KeyChoice::OnlyTried => only_tried = true,
                        KeyChoice::Unhealthy(_) => {}
                    }
                }
                if only_tried {
                    return Err(PickError::AllTried);
                }
            }
        }
        match book.next_quota_release(now) {
            Some((until, daily)) if table.keys.iter().any(|key| key.is_usable()) => {
                Err(PickError::Exhausted {
                    retry_after: Duration::from_millis(until.saturating_sub(now).max(1000)),
                    daily,
                })
            }
            _ => Err(PickError::NoUsableKey),
        }
    }

    /// A key of the project at `index` of the table and `slot` of the book (a request bound
    /// to it), counted against its quota.
    fn take_from_project(
        &self,
        table: &KeyTable,
        book: &mut ModelBook,
        (index, slot): (usize, usize),
        tried: &[KeyId],
        now: u64,
        today: i32,
    ) -> Result<Arc<PoolKey>, PickError> {
        match self.key_in_project(table, index, tried, now) {
            KeyChoice::Found(key) => {
                book.reserve(slot, now, today);
                Ok(key)
            }
            KeyChoice::OnlyTried => Err(PickError::AllTried),
            KeyChoice::Unhealthy(_) => Err(PickError::NoUsableKey),
        }
    }

    /// The next key of a project that can serve, round robin.
    fn key_in_project(
        &self,
        table: &KeyTable,
        project: usize,
        tried: &[KeyId],
        now: u64,
    ) -> KeyChoice {
        let keys = table.keys_of(project);
        // A project of one key (every key without a project is one) has nothing to rotate:
        // its cursor is left alone, which spares an atomic operation and, in a large pool, a
        // cache miss.
        let start = if keys.len() > 1 {
            table.projects[project]
                .cursor
                .fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        let mut only_tried = false;
        let mut back_at: Option<u64> = None;
        for offset in 0..keys.len() {
            let key = &keys[(start + offset) % keys.len()];
            if !key.is_usable() {
                continue;
            }
            let checked_until = key.checking_until_ms();
            if checked_until > now {
                back_at = Some(back_at.map_or(checked_until, |r: u64| r.min(checked_until)));
                continue;
            }
            if tried.contains(&key.id()) {
                only_tried = true;
                continue;
            }
            return KeyChoice::Found(Arc::clone(key));
        }
        if only_tried {
            KeyChoice::OnlyTried
        } else {
            KeyChoice::Unhealthy(back_at.unwrap_or(now + HEALTH_RECHECK_MS))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use secrecy::SecretString;

    use super::*;
    use crate::clock::ManualClock;
    use crate::failure::Failure;
    use crate::keys::KeyRecord;
    use crate::quota::limits::{Limits, LimitsTable};

    const NOW: u64 = 1_800_000_000_000;
    const MODEL: &str = "gemini-2.5-flash";
    /// Far more projects than the window holds, so that the window matters.
    const PROJECTS: usize = 1_000;
    const _: () = assert!(WINDOW * 10 <= PROJECTS);

    /// A pool of `projects` projects `p0`, `p1`, …, each with `keys_each` keys; the keys of
    /// project `i` have the ids from `i * keys_each`.
    fn pool_of(projects: usize, keys_each: usize, rpm: Option<u32>) -> Pool {
        let records = (0..projects * keys_each)
            .map(|i| KeyRecord {
                id: KeyId(i64::try_from(i).unwrap()),
                secret: SecretString::from(format!("AIzaSyTest{i:030}")),
                project: Some(format!("p{}", i / keys_each)),
                enabled: true,
                out_of_service: None,
            })
            .collect();
        let limits = LimitsTable {
            default: Limits {
                rpm,
                rpd: None,
                tpm: None,
            },
            ..LimitsTable::default()
        };
        Pool::with_clock(records, limits, Arc::new(ManualClock::at(NOW)))
    }

    /// A pool of `PROJECTS` projects of one key each, whose id is the project's number.
    fn pool_of_projects(rpm: Option<u32>) -> Pool {
        pool_of(PROJECTS, 1, rpm)
    }

    fn model_pick(pool: &Pool, tried: &[KeyId]) -> Result<Arc<PoolKey>, PickError> {
        pool.pick(&PickRequest {
            model: Some(MODEL),
            project: None,
            tried,
        })
    }

    /// The number of the key's project.
    fn index(key: &PoolKey) -> usize {
        key.project()[1..].parse().unwrap()
    }

    #[test]
    fn picks_from_the_window_spread_evenly_over_every_project() {
        fastrand::seed(5);
        // One key each; then two each, and enough projects for the pick to read ahead.
        for (projects, keys_each, rounds, band) in [
            (PROJECTS, 1, 100, 50..=150),
            (WARM_FROM + 1_000, 2, 60, 25..=100),
        ] {
            let pool = pool_of(projects, keys_each, None);
            let mut counts = vec![0u32; projects];
            for _ in 0..rounds * projects {
                counts[index(&model_pick(&pool, &[]).unwrap())] += 1;
            }
            // About `rounds` each (the window passes every position `rounds` times); a window
            // that stood still or favoured the end of the list would leave projects far out.
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(
                band.contains(min) && band.contains(max),
                "{projects} projects: between {min} and {max} picks"
            );
        }
    }

    #[test]
    fn the_one_project_that_can_serve_is_found_wherever_it_lies() {
        for lone in [0, PROJECTS / 2, PROJECTS - 1] {
            // Its keys out of service: the book learns it only by looking at each project.
            // The window starts half the list away from it.
            let pool = pool_of_projects(None);
            for _ in 0..(lone + PROJECTS / 2) % PROJECTS {
                model_pick(&pool, &[]).unwrap();
            }
            for id in (0..PROJECTS).filter(|&i| i != lone) {
                pool.record_failure(
                    KeyId(i64::try_from(id).unwrap()),
                    Some(MODEL),
                    &Failure::KeyInvalid {
                        reason: "API_KEY_INVALID".into(),
                    },
                );
            }
            assert_eq!(index(&model_pick(&pool, &[]).unwrap()), lone);

            // Every other key tried for this request.
            let pool = pool_of_projects(None);
            let tried: Vec<KeyId> = (0..PROJECTS)
                .filter(|&i| i != lone)
                .map(|i| KeyId(i64::try_from(i).unwrap()))
                .collect();
            assert_eq!(index(&model_pick(&pool, &tried).unwrap()), lone);

            // Every other project's quota used up (by picks bound to it, which the book does
            // not take out of the available list).
            let pool = pool_of_projects(Some(1));
            for id in (0..PROJECTS).filter(|&i| i != lone) {
                let project = format!("p{id}");
                pool.pick(&PickRequest {
                    model: Some(MODEL),
                    project: Some(&project),
                    tried: &[],
                })
                .unwrap();
            }
            assert_eq!(index(&model_pick(&pool, &[]).unwrap()), lone);
            assert!(matches!(
                model_pick(&pool, &[]),
                Err(PickError::Exhausted { daily: false, .. })
            ));
        }
    }

    #[test]
    fn the_better_of_two_in_the_window_goes_to_the_project_with_more_quota_left() {
        fastrand::seed(9);
        let pool = pool_of_projects(Some(100));
        // Every even project has used half its minute.
        for id in (0..PROJECTS).step_by(2) {
            let project = format!("p{id}");
            for _ in 0..50 {
                pool.pick(&PickRequest {
                    model: Some(MODEL),
                    project: Some(&project),
                    tried: &[],
                })
                .unwrap();
            }
        }
        let picks = 2_000;
        let to_even = (0..picks)
            .filter(|_| index(&model_pick(&pool, &[]).unwrap()).is_multiple_of(2))
            .count();
        // Only when both candidates are even (one pick in four); one candidate alone would go
        // there one pick in two.
        assert!(to_even * 100 <= picks * 35, "{to_even} of {picks} picks");
    }
}
