//! The pool of upstream Gemini keys: which key serves a request, and what the upstream's answers
//! teach about keys, quotas and capacity.
//!
//! Quota is counted per **project and model** (keys of one Google Cloud project share it; a key
//! without a project is its own project): requests per minute in a sliding window, requests per
//! Pacific day, tokens per minute. A pick goes to the project the request is bound to (affinity),
//! else to the project with the most quota left among two drawn at random from the projects that
//! can serve now (the power of two choices: even spreading at O(1) per pick), then to the next
//! healthy key of that project.
//!
//! What failures teach (see [`Failure`]): a used-up quota cools that project for that model
//! (until the upstream's delay, clamped to an hour, or the next minute; until Pacific midnight
//! for a daily quota) and its `quotaValue` becomes the project's learned limit; a capacity
//! failure cools the project for seconds, and when every project of a model cools for capacity
//! one probe per second goes through (see `book`); a key error confirmed by a probe takes the key
//! out of service. Capacity never touches a key: an overloaded model says nothing about keys.
//!
//! No I/O and no system clock: the server reports what happened and a [`Clock`] is injected.
//! The key table is swapped whole (`ArcSwap`); each model's book has its own lock, held for a
//! few hundred nanoseconds per pick.

mod affinity;
mod book;
mod budget;
mod clients;
mod clock;
mod failure;
pub mod lease;
mod limits;
mod pacific;
mod report;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use secrecy::{ExposeSecret, SecretString};

pub use affinity::{Affinity, AffinityLimits, ResourceOwner, UploadSession};
use book::{Check, Gate, ModelBook};
pub use budget::RetryBudget;
pub use clients::{ClientGate, ClientLimits, ClientRefusal, InFlight};
pub use clock::{Clock, ManualClock, SystemClock};
pub use failure::{
    CoolingReason, Failure, LearnedLimit, MAX_QUOTA_COOLDOWN, QuotaExhausted, QuotaWindow,
};
pub use lease::{Learned, LeaseWant};
pub use limits::{Limits, LimitsTable};
pub use pacific::{PacificDayCache, next_pacific_midnight_ms, pacific_day};
pub use report::{Cooldown, KeyCensus, LearnedLimits, Lesson, ModelOverview, ProjectModelState};

/// The maps of the pick path. foldhash instead of SipHash: a pick looks up a handful of short
/// keys (model, project names), where SipHash was most of its cost; the seed is still random
/// per process, and the model books are bounded, so crafted names cannot pile up.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The most model books kept; requests for further models share one overflow book.
const MAX_MODEL_BOOKS: usize = 1024;
/// How long a project without a usable key stays out before it is looked at again.
const HEALTH_RECHECK_MS: u64 = 30_000;
/// The longest a key stays out of the pick while a probe checks a key error it met.
pub const SUSPECT_MS: u64 = 30_000;

/// The database id of an upstream key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub i64);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An upstream key as configured: what the pool is built from.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// Database id.
    pub id: KeyId,
    /// The Gemini API key itself.
    pub secret: SecretString,
    /// The Google Cloud project the key belongs to, when the operator said so.
    pub project: Option<String>,
    /// Disabled keys are kept but never picked.
    pub enabled: bool,
    /// Why the key is out of service, when an earlier run learned that it is.
    pub out_of_service: Option<String>,
}

/// A key in the pool, with its live health.
pub struct PoolKey {
    id: KeyId,
    secret: SecretString,
    project: Arc<str>,
    enabled: bool,
    out_of_service: AtomicBool,
    out_of_service_reason: Mutex<Option<String>>,
    /// A key error was met with this key: it is not picked until this time, or until the
    /// probe that checks it says otherwise.
    suspect_until: AtomicU64,
    /// The last failure met with this key, and when: for the operator.
    last_failure: Mutex<Option<(u64, String)>>,
}

impl fmt::Debug for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolKey")
            .field("id", &self.id)
            .field("masked", &self.masked())
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl PoolKey {
    /// Database id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key, for the one place that needs it: the upstream request header.
    pub fn secret(&self) -> &str {
        self.secret.expose_secret()
    }

    /// The project whose quota this key draws on. A key without a configured project is its own
    /// project, named `~key-{id}` (a name no configured project can take, since `~` is refused
    /// in project names).
    pub fn project(&self) -> &Arc<str> {
        &self.project
    }

    /// The key with all but its first four and last four characters hidden.
    pub fn masked(&self) -> String {
        mask_secret(self.secret.expose_secret())
    }

    /// Whether the key is enabled and in service (it may still be being checked).
    pub fn is_usable(&self) -> bool {
        self.enabled && !self.out_of_service.load(Ordering::Relaxed)
    }

    /// Whether the pool may pick this key at `now_ms`.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.is_usable() && self.suspect_until.load(Ordering::Relaxed) <= now_ms
    }

    /// Until when the key is held back while a key error is checked (0 when it is not).
    pub fn checking_until_ms(&self) -> u64 {
        self.suspect_until.load(Ordering::Relaxed)
    }

    /// Why the key was taken out of service, if it was.
    pub fn out_of_service_reason(&self) -> Option<String> {
        self.out_of_service_reason
            .lock()
            .map(|reason| reason.clone())
            .unwrap_or_default()
    }

    /// The last failure met with this key and when (ms since the epoch).
    pub fn last_failure(&self) -> Option<(u64, String)> {
        self.last_failure
            .lock()
            .map(|last| last.clone())
            .unwrap_or_default()
    }

    /// Notes a failure met with this key, for the operator.
    pub fn note_failure(&self, at_ms: u64, what: impl Into<String>) {
        if let Ok(mut slot) = self.last_failure.lock() {
            *slot = Some((at_ms, what.into()));
        }
    }

    fn take_out_of_service(&self, reason: &str) {
        if let Ok(mut slot) = self.out_of_service_reason.lock() {
            *slot = Some(reason.to_owned());
        }
        self.out_of_service.store(true, Ordering::Relaxed);
        self.suspect_until.store(0, Ordering::Relaxed);
    }

    /// Puts a key found healthy again (by a probe) back in service.
    pub fn restore(&self) {
        if let Ok(mut slot) = self.out_of_service_reason.lock() {
            *slot = None;
        }
        self.out_of_service.store(false, Ordering::Relaxed);
        self.suspect_until.store(0, Ordering::Relaxed);
    }
}

