//! The pool itself: its state, how it is built, and the upkeep of its key table and limits.
//! Choosing a key (`pick`), learning from answers (`health`), sharing with other instances
//! (`shared`) and reporting (`overview`) are each their own module over this state.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::affinity::{Affinity, AffinityLimits};
use crate::clock::{Clock, SystemClock};
use crate::keys::{KeyId, KeyRecord, KeyTable, PoolKey};
use crate::quota::book::ModelBook;
use crate::quota::budget::RetryBudget;
use crate::quota::limits::{Limits, LimitsTable};
use crate::quota::pacific::PacificDayCache;
use crate::report::Learned;

/// The most model books kept; requests for further models share one overflow book.
const MAX_MODEL_BOOKS: usize = 1024;

/// The key pool.
pub struct Pool {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) table: ArcSwap<KeyTable>,
    limits: ArcSwap<LimitsTable>,
    pub(crate) books: DashMap<String, Arc<Mutex<ModelBook>>, foldhash::fast::RandomState>,
    affinity: Affinity,
    budget: RetryBudget,
    generation: AtomicU64,
    /// Several instances share the quota: requests need leases, and what is learned is kept
    /// in `outbox` for the others.
    pub(crate) shared: AtomicBool,
    pub(crate) outbox: Mutex<Vec<Learned>>,
    pub(crate) today: PacificDayCache,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

pub(crate) fn lock(book: &Mutex<ModelBook>) -> MutexGuard<'_, ModelBook> {
    book.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let table = KeyTable::build(records, &old, generation);
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

    /// The affinity maps (resource → owner, upload → session), on the pool's clock.
    pub fn affinity(&self) -> &Affinity {
        &self.affinity
    }

    /// The retry budget shared by all requests.
    pub fn retry_budget(&self) -> &RetryBudget {
        &self.budget
    }

    /// Runs `f` on the book of `model`, borrowed from the map rather than through a clone of
    /// its `Arc` (the clone and its drop were two of the few atomic operations a pick does).
    /// `f` runs under a read lock of one shard of `books`: it must not use `books` itself (a
    /// writer waiting on that shard would then wait for `f`, and `f` for it).
    pub(crate) fn with_book<R>(
        &self,
        model: Option<&str>,
        f: impl FnOnce(&Mutex<ModelBook>) -> R,
    ) -> R {
        if let Some(book) = self.books.get(model.unwrap_or("")) {
            return f(book.value());
        }
        f(&self.book(model))
    }

    /// The book of `model` (`None`: calls without model quota), made on first use.
    pub(crate) fn book(&self, model: Option<&str>) -> Arc<Mutex<ModelBook>> {
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
}
