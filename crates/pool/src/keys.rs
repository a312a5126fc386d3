//! The key table: the upstream keys as configured, each with its live health, grouped by the
//! project whose quota they share. The table is built whole from the records and swapped whole
//! by the pool; only a key's health changes in place.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};

use crate::maps::FastMap;

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
///
/// `repr(C)` keeps the fields a pick reads first, next to the reference count the pick's
/// `Arc::clone` touches: in a large pool the key is rarely in cache, and with the compiler's
/// order these fields were two cache lines away from the count.
#[repr(C)]
pub struct PoolKey {
    id: KeyId,
    /// A key error was met with this key: it is not picked until this time, or until the
    /// probe that checks it says otherwise.
    suspect_until: AtomicU64,
    enabled: bool,
    out_of_service: AtomicBool,
    project: Arc<str>,
    secret: SecretString,
    out_of_service_reason: Mutex<Option<String>>,
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

    /// Whether the operator left the key enabled.
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the key was taken out of service.
    pub(crate) fn is_out_of_service(&self) -> bool {
        self.out_of_service.load(Ordering::Relaxed)
    }

    /// Holds the key back from the pick until `until_ms`; returns until when it was held
    /// before.
    pub(crate) fn hold_until(&self, until_ms: u64) -> u64 {
        self.suspect_until.swap(until_ms, Ordering::Relaxed)
    }

    /// Ends a hold: the key may be picked again.
    pub(crate) fn end_hold(&self) {
        self.suspect_until.store(0, Ordering::Relaxed);
    }

    /// Takes the key out of service, for `reason`; a hold for a check ends with it.
    pub(crate) fn take_out_of_service(&self, reason: &str) {
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

/// One project of the key table: its name and a cursor to rotate among its keys.
pub(crate) struct ProjectEntry {
    pub(crate) name: Arc<str>,
    pub(crate) cursor: AtomicUsize,
}

/// The keys and projects, swapped whole when keys change.
#[derive(Default)]
pub(crate) struct KeyTable {
    pub(crate) keys: Vec<Arc<PoolKey>>,
    /// The keys again, each project's together (in table order within a project): the keys
    /// of the project at index `i` are `by_project[starts[i]..starts[i + 1]]`. A pick goes from
    /// a project to its keys through two compact arrays, instead of a list of key numbers per
    /// project and then `keys`: in a large pool each of those reads was a cache miss.
    by_project: Vec<Arc<PoolKey>>,
    starts: Vec<usize>,
    pub(crate) projects: Vec<ProjectEntry>,
    pub(crate) project_index: FastMap<Arc<str>, usize>,
    pub(crate) key_index: FastMap<KeyId, usize>,
    pub(crate) generation: u64,
}

impl KeyTable {
    /// The table of `records`, numbered `generation`, keeping the learned health of the keys
    /// that were already in `old`.
    pub(crate) fn build(records: Vec<KeyRecord>, old: &KeyTable, generation: u64) -> Self {
        let mut table = KeyTable {
            generation,
            ..KeyTable::default()
        };
        // The positions of each project's keys, by project index.
        let mut members: Vec<Vec<usize>> = Vec::new();
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
                        cursor: AtomicUsize::new(0),
                    });
                    members.push(Vec::new());
                    table.projects.len() - 1
                });
            if let Some(keys) = members.get_mut(project_position) {
                keys.push(key_position);
            }
        }
        for keys in members {
            table.starts.push(table.by_project.len());
            table
                .by_project
                .extend(keys.into_iter().map(|i| Arc::clone(&table.keys[i])));
        }
        table.starts.push(table.by_project.len());
        table
    }

    /// The keys of the project at `project` (its index), in table order.
    pub(crate) fn keys_of(&self, project: usize) -> &[Arc<PoolKey>] {
        match (self.starts.get(project), self.starts.get(project + 1)) {
            (Some(&start), Some(&end)) => self.by_project.get(start..end).unwrap_or_default(),
            _ => &[],
        }
    }
}
