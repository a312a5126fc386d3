//! Files and cached contents: which Google Cloud project holds each one (so requests naming it
//! go to that project's keys) and which client key created it (so no other client key can see
//! or use it).
//!
//! Google scopes a file or cached content to a project, and every client key of the gateway
//! reaches the same projects: without a record of its own, tenant B could read, use, list and
//! delete tenant A's uploads. The gateway records the creating client key beside the project
//! (in memory for the request path, in `resource_owners` for restarts, and in the cluster news
//! for the other instances) and:
//!
//! - refuses a request from another client key that names such a resource, in the path or in
//!   the body, with the answer Google gives for a resource the caller may not see (403
//!   `PERMISSION_DENIED`), before anything reaches the upstream;
//! - keeps only the caller's own entries in `files` and `cachedContents` listings.
//!
//! A resource with no recorded client (created before clients were recorded, outside the
//! gateway, or forgotten: owners expire after a week, and the map keeps the newest 200,000)
//! stays usable by any client key that names it, as before: refusing it would break resources
//! the gateway cannot attribute. Listings, which reveal names, show only recorded ones.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use memchr::memmem;
use pool::PoolKey;
use serde_json::Value;
use translate::gemini::native::{NativePath, created_resource_name, referenced_resources_in};

use crate::service::cluster::Cluster;

/// Why a request cannot go on as it names resources.
#[derive(Debug, thiserror::Error)]
pub enum OwnershipError {
    /// The resource belongs to another client key.
    #[error("{0} belongs to another client key")]
    Denied(String),
    /// The request names resources of different projects, or its body cannot be read for names.
    #[error("{0}")]
    BadRequest(String),
    /// The upstream's listing could not be read.
    #[error("a {0} listing could not be read")]
    UnreadableListing(String),
    /// A filtered listing could not be written back.
    #[error("{0}")]
    Internal(String),
}

/// Who owns which file and cached content: the pool's affinity map on the request path, the
/// database for restarts, and the other instances' news.
#[derive(Clone)]
pub struct Owners {
    pool: Arc<pool::Pool>,
    storage: store::Storage,
    cluster: Option<Arc<Cluster>>,
}

/// The largest `files` or `cachedContents` listing read whole to filter it (a page holds at
/// most a few hundred entries of a few hundred bytes).
pub const LISTING_LIMIT: usize = 8 * 1024 * 1024;

/// How often expired owners and upload sessions are dropped from memory and the database.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// The files and cached contents a native request names, in its path or its body (every
/// occurrence, escaped or repeated: see `referenced_resources_in`).
pub fn resources_named(path: &NativePath, body: &[u8]) -> Result<Vec<String>, OwnershipError> {
    let mut resources: Vec<String> = path.owned_resource().into_iter().collect();
    // Most bodies name nothing and are not read again for it. Without a backslash a body has no
    // escapes, so a name it holds is spelt out; with one (`files\/x`), it is read.
    let may_reference = memchr::memchr(b'\\', body).is_some()
        || memmem::find(body, b"files/").is_some()
        || memmem::find(body, b"cachedContents/").is_some();
    if may_reference {
        // The body was checked to be JSON already; one that is not is refused, never relayed.
        let named = referenced_resources_in(body).map_err(|error| {
            OwnershipError::BadRequest(format!("The request body is not valid JSON: {error}."))
        })?;
        resources.extend(named);
    }
    Ok(resources)
}

