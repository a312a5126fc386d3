//! Persistence (SQLite through sqlx): upstream keys, client key digests, resource owners and
//! settings. Nothing here runs on the request path except writes spawned in the background.

use std::str::FromStr;

use pool::{KeyId, KeyRecord};
use secrecy::{ExposeSecret, SecretString};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, SqliteConnection};

use crate::config::UpstreamKeySpec;

/// Migrations, embedded in the binary and run at start.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The database folder could not be created.
    #[error("cannot create the database folder: {0}")]
    Folder(#[from] std::io::Error),
}

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

/// What a sync of configured keys changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Keys inserted or brought back from retirement.
    pub added: usize,
    /// Keys retired because they left the variable.
    pub retired: usize,
}

/// The database.
#[derive(Debug, Clone)]
pub struct Storage {
    pool: SqlitePool,
}

impl Storage {
    /// Opens (creating the file and its folder) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(true);
        let file = options.get_filename();
        if let Some(folder) = file.parent()
            && !folder.as_os_str().is_empty()
            && file.as_os_str() != ":memory:"
        {
            std::fs::create_dir_all(folder)?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Makes the `env` keys of the table match `GEMINI_API_KEYS`: new ones are added, ones that
    /// left are retired, and keys added through the management API are left alone.
    pub async fn sync_upstream_keys(
        &self,
        specs: &[UpstreamKeySpec],
    ) -> Result<SyncReport, StorageError> {
        let mut tx = self.pool.begin().await?;
        let mut report = SyncReport::default();
        for spec in specs {
            let changed = sqlx::query(
                "INSERT INTO upstream_keys (api_key, project, source) VALUES (?1, ?2, 'env')
                 ON CONFLICT (api_key) DO UPDATE SET
                    project = CASE WHEN upstream_keys.source = 'env' THEN excluded.project
                                   ELSE upstream_keys.project END,
                    retired_at = NULL
                 WHERE upstream_keys.retired_at IS NOT NULL
                    OR upstream_keys.project IS NOT excluded.project",
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
        report.retired = retire_missing(&mut tx, "upstream_keys", "api_key", &configured).await?;
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
                let status: String = row.try_get("status")?;
                let last_error: Option<String> = row.try_get("last_error")?;
                Ok(KeyRecord {
                    id: KeyId(row.try_get("id")?),
                    secret: SecretString::from(row.try_get::<String, _>("api_key")?),
                    project: row.try_get("project")?,
                    enabled: row.try_get("enabled")?,
                    out_of_service: (status == "invalid")
                        .then(|| last_error.unwrap_or_else(|| "invalid".to_owned())),
                })
            })
            .collect()
    }

    /// Records that a key was taken out of service, and why.
    pub async fn mark_key_invalid(&self, id: KeyId, reason: &str) -> Result<(), StorageError> {
        sqlx::query("UPDATE upstream_keys SET status = 'invalid', last_error = ?2 WHERE id = ?1")
            .bind(id.0)
            .bind(reason)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that a key is back in service.
    pub async fn mark_key_active(&self, id: KeyId) -> Result<(), StorageError> {
        sqlx::query("UPDATE upstream_keys SET status = 'active', last_error = NULL WHERE id = ?1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Makes the `env` client keys match `CLIENT_API_KEYS`, storing digests only.
    pub async fn sync_client_keys(
        &self,
        keys: &[SecretString],
    ) -> Result<SyncReport, StorageError> {
        let mut tx = self.pool.begin().await?;
        let mut report = SyncReport::default();
        let digests: Vec<String> = keys
            .iter()
            .map(|key| crate::auth::digest_hex(key.expose_secret()))
            .collect();
        for (key, digest) in keys.iter().zip(&digests) {
            let changed = sqlx::query(
                "INSERT INTO client_keys (name, digest, prefix, source)
                 VALUES ('from CLIENT_API_KEYS', ?1, ?2, 'env')
                 ON CONFLICT (digest) DO UPDATE SET retired_at = NULL
                 WHERE client_keys.retired_at IS NOT NULL",
            )
            .bind(digest)
            .bind(crate::auth::display_prefix(key.expose_secret()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            report.added += usize::try_from(changed).unwrap_or(0);
        }
        let configured = digests.iter().map(String::as_str).collect();
        report.retired = retire_missing(&mut tx, "client_keys", "digest", &configured).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Client keys in service (not retired).
    pub async fn client_keys(&self) -> Result<Vec<ClientKeyRow>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, name, digest, enabled, rpm_limit, rpd_limit, daily_token_limit,
                    allowed_models, expires_at_ms
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
                    enabled: row.try_get("enabled")?,
                    limits: pool::ClientLimits {
                        rpm: to_u32(row.try_get("rpm_limit")?),
                        rpd: to_u32(row.try_get("rpd_limit")?),
                        daily_tokens: to_u64(row.try_get("daily_token_limit")?),
                        allowed_models: allowed.and_then(|json| serde_json::from_str(&json).ok()),
                        expires_at_ms: to_u64(row.try_get("expires_at_ms")?),
                    },
                })
            })
            .collect()
    }

    /// Every remembered resource owner: `(resource, project)`.
    pub async fn resource_owners(&self) -> Result<Vec<(String, String)>, StorageError> {
        let rows = sqlx::query("SELECT resource, project FROM resource_owners")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("resource")?, row.try_get("project")?)))
            .collect()
    }

    /// Remembers the owner of a created file or cached content.
    pub async fn save_resource_owner(
        &self,
        resource: &str,
        project: &str,
        key: KeyId,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO resource_owners (resource, project, key_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (resource) DO UPDATE SET project = excluded.project, key_id = excluded.key_id",
        )
        .bind(resource)
        .bind(project)
        .bind(key.0)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a deleted resource.
    pub async fn delete_resource_owner(&self, resource: &str) -> Result<(), StorageError> {
        sqlx::query("DELETE FROM resource_owners WHERE resource = ?1")
            .bind(resource)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Totals of one upstream or client key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// Requests, all time.
    pub requests: i64,
    /// Requests answered with an error status.
    pub errors: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens (thinking included).
    pub completion_tokens: i64,
    /// Thinking tokens.
    pub thoughts_tokens: i64,
    /// Requests today (Pacific day).
    pub requests_today: i64,
}

impl Storage {
    /// Writes a batch of request records and the scheduler's day counts in one transaction.
    pub async fn write_accounting(
        &self,
        records: &[crate::accounting::RequestRecord],
        day_counts: &[pool::DayCount],
    ) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        for record in records {
            sqlx::query(
                "INSERT INTO request_logs (at_ms, client_key_id, upstream_key_id, project, model, route,
                    status, latency_ms, prompt_tokens, completion_tokens, thoughts_tokens, cached_tokens, streamed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .bind(i64::try_from(record.at_ms).unwrap_or(i64::MAX))
            .bind(record.client_key_id)
            .bind(record.upstream_key_id)
            .bind(record.project.as_deref())
            .bind(record.model.as_deref())
            .bind(record.route)
            .bind(i64::from(record.status))
            .bind(i64::try_from(record.latency_ms).unwrap_or(i64::MAX))
            .bind(to_i64(record.tokens.prompt))
            .bind(to_i64(record.tokens.completion))
            .bind(to_i64(record.tokens.thoughts))
            .bind(to_i64(record.tokens.cached))
            .bind(record.streamed)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO usage_daily (day, client_key_id, upstream_key_id, model, requests, errors,
                    prompt_tokens, completion_tokens, thoughts_tokens, cached_tokens)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (day, client_key_id, upstream_key_id, model) DO UPDATE SET
                    requests = requests + 1,
                    errors = errors + excluded.errors,
                    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = completion_tokens + excluded.completion_tokens,
                    thoughts_tokens = thoughts_tokens + excluded.thoughts_tokens,
                    cached_tokens = cached_tokens + excluded.cached_tokens",
            )
            .bind(pool::pacific_day(record.at_ms))
            .bind(record.client_key_id.unwrap_or(0))
            .bind(record.upstream_key_id.unwrap_or(0))
            .bind(record.model.as_deref().unwrap_or(""))
            .bind(i64::from(record.status >= 400))
            .bind(to_i64(record.tokens.prompt))
            .bind(to_i64(record.tokens.completion))
            .bind(to_i64(record.tokens.thoughts))
            .bind(to_i64(record.tokens.cached))
            .execute(&mut *tx)
            .await?;
        }
        for count in day_counts {
            sqlx::query(
                "INSERT INTO quota_counts (day, project, model, count) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (day, project, model) DO UPDATE SET count = MAX(count, excluded.count)",
            )
            .bind(count.day)
            .bind(&count.project)
            .bind(&count.model)
            .bind(i64::from(count.count))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The scheduler's counts saved for Pacific day `day`.
    pub async fn quota_counts(&self, day: i32) -> Result<Vec<pool::DayCount>, StorageError> {
        let rows = sqlx::query("SELECT project, model, count FROM quota_counts WHERE day = ?1")
            .bind(day)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(pool::DayCount {
                    project: row.try_get("project")?,
                    model: row.try_get("model")?,
                    day,
                    count: u32::try_from(row.try_get::<i64, _>("count")?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    /// Deletes request log rows older than `retention` (totals are kept in `usage_daily`).
    pub async fn prune_request_logs(
        &self,
        retention: std::time::Duration,
    ) -> Result<u64, StorageError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let cutoff = now.saturating_sub(retention).as_millis();
        let done = sqlx::query("DELETE FROM request_logs WHERE at_ms < ?1")
            .bind(i64::try_from(cutoff).unwrap_or(0))
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM quota_counts WHERE day < ?1")
            .bind(pool::pacific_day(u64::try_from(now.as_millis()).unwrap_or(0)) - 2)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Totals per upstream key (`by = "upstream_key_id"`) or client key (`"client_key_id"`).
    pub async fn usage_totals(
        &self,
        by: UsageDimension,
        today: i32,
    ) -> Result<std::collections::HashMap<i64, UsageTotals>, StorageError> {
        let column = match by {
            UsageDimension::UpstreamKey => "upstream_key_id",
            UsageDimension::ClientKey => "client_key_id",
        };
        let query = format!(
            "SELECT {column} AS id, SUM(requests) AS requests, SUM(errors) AS errors,
                SUM(prompt_tokens) AS prompt, SUM(completion_tokens) AS completion,
                SUM(thoughts_tokens) AS thoughts,
                SUM(CASE WHEN day = ?1 THEN requests ELSE 0 END) AS today
             FROM usage_daily GROUP BY {column}"
        );
        let rows = sqlx::query(&query)
            .bind(today)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("id")?,
                    UsageTotals {
                        requests: row.try_get("requests")?,
                        errors: row.try_get("errors")?,
                        prompt_tokens: row.try_get("prompt")?,
                        completion_tokens: row.try_get("completion")?,
                        thoughts_tokens: row.try_get("thoughts")?,
                        requests_today: row.try_get("today")?,
                    },
                ))
            })
            .collect()
    }

    /// Today's requests and tokens per client key (to restore per-client limits after a restart).
    pub async fn client_usage_on(&self, day: i32) -> Result<Vec<(i64, u32, u64)>, StorageError> {
        let rows = sqlx::query(
            "SELECT client_key_id, SUM(requests) AS requests,
                    SUM(prompt_tokens + completion_tokens) AS tokens
             FROM usage_daily WHERE day = ?1 AND client_key_id != 0 GROUP BY client_key_id",
        )
        .bind(day)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("client_key_id")?,
                    u32::try_from(row.try_get::<i64, _>("requests")?).unwrap_or(u32::MAX),
                    u64::try_from(row.try_get::<i64, _>("tokens")?).unwrap_or(0),
                ))
            })
            .collect()
    }

    /// Sets the limits of a client key.
    pub async fn set_client_limits(
        &self,
        id: i64,
        limits: &pool::ClientLimits,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "UPDATE client_keys SET rpm_limit = ?2, rpd_limit = ?3, daily_token_limit = ?4,
                allowed_models = ?5, expires_at_ms = ?6 WHERE id = ?1",
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The number of request log rows (for tests and the dashboard).
    pub async fn request_log_count(&self) -> Result<i64, StorageError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM request_logs")
            .fetch_one(&self.pool)
            .await?)
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
    /// `env` or `api`.
    pub source: String,
    /// The persisted status (`active` or `invalid`).
    pub status: String,
    /// The last reason it was taken out of service.
    pub last_error: Option<String>,
    /// When it was added.
    pub created_at: String,
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
    /// `env` or `api`.
    pub source: String,
    /// When it was created.
    pub created_at: String,
    /// When it was last used (ms since the epoch).
    pub last_used_at_ms: Option<i64>,
    /// Its limits.
    pub limits: pool::ClientLimits,
}

