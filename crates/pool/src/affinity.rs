//! Who owns a file or cached content, and which key (and client) started a resumable upload.
//!
//! Gemini files and cached contents are visible only to keys of the Google Cloud project that
//! created them, so a request naming one must go to that project. They also belong to the
//! gateway's client key that created them: another client key may not see or use them (the
//! server enforces that; this map only remembers). A resumable upload session is addressed by
//! an unguessable `upload_id`; the chunks after the first carry no API key, and must reach the
//! key that started the upload so that the finished file lands in that key's project, owned by
//! the client that started it.
//!
//! Both maps are bounded, in time and in size, because any client can grow them:
//! - owners are forgotten [`AffinityLimits::resource_ttl_ms`] after creation (7 days by default:
//!   Gemini files expire after 48 h, cached contents after their TTL, one hour by default);
//! - at most [`AffinityLimits::max_resources`] owners are kept; past that the oldest is forgotten;
//! - upload sessions end [`AffinityLimits::upload_ttl_ms`] after their start (24 h by default),
//!   and at most [`AffinityLimits::max_uploads`] are open at once (the oldest goes first).
//!
//! A forgotten owner is the same as one never recorded: the resource is routed like any request
//! and no client key is held to it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use dashmap::DashMap;

use crate::clock::Clock;
use crate::keys::KeyId;

/// Who owns a file or cached content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceOwner {
    /// The Google Cloud project whose keys can reach it.
    pub project: Arc<str>,
    /// The client key (database id) that created it through the gateway; `None` when unknown
    /// (recorded before client ownership was, or by a request without a client).
    pub client: Option<i64>,
    /// When it was recorded (ms since the epoch): it is forgotten a TTL after this.
    pub created_at_ms: u64,
}

/// An open resumable upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadSession {
    /// The upstream key that started it (and must receive every chunk).
    pub key: KeyId,
    /// The client key that started it: the owner of the file it creates.
    pub client: Option<i64>,
    /// When it started (ms since the epoch).
    pub started_at_ms: u64,
}

/// How long and how many entries the affinity maps keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AffinityLimits {
    /// How long a resource's owner is remembered after its creation.
    pub resource_ttl_ms: u64,
    /// The most resource owners remembered.
    pub max_resources: usize,
    /// How long an upload session stays open after its start.
    pub upload_ttl_ms: u64,
    /// The most upload sessions open at once.
    pub max_uploads: usize,
}

/// Owners are kept a week: files live 48 h, cached contents usually an hour.
pub const RESOURCE_TTL_MS: u64 = 7 * 24 * 3_600_000;

impl Default for AffinityLimits {
    fn default() -> Self {
        Self {
            resource_ttl_ms: RESOURCE_TTL_MS,
            // Some 50 MB at most (name, owner and age order, about 250 bytes each), and far more
            // than a gateway creates in a week.
            max_resources: 200_000,
            // Google keeps an upload session about a week; a day is ample for a client to send
            // its chunks.
            upload_ttl_ms: 24 * 3_600_000,
            max_uploads: 50_000,
        }
    }
}

/// The affinity maps. Sharded maps: lookups on the request path do not contend on one lock
/// (only a new entry takes the lock of its map's age order).
pub struct Affinity {
    clock: Arc<dyn Clock>,
    limits: AffinityLimits,
    resources: Expiring<ResourceOwner>,
    uploads: Expiring<UploadSession>,
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Affinity")
            .field("limits", &self.limits)
            .field("resources", &self.resources.entries.len())
            .field("uploads", &self.uploads.entries.len())
            .finish_non_exhaustive()
    }
}

impl Affinity {
    /// Empty maps on `clock`, bounded by `limits`.
    pub fn new(clock: Arc<dyn Clock>, limits: AffinityLimits) -> Self {
        Self {
            clock,
            limits,
            resources: Expiring::default(),
            uploads: Expiring::default(),
        }
    }

    /// The bounds in force.
    pub fn limits(&self) -> AffinityLimits {
        self.limits
    }