impl Owners {
    /// The owners' service.
    pub fn new(
        pool: Arc<pool::Pool>,
        storage: store::Storage,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            pool,
            storage,
            cluster,
        }
    }

    /// Checks that `client` may use each of `resources`, then returns the one project that holds
    /// the known ones (the request must go to its keys). Unknown resources do not restrict the
    /// pick: they were created elsewhere, and the upstream's own answer will say so.
    ///
    /// Refused: a resource another client key created (403, Google's words), and resources of
    /// several projects together (no one key can reach them all).
    pub fn project_for(
        &self,
        client: Option<i64>,
        resources: &[String],
    ) -> Result<Option<Arc<str>>, OwnershipError> {
        let owners: Vec<(&String, pool::ResourceOwner)> = resources
            .iter()
            .filter_map(|resource| Some((resource, self.pool.affinity().resource_owner(resource)?)))
            .collect();
        // Owners without a recorded client (created before clients were recorded) stay open.
        if let Some((resource, _)) = owners
            .iter()
            .find(|(_, owner)| owner.client.is_some() && owner.client != client)
        {
            return Err(OwnershipError::Denied((*resource).clone()));
        }
        let mut project: Option<Arc<str>> = None;
        for (_, owner) in owners {
            match &project {
                Some(known) if *known != owner.project => {
                    return Err(OwnershipError::BadRequest(
                        "The request names files or cached contents of different Google Cloud projects; one request can only use one project's resources.".to_owned(),
                    ));
                }
                _ => project = Some(owner.project),
            }
        }
        Ok(project)
    }

    /// Records the owner of the resource named in a creating call's JSON answer, if any: the
    /// project of `key`, which created it, and `client`, which asked for it.
    pub fn remember_owner_of(&self, body: &[u8], key: &PoolKey, client: Option<i64>) {
        let Some(name) = serde_json::from_slice::<Value>(body)
            .ok()
            .as_ref()
            .and_then(created_resource_name)
        else {
            return;
        };
        let project = Arc::clone(key.project());
        let owner = self
            .pool
            .affinity()
            .remember_resource(&name, Arc::clone(&project), client);
        if let Some(cluster) = &self.cluster {
            cluster.announce_owner(&name, &project, client);
        }
        let storage = self.storage.clone();
        let key_id = key.id();
        let stored = store::StoredOwner {
            resource: name,
            project: project.to_string(),
            client_key_id: client,
            created_at_ms: i64::try_from(owner.created_at_ms).unwrap_or(i64::MAX),
        };
        tokio::spawn(async move {
            if let Err(error) = storage.save_resource_owner(&stored, key_id).await {
                tracing::error!(%error, "could not persist a resource owner");
            }
        });
    }

    /// Forgets a deleted resource.
    pub fn forget_resource(&self, resource: String) {
        self.pool.affinity().forget_resource(&resource);
        let storage = self.storage.clone();
        tokio::spawn(async move {
            if let Err(error) = storage.delete_resource_owner(&resource).await {
                tracing::error!(%error, "could not forget a resource owner");
            }
        });
    }

    /// Keeps, of a `files` or `cachedContents` listing (the array named `collection`), only the
    /// entries `client` created. Entries of other client keys go, and so do entries with no
    /// recorded client: by the gateway's records they are nobody's. Everything else, including
    /// `nextPageToken`, stays as the upstream sent it, so a page may come back shorter than
    /// `pageSize` (even empty with a token for the next one): clients follow the token.
    pub fn own_entries_only(
        &self,
        client: Option<i64>,
        collection: &str,
        body: &[u8],
    ) -> Result<Bytes, OwnershipError> {
        keep_entries(body, collection, |name| {
            self.pool
                .affinity()
                .resource_owner(name)
                .is_some_and(|owner| owner.client.is_some() && owner.client == client)
        })
    }

    /// Every hour, drops expired owners and upload sessions from memory and expired owners from
    /// the database (every instance does; the deletes are idempotent), for as long as the gateway
    /// lives.
    pub fn spawn_pruner(&self) {
        // Weak: the pruner ends with the gateway.
        let pool = Arc::downgrade(&self.pool);
        let storage = self.storage.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PRUNE_INTERVAL).await;
                let Some(pool) = pool.upgrade() else { break };
                let purged = pool.affinity().purge_expired();
                let before = expired_before_ms(pool.affinity(), pool.now_ms());
                match storage.prune_resource_owners(before).await {
                    Ok(deleted) => {
                        tracing::debug!(purged, deleted, "expired resource owners pruned")
                    }
                    Err(error) => tracing::warn!(%error, "could not prune expired resource owners"),
                }
            }
        });
    }
}

/// The listing `body` with only the entries of its array `collection` whose `name` `keep`s.
fn keep_entries(
    body: &[u8],
    collection: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Bytes, OwnershipError> {
    let unreadable = || OwnershipError::UnreadableListing(collection.to_owned());
    let mut listing: Value = serde_json::from_slice(body).map_err(|_| unreadable())?;
    let fields = listing.as_object_mut().ok_or_else(unreadable)?;
    if let Some(entries) = fields.get_mut(collection) {
        // An entry that cannot be attributed (no name) is never shown: fail closed.
        let entries = entries.as_array_mut().ok_or_else(unreadable)?;
        entries.retain(|entry| entry.get("name").and_then(Value::as_str).is_some_and(&keep));
    }
    serde_json::to_vec(&listing)
        .map(Bytes::from)
        .map_err(|error| OwnershipError::Internal(error.to_string()))
}

/// The creation time (ms since the epoch) before which owners have expired.
pub fn expired_before_ms(affinity: &pool::Affinity, now_ms: u64) -> i64 {
    let since = now_ms.saturating_sub(affinity.limits().resource_ttl_ms);
    i64::try_from(since).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_keeps_the_kept_entries_and_its_page_token() {
        let body = serde_json::json!({
            "files": [
                {"name": "files/mine", "sizeBytes": "3"},
                {"name": "files/theirs"},
                {"sizeBytes": "1"},
            ],
            "nextPageToken": "page-2",
        });
        let kept = keep_entries(body.to_string().as_bytes(), "files", |name| {
            name == "files/mine"
        })
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&kept).unwrap(),
            serde_json::json!({
                "files": [{"name": "files/mine", "sizeBytes": "3"}],
                "nextPageToken": "page-2",
            })
        );
        // An empty listing has no array at all.
        let empty = keep_entries(b"{}", "cachedContents", |_| true).unwrap();
        assert_eq!(&empty[..], b"{}");
        // What cannot be filtered is not relayed.
        for unreadable in [&b"[]"[..], b"{\"files\": {}}", b"not json"] {
            assert!(keep_entries(unreadable, "files", |_| true).is_err());
        }
    }
}