/// One row of the request log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogRow {
    /// Row id.
    pub id: i64,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Client key id.
    pub client_key_id: Option<i64>,
    /// Upstream key id.
    pub upstream_key_id: Option<i64>,
    /// Project.
    pub project: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Route template.
    pub route: String,
    /// HTTP status.
    pub status: i64,
    /// Latency in ms.
    pub latency_ms: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens (thinking included).
    pub completion_tokens: i64,
    /// Thinking tokens.
    pub thoughts_tokens: i64,
    /// Whether it was streamed.
    pub streamed: bool,
}

/// Filters of the request log.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFilter {
    /// Only this model.
    pub model: Option<String>,
    /// Only this client key.
    pub client_key_id: Option<i64>,
    /// Only this upstream key.
    pub upstream_key_id: Option<i64>,
    /// `ok` (below 400), `error` (400 and up), or one status code.
    pub status: Option<String>,
    /// Not before (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Page number, from 1.
    pub page: Option<u32>,
    /// Rows per page (at most 200).
    pub per_page: Option<u32>,
}

/// One point of a usage series.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct SeriesPoint {
    /// The hour (ms since the epoch) or Pacific day number.
    pub bucket: i64,
    /// Requests.
    pub requests: i64,
    /// Errors.
    pub errors: i64,
    /// Prompt and completion tokens.
    pub tokens: i64,
}

