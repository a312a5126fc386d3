//! The pool of upstream Gemini keys.
//!
//! It knows each key's project and health, picks a key for a request (affinity first: a file or
//! cached content can only be used through a key of the project that created it), and learns
//! from upstream failures. It does no I/O: the server reports what the upstream said and asks
//! for the next key.
//!
//! The key table is swapped whole (`ArcSwap`) when keys are added or removed, so a pick never
//! takes a lock; per-key health lives in atomics on the key itself.

mod affinity;
pub mod classify;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};

pub use affinity::Affinity;
pub use classify::{Failure, Verdict, classify_upstream_error, redact_secrets};

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

    /// Whether the pool may pick this key now.
    pub fn is_usable(&self) -> bool {
        self.enabled && !self.out_of_service.load(Ordering::Relaxed)
    }

    /// Why the key was taken out of service, if it was.
    pub fn out_of_service_reason(&self) -> Option<String> {
        self.out_of_service_reason
            .lock()
            .map(|reason| reason.clone())
            .unwrap_or_default()
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
    /// The model the request will use (quota is per project and model; used by the scheduler).
    pub model: Option<&'a str>,
    /// Only keys of this project will do (the request names a resource the project owns).
    pub project: Option<&'a str>,
    /// Keys already tried for this request.
    pub tried: &'a [KeyId],
}

/// Why no key could be picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// No enabled, in-service key exists at all (or none in the required project).
    #[error("no usable upstream key")]
    NoUsableKey,
    /// Usable keys exist, but each was already tried for this request.
    #[error("every usable upstream key was tried")]
    AllTried,
}

/// The key pool: the table of keys, the round-robin cursor and the affinity maps.
pub struct Pool {
    table: ArcSwap<Vec<Arc<PoolKey>>>,
    cursor: AtomicUsize,
    affinity: Affinity,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Pool {
    /// A pool of `records`.
    pub fn new(records: Vec<KeyRecord>) -> Self {
        let pool = Self {
            table: ArcSwap::from_pointee(Vec::new()),
            cursor: AtomicUsize::new(0),
            affinity: Affinity::default(),
        };
        pool.replace_keys(records);
        pool
    }

    /// Replaces the key table, keeping the learned health of keys that stay.
    pub fn replace_keys(&self, records: Vec<KeyRecord>) {
        let old: HashMap<KeyId, Arc<PoolKey>> = self
            .table
            .load()
            .iter()
            .map(|key| (key.id, Arc::clone(key)))
            .collect();
        let keys = records
            .into_iter()
            .map(|record| {
                let previous = old.get(&record.id);
                let project: Arc<str> = match record.project {
                    Some(project) => project.into(),
                    None => format!("~key-{}", record.id).into(),
                };
                Arc::new(PoolKey {
                    id: record.id,
                    secret: record.secret,
                    project,
                    enabled: record.enabled,
                    out_of_service: AtomicBool::new(
                        record.out_of_service.is_some()
                            || previous
                                .is_some_and(|key| key.out_of_service.load(Ordering::Relaxed)),
                    ),
                    out_of_service_reason: Mutex::new(
                        record
                            .out_of_service
                            .or_else(|| previous.and_then(|key| key.out_of_service_reason())),
                    ),
                })
            })
            .collect();
        self.table.store(Arc::new(keys));
    }

    /// Every key, in table order.
    pub fn keys(&self) -> Arc<Vec<Arc<PoolKey>>> {
        self.table.load_full()
    }

    /// The key with this id, if it is in the table.
    pub fn key(&self, id: KeyId) -> Option<Arc<PoolKey>> {
        self.table.load().iter().find(|key| key.id == id).cloned()
    }

    /// Whether at least one key can be picked.
    pub fn has_usable_key(&self) -> bool {
        self.table.load().iter().any(|key| key.is_usable())
    }

    /// The affinity maps (resource → project, upload → key).
    pub fn affinity(&self) -> &Affinity {
        &self.affinity
    }

    /// Picks the next usable key for `request`, round robin.
    pub fn pick(&self, request: &PickRequest<'_>) -> Result<Arc<PoolKey>, PickError> {
        let table = self.table.load();
        if table.is_empty() {
            return Err(PickError::NoUsableKey);
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        let mut any_usable = false;
        for offset in 0..table.len() {
            let key = &table[(start + offset) % table.len()];
            if !key.is_usable() || request.project.is_some_and(|p| *key.project != *p) {
                continue;
            }
            any_usable = true;
            if !request.tried.contains(&key.id) {
                return Ok(Arc::clone(key));
            }
        }
        Err(if any_usable {
            PickError::AllTried
        } else {
            PickError::NoUsableKey
        })
    }

    /// Learns from a failed upstream call made with `key`.
    pub fn record_failure(&self, key: KeyId, failure: &Failure) {
        match failure {
            Failure::KeyInvalid { reason } => {
                if let Some(key) = self.key(key) {
                    if let Ok(mut slot) = key.out_of_service_reason.lock() {
                        *slot = Some(reason.clone());
                    }
                    key.out_of_service.store(true, Ordering::Relaxed);
                }
            }
            // The scheduler of the pool issue turns these into cooldowns and a circuit breaker;
            // the round robin only moves on to the next key.
            Failure::RateLimited { .. } | Failure::ServerError | Failure::Connection => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn picks_rotate_over_every_usable_key() {
        let pool = Pool::new(vec![record(1, None), record(2, None), record(3, None)]);
        let mut seen: Vec<i64> = (0..6)
            .map(|_| pool.pick(&PickRequest::default()).unwrap().id().0)
            .collect();
        assert_eq!(&seen[..3], &seen[3..]);
        seen.truncate(3);
        seen.sort();
        assert_eq!(seen, vec![1, 2, 3]);
    }

    #[test]
    fn disabled_and_invalid_keys_are_skipped_and_the_reason_is_kept() {
        let mut disabled = record(1, None);
        disabled.enabled = false;
        let pool = Pool::new(vec![disabled, record(2, None), record(3, None)]);
        pool.record_failure(
            KeyId(2),
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
}