/// Shows the first and last four characters of a secret, or only `…` for short ones.
pub fn mask_secret(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 12 {
        return "…".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
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

/// One project of the key table: its keys and a cursor to rotate among them.
struct ProjectEntry {
    name: Arc<str>,
    keys: Vec<usize>,
    cursor: AtomicUsize,
}

/// The keys and projects, swapped whole when keys change.
#[derive(Default)]
struct KeyTable {
    keys: Vec<Arc<PoolKey>>,
    projects: Vec<ProjectEntry>,
    project_index: FastMap<Arc<str>, usize>,
    key_index: FastMap<KeyId, usize>,
    generation: u64,
}

/// Today's count of requests for one project and model (for persistence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    /// The project.
    pub project: String,
    /// The model (empty for calls without model quota).
    pub model: String,
    /// The Pacific day number.
    pub day: i32,
    /// Requests counted.
    pub count: u32,
}

/// The key pool.
pub struct Pool {
    clock: Arc<dyn Clock>,
    table: ArcSwap<KeyTable>,
    limits: ArcSwap<LimitsTable>,
    books: DashMap<String, Arc<Mutex<ModelBook>>, foldhash::fast::RandomState>,
    affinity: Affinity,
    budget: RetryBudget,
    generation: AtomicU64,
    /// Several instances share the quota: requests need leases, and what is learned is kept
    /// in `outbox` for the others.
    shared: AtomicBool,
    outbox: Mutex<Vec<Learned>>,
    today: PacificDayCache,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

fn lock(book: &Mutex<ModelBook>) -> MutexGuard<'_, ModelBook> {
    book.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Which of the keys of a project can serve.
enum KeyChoice {
    Found(Arc<PoolKey>),
    /// Some could, but this request already tried them.
    OnlyTried,
    /// None can now: until this time (a checked key comes back) or for a health recheck.
    Unhealthy(u64),
}

/// Milliseconds of a duration, saturating (durations from the upstream can be absurd).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The start of the next minute: when a per-minute quota without a `RetryInfo` frees up.
fn next_minute_ms(now: u64) -> u64 {
    (now / 60_000).saturating_add(1).saturating_mul(60_000)
}

impl Pool {
    /// A pool of `records` on the system clock, without quota limits.
    pub fn new(records: Vec<KeyRecord>) -> Self {
        Self::with_clock(records, LimitsTable::default(), Arc::new(SystemClock))
    }

    /// A pool with limits and a clock.
    pub fn with_clock(records: Vec<KeyRecord>, limits: LimitsTable, clock: Arc<dyn Clock>) -> Self {
        let now = clock.now_ms();
        let pool = Self {
            affinity: Affinity::new(Arc::clone(&clock), AffinityLimits::default()),
            clock,
            table: ArcSwap::from_pointee(KeyTable::default()),
            limits: ArcSwap::from_pointee(limits),
            books: DashMap::default(),
            budget: RetryBudget::new(now),
            generation: AtomicU64::new(0),
            shared: AtomicBool::new(false),
            outbox: Mutex::new(Vec::new()),
            today: PacificDayCache::default(),
        };
        pool.replace_keys(records);
        pool
    }

    /// The pool's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Replaces the key table, keeping the learned health of keys that stay.
    pub fn replace_keys(&self, records: Vec<KeyRecord>) {
        let old = self.table.load();
        let mut table = KeyTable {
            generation: self.generation.fetch_add(1, Ordering::Relaxed) + 1,
            ..KeyTable::default()
        };
        for record in records {
            let previous = old.key_index.get(&record.id).map(|&i| &old.keys[i]);
            let project: Arc<str> = match record.project {
                Some(project) => project.into(),
                None => format!("~key-{}", record.id).into(),
            };
            let key = Arc::new(PoolKey {
                id: record.id,
                secret: record.secret,
                project: Arc::clone(&project),
                enabled: record.enabled,
                out_of_service: AtomicBool::new(
                    record.out_of_service.is_some()
                        || previous.is_some_and(|key| key.out_of_service.load(Ordering::Relaxed)),
                ),
                out_of_service_reason: Mutex::new(
                    record
                        .out_of_service
                        .or_else(|| previous.and_then(|key| key.out_of_service_reason())),
                ),
                suspect_until: AtomicU64::new(
                    previous.map_or(0, |key| key.suspect_until.load(Ordering::Relaxed)),
                ),
                last_failure: Mutex::new(previous.and_then(|key| key.last_failure())),
            });
            let key_position = table.keys.len();
            table.key_index.insert(key.id, key_position);
            table.keys.push(key);
            let project_position = *table
                .project_index
                .entry(Arc::clone(&project))
                .or_insert_with(|| {
                    table.projects.push(ProjectEntry {
                        name: Arc::clone(&project),
                        keys: Vec::new(),
                        cursor: AtomicUsize::new(0),
                    });
                    table.projects.len() - 1
                });
            table.projects[project_position].keys.push(key_position);
        }
        self.table.store(Arc::new(table));
    }

    /// Replaces the limits (defaults and per-model overrides) while running.
    pub fn set_limits(&self, limits: LimitsTable) {
        for entry in &self.books {
            let model = entry.key();
            let mut book = lock(entry.value());
            if model.is_empty() {
                book.limits = Limits::UNLIMITED;
            } else {
                book.limits = limits.for_model(model);
                book.explicit = limits.per_model.contains_key(model);
            }
        }
        self.limits.store(Arc::new(limits));
    }

    /// The limits in force.
    pub fn limits(&self) -> Arc<LimitsTable> {
        self.limits.load_full()
    }

    /// Every key, in table order.
    pub fn keys(&self) -> Vec<Arc<PoolKey>> {
        self.table.load().keys.clone()
    }

    /// The key with this id, if it is in the table.
    pub fn key(&self, id: KeyId) -> Option<Arc<PoolKey>> {
        let table = self.table.load();
        table
            .key_index
            .get(&id)
            .map(|&i| Arc::clone(&table.keys[i]))
    }

    /// Whether at least one key is enabled and in service.
    pub fn has_usable_key(&self) -> bool {
        self.table.load().keys.iter().any(|key| key.is_usable())
    }

    /// How many keys are in which state.
    pub fn census(&self) -> KeyCensus {
        let now = self.clock.now_ms();
        let table = self.table.load();
        let mut census = KeyCensus {
            total: table.keys.len(),
            ..KeyCensus::default()
        };
        for key in &table.keys {
            if !key.enabled {
                census.disabled += 1;
            } else if key.out_of_service.load(Ordering::Relaxed) {
                census.out_of_service += 1;
            } else if key.suspect_until.load(Ordering::Relaxed) > now {
                census.checking += 1;
            }
        }
        census
    }

    /// The affinity maps (resource → owner, upload → session), on the pool's clock.
    pub fn affinity(&self) -> &Affinity {
        &self.affinity
    }

    /// The retry budget shared by all requests.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.budget
    }

    fn book(&self, model: Option<&str>) -> Arc<Mutex<ModelBook>> {
        let name = model.unwrap_or("");
        if let Some(book) = self.books.get(name) {
            return Arc::clone(book.value());
        }
        // Bounded: clients choose model names, and each book holds per-project state.
        let name = if self.books.len() >= MAX_MODEL_BOOKS {
            "*"
        } else {
            name
        };
        let (limits, explicit) = if name.is_empty() {
            (Limits::UNLIMITED, false)
        } else {
            let table = self.limits.load();
            (table.for_model(name), table.per_model.contains_key(name))
        };
        let leased = self.shared.load(Ordering::Relaxed);
        Arc::clone(
            self.books
                .entry(name.to_owned())
                .or_insert_with(|| {
                    let mut book = ModelBook::new(limits, explicit);
                    book.leased = leased;
                    Arc::new(Mutex::new(book))
                })
                .value(),
        )
    }

    /// Picks a key for `request`.
    pub fn pick(&self, request: &PickRequest<'_>) -> Result<Arc<PoolKey>, PickError> {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let midnight = || next_pacific_midnight_ms(now);
        let table = self.table.load();
        let book = self.book(request.model);
        let mut book = lock(&book);
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
            let name = Arc::clone(&table.projects[index].name);
            return match book.check(&name, now, today, midnight) {
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
                    Gate::Probe | Gate::NotCooling => {
                        self.take_from_project(&table, &mut book, index, request.tried, now, today)
                    }
                },
                Check::Closed {
                    cooling: CoolingReason::Health,
                    ..
                }
                | Check::Open(_) => {
                    self.take_from_project(&table, &mut book, index, request.tried, now, today)
                }
            };
        }

        let tried_projects: Vec<&Arc<str>> = request
            .tried
            .iter()
            .filter_map(|id| table.key_index.get(id))
            .map(|&i| &table.keys[i].project)
            .collect();
        let mut to_cool: Vec<(Arc<str>, u64, CoolingReason)> = Vec::new();
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
                    let name = Arc::clone(book.available_at(i));
                    book.check(&name, now, today, midnight)
                };
                let (check_a, check_b) = (headroom(&mut book, a), headroom(&mut book, b));
                if let (Check::Open(ha), Check::Open(hb)) = (check_a, check_b)
                    && hb > ha
                {
                    order = [b, a];
                }
                let index = order[0];
                let check = if index == a { check_a } else { check_b };
                let name = Arc::clone(book.available_at(index));
                let excluded = if avoid_tried_projects && tried_projects.contains(&&name) {
                    true
                } else {
                    match check {
                        Check::Closed { until, cooling } => {
                            to_cool.push((Arc::clone(&name), until, cooling));
                            true
                        }
                        Check::Open(_) => match table.project_index.get(&name) {
                            None => true,
                            Some(&project_index) => {
                                match self.key_in_project(&table, project_index, request.tried, now)
                                {
                                    KeyChoice::Found(key) => {
                                        book.reserve(&name, now, today);
                                        picked = Some(key);
                                        break 'phases;
                                    }
                                    KeyChoice::OnlyTried => {
                                        skipped_tried = true;
                                        true
                                    }
                                    KeyChoice::Unhealthy(until) => {
                                        to_cool.push((
                                            Arc::clone(&name),
                                            until,
                                            CoolingReason::Health,
                                        ));
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
        for (name, until, cooling) in to_cool {
            book.cool(&name, until, cooling, today);
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
                    match self.key_in_project(&table, index, request.tried, now) {
                        KeyChoice::Found(key) => {
                            book.reserve(&project, now, today);
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

    /// A key of the project at `index` (a request bound to it), counted against its quota.
    fn take_from_project(
        &self,
        table: &KeyTable,
        book: &mut ModelBook,
        index: usize,
        tried: &[KeyId],
        now: u64,
        today: i32,
    ) -> Result<Arc<PoolKey>, PickError> {
        match self.key_in_project(table, index, tried, now) {
            KeyChoice::Found(key) => {
                book.reserve(&table.projects[index].name, now, today);
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
        let entry = &table.projects[project];
        let start = entry.cursor.fetch_add(1, Ordering::Relaxed);
        let mut only_tried = false;
        let mut back_at: Option<u64> = None;
        for offset in 0..entry.keys.len() {
            let key = &table.keys[entry.keys[(start + offset) % entry.keys.len()]];
            if !key.is_usable() {
                continue;
            }
            let checked_until = key.suspect_until.load(Ordering::Relaxed);
            if checked_until > now {
                back_at = Some(back_at.map_or(checked_until, |r: u64| r.min(checked_until)));
                continue;
            }
            if tried.contains(&key.id) {
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

    /// Holds `key` back from the pick while a probe checks a key error met with it (for at
    /// most [`SUSPECT_MS`]). Returns whether it was not already being checked, so one probe
    /// runs per key.
    pub fn suspect(&self, key: KeyId) -> bool {
        let Some(pool_key) = self.key(key) else {
            return false;
        };
        let now = self.clock.now_ms();
        let previous = pool_key
            .suspect_until
            .swap(now.saturating_add(SUSPECT_MS), Ordering::Relaxed);
        previous <= now
    }

    /// The probe found nothing wrong with `key`: it serves again.
    pub fn clear_suspect(&self, key: KeyId) {
        if let Some(pool_key) = self.key(key) {
            pool_key.suspect_until.store(0, Ordering::Relaxed);
        }
    }

    /// Learns from a failed upstream call made with `key` for `model`; returns what it learned.
    pub fn record_failure(&self, key: KeyId, model: Option<&str>, failure: &Failure) -> Lesson {
        let mut lesson = Lesson::default();
        let Some(pool_key) = self.key(key) else {
            return lesson;
        };
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let project = pool_key.project();
        match failure {
            Failure::KeyInvalid { reason } => {
                pool_key.take_out_of_service(reason);
                lesson.out_of_service = Some(key);
                self.tell_others(|| Learned::KeyOutOfService {
                    key,
                    reason: reason.clone(),
                });
            }
            Failure::Quota(quota) => {
                // The quota named in the error wins; it is per project *and* model.
                let model = quota.model.as_deref().or(model).unwrap_or("");
                let book = self.book((!model.is_empty()).then_some(model));
                let mut book = lock(&book);
                let (until, reason) = match quota.window {
                    // RetryInfo is misleading for daily quotas: they reset at Pacific midnight.
                    QuotaWindow::Day => (next_pacific_midnight_ms(now), CoolingReason::QuotaDay),
                    QuotaWindow::Minute => {
                        let until = match quota.retry_after {
                            Some(delay) => {
                                now.saturating_add(millis(delay.min(MAX_QUOTA_COOLDOWN)))
                            }
                            None => next_minute_ms(now),
                        };
                        (until, CoolingReason::QuotaMinute)
                    }
                };
                book.cool(project, until, reason, today);
                if let Some(limit) = quota.limit {
                    let learned = match limit {
                        LearnedLimit::RequestsPerMinute(rpm) => Limits {
                            rpm: Some(rpm),
                            ..Limits::UNLIMITED
                        },
                        LearnedLimit::RequestsPerDay(rpd) => Limits {
                            rpd: Some(rpd),
                            ..Limits::UNLIMITED
                        },
                        LearnedLimit::TokensPerMinute(tpm) => Limits {
                            tpm: Some(tpm),
                            ..Limits::UNLIMITED
                        },
                    };
                    let limits = book.learn_limits(project, learned, now, today);
                    let learned = LearnedLimits {
                        project: project.to_string(),
                        model: model.to_owned(),
                        limits,
                        at_ms: now,
                    };
                    self.tell_others(|| Learned::Limits(learned.clone()));
                    lesson.learned = Some(learned);
                }
                drop(book);
                let daily = reason == CoolingReason::QuotaDay;
                self.tell_others(|| Learned::Cooldown {
                    project: project.to_string(),
                    model: model.to_owned(),
                    until_ms: until,
                    daily,
                });
                lesson.cooled = Some((
                    project.to_string(),
                    model.to_owned(),
                    Cooldown {
                        until_ms: until,
                        reason,
                    },
                ));
            }
            Failure::Capacity { .. } | Failure::Connection => {
                let status = match failure {
                    Failure::Capacity { status } => *status,
                    _ => 502,
                };
                let book = self.book(model);
                let until = lock(&book).cool_for_capacity(project, status, now, today);
                lesson.cooled = Some((
                    project.to_string(),
                    model.unwrap_or("").to_owned(),
                    Cooldown {
                        until_ms: until,
                        reason: CoolingReason::Capacity(status),
                    },
                ));
            }
        }
        lesson
    }

    /// Learns from a successful call: the project's capacity backoff resets, and a model whose
    /// every project was cooling for capacity serves again at once.
    pub fn record_success(&self, key: KeyId, model: Option<&str>) {
        let Some(pool_key) = self.key(key) else {
            return;
        };
        lock(&self.book(model)).succeeded(pool_key.project());
    }

    /// Counts tokens a call used against its project's per-minute token window.
    pub fn record_tokens(&self, key: KeyId, model: &str, tokens: u64) {
        let Some(pool_key) = self.key(key) else {
            return;
        };
        let now = self.clock.now_ms();
        lock(&self.book(Some(model))).record_tokens(
            pool_key.project(),
            now,
            self.today.day(now),
            tokens,
        );
    }

    /// Every project and model the pool has seen, with quota used, limits, learned limits and
    /// cooldowns.
    pub fn project_states(&self) -> Vec<ProjectModelState> {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let mut all = Vec::new();
        for entry in &self.books {
            for view in lock(entry.value()).views(now, today) {
                all.push(ProjectModelState {
                    project: view.project.to_string(),
                    model: entry.key().clone(),
                    minute_used: view.minute_used,
                    day_used: view.day_used,
                    tokens_used: view.tokens_used,
                    limits: view.limits,
                    learned: view.learned,
                    cooling: view
                        .cooling
                        .map(|(until_ms, reason)| Cooldown { until_ms, reason }),
                });
            }
        }
        all.sort_by(|a, b| (&a.project, &a.model).cmp(&(&b.project, &b.model)));
        all
    }

    /// Cooldowns in force (quota and capacity), as `(project, model, cooldown)`.
    pub fn cooldowns(&self) -> Vec<(String, String, Cooldown)> {
        self.project_states()
            .into_iter()
            .filter_map(|state| {
                state
                    .cooling
                    .filter(|c| c.reason != CoolingReason::Health)
                    .map(|cooling| (state.project, state.model, cooling))
            })
            .collect()
    }

    /// For each model with quota, how its projects stand now.
    pub fn model_overview(&self) -> Vec<ModelOverview> {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let table = self.table.load();
        let serving_projects: Vec<&Arc<str>> = table
            .projects
            .iter()
            .filter(|project| {
                project
                    .keys
                    .iter()
                    .any(|&i| table.keys[i].is_available(now))
            })
            .map(|project| &project.name)
            .collect();
        let in_service = table
            .projects
            .iter()
            .filter(|project| project.keys.iter().any(|&i| table.keys[i].is_usable()))
            .count();
        let mut all = Vec::new();
        for entry in &self.books {
            if entry.key().is_empty() {
                continue;
            }
            let mut book = lock(entry.value());
            let mut overview = ModelOverview {
                model: entry.key().clone(),
                projects: in_service,
                serving: 0,
                cooling_quota: 0,
                cooling_capacity: 0,
                next_probe_ms: None,
            };
            for project in &serving_projects {
                match book.check(project, now, today, || next_pacific_midnight_ms(now)) {
                    Check::Open(_) => overview.serving += 1,
                    Check::Closed {
                        cooling: CoolingReason::QuotaMinute | CoolingReason::QuotaDay,
                        ..
                    } => overview.cooling_quota += 1,
                    Check::Closed {
                        cooling: CoolingReason::Capacity(_),
                        ..
                    } => overview.cooling_capacity += 1,
                    // A lease is fetched when needed: the project can serve.
                    Check::Closed {
                        cooling: CoolingReason::Lease,
                        ..
                    } => overview.serving += 1,
                    Check::Closed { .. } => {}
                }
            }
            overview.next_probe_ms = book.storm();
            all.push(overview);
        }
        all.sort_by(|a, b| a.model.cmp(&b.model));
        all
    }

    /// Learned limits in force, for persistence.
    pub fn learned_limits(&self) -> Vec<LearnedLimits> {
        let now = self.clock.now_ms();
        let mut all = Vec::new();
        for entry in &self.books {
            for (project, limits, at_ms) in lock(entry.value()).learned(now) {
                all.push(LearnedLimits {
                    project: project.to_string(),
                    model: entry.key().clone(),
                    limits,
                    at_ms,
                });
            }
        }
        all
    }

    /// Applies a limit learned earlier (after a restart) or by another instance.
    pub fn apply_learned_limits(&self, learned: &LearnedLimits) {
        let today = self.today.day(learned.at_ms);
        let model = (!learned.model.is_empty()).then_some(learned.model.as_str());
        let project: Arc<str> = learned.project.as_str().into();
        lock(&self.book(model)).learn_limits(&project, learned.limits, learned.at_ms, today);
    }

    /// Today's request counts per project and model.
    pub fn day_counts(&self) -> Vec<DayCount> {
        let today = self.today.day(self.clock.now_ms());
        let mut counts = Vec::new();
        for entry in &self.books {
            for (project, count) in lock(entry.value()).day_counts(today) {
                counts.push(DayCount {
                    project: project.to_string(),
                    model: entry.key().clone(),
                    day: today,
                    count,
                });
            }
        }
        counts
    }

    /// Makes requests for limited models need leases of a quota shared with other instances
    /// (see [`lease`]), and keeps what this instance learns for the others.
    pub fn share_quota(&self) {
        self.shared.store(true, Ordering::Relaxed);
        for entry in &self.books {
            lock(entry.value()).leased = true;
        }
    }

    fn tell_others(&self, learned: impl FnOnce() -> Learned) {
        if self.shared.load(Ordering::Relaxed)
            && let Ok(mut outbox) = self.outbox.lock()
        {
            outbox.push(learned());
        }
    }

    /// What this instance learned since the last call, for the other instances.
    pub fn take_learned(&self) -> Vec<Learned> {
        self.outbox
            .lock()
            .map(|mut outbox| std::mem::take(&mut *outbox))
            .unwrap_or_default()
    }

    /// Applies a quota cooldown another instance learned (clamped like one learned here: a
    /// per-minute one to an hour, a daily one to the next Pacific midnight).
    pub fn apply_remote_cooldown(&self, project: &str, model: &str, until_ms: u64, daily: bool) {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let (bound, reason) = if daily {
            (next_pacific_midnight_ms(now), CoolingReason::QuotaDay)
        } else {
            (
                now.saturating_add(millis(MAX_QUOTA_COOLDOWN)),
                CoolingReason::QuotaMinute,
            )
        };
        let model = (!model.is_empty()).then_some(model);
        lock(&self.book(model)).cool(&project.into(), until_ms.min(bound), reason, today);
    }

    /// Takes a key out of service because another instance found it unusable.
    pub fn apply_remote_out_of_service(&self, key: KeyId, reason: &str) {
        if let Some(pool_key) = self.key(key) {
            pool_key.take_out_of_service(reason);
        }
    }

    /// The leases to ask for: projects whose lease is empty or running low, with the limits in
    /// force for each (learned ones included).
    pub fn lease_wants(&self) -> Vec<LeaseWant> {
        let now = self.clock.now_ms();
        let mut wants = Vec::new();
        for entry in &self.books {
            let mut book = lock(entry.value());
            for (project, limits) in book.take_lease_wants(now) {
                wants.push(LeaseWant {
                    project: project.to_string(),
                    model: entry.key().clone(),
                    limits,
                });
            }
        }
        wants
    }

    /// Installs a lease of `count` requests (see [`lease`]); `count` 0 means the shared quota
    /// is used up until `until_ms`, and the project cools down until then.
    pub fn grant_lease(&self, want: &LeaseWant, count: u32, until_ms: u64, daily: bool) {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let model = (!want.model.is_empty()).then_some(want.model.as_str());
        let project: Arc<str> = want.project.as_str().into();
        let book = self.book(model);
        let mut book = lock(&book);
        if count == 0 {
            let reason = if daily {
                CoolingReason::QuotaDay
            } else {
                CoolingReason::QuotaMinute
            };
            book.cool(&project, until_ms, reason, today);
        } else {
            book.grant_lease(&project, count, until_ms, now, today);
        }
    }

    /// Restores a count saved before a restart (ignored unless it is for today).
    pub fn restore_day_count(&self, count: &DayCount) {
        if count.day != self.today.day(self.clock.now_ms()) {
            return;
        }
        let model = (!count.model.is_empty()).then_some(count.model.as_str());
        let project: Arc<str> = count.project.as_str().into();
        lock(&self.book(model)).restore_day_count(&project, count.day, count.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    const FLASH: &str = "gemini-2.5-flash";
    /// 2026-11-24 12:00 Pacific (20:00 UTC).
    const NOW: u64 = 1_795_636_800_000;

    fn model_request(model: &str) -> PickRequest<'_> {
        PickRequest {
            model: Some(model),
            ..PickRequest::default()
        }
    }

    fn limited(rpm: Option<u32>, rpd: Option<u32>) -> LimitsTable {
        LimitsTable {
            default: Limits {
                rpm,
                rpd,
                tpm: None,
            },
            ..LimitsTable::default()
        }
    }

    /// A per-minute quota 429 as Google sends it: RetryInfo, the model in QuotaFailure.
    fn minute_quota(retry_secs: Option<u64>, model: Option<&str>) -> Failure {
        Failure::Quota(QuotaExhausted {
            window: QuotaWindow::Minute,
            retry_after: retry_secs.map(Duration::from_secs),
            model: model.map(str::to_owned),
            limit: None,
        })
    }

    fn daily_quota() -> Failure {
        Failure::Quota(QuotaExhausted {
            window: QuotaWindow::Day,
            retry_after: Some(Duration::from_secs(47)),
            model: Some(FLASH.to_owned()),
            limit: Some(LearnedLimit::RequestsPerDay(250)),
        })
    }

    fn record(id: i64, project: Option<&str>) -> KeyRecord {
        KeyRecord {
            id: KeyId(id),
            secret: SecretString::from(format!("AIzaSyTestKey{id:0>26}")),
            project: project.map(str::to_owned),
            enabled: true,
            out_of_service: None,
        }
    }

    #[test]
    fn with_a_shared_quota_requests_go_out_only_under_a_lease() {
        let clock = Arc::new(ManualClock::at(NOW));
        let pool = Pool::with_clock(
            vec![record(1, Some("p"))],
            limited(Some(20), None),
            clock.clone(),
        );
        pool.share_quota();
        assert_eq!(
            pool.pick(&model_request(FLASH)).unwrap_err(),
            PickError::AwaitingLease
        );
        let wants = pool.lease_wants();
        assert_eq!(wants.len(), 1);
        assert_eq!(
            (wants[0].project.as_str(), wants[0].model.as_str()),
            ("p", FLASH)
        );
        assert!(pool.lease_wants().is_empty(), "a want is handed out once");

        pool.grant_lease(&wants[0], 2, NOW + lease::LEASE_LIFETIME_MS, false);
        assert!(pool.pick(&model_request(FLASH)).is_ok());
        // Half of a two-request lease is left: the refill is asked for before it runs out.
        assert_eq!(pool.lease_wants().len(), 1);
        assert!(pool.pick(&model_request(FLASH)).is_ok());
        assert_eq!(
            pool.pick(&model_request(FLASH)).unwrap_err(),
            PickError::AwaitingLease
        );

        // A lease that lapsed serves nothing, even with requests left.
        pool.grant_lease(&wants[0], 5, NOW + lease::LEASE_LIFETIME_MS, false);
        clock.advance(Duration::from_millis(lease::LEASE_LIFETIME_MS));
        assert_eq!(
            pool.pick(&model_request(FLASH)).unwrap_err(),
            PickError::AwaitingLease
        );

        // Nothing left in the shared quota: the project cools down like after a 429.
        let want = pool.lease_wants().remove(0);
        pool.grant_lease(&want, 0, pool.now_ms() + 30_000, false);
        assert!(matches!(
            pool.pick(&model_request(FLASH)).unwrap_err(),
            PickError::Exhausted { daily: false, .. }
        ));
        // Calls without model quota need no lease.
        assert!(pool.pick(&PickRequest::default()).is_ok());
    }

    #[test]
    fn what_one_instance_learns_is_kept_for_the_others_and_applied_there() {
        let pool = Pool::with_clock(
            vec![record(1, Some("p")), record(2, Some("q"))],
            limited(None, None),
            Arc::new(ManualClock::at(NOW)),
        );
        pool.record_failure(KeyId(1), Some(FLASH), &minute_quota(Some(26), Some(FLASH)));
        assert!(pool.take_learned().is_empty(), "alone, nothing is kept");

        pool.share_quota();
        pool.record_failure(KeyId(1), Some(FLASH), &minute_quota(Some(26), Some(FLASH)));
        pool.record_failure(
            KeyId(2),
            None,
            &Failure::KeyInvalid {
                reason: "API_KEY_INVALID".into(),
            },
        );
        let learned = pool.take_learned();
        assert!(
            matches!(&learned[0], Learned::Cooldown { project, model, daily: false, .. } if project == "p" && model == FLASH)
        );
        assert_eq!(
            learned[1],
            Learned::KeyOutOfService {
                key: KeyId(2),
                reason: "API_KEY_INVALID".into()
            }
        );

        let other = Pool::with_clock(
            vec![record(1, Some("p")), record(2, Some("q"))],
            limited(None, None),
            Arc::new(ManualClock::at(NOW)),
        );
        other.apply_remote_cooldown("p", FLASH, NOW + 60_000, false);
        other.apply_remote_out_of_service(KeyId(2), "API_KEY_INVALID");
        assert_eq!(other.cooldowns().len(), 1);
        assert!(matches!(
            other.pick(&model_request(FLASH)).unwrap_err(),
            PickError::Exhausted { daily: false, .. }
        ));
        assert!(!other.key(KeyId(2)).unwrap().is_usable());
    }

    #[test]
    fn picks_spread_over_projects_by_quota_left() {
        fastrand::seed(7);
        let clock = Arc::new(ManualClock::at(NOW));
        let limits = LimitsTable {
            default: Limits {
                rpm: Some(100),
                rpd: None,
                tpm: None,
            },
            ..LimitsTable::default()
        };
        let pool = Pool::with_clock(
            vec![
                record(1, Some("a")),
                record(2, Some("b")),
                record(3, Some("c")),
            ],
            limits,
            clock,
        );
        let mut per_project: HashMap<String, u32> = HashMap::new();
        for _ in 0..30 {
            let key = pool.pick(&model_request(FLASH)).unwrap();
            *per_project.entry(key.project().to_string()).or_default() += 1;
        }
        let counts: Vec<u32> = per_project.values().copied().collect();
        assert_eq!(counts.len(), 3, "{per_project:?}");
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 4, "{per_project:?}");
    }

    #[test]
    fn disabled_and_invalid_keys_are_skipped_and_the_reason_is_kept() {
        let mut disabled = record(1, None);
        disabled.enabled = false;
        let pool = Pool::new(vec![disabled, record(2, None), record(3, None)]);
        pool.record_failure(
            KeyId(2),
            None,
            &Failure::KeyInvalid {
                reason: "API_KEY_INVALID".into(),
            },
        );
        for _ in 0..4 {
            assert_eq!(pool.pick(&PickRequest::default()).unwrap().id(), KeyId(3));
        }
        assert_eq!(
            pool.key(KeyId(2))
                .unwrap()
                .out_of_service_reason()
                .as_deref(),
            Some("API_KEY_INVALID")
        );
        pool.record_failure(
            KeyId(3),
            None,
            &Failure::KeyInvalid {
                reason: "CONSUMER_SUSPENDED".into(),
            },
        );
        assert!(!pool.has_usable_key());
        assert_eq!(
            pool.pick(&PickRequest::default()).unwrap_err(),
            PickError::NoUsableKey
        );
    }

    #[test]
    fn tried_keys_are_not_picked_again() {
        let pool = Pool::new(vec![record(1, None), record(2, None)]);
        let first = pool.pick(&PickRequest::default()).unwrap().id();
        let tried = [first];
        let second = pool
            .pick(&PickRequest {
                tried: &tried,
                ..PickRequest::default()
            })
            .unwrap()
            .id();
        assert_ne!(first, second);
        let both = [first, second];
        let request = PickRequest {
            tried: &both,
            ..PickRequest::default()
        };
        assert_eq!(pool.pick(&request).unwrap_err(), PickError::AllTried);
    }

    #[test]
    fn a_project_restriction_only_yields_keys_of_that_project() {
        let pool = Pool::new(vec![
            record(1, Some("alpha")),
            record(2, Some("beta")),
            record(3, Some("beta")),
            record(4, None),
        ]);
        for _ in 0..8 {
            let key = pool
                .pick(&PickRequest {
                    project: Some("beta"),
                    ..PickRequest::default()
                })
                .unwrap();
            assert_eq!(&**key.project(), "beta");
        }
        let lone = pool.key(KeyId(4)).unwrap();
        assert_eq!(&**lone.project(), "~key-4");
        let request = PickRequest {
            project: Some("gamma"),
            ..PickRequest::default()
        };
        assert_eq!(pool.pick(&request).unwrap_err(), PickError::NoUsableKey);
    }

    #[test]
    fn replacing_keys_keeps_learned_health_of_keys_that_stay() {
        let pool = Pool::new(vec![record(1, None), record(2, None)]);
        pool.record_failure(
            KeyId(1),
            None,
            &Failure::KeyInvalid {
                reason: "leaked".into(),
            },
        );
        pool.replace_keys(vec![record(1, None), record(2, None), record(5, None)]);
        assert!(!pool.key(KeyId(1)).unwrap().is_usable());
        assert!(pool.key(KeyId(5)).unwrap().is_usable());
        assert_eq!(pool.keys().len(), 3);
    }

    #[test]
    fn masking_never_shows_the_middle_of_a_key() {
        let key = "AIzaSyA1234567890abcdefghijklmnopqrstu";
        assert_eq!(mask_secret(key), "AIza…rstu");
        assert_eq!(mask_secret("short-key"), "…");
        let pool = Pool::new(vec![record(7, None)]);
        let debug = format!("{:?}", pool.key(KeyId(7)).unwrap());
        assert!(!debug.contains("TestKey"), "{debug}");
    }

    #[test]
    fn the_minute_window_slides_and_keys_of_a_project_share_it() {
        let clock = Arc::new(ManualClock::at(NOW));
        let pool = Pool::with_clock(
            vec![record(1, Some("p")), record(2, Some("p"))],
            limited(Some(2), None),
            clock.clone(),
        );
        let first = pool.pick(&model_request(FLASH)).unwrap().id();
        clock.advance(Duration::from_secs(20));
        let second = pool.pick(&model_request(FLASH)).unwrap().id();
        assert_ne!(first, second, "both keys of the project are used");
        assert_eq!(
            pool.pick(&model_request(FLASH)).unwrap_err(),
            PickError::Exhausted {
                retry_after: Duration::from_secs(40),
                daily: false
            }
        );
        // Another model has its own quota.
        assert!(pool.pick(&model_request("gemini-2.5-pro")).is_ok());
        clock.advance(Duration::from_secs(40));
        assert!(
            pool.pick(&model_request(FLASH)).is_ok(),
            "the first request left the window"
        );
        assert!(pool.pick(&model_request(FLASH)).is_err());
    }

    #[test]
    fn the_daily_quota_resets_at_pacific_midnight_across_a_dst_change() {
        // 2026-11-01 20:00 UTC is 12:00 PST, the day the clocks went back: the next midnight is
        // 2026-11-02 08:00 UTC, twelve hours later.
        let noon = 1_793_563_200_000;
        let clock = Arc::new(ManualClock::at(noon));
        let pool = Pool::with_clock(
            vec![record(1, Some("p"))],
            limited(None, Some(3)),
            clock.clone(),
        );
        for _ in 0..3 {
            pool.pick(&model_request(FLASH)).unwrap();
        }
        assert_eq!(
            pool.pick(&model_request(FLASH)).unwrap_err(),
            PickError::Exhausted {
                retry_after: Duration::from_secs(12 * 3600),
                daily: true
            }
        );
        assert_eq!(
            pool.day_counts(),
            vec![DayCount {
                project: "p".into(),
                model: FLASH.into(),
                day: pacific_day(noon),
                count: 3
            }]
        );
        clock.advance(Duration::from_secs(12 * 3600 - 1));
        assert!(pool.pick(&model_request(FLASH)).is_err());
        clock.advance(Duration::from_secs(1));
        assert!(
            pool.pick(&model_request(FLASH)).is_ok(),
            "a new Pacific day"
        );
    }

    #[test]
    fn quota_answers_cool_the_project_for_that_model() {
        let clock = Arc::new(ManualClock::at(NOW));
        let pool = Pool::with_clock(
            vec![record(1, Some("p")), record(2, Some("q"))],
            LimitsTable::default(),
            clock.clone(),
        );
        // Per-minute, with RetryInfo 26 s, naming the model in QuotaFailure.
        pool.record_failure(
            KeyId(1),
            Some("something-else"),
            &minute_quota(Some(26), Some(FLASH)),
        );
        for _ in 0..6 {
            assert_eq!(&**pool.pick(&model_request(FLASH)).unwrap().project(), "q");
        }
        assert!(
            pool.pick(&model_request("gemini-2.5-pro")).is_ok(),
            "other models are not cooled"
        );
        // Per-day: until Pacific midnight, whatever RetryInfo says.
        pool.record_failure(KeyId(2), Some(FLASH), &daily_quota());
        let PickError::Exhausted { retry_after, daily } =
            pool.pick(&model_request(FLASH)).unwrap_err()
        else {
            panic!("expected exhaustion");
        };
        assert_eq!(
            (retry_after, daily),
            (Duration::from_secs(26), false),
            "p frees up first"
        );
        clock.advance(Duration::from_secs(26));
        assert_eq!(&**pool.pick(&model_request(FLASH)).unwrap().project(), "p");
        // No RetryInfo: until the next minute.
        let lone = Pool::with_clock(
            vec![record(1, None)],
            LimitsTable::default(),
            Arc::new(ManualClock::at(NOW + 15_000)),
        );
        lone.record_failure(KeyId(1), Some(FLASH), &minute_quota(None, None));
        assert_eq!(
            lone.pick(&model_request(FLASH)).unwrap_err(),
            PickError::Exhausted {
                retry_after: Duration::from_secs(45),
                daily: false
            }
        );
    }

    #[test]
    fn absurd_delays_from_the_upstream_are_clamped() {
        let clock = Arc::new(ManualClock::at(NOW));
        let pool = Pool::with_clock(
            vec![record(1, Some("p"))],
            LimitsTable::default(),
            clock.clone(),
        );
        let huge = Failure::Quota(QuotaExhausted {
            window: QuotaWindow::Minute,
            retry_after: Some(Duration::MAX),
            model: None,
            limit: None,
        });
        pool.record_failure(KeyId(1), Some(FLASH), &huge);
        let PickError::Exhausted { retry_after, .. } =
            pool.pick(&model_request(FLASH)).unwrap_err()
        else {
            panic!("expected exhaustion");
        };
        assert_eq!(retry_after, MAX_QUOTA_COOLDOWN);
        clock.advance(MAX_QUOTA_COOLDOWN);
        assert!(
            pool.pick(&model_request(FLASH)).is_ok(),
            "back after the clamp"
        );
        // Another instance's figure is clamped the same way.
        pool.apply_remote_cooldown("p", FLASH, u64::MAX, false);
        let PickError::Exhausted { retry_after, .. } =
            pool.pick(&model_request(FLASH)).unwrap_err()
        else {
            panic!("expected exhaustion");
        };
        assert_eq!(retry_after, MAX_QUOTA_COOLDOWN);
    }

    #[test]
    fn a_capacity_storm_cools_projects_for_seconds_then_probes_once_a_second() {
        fastrand::seed(11);
        let clock = Arc::new(ManualClock::at(NOW));
        let pool = Pool::with_clock(
            vec![record(1, Some("p")), record(2, Some("q"))],
            LimitsTable::default(),
            clock.clone(),
        );
        let overloaded = Failure::Capacity { status: 503 };
        let first = pool.pick(&model_request(FLASH)).unwrap().id();
        pool.record_failure(first, Some(FLASH), &overloaded);
        let second = pool.pick(&model_request(FLASH)).unwrap().id();
        assert_ne!(first, second, "the other project serves meanwhile");
        pool.record_failure(second, Some(FLASH), &overloaded);
        // Every project cools for capacity: one probe now, then refusals with the status.
        assert!(pool.pick(&model_request(FLASH)).is_ok(), "the probe");
        let refusal = pool.pick(&model_request(FLASH)).unwrap_err();
        assert!(
            matches!(refusal, PickError::Capacity { status: 503, retry_after } if retry_after <= Duration::from_secs(1)),
            "{refusal:?}"
        );
        assert!(
            pool.keys().iter().all(|key| key.is_usable()),
            "no key is blamed"
        );
        assert_eq!(pool.model_overview()[0].cooling_capacity, 2);
        assert!(pool.model_overview()[0].next_probe_ms.is_some());
        // The next second's probe succeeds: every project is back at once.
        clock.advance(Duration::from_secs(1));
        let probe = pool.pick(&model_request(FLASH)).unwrap();
        pool.record_success(probe.id(), Some(FLASH));
        let mut seen = std::collections::HashSet::new();
        for _ in 0..40 {
            seen.insert(pool.pick(&model_request(FLASH)).unwrap().id());
        }
        assert_eq!(seen.len(), 2, "both projects serve again");
        assert_eq!(pool.model_overview()[0].serving, 2);
        // Other models never noticed.
        assert!(pool.pick(&model_request("gemini-2.5-pro")).is_ok());
    }

    #[test]
    fn capacity_cooldowns_end_within_seconds_even_without_a_success() {
        let clock = Arc::new(ManualClock::at(NOW));
        let pool = Pool::with_clock(
            vec![record(1, Some("p"))],
            LimitsTable::default(),
            clock.clone(),
        );
        for _ in 0..20 {
            pool.record_failure(KeyId(1), Some(FLASH), &Failure::Connection);
        }
        clock.advance(Duration::from_millis(book::CAPACITY_BACKOFF_MAX_MS));
        assert!(pool.pick(&model_request(FLASH)).is_ok());
        assert!(pool.key(KeyId(1)).unwrap().is_usable());
    }

    #[test]
    fn a_learned_limit_is_what_the_project_is_held_to() {
        let clock = Arc::new(ManualClock::at(NOW));
        let pool = Pool::with_clock(
            vec![record(1, Some("p"))],
            limited(Some(10), None),
            clock.clone(),
        );
        let told = Failure::Quota(QuotaExhausted {
            window: QuotaWindow::Minute,
            retry_after: Some(Duration::from_secs(5)),
            model: Some(FLASH.to_owned()),
            limit: Some(LearnedLimit::RequestsPerMinute(2)),
        });
        let lesson = pool.record_failure(KeyId(1), Some(FLASH), &told);
        assert_eq!(lesson.learned.as_ref().unwrap().limits.rpm, Some(2));
        clock.advance(Duration::from_secs(61));
        assert!(pool.pick(&model_request(FLASH)).is_ok());
        assert!(pool.pick(&model_request(FLASH)).is_ok());
        assert!(
            matches!(
                pool.pick(&model_request(FLASH)).unwrap_err(),
                PickError::Exhausted { daily: false, .. }
            ),
            "two a minute, as the upstream said"
        );
        let learned = pool.learned_limits();
        assert_eq!(learned.len(), 1);
        let state = pool.project_states().remove(0);
        assert_eq!((state.limits.rpm, state.minute_used), (Some(2), 2));
        // Another instance (or a restart) applies it the same way.
        let other = Pool::with_clock(
            vec![record(1, Some("p"))],
            limited(Some(10), None),
            clock.clone(),
        );
        other.apply_learned_limits(&learned[0]);
        assert_eq!(other.project_states()[0].limits.rpm, Some(2));
    }

    #[test]
    fn a_retry_goes_to_another_project_when_one_exists() {
        fastrand::seed(3);
        let pool = Pool::with_clock(
            vec![
                record(1, Some("p")),
                record(2, Some("p")),
                record(3, Some("q")),
            ],
            LimitsTable::default(),
            Arc::new(ManualClock::at(NOW)),
        );
        for _ in 0..10 {
            let tried = [KeyId(1)];
            let retry = pool
                .pick(&PickRequest {
                    model: Some(FLASH),
                    project: None,
                    tried: &tried,
                })
                .unwrap();
            assert_eq!(retry.id(), KeyId(3), "q before p's other key");
        }
        let tried = [KeyId(1), KeyId(3)];
        let last = pool
            .pick(&PickRequest {
                model: Some(FLASH),
                project: None,
                tried: &tried,
            })
            .unwrap();
        assert_eq!(last.id(), KeyId(2), "then the tried project's other key");
        let all = [KeyId(1), KeyId(2), KeyId(3)];
        assert_eq!(
            pool.pick(&PickRequest {
                model: Some(FLASH),
                project: None,
                tried: &all
            })
            .unwrap_err(),
            PickError::AllTried
        );
    }

    #[test]
    fn affinity_picks_stay_in_the_project_and_report_its_exhaustion() {
        let clock = Arc::new(ManualClock::at(NOW));
        let pool = Pool::with_clock(
            vec![record(1, Some("p")), record(2, Some("q"))],
            limited(Some(1), None),
            clock,
        );
        let request = PickRequest {
            model: Some(FLASH),
            project: Some("q"),
            tried: &[],
        };
        assert_eq!(pool.pick(&request).unwrap().id(), KeyId(2));
        assert!(matches!(
            pool.pick(&request).unwrap_err(),
            PickError::Exhausted { .. }
        ));
        assert_eq!(
            pool.pick(&model_request(FLASH)).unwrap().id(),
            KeyId(1),
            "others still serve unbound requests"
        );
    }

    #[test]
    fn day_counts_survive_a_restart() {
        let clock = Arc::new(ManualClock::at(NOW));
        let before = Pool::with_clock(
            vec![record(1, Some("p"))],
            limited(None, Some(5)),
            clock.clone(),
        );
        for _ in 0..4 {
            before.pick(&model_request(FLASH)).unwrap();
        }
        let saved = before.day_counts();
        let after = Pool::with_clock(
            vec![record(1, Some("p"))],
            limited(None, Some(5)),
            clock.clone(),
        );
        for count in &saved {
            after.restore_day_count(count);
        }
        assert!(after.pick(&model_request(FLASH)).is_ok());
        assert!(matches!(
            after.pick(&model_request(FLASH)).unwrap_err(),
            PickError::Exhausted { daily: true, .. }
        ));
        // Yesterday's counts are not restored.
        let stale = DayCount {
            day: saved[0].day - 1,
            ..saved[0].clone()
        };
        let fresh = Pool::with_clock(vec![record(1, Some("p"))], limited(None, Some(5)), clock);
        fresh.restore_day_count(&stale);
        for _ in 0..5 {
            fresh.pick(&model_request(FLASH)).unwrap();
        }
    }

    #[test]
    fn a_huge_pool_mostly_cooling_still_picks_the_ready_keys() {
        let keys: Vec<KeyRecord> = (0..100_000).map(|i| record(i, None)).collect();
        let pool = Pool::with_clock(keys, LimitsTable::default(), Arc::new(ManualClock::at(NOW)));
        let cooling = minute_quota(Some(600), None);
        for id in 0..99_000 {
            pool.record_failure(KeyId(id), Some(FLASH), &cooling);
        }
        for _ in 0..1000 {
            assert!(pool.pick(&model_request(FLASH)).unwrap().id().0 >= 99_000);
        }
    }
}