/// Usage of one model, client key or upstream key.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct Breakdown {
    /// The model, or the key id.
    pub name: String,
    /// Requests.
    pub requests: i64,
    /// Errors.
    pub errors: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
}

impl Storage {
    /// A setting, if set.
    pub async fn setting(&self, name: &str) -> Result<Option<String>, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Sets a setting.
    pub async fn set_setting(&self, name: &str, value: &str) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
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
                    enabled: row.try_get("enabled")?,
                    source: row.try_get("source")?,
                    status: row.try_get("status")?,
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
        specs: &[UpstreamKeySpec],
    ) -> Result<(usize, usize), StorageError> {
        let mut tx = self.pool.begin().await?;
        let (mut added, mut duplicates) = (0, 0);
        for spec in specs {
            let changed = sqlx::query(
                "INSERT INTO upstream_keys (api_key, project, source) VALUES (?1, ?2, 'api')
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
            "UPDATE upstream_keys SET enabled = COALESCE(?2, enabled),
                project = CASE WHEN ?3 THEN ?4 ELSE project END
             WHERE id = ?1 AND retired_at IS NULL",
        )
        .bind(id)
        .bind(enabled)
        .bind(project.is_some())
        .bind(project.flatten())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(found > 0)
    }

    /// Deletes a key; `false` when there is no such key.
    pub async fn delete_upstream_key(&self, id: i64) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM upstream_keys WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
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
                    enabled: row.try_get("enabled")?,
                    source: row.try_get("source")?,
                    created_at: row.try_get("created_at")?,
                    last_used_at_ms: row.try_get("last_used")?,
                    limits: limits.get(&id).cloned().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Creates a client key from its digest; returns its id.
    pub async fn create_client_key(
        &self,
        name: &str,
        digest: &str,
        prefix: &str,
        limits: &pool::ClientLimits,
    ) -> Result<i64, StorageError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO client_keys (name, digest, prefix, source) VALUES (?1, ?2, ?3, 'api') RETURNING id",
        )
        .bind(name)
        .bind(digest)
        .bind(prefix)
        .fetch_one(&self.pool)
        .await?;
        self.set_client_limits(id, limits).await?;
        Ok(id)
    }

    /// Renames or enables/disables a client key; `false` when there is no such key.
    pub async fn update_client_key(
        &self,
        id: i64,
        name: Option<&str>,
        enabled: Option<bool>,
    ) -> Result<bool, StorageError> {
        let found = sqlx::query(
            "UPDATE client_keys SET name = COALESCE(?2, name), enabled = COALESCE(?3, enabled)
             WHERE id = ?1 AND retired_at IS NULL",
        )
        .bind(id)
        .bind(name)
        .bind(enabled)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(found > 0)
    }

    /// Deletes a client key; `false` when there is no such key.
    pub async fn delete_client_key(&self, id: i64) -> Result<bool, StorageError> {
        let done = sqlx::query("DELETE FROM client_keys WHERE id = ?1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A page of the request log, newest first, and the number of matching rows.
    pub async fn request_logs(
        &self,
        filter: &LogFilter,
    ) -> Result<(Vec<LogRow>, i64), StorageError> {
        let per_page = i64::from(filter.per_page.unwrap_or(50).clamp(1, 200));
        let page = i64::from(filter.page.unwrap_or(1).max(1));
        let (status_min, status_max) = match filter.status.as_deref().filter(|s| !s.is_empty()) {
            Some("ok") => (0, 399),
            Some("error") => (400, 999),
            Some(code) => code.parse::<i64>().map_or((0, 999), |code| (code, code)),
            None => (0, 999),
        };
        let conditions = "(?1 IS NULL OR model = ?1) AND (?2 IS NULL OR client_key_id = ?2)
             AND (?3 IS NULL OR upstream_key_id = ?3) AND status BETWEEN ?4 AND ?5
             AND at_ms >= ?6";
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM request_logs WHERE {conditions}"
        ))
        .bind(filter.model.as_deref())
        .bind(filter.client_key_id)
        .bind(filter.upstream_key_id)
        .bind(status_min)
        .bind(status_max)
        .bind(filter.since_ms.unwrap_or(0))
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT id, at_ms, client_key_id, upstream_key_id, project, model, route, status, latency_ms,
                    prompt_tokens, completion_tokens, thoughts_tokens, streamed
             FROM request_logs WHERE {conditions} ORDER BY id DESC LIMIT ?7 OFFSET ?8"
        ))
        .bind(filter.model.as_deref().filter(|m| !m.is_empty()))
        .bind(filter.client_key_id)
        .bind(filter.upstream_key_id)
        .bind(status_min)
        .bind(status_max)
        .bind(filter.since_ms.unwrap_or(0))
        .bind(per_page)
        .bind((page - 1) * per_page)
        .fetch_all(&self.pool)
        .await?;
        let rows = rows
            .iter()
            .map(|row| {
                Ok(LogRow {
                    id: row.try_get("id")?,
                    at_ms: row.try_get("at_ms")?,
                    client_key_id: row.try_get("client_key_id")?,
                    upstream_key_id: row.try_get("upstream_key_id")?,
                    project: row.try_get("project")?,
                    model: row.try_get("model")?,
                    route: row.try_get("route")?,
                    status: row.try_get("status")?,
                    latency_ms: row.try_get("latency_ms")?,
                    prompt_tokens: row.try_get("prompt_tokens")?,
                    completion_tokens: row.try_get("completion_tokens")?,
                    thoughts_tokens: row.try_get("thoughts_tokens")?,
                    streamed: row.try_get("streamed")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok((rows, total))
    }

    /// Requests, errors and tokens per hour since `since_ms`.
    pub async fn hourly_series(&self, since_ms: i64) -> Result<Vec<SeriesPoint>, StorageError> {
        let rows = sqlx::query(
            "SELECT (at_ms / 3600000) * 3600000 AS bucket, COUNT(*) AS requests,
                    SUM(status >= 400) AS errors, SUM(prompt_tokens + completion_tokens) AS tokens
             FROM request_logs WHERE at_ms >= ?1 GROUP BY bucket ORDER BY bucket",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(series_point).collect()
    }

    /// Requests, errors and tokens per Pacific day from day `since_day`.
    pub async fn daily_series(&self, since_day: i32) -> Result<Vec<SeriesPoint>, StorageError> {
        let rows = sqlx::query(
            "SELECT day AS bucket, SUM(requests) AS requests, SUM(errors) AS errors,
                    SUM(prompt_tokens + completion_tokens) AS tokens
             FROM usage_daily WHERE day >= ?1 GROUP BY day ORDER BY day",
        )
        .bind(since_day)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(series_point).collect()
    }

    /// Usage from day `since_day` grouped by model, client key or upstream key.
    pub async fn breakdown(
        &self,
        by: BreakdownDimension,
        since_day: i32,
    ) -> Result<Vec<Breakdown>, StorageError> {
        let column = match by {
            BreakdownDimension::Model => "model",
            BreakdownDimension::ClientKey => "CAST(client_key_id AS TEXT)",
            BreakdownDimension::UpstreamKey => "CAST(upstream_key_id AS TEXT)",
        };
        let rows = sqlx::query(&format!(
            "SELECT {column} AS name, SUM(requests) AS requests, SUM(errors) AS errors,
                    SUM(prompt_tokens) AS prompt, SUM(completion_tokens) AS completion
             FROM usage_daily WHERE day >= ?1 GROUP BY name ORDER BY requests DESC LIMIT 50"
        ))
        .bind(since_day)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Breakdown {
                    name: row.try_get("name")?,
                    requests: row.try_get("requests")?,
                    errors: row.try_get("errors")?,
                    prompt_tokens: row.try_get("prompt")?,
                    completion_tokens: row.try_get("completion")?,
                })
            })
            .collect()
    }
}

