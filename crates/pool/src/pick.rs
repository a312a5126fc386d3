//! Choosing a key: the project bound to the request, else the better of two projects drawn at
//! random from those that can serve now, then the next healthy key of that project (see the
//! crate docs).

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
        // First among projects not tried yet; then, if none can serve, the tried projects'
        // other keys.
        'phases: for avoid_tried_projects in [true, false] {
            let mut limit = book.available_len();
            while limit > 0 {
                // Two candidates at random; the one with more quota left goes first.
                let a = fastrand::usize(..limit);
                let b = fastrand::usize(..limit);
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
                    // Excluded candidates move behind `limit`, so each is looked at once.
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
