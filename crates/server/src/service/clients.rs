//! The accepted client keys, in memory for the request path (looked up by SHA-256 digest, so
//! no database round trip sits on it), and how configured keys reach the database: as digests,
//! never as keys.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use store::ClientKeyRow;

/// The hex SHA-256 digest under which a client key is stored.
pub fn digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The first characters of a key, enough to recognise it in a list.
pub fn display_prefix(key: &str) -> String {
    let head: String = key.chars().take(6).collect();
    format!("{head}…")
}

/// Makes the stored `env` client keys match `CLIENT_API_KEYS`: the store gets their digests and
/// display prefixes, never the keys.
pub async fn sync_configured_client_keys(
    storage: &store::Storage,
    keys: &[SecretString],
) -> Result<store::SyncReport, store::StorageError> {
    let digested: Vec<(String, String)> = keys
        .iter()
        .map(|key| {
            (
                digest_hex(key.expose_secret()),
                display_prefix(key.expose_secret()),
            )
        })
        .collect();
    let new: Vec<store::NewClientKey<'_>> = digested
        .iter()
        .map(|(digest, prefix)| store::NewClientKey {
            name: "from CLIENT_API_KEYS",
            digest,
            prefix,
        })
        .collect();
    storage.sync_client_keys(&new).await
}

/// An authenticated client, added to the request extensions.
#[derive(Debug, Clone)]
pub struct Client {
    /// Database id of the client key.
    pub id: i64,
    /// Its display name.
    pub name: String,
    /// Its own limits.
    pub limits: pool::ClientLimits,
}

/// The accepted client keys, by digest. Swapped whole when keys change.
#[derive(Debug, Default)]
pub struct ClientKeys {
    by_digest: ArcSwap<HashMap<String, Arc<Client>>>,
}

impl ClientKeys {
    /// Replaces the accepted keys with the enabled ones of `rows`.
    pub fn replace(&self, rows: Vec<ClientKeyRow>) {
        let map = rows
            .into_iter()
            .filter(|row| row.enabled)
            .map(|row| {
                (
                    row.digest,
                    Arc::new(Client {
                        id: row.id,
                        name: row.name,
                        limits: row.limits,
                    }),
                )
            })
            .collect();
        self.by_digest.store(Arc::new(map));
    }

    /// The client a presented key belongs to.
    pub fn resolve(&self, key: &str) -> Option<Arc<Client>> {
        self.by_digest.load().get(&digest_hex(key)).cloned()
    }

    /// How many keys are accepted.
    pub fn len(&self) -> usize {
        self.by_digest.load().len()
    }

    /// Whether no key is accepted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn configured_client_keys_are_stored_as_digests_only() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let storage = store::Storage::open(&url).await.unwrap();
        let secret = "client-secret-value-123";
        sync_configured_client_keys(&storage, &[SecretString::from(secret)])
            .await
            .unwrap();
        let rows = storage.client_keys().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].digest, digest_hex(secret));
        drop(storage);
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the client key is stored in clear"
            );
        }
    }

    #[test]
    fn lookups_go_through_the_digest_and_skip_disabled_keys() {
        let keys = ClientKeys::default();
        keys.replace(vec![
            ClientKeyRow {
                id: 1,
                name: "alice".into(),
                digest: digest_hex("alice-key-123"),
                enabled: true,
                limits: pool::ClientLimits::default(),
            },
            ClientKeyRow {
                id: 2,
                name: "bob".into(),
                digest: digest_hex("bob-key-456"),
                enabled: false,
                limits: pool::ClientLimits::default(),
            },
        ]);
        assert_eq!(keys.resolve("alice-key-123").map(|c| c.id), Some(1));
        assert!(keys.resolve("bob-key-456").is_none());
        assert!(keys.resolve("alice-key-12").is_none());
        assert_eq!(keys.len(), 1);
    }
}