/// What a usage breakdown is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakdownDimension {
    /// Per model.
    Model,
    /// Per client key.
    ClientKey,
    /// Per upstream key.
    UpstreamKey,
}

fn series_point(row: &sqlx::sqlite::SqliteRow) -> Result<SeriesPoint, StorageError> {
    Ok(SeriesPoint {
        bucket: row.try_get("bucket")?,
        requests: row.try_get("requests")?,
        errors: row.try_get::<Option<i64>, _>("errors")?.unwrap_or(0),
        tokens: row.try_get::<Option<i64>, _>("tokens")?.unwrap_or(0),
    })
}

/// What usage totals are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageDimension {
    /// Per upstream key.
    UpstreamKey,
    /// Per client key.
    ClientKey,
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Retires the `env` rows of `table` whose `column` is not in `configured`; returns how many.
async fn retire_missing(
    tx: &mut SqliteConnection,
    table: &str,
    column: &str,
    configured: &std::collections::HashSet<&str>,
) -> Result<usize, StorageError> {
    let select = format!(
        "SELECT id, {column} AS value FROM {table} WHERE source = 'env' AND retired_at IS NULL"
    );
    let rows = sqlx::query(&select).fetch_all(&mut *tx).await?;
    let update = format!(
        "UPDATE {table} SET retired_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?1"
    );
    let mut retired = 0;
    for row in rows {
        let value: String = row.try_get("value")?;
        if !configured.contains(value.as_str()) {
            let id: i64 = row.try_get("id")?;
            sqlx::query(&update).bind(id).execute(&mut *tx).await?;
            retired += 1;
        }
    }
    Ok(retired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(key: &str, project: Option<&str>) -> UpstreamKeySpec {
        UpstreamKeySpec {
            key: SecretString::from(key),
            project: project.map(str::to_owned),
        }
    }

    async fn temp_storage() -> (Storage, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}/nested/db.sqlite?mode=rwc",
            dir.path().display()
        );
        (Storage::open(&url).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn the_database_file_and_its_folder_are_created() {
        let (storage, dir) = temp_storage().await;
        storage.ping().await.unwrap();
        assert!(dir.path().join("nested/db.sqlite").exists());
    }

    #[tokio::test]
    async fn env_keys_sync_adds_retires_and_keeps_api_keys() {
        let (storage, _dir) = temp_storage().await;
        let report = storage
            .sync_upstream_keys(&[spec("k1", None), spec("k2", Some("p"))])
            .await
            .unwrap();
        assert_eq!(
            report,
            SyncReport {
                added: 2,
                retired: 0
            }
        );
        sqlx::query("INSERT INTO upstream_keys (api_key, source) VALUES ('k-api', 'api')")
            .execute(&storage.pool)
            .await
            .unwrap();

        // Same list again: nothing changes.
        let again = storage
            .sync_upstream_keys(&[spec("k1", None), spec("k2", Some("p"))])
            .await
            .unwrap();
        assert_eq!(again, SyncReport::default());

        // k1 leaves the variable, k2 moves project, k3 arrives.
        let report = storage
            .sync_upstream_keys(&[spec("k2", Some("q")), spec("k3", None)])
            .await
            .unwrap();
        assert_eq!(
            report,
            SyncReport {
                added: 2,
                retired: 1
            }
        );
        let keys: Vec<(String, Option<String>)> = storage
            .upstream_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.secret.expose_secret().to_owned(), k.project))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("k2".to_owned(), Some("q".to_owned())),
                ("k-api".to_owned(), None),
                ("k3".to_owned(), None),
            ]
        );

        // k1 comes back under its old id.
        storage
            .sync_upstream_keys(&[spec("k1", None)])
            .await
            .unwrap();
        let ids: Vec<i64> = storage
            .upstream_keys()
            .await
            .unwrap()
            .iter()
            .map(|k| k.id.0)
            .collect();
        assert_eq!(ids, vec![1, 3]);
    }

    #[tokio::test]
    async fn client_keys_are_stored_as_digests_only() {
        let (storage, dir) = temp_storage().await;
        let secret = "client-secret-value-123";
        storage
            .sync_client_keys(&[SecretString::from(secret)])
            .await
            .unwrap();
        let rows = storage.client_keys().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].digest, crate::auth::digest_hex(secret));
        drop(storage);
        for entry in std::fs::read_dir(dir.path().join("nested")).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the client key is stored in clear"
            );
        }
    }

    #[tokio::test]
    async fn invalid_keys_and_resource_owners_survive_a_reload() {
        let (storage, _dir) = temp_storage().await;
        storage
            .sync_upstream_keys(&[spec("k1", Some("p"))])
            .await
            .unwrap();
        storage
            .mark_key_invalid(KeyId(1), "API_KEY_INVALID")
            .await
            .unwrap();
        let keys = storage.upstream_keys().await.unwrap();
        assert_eq!(keys[0].out_of_service.as_deref(), Some("API_KEY_INVALID"));

        storage
            .save_resource_owner("files/a", "p", KeyId(1))
            .await
            .unwrap();
        assert_eq!(
            storage.resource_owners().await.unwrap(),
            vec![("files/a".to_owned(), "p".to_owned())]
        );
        storage.delete_resource_owner("files/a").await.unwrap();
        assert!(storage.resource_owners().await.unwrap().is_empty());
    }
}
