//! Client keys: stored as digests only, with their limits.

use sqlx::Row;

/// A client key to store: its digest and the first characters to show, never the key itself.
#[derive(Debug, Clone, Copy)]
pub struct NewClientKey<'a> {
    /// Display name.
    pub name: &'a str,
    /// Hex SHA-256 digest of the key.
    pub digest: &'a str,
    /// The first characters of the key, to tell keys apart in the dashboard.
    pub prefix: &'a str,
}

use crate::db::{KeySource, Storage, StorageError, SyncReport, retire_missing, to_i64};

/// A client key row, as the auth layer needs it.
#[derive(Debug, Clone)]
pub struct ClientKeyRow {
    /// Database id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Hex SHA-256 digest of the key.
    pub digest: String,
    /// Whether the key is accepted.
    pub enabled: bool,
    /// Its own limits.
    pub limits: pool::ClientLimits,
}

/// A client key as the management API lists it.
#[derive(Debug, Clone)]
pub struct ClientKeyAdminRow {
    /// Database id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// The first characters of the key.
    pub prefix: String,
    /// Whether it is accepted.
    pub enabled: bool,
    /// Where it came from.
    pub source: KeySource,
    /// When it was created.
    pub created_at: String,
    /// When it was last used (ms since the epoch).
    pub last_used_at_ms: Option<i64>,
    /// Its limits.
    pub limits: pool::ClientLimits,
}

impl Storage {
    /// Makes the `env` client keys match `CLIENT_API_KEYS` (given as digests: the store never sees
    /// a client key itself).
    pub async fn sync_client_keys(
        &self,
        keys: &[NewClientKey<'_>],
    ) -> Result<SyncReport, StorageError> {
        let mut tx = self.pool.begin().await?;
        let mut report = SyncReport::default();
        for key in keys {
            let changed = sqlx::query(
                "INSERT INTO client_keys (name, digest, prefix, source)
                 VALUES ($1, $2, $3, 'env')
                 ON CONFLICT (digest) DO UPDATE SET retired_at = NULL
                 WHERE client_keys.retired_at IS NOT NULL",
            )
            .bind(key.name)
            .bind(key.digest)
            .bind(key.prefix)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            report.added += usize::try_from(changed).unwrap_or(0);
        }
        let configured = keys.iter().map(|key| key.digest).collect();
        report.retired =
            retire_missing(&mut tx, self.backend, "client_keys", "digest", &configured).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Client keys in service (not retired).
    pub async fn client_keys(&self) -> Result<Vec<ClientKeyRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, name, digest, enabled, rpm_limit, rpd_limit, daily_token_limit,
                    allowed_models, expires_at_ms, max_concurrent
             FROM client_keys WHERE retired_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let allowed: Option<String> = row.try_get("allowed_models")?;
                let to_u32 = |value: Option<i64>| value.and_then(|v| u32::try_from(v).ok());
                let to_u64 = |value: Option<i64>| value.and_then(|v| u64::try_from(v).ok());
                Ok(ClientKeyRow {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    digest: row.try_get("digest")?,
                    enabled: row.try_get::<i64, _>("enabled")? != 0,
                    limits: pool::ClientLimits {
                        rpm: to_u32(row.try_get("rpm_limit")?),
                        rpd: to_u32(row.try_get("rpd_limit")?),
                        daily_tokens: to_u64(row.try_get("daily_token_limit")?),
                        allowed_models: allowed.and_then(|json| serde_json::from_str(&json).ok()),
                        expires_at_ms: to_u64(row.try_get("expires_at_ms")?),
                        max_concurrent: to_u32(row.try_get("max_concurrent")?),
                    },
                })
            })
            .collect()
    }

    /// Sets the limits of a client key.
    pub async fn set_client_limits(
        &self,
        id: i64,
        limits: &pool::ClientLimits,
    ) -> Result<(), StorageError> {
        let mut connection = self.pool.acquire().await?;
        write_client_limits(&mut connection, id, limits).await
    }

    /// Creates a client key from its digest, with its limits; returns its id.
    pub async fn create_client_key(
        &self,
        key: NewClientKey<'_>,
        limits: &pool::ClientLimits,
    ) -> Result<i64, StorageError> {
        // One transaction: a key never exists, even for a moment, without the limits it was
        // created with.
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO client_keys (name, digest, prefix, source) VALUES ($1, $2, $3, 'api') RETURNING id",
        )
        .bind(key.name)
        .bind(key.digest)
        .bind(key.prefix)
        .fetch_one(&mut *tx)
        .await?;
        write_client_limits(&mut tx, id, limits).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Client keys (not retired), for the management API.
    pub async fn client_key_rows(&self) -> Result<Vec<ClientKeyAdminRow>, StorageError> {
        let limits: std::collections::HashMap<i64, pool::ClientLimits> = self
            .client_keys()
            .await?
            .into_iter()
            .map(|row| (row.id, row.limits))
            .collect();
        let rows = sqlx::query(
            "SELECT c.id, c.name, c.prefix, c.enabled, c.source, c.created_at,
                    (SELECT MAX(at_ms) FROM request_logs r WHERE r.client_key_id = c.id) AS last_used
             FROM client_keys c WHERE c.retired_at IS NULL ORDER BY c.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id: i64 = row.try_get("id")?;
                Ok(ClientKeyAdminRow {
                    id,
                    name: row.try_get("name")?,
                    prefix: row.try_get("prefix")?,
                    enabled: row.try_get::<i64, _>("enabled")? != 0,
                    source: KeySource::from_column(row)?,
                    created_at: row.try_get("created_at")?,
                    last_used_at_ms: row.try_get("last_used")?,
                    limits: limits.get(&id).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Renames or enables/disables a client key; `false` when there is no such key.
    pub async fn update_client_key(
        &self,
        id: i64,
        name: Option<&str>,
        enabled: Option<bool>,
    ) -> Result<bool, StorageError> {
        let found = sqlx::query(
            "UPDATE client_keys SET name = COALESCE($2, name), enabled = COALESCE($3, enabled)
             WHERE id = $1 AND retired_at IS NULL",
        )
        .bind(id)
        .bind(name)
        .bind(enabled.map(i64::from))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(found > 0)
    }

    /// Deletes a client key; `false` when there is no such key.
    pub async fn delete_client_key(&self, id: i64) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM client_keys WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Writes the limits of client key `id` on `connection` (inside the creating transaction when the
/// key is new).
async fn write_client_limits(
    connection: &mut sqlx::AnyConnection,
    id: i64,
    limits: &pool::ClientLimits,
) -> Result<(), StorageError> {
    sqlx::query(
        "UPDATE client_keys SET rpm_limit = $2, rpd_limit = $3, daily_token_limit = $4,
            allowed_models = $5, expires_at_ms = $6, max_concurrent = $7 WHERE id = $1",
    )
    .bind(id)
    .bind(limits.rpm.map(i64::from))
    .bind(limits.rpd.map(i64::from))
    .bind(limits.daily_tokens.map(to_i64))
    .bind(
        limits
            .allowed_models
            .as_ref()
            .map(|models| serde_json::json!(models).to_string()),
    )
    .bind(limits.expires_at_ms.map(to_i64))
    .bind(limits.max_concurrent.map(i64::from))
    .execute(&mut *connection)
    .await?;
    Ok(())
}