    /// Remembers that `resource` (`files/abc`, `cachedContents/xyz`) was created now through a
    /// key of `project`, by the client key `client`; returns the owner recorded.
    pub fn remember_resource(
        &self,
        resource: &str,
        project: Arc<str>,
        client: Option<i64>,
    ) -> ResourceOwner {
        let owner = ResourceOwner {
            project,
            client,
            created_at_ms: self.clock.now_ms(),
        };
        self.restore_resource(resource, owner.clone());
        owner
    }

    /// Remembers an owner recorded earlier (loaded at start): it keeps its creation time, so it
    /// expires when it would have. Restore the oldest first: the oldest is evicted first.
    pub fn restore_resource(&self, resource: &str, owner: ResourceOwner) {
        let now = self.clock.now_ms();
        if self.expired(owner.created_at_ms, self.limits.resource_ttl_ms, now) {
            return;
        }
        let at = owner.created_at_ms;
        self.resources
            .insert(resource, owner, at, self.limits.max_resources);
    }

    /// The owner of `resource`, when the gateway saw it created (or loaded it at start) and has
    /// not forgotten it since.
    pub fn resource_owner(&self, resource: &str) -> Option<ResourceOwner> {
        let ttl = self.limits.resource_ttl_ms;
        self.resources
            .get(resource, |at| self.expired(at, ttl, self.clock.now_ms()))
    }

    /// The project that owns `resource` (see [`Affinity::resource_owner`]).
    pub fn resource_project(&self, resource: &str) -> Option<Arc<str>> {
        self.resource_owner(resource).map(|owner| owner.project)
    }

    /// Forgets a deleted resource.
    pub fn forget_resource(&self, resource: &str) {
        self.resources.entries.remove(resource);
    }

    /// How many resource owners are remembered (expired ones until the next purge included).
    pub fn resource_count(&self) -> usize {
        self.resources.entries.len()
    }

    /// Binds a resumable upload session to the key and the client that started it.
    pub fn bind_upload(&self, upload_id: &str, key: KeyId, client: Option<i64>) {
        let now = self.clock.now_ms();
        let session = UploadSession {
            key,
            client,
            started_at_ms: now,
        };
        self.uploads
            .insert(upload_id, session, now, self.limits.max_uploads);
    }

    /// The upload session `upload_id`, while it is open.
    pub fn upload(&self, upload_id: &str) -> Option<UploadSession> {
        let ttl = self.limits.upload_ttl_ms;
        self.uploads
            .get(upload_id, |at| self.expired(at, ttl, self.clock.now_ms()))
    }

    /// Ends an upload session (after its final chunk).
    pub fn finish_upload(&self, upload_id: &str) {
        self.uploads.entries.remove(upload_id);
    }

    /// How many upload sessions are open (expired ones until the next purge included).
    pub fn upload_count(&self) -> usize {
        self.uploads.entries.len()
    }

    /// Drops every expired owner and upload session; returns how many went. Lookups already
    /// ignore expired entries: this returns their memory.
    pub fn purge_expired(&self) -> usize {
        let now = self.clock.now_ms();
        let (resource_ttl, upload_ttl) = (self.limits.resource_ttl_ms, self.limits.upload_ttl_ms);
        self.resources
            .purge(|at| self.expired(at, resource_ttl, now))
            + self.uploads.purge(|at| self.expired(at, upload_ttl, now))
    }

    fn expired(&self, at_ms: u64, ttl_ms: u64, now_ms: u64) -> bool {
        now_ms >= at_ms.saturating_add(ttl_ms)
    }
}

/// An entry and the sequence number of its insertion (which tells a live entry from an older
/// one of the same name in the age order).
#[derive(Debug)]
struct Entry<V> {
    value: V,
    at_ms: u64,
    seq: u64,
}

/// A map whose entries expire and which holds at most a given number of them, evicting the
/// oldest first.
#[derive(Debug)]
struct Expiring<V> {
    entries: DashMap<Arc<str>, Entry<V>>,
    /// Names in insertion order, with their sequence numbers. Forgotten and replaced entries
    /// leave a stale name here, skipped when met and dropped when the queue grows past twice
    /// the live entries.
    order: Mutex<VecDeque<(u64, Arc<str>)>>,
    next_seq: AtomicU64,
}

