//! The remembered owners of files and cached contents (project and client key).

use pool::KeyId;
use sqlx::Row;

use crate::db::{Storage, StorageError};

impl Storage {
    /// The remembered owners created at or after `since_ms`: the newest `limit`, oldest first
    /// (the order in which the in-memory map is filled, so that it evicts the oldest first).
    pub async fn resource_owners(
        &self,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<StoredOwner>, StorageError> {
        let rows = sqlx::query(
            "SELECT resource, project, client_key_id, created_at_ms FROM resource_owners
             WHERE created_at_ms >= $1 ORDER BY created_at_ms DESC LIMIT $2",
        )
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut owners = rows
            .iter()
            .map(|row| {
                Ok(StoredOwner {
                    resource: row.try_get("resource")?,
                    project: row.try_get("project")?,
                    client_key_id: row.try_get("client_key_id")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        owners.reverse();
        Ok(owners)
    }

    /// Remembers the owner of a created file or cached content: the project of the key that
    /// created it and the client key that asked for it.
    pub async fn save_resource_owner(
        &self,
        owner: &StoredOwner,
        key: KeyId,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO resource_owners (resource, project, key_id, client_key_id, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (resource) DO UPDATE SET project = excluded.project,
                 key_id = excluded.key_id, client_key_id = excluded.client_key_id,
                 created_at_ms = excluded.created_at_ms",
        )
        .bind(&owner.resource)
        .bind(&owner.project)
        .bind(key.0)
        .bind(owner.client_key_id)
        .bind(owner.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a deleted resource.
    pub async fn delete_resource_owner(&self, resource: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM resource_owners WHERE resource = $1")
            .bind(resource)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Deletes the owners created before `before_ms` (expired); returns how many.
    pub async fn prune_resource_owners(&self, before_ms: i64) -> Result<u64, StorageError> {
        let done = sqlx::query("DELETE FROM resource_owners WHERE created_at_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// A page of the remembered owners created at or after `since_ms`, newest first, with the
    /// owning client key's name, and the number of matching rows.
    pub async fn resource_owner_rows(
        &self,
        filter: &ResourceFilter,
        since_ms: i64,
    ) -> Result<(Vec<ResourceOwnerRow>, i64), StorageError> {
        let per_page = i64::from(filter.per_page.unwrap_or(50).clamp(1, 200));
        let page = i64::from(filter.page.unwrap_or(1).max(1));
        let conditions = "r.created_at_ms >= $1 AND ($2 IS NULL OR r.client_key_id = $2)";
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM resource_owners r WHERE {conditions}"
        ))
        .bind(since_ms)
        .bind(filter.client_key_id)
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT r.resource, r.project, r.client_key_id, c.name AS client_name, r.created_at,
                    r.created_at_ms
             FROM resource_owners r LEFT JOIN client_keys c ON c.id = r.client_key_id
             WHERE {conditions} ORDER BY r.created_at_ms DESC, r.resource LIMIT $3 OFFSET $4"
        ))
        .bind(since_ms)
        .bind(filter.client_key_id)
        .bind(per_page)
        .bind((page - 1) * per_page)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok(ResourceOwnerRow {
                    resource: row.try_get("resource")?,
                    project: row.try_get("project")?,
                    client_key_id: row.try_get("client_key_id")?,
                    client_name: row.try_get("client_name")?,
                    created_at: row.try_get("created_at")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok((rows, total))
    }
}

/// A remembered owner of a file or cached content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOwner {
    /// `files/…` or `cachedContents/…`.
    pub resource: String,
    /// The Google Cloud project of the key that created it.
    pub project: String,
    /// The client key that created it; `None` for owners recorded before client keys were.
    pub client_key_id: Option<i64>,
    /// When it was created (ms since the epoch).
    pub created_at_ms: i64,
}

/// A remembered owner, for the management API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResourceOwnerRow {
    /// `files/…` or `cachedContents/…`.
    pub resource: String,
    /// The Google Cloud project that holds it.
    pub project: String,
    /// The client key that created it, if recorded.
    pub client_key_id: Option<i64>,
    /// That client key's name (`None` when unknown or deleted).
    pub client_name: Option<String>,
    /// When it was recorded (ISO-8601, UTC).
    pub created_at: String,
    /// The same, in ms since the epoch.
    pub created_at_ms: i64,
}

/// Filters of the remembered owners.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceFilter {
    /// Only this client key's.
    pub client_key_id: Option<i64>,
    /// Page number, from 1.
    pub page: Option<u32>,
    /// Rows per page (at most 200).
    pub per_page: Option<u32>,
}
