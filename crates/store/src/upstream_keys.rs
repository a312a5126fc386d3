//! Upstream keys: the ones `GEMINI_API_KEYS` configures and the ones added through the management
//! API, with whether each is in service.

use pool::{KeyId, KeyRecord};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;

use crate::db::{KeySource, Storage, StorageError, SyncReport, retire_missing};

/// A key to store: from `GEMINI_API_KEYS` or the management API.
#[derive(Debug, Clone)]
pub struct NewUpstreamKey {
    /// The key.
    pub key: SecretString,
    /// Its Google Cloud project, when given as `KEY@PROJECT`.
    pub project: Option<String>,
}

/// Whether an upstream key is in service, as persisted (the `status` column). The live state
/// (cooling, checking) is the pool's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// In service.
    Active,
    /// Taken out of service on Google's evidence that the key is invalid.
    Invalid,
}

impl KeyStatus {
    fn from_column(row: &sqlx::any::AnyRow) -> Result<Self, StorageError> {
        match row.try_get::<String, _>("status")?.as_str() {
            "active" => Ok(Self::Active),
            "invalid" => Ok(Self::Invalid),
            other => Err(StorageError::UnexpectedValue {
                column: "status",
                value: other.to_owned(),
            }),
        }
    }
}

/// An upstream key as the management API lists it.
#[derive(Debug, Clone)]
pub struct UpstreamKeyRow {
    /// Database id.
    pub id: i64,
    /// The key (only ever shown masked).
    pub key: SecretString,
    /// Its project.
    pub project: Option<String>,
    /// Whether it may be picked.
    pub enabled: bool,
    /// Where it came from.
    pub source: KeySource,
    /// The persisted status.
    pub status: KeyStatus,
    /// The last reason it was taken out of service.
    pub last_error: Option<String>,
    /// When it was added.
    pub created_at: String,
}

impl Storage {
    /// Makes the `env` keys of the table match `GEMINI_API_KEYS`: new ones are added, ones that
    /// left are retired, and keys added through the management API are left alone.
    pub async fn sync_upstream_keys(
        &self,
        specs: &[NewUpstreamKey],
    ) -> Result<SyncReport, StorageError> {
        let mut tx = self.pool.begin().await?;
        let mut report = SyncReport::default();
        for spec in specs {
            let changed = sqlx::query(
                "INSERT INTO upstream_keys (api_key, project, source) VALUES ($1, $2, 'env')
                 ON CONFLICT (api_key) DO UPDATE SET
                    project = CASE WHEN upstream_keys.source = 'env' THEN excluded.project
                                   ELSE upstream_keys.project END,
                    retired_at = NULL
                 WHERE upstream_keys.retired_at IS NOT NULL
                    OR upstream_keys.project IS DISTINCT FROM excluded.project",
            )
            .bind(spec.key.expose_secret())
            .bind(spec.project.as_deref())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            report.added += usize::try_from(changed).unwrap_or(0);
        }
        let configured: std::collections::HashSet<&str> =
            specs.iter().map(|spec| spec.key.expose_secret()).collect();
        report.retired = retire_missing(
            &mut tx,
            self.backend,
            "upstream_keys",
            "api_key",
            &configured,
        )
        .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// The upstream keys in service (not retired), for the pool.
    pub async fn upstream_keys(&self) -> Result<Vec<KeyRecord>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, api_key, project, enabled, status, last_error FROM upstream_keys
             WHERE retired_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let status = KeyStatus::from_column(row)?;
                let last_error: Option<String> = row.try_get("last_error")?;
                Ok(KeyRecord {
                    id: KeyId(row.try_get("id")?),
                    secret: SecretString::from(row.try_get::<String, _>("api_key")?),
                    project: row.try_get("project")?,
                    enabled: row.try_get::<i64, _>("enabled")? != 0,
                    out_of_service: (status == KeyStatus::Invalid)
                        .then(|| last_error.unwrap_or_else(|| "invalid".to_owned())),
                })
            })
            .collect()
    }

    /// Records that a key was taken out of service, and why.
    pub async fn mark_key_invalid(&self, id: KeyId, reason: &str) -> Result<(), StorageError> {
        sqlx::query("UPDATE upstream_keys SET status = 'invalid', last_error = $2 WHERE id = $1")
            .bind(id.0)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that a key is back in service.
    pub async fn mark_key_active(&self, id: KeyId) -> Result<(), StorageError> {
        sqlx::query("UPDATE upstream_keys SET status = 'active', last_error = NULL WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Upstream keys in service (not retired), for the management API.
    pub async fn upstream_key_rows(&self) -> Result<Vec<UpstreamKeyRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, api_key, project, enabled, source, status, last_error, created_at
             FROM upstream_keys WHERE retired_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(UpstreamKeyRow {
                    id: row.try_get("id")?,
                    key: SecretString::from(row.try_get::<String, _>("api_key")?),
                    project: row.try_get("project")?,
                    enabled: row.try_get::<i64, _>("enabled")? != 0,
                    source: KeySource::from_column(row)?,
                    status: KeyStatus::from_column(row)?,
                    last_error: row.try_get("last_error")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Adds keys through the management API; returns how many were new (or revived) and how
    /// many were already there.
    pub async fn add_upstream_keys(
        &self,
        specs: &[NewUpstreamKey],
    ) -> Result<(usize, usize), StorageError> {
        let mut tx = self.pool.begin().await?;
        let (mut added, mut duplicates) = (0, 0);
        for spec in specs {
            let changed = sqlx::query(
                "INSERT INTO upstream_keys (api_key, project, source) VALUES ($1, $2, 'api')
                 ON CONFLICT (api_key) DO UPDATE SET retired_at = NULL, source = 'api',
                    project = excluded.project, status = 'active', last_error = NULL
                 WHERE upstream_keys.retired_at IS NOT NULL",
            )
            .bind(spec.key.expose_secret())
            .bind(spec.project.as_deref())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed > 0 {
                added += 1;
            } else {
                duplicates += 1;
            }
        }
        tx.commit().await?;
        Ok((added, duplicates))
    }

    /// Changes a key; `false` when there is no such key.
    pub async fn update_upstream_key(
        &self,
        id: i64,
        enabled: Option<bool>,
        project: Option<Option<String>>,
    ) -> Result<bool, StorageError> {
        let found = sqlx::query(
            "UPDATE upstream_keys SET enabled = COALESCE($2, upstream_keys.enabled),
                project = CASE WHEN $3 THEN $4 ELSE project END
             WHERE id = $1 AND retired_at IS NULL",
        )
        .bind(id)
        .bind(enabled.map(i64::from))
        .bind(project.is_some())
        .bind(project.flatten())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(found > 0)
    }

    /// Deletes a key; `false` when there is no such key.
    pub async fn delete_upstream_key(&self, id: i64) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM upstream_keys WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