impl<V> Default for Expiring<V> {
    fn default() -> Self {
        Self {
            entries: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(0),
        }
    }
}

impl<V: Clone> Expiring<V> {
    fn insert(&self, name: &str, value: V, at_ms: u64, cap: usize) {
        let name: Arc<str> = Arc::from(name);
        // Inserts are rare (one per created resource or upload) and take the order's lock;
        // lookups never do. The lock is always taken before a shard's, never after.
        let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.entries
            .insert(Arc::clone(&name), Entry { value, at_ms, seq });
        order.push_back((seq, name));
        while self.entries.len() > cap.max(1) {
            let Some((seq, oldest)) = order.pop_front() else {
                break;
            };
            self.entries.remove_if(&oldest, |_, entry| entry.seq == seq);
        }
        if order.len() > 2 * self.entries.len() + 1024 {
            order.retain(|(seq, name)| {
                self.entries
                    .get(name)
                    .is_some_and(|entry| entry.seq == *seq)
            });
        }
    }

    fn get(&self, name: &str, expired: impl Fn(u64) -> bool) -> Option<V> {
        let seq = {
            let entry = self.entries.get(name)?;
            if !expired(entry.at_ms) {
                return Some(entry.value.clone());
            }
            entry.seq
        };
        // The read guard is dropped before the removal, which needs the shard's write lock.
        self.entries.remove_if(name, |_, entry| entry.seq == seq);
        None
    }

    fn purge(&self, expired: impl Fn(u64) -> bool) -> usize {
        let mut order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        let before = self.entries.len();
        self.entries.retain(|_, entry| !expired(entry.at_ms));
        let after = self.entries.len();
        order.retain(|(seq, name)| {
            self.entries
                .get(name)
                .is_some_and(|entry| entry.seq == *seq)
        });
        before.saturating_sub(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const HOUR: u64 = 3_600_000;
    const NOW: u64 = 1_800_000_000_000;

    fn affinity(limits: AffinityLimits) -> (Affinity, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::at(NOW));
        (Affinity::new(clock.clone(), limits), clock)
    }

    #[test]
    fn resources_and_uploads_are_remembered_with_their_client_and_forgotten() {
        let (affinity, _) = affinity(AffinityLimits::default());
        affinity.remember_resource("files/a", "p1".into(), Some(7));
        assert_eq!(
            affinity.resource_owner("files/a"),
            Some(ResourceOwner {
                project: "p1".into(),
                client: Some(7),
                created_at_ms: NOW
            })
        );
        assert_eq!(affinity.resource_project("files/a").as_deref(), Some("p1"));
        assert_eq!(affinity.resource_project("files/b"), None);
        affinity.forget_resource("files/a");
        assert_eq!(affinity.resource_project("files/a"), None);

        affinity.bind_upload("u1", KeyId(3), Some(7));
        assert_eq!(
            affinity.upload("u1"),
            Some(UploadSession {
                key: KeyId(3),
                client: Some(7),
                started_at_ms: NOW
            })
        );
        affinity.finish_upload("u1");
        assert_eq!(affinity.upload("u1"), None);
    }

    #[test]
    fn owners_expire_after_seven_days_and_upload_sessions_after_a_day() {
        let (affinity, clock) = affinity(AffinityLimits::default());
        affinity.remember_resource("files/a", "p".into(), Some(1));
        affinity.bind_upload("u1", KeyId(1), Some(1));
        clock.advance(std::time::Duration::from_millis(24 * HOUR - 1));
        assert!(affinity.upload("u1").is_some());
        clock.advance(std::time::Duration::from_millis(1));
        assert_eq!(affinity.upload("u1"), None, "a day-old upload session ends");
        assert!(affinity.resource_owner("files/a").is_some());

        clock.set(NOW + 7 * 24 * HOUR - 1);
        assert!(affinity.resource_owner("files/a").is_some());
        clock.set(NOW + 7 * 24 * HOUR);
        assert_eq!(
            affinity.resource_owner("files/a"),
            None,
            "a week-old owner goes"
        );
        // The lookup freed the expired entry too.
        assert_eq!(affinity.resource_count(), 0);
    }

    #[test]
    fn a_restored_owner_keeps_its_age_and_an_expired_one_is_not_restored() {
        let (affinity, clock) = affinity(AffinityLimits::default());
        let owner = |created_at_ms| ResourceOwner {
            project: "p".into(),
            client: Some(2),
            created_at_ms,
        };
        affinity.restore_resource("files/old", owner(NOW - 7 * 24 * HOUR));
        affinity.restore_resource("files/recent", owner(NOW - 6 * 24 * HOUR));
        assert_eq!(affinity.resource_count(), 1);
        assert!(affinity.resource_owner("files/recent").is_some());
        clock.advance(std::time::Duration::from_millis(24 * HOUR));
        assert_eq!(affinity.resource_owner("files/recent"), None);
    }

    #[test]
    fn purging_frees_expired_entries_that_nobody_looked_up() {
        let (affinity, clock) = affinity(AffinityLimits::default());
        for i in 0..10 {
            affinity.remember_resource(&format!("files/{i}"), "p".into(), None);
            affinity.bind_upload(&format!("u{i}"), KeyId(1), None);
        }
        clock.advance(std::time::Duration::from_millis(2 * 24 * HOUR));
        affinity.remember_resource("files/new", "p".into(), None);
        assert_eq!(affinity.purge_expired(), 10, "the ten upload sessions");
        assert_eq!(affinity.upload_count(), 0);
        assert_eq!(affinity.resource_count(), 11);
        clock.advance(std::time::Duration::from_millis(5 * 24 * HOUR));
        assert_eq!(affinity.purge_expired(), 10, "the ten first owners");
        assert_eq!(affinity.resource_count(), 1);
        assert!(affinity.resource_owner("files/new").is_some());
    }

    #[test]
    fn a_full_map_evicts_its_oldest_entries() {
        let limits = AffinityLimits {
            max_resources: 3,
            max_uploads: 2,
            ..AffinityLimits::default()
        };
        let (affinity, clock) = affinity(limits);
        for name in ["files/1", "files/2", "files/3"] {
            affinity.remember_resource(name, "p".into(), Some(1));
            clock.advance(std::time::Duration::from_millis(1));
        }
        // Replacing an entry does not count twice, and makes it the newest.
        affinity.remember_resource("files/1", "p".into(), Some(1));
        affinity.remember_resource("files/4", "p".into(), Some(1));
        assert_eq!(affinity.resource_count(), 3);
        assert_eq!(affinity.resource_owner("files/2"), None, "the oldest went");
        for name in ["files/1", "files/3", "files/4"] {
            assert!(affinity.resource_owner(name).is_some(), "{name}");
        }
        // A forgotten entry leaves room without evicting anyone.
        affinity.forget_resource("files/3");
        affinity.remember_resource("files/5", "p".into(), Some(1));
        for name in ["files/1", "files/4", "files/5"] {
            assert!(affinity.resource_owner(name).is_some(), "{name}");
        }

        for id in ["u1", "u2", "u3"] {
            affinity.bind_upload(id, KeyId(1), None);
        }
        assert_eq!(affinity.upload_count(), 2);
        assert_eq!(affinity.upload("u1"), None);
        assert!(affinity.upload("u3").is_some());
    }

    #[test]
    fn the_age_order_stays_bounded_when_entries_are_forgotten() {
        let limits = AffinityLimits {
            max_resources: 10,
            ..AffinityLimits::default()
        };
        let (affinity, _) = affinity(limits);
        for i in 0..10_000 {
            let name = format!("files/{i}");
            affinity.remember_resource(&name, "p".into(), None);
            affinity.forget_resource(&name);
        }
        let queued = affinity
            .resources
            .order
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(queued <= 2 * 10 + 1024 + 1, "{queued} names queued");
    }
}
