//! Persistence through sqlx's `Any` driver, so one set of queries serves SQLite (the default,
//! one instance) and PostgreSQL (several instances sharing one state): upstream keys, client key
//! digests, resource owners, settings, usage, and the quota coordination tables. Nothing here runs
//! on the request path except writes spawned in the background and quota lease refills.
//!
//! The queries are written in the SQL both databases accept: `$N` placeholders, `ON CONFLICT`,
//! `IS DISTINCT FROM`, sums cast to `BIGINT` (PostgreSQL sums integers into `NUMERIC`, which
//! the `Any` driver cannot decode), flags as `0`/`1` integers (the `Any` driver decodes booleans
//! only from a boolean column, which SQLite does not have), and columns qualified by their table
//! inside `ON CONFLICT … DO UPDATE` (PostgreSQL finds bare names ambiguous there).

use std::str::FromStr;

use pool::{KeyId, KeyRecord};
use secrecy::{ExposeSecret, SecretString};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, AnyPool, Executor, Row};

use crate::config::UpstreamKeySpec;

/// SQLite migrations, embedded in the binary and run at start.
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
/// PostgreSQL migrations: the same schema in PostgreSQL's types.
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The PostgreSQL channel on which instances announce news (`LISTEN`/`NOTIFY`).
pub const NEWS_CHANNEL: &str = "gemini_pool_news";

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:` — one instance, a local file.
    Sqlite,
    /// `postgres:` or `postgresql:` — one database shared by several instances.
    Postgres,
}

impl Backend {
    /// The backend of `url`, or `None` for an unsupported scheme.
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// The `n`th bind parameter (from 1) of a long statement. SQLite gets the anonymous `?`:
    /// sqlx looks every parameter up by name, and SQLite finds a name by walking the list of
    /// names, which makes a statement with thousands of `$N` quadratic.
    fn placeholder(self, n: usize) -> String {
        match self {
            Self::Sqlite => "?".to_owned(),
            Self::Postgres => format!("${n}"),
        }
    }

    /// SQL for the current time as ISO-8601 text, the form of the `*_at` columns.
    fn now_text(self) -> &'static str {
        match self {
            Self::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            Self::Postgres => {
                "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            }
        }
    }
}

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
    /// `DATABASE_URL` names neither SQLite nor PostgreSQL.
    #[error("unsupported database URL (use sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// The SQLite file exists but is not a SQLite database (damaged, truncated, or another
    /// file).
    #[error(
        "{0} is not a SQLite database (damaged or another file): move it away or restore a backup"
    )]
    NotSqlite(String),
}

/// Readies a SQLite file: its folder created readable by this user only (0700), the file created
/// empty with 0600 (it holds the upstream keys), and an existing file checked to be a SQLite
/// database, so a damaged one fails the start with a clear message.
fn prepare_sqlite_file(file: &std::path::Path) -> Result<(), StorageError> {
    use std::io::Read;
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(folder) = file.parent()
        && !folder.as_os_str().is_empty()
        && !folder.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(folder)?;
    }
    if !file.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        match options.open(file) {
            Ok(_) => return Ok(()),
            // Another instance created it meanwhile: check it as an existing file.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error.into()),
        }
    }
    let mut header = [0u8; 16];
    let read = std::fs::File::open(file)?.read(&mut header)?;
    if read == 0 || header == *b"SQLite format 3\0" {
        Ok(())
    } else {
        Err(StorageError::NotSqlite(file.display().to_string()))
    }
}

/// Opens one connection and reads the schema, so a damaged database fails the start at once
/// with SQLite's own words (a pool would retry the connection until its timeout).
async fn check_sqlite_opens(url: &str, file: &std::path::Path) -> Result<(), StorageError> {
    use sqlx::Connection;
    let damaged =
        |error: sqlx::Error| StorageError::NotSqlite(format!("{} ({error})", file.display()));
    let mut connection = sqlx::AnyConnection::connect(url).await.map_err(damaged)?;
    connection
        .execute("PRAGMA journal_mode = WAL; SELECT count(*) FROM sqlite_master;")
        .await
        .map_err(damaged)?;
    connection.close().await.map_err(damaged)?;
    Ok(())
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
    pool: AnyPool,
    backend: Backend,
    /// The SQLite file, to tell when it was deleted under a running gateway.
    file: Option<std::path::PathBuf>,
}

impl Storage {
    /// The connection pool, for the queries kept beside their feature (`response_store`).
    pub(crate) fn any_pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Opens (creating the file and its folder) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or(StorageError::UnsupportedUrl)?;
        let mut sqlite_file = None;
        let pool = match backend {
            Backend::Sqlite => {
                let file = SqliteConnectOptions::from_str(url)?
                    .get_filename()
                    .to_owned();
                if file.as_os_str() != ":memory:" {
                    prepare_sqlite_file(&file)?;
                    sqlite_file = Some(file.clone());
                }
                // The `Any` driver takes its options from the URL only: create the file when
                // missing, and set the rest per connection.
                let url = if url.contains("mode=") {
                    url.to_owned()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                if let Some(file) = &sqlite_file {
                    check_sqlite_opens(&url, file).await?;
                }
                AnyPoolOptions::new()
                    .max_connections(4)
                    // A file SQLite cannot open fails at once rather than after half a minute
                    // of retries.
                    .acquire_timeout(std::time::Duration::from_secs(5))
                    .after_connect(|connection, _| {
                        Box::pin(async move {
                            connection
                                .execute(
                                    "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;
                                     PRAGMA foreign_keys = ON;",
                                )
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(url)
                    .await?
            }
        };
        match backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATOR.run(&pool).await?,
        }
        Ok(Self {
            pool,
            backend,
            file: sqlite_file,
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database file is still where it was opened (SQLite; a deleted file or
    /// folder leaves the open connections working while nothing written survives).
    pub fn file_is_in_place(&self) -> bool {
        self.file.as_ref().is_none_or(|file| file.exists())
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
                let status: String = row.try_get("status")?;
                let last_error: Option<String> = row.try_get("last_error")?;
                Ok(KeyRecord {
                    id: KeyId(row.try_get("id")?),
                    secret: SecretString::from(row.try_get::<String, _>("api_key")?),
                    project: row.try_get("project")?,
                    enabled: row.try_get::<i64, _>("enabled")? != 0,
                    out_of_service: (status == "invalid")
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
                 VALUES ('from CLIENT_API_KEYS', $1, $2, 'env')
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
    /// Writes a batch of request records and the scheduler's day counts in one transaction: the
    /// rows in multi-row inserts, the daily totals summed per (day, client, key, model) first,
    /// so a busy second costs a few statements rather than two per request.
    pub async fn write_accounting(
        &self,
        records: &[crate::accounting::RequestRecord],
        day_counts: &[pool::DayCount],
    ) -> Result<(), StorageError> {
        const COLUMNS: usize = 15;
        // Well under the bound-parameter limits of SQLite (32,766) and PostgreSQL (65,535).
        const ROWS_PER_INSERT: usize = 500;
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(ROWS_PER_INSERT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|row| {
                    let slots: Vec<String> = (1..=COLUMNS)
                        .map(|column| self.backend.placeholder(row * COLUMNS + column))
                        .collect();
                    format!("({})", slots.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO request_logs (at_ms, client_key_id, upstream_key_id, project, model, route,
                    status, latency_ms, prompt_tokens, completion_tokens, thoughts_tokens, cached_tokens, streamed,
                    attempts, upstream_error)
                 VALUES {}",
                rows.join(", ")
            );
            let mut insert = sqlx::query(&sql);
            for record in chunk {
                insert = insert
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
                    .bind(i64::from(record.streamed))
                    .bind(i64::from(record.attempts))
                    .bind(record.upstream_error);
            }
            insert.execute(&mut *tx).await?;
        }
        for ((day, client, key, model), totals) in daily_totals(records) {
            sqlx::query(
                "INSERT INTO usage_daily (day, client_key_id, upstream_key_id, model, requests, errors,
                    prompt_tokens, completion_tokens, thoughts_tokens, cached_tokens)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (day, client_key_id, upstream_key_id, model) DO UPDATE SET
                    requests = usage_daily.requests + excluded.requests,
                    errors = usage_daily.errors + excluded.errors,
                    prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,
                    thoughts_tokens = usage_daily.thoughts_tokens + excluded.thoughts_tokens,
                    cached_tokens = usage_daily.cached_tokens + excluded.cached_tokens",
            )
            .bind(i64::from(day))
            .bind(client)
            .bind(key)
            .bind(model)
            .bind(totals[0])
            .bind(totals[1])
            .bind(totals[2])
            .bind(totals[3])
            .bind(totals[4])
            .bind(totals[5])
            .execute(&mut *tx)
            .await?;
        }
        for count in day_counts {
            sqlx::query(
                "INSERT INTO quota_counts (day, project, model, count) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (day, project, model) DO UPDATE SET count =
                    CASE WHEN excluded.count > quota_counts.count THEN excluded.count
                         ELSE quota_counts.count END",
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
        let rows = sqlx::query("SELECT project, model, count FROM quota_counts WHERE day = $1")
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

    /// Remembers the limits Google named for a project and model.
    pub async fn save_learned_limits(
        &self,
        learned: &pool::LearnedLimits,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO learned_limits (project, model, rpm, rpd, tpm, learned_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (project, model) DO UPDATE SET rpm = excluded.rpm, rpd = excluded.rpd,
                tpm = excluded.tpm, learned_at_ms = excluded.learned_at_ms",
        )
        .bind(&learned.project)
        .bind(&learned.model)
        .bind(learned.limits.rpm.map(i64::from))
        .bind(learned.limits.rpd.map(i64::from))
        .bind(learned.limits.tpm.map(to_i64))
        .bind(to_i64(learned.at_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every learned limit kept (the pool ignores ones older than a day).
    pub async fn learned_limits(&self) -> Result<Vec<pool::LearnedLimits>, StorageError> {
        let rows =
            sqlx::query("SELECT project, model, rpm, rpd, tpm, learned_at_ms FROM learned_limits")
                .fetch_all(&self.pool)
                .await?;
        let count = |value: Option<i64>| value.and_then(|v| u32::try_from(v).ok());
        rows.iter()
            .map(|row| {
                Ok(pool::LearnedLimits {
                    project: row.try_get("project")?,
                    model: row.try_get("model")?,
                    limits: pool::Limits {
                        rpm: count(row.try_get("rpm")?),
                        rpd: count(row.try_get("rpd")?),
                        tpm: row
                            .try_get::<Option<i64>, _>("tpm")?
                            .and_then(|v| u64::try_from(v).ok()),
                    },
                    at_ms: u64::try_from(row.try_get::<i64, _>("learned_at_ms")?).unwrap_or(0),
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
        let done = sqlx::query("DELETE FROM request_logs WHERE at_ms < $1")
            .bind(i64::try_from(cutoff).unwrap_or(0))
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM quota_counts WHERE day < $1")
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
            "SELECT {column} AS id, CAST(SUM(requests) AS BIGINT) AS requests,
                CAST(SUM(errors) AS BIGINT) AS errors,
                CAST(SUM(prompt_tokens) AS BIGINT) AS prompt,
                CAST(SUM(completion_tokens) AS BIGINT) AS completion,
                CAST(SUM(thoughts_tokens) AS BIGINT) AS thoughts,
                CAST(SUM(CASE WHEN day = $1 THEN requests ELSE 0 END) AS BIGINT) AS today
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
            "SELECT client_key_id, CAST(SUM(requests) AS BIGINT) AS requests,
                    CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) AS tokens
             FROM usage_daily WHERE day = $1 AND client_key_id != 0 GROUP BY client_key_id",
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
    /// Upstream calls made.
    pub attempts: i64,
    /// The last trouble met upstream, if any.
    pub upstream_error: Option<String>,
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

/// Which usage a series or breakdown counts (`None`: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Only this model.
    pub model: Option<String>,
    /// Only this client key.
    pub client_key_id: Option<i64>,
    /// Only this upstream key.
    pub upstream_key_id: Option<i64>,
}

/// A query of the `Any` driver.
type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// `query` with `filter` bound as the parameters 2 to 4 that [`USAGE_FILTER`] names.
fn with_usage_filter<'q>(query: AnyQuery<'q>, filter: &'q UsageFilter) -> AnyQuery<'q> {
    query
        .bind(filter.model.as_deref())
        .bind(filter.client_key_id)
        .bind(filter.upstream_key_id)
}

/// The SQL of a [`UsageFilter`], bound as parameters 2 to 4 (by [`with_usage_filter`]).
const USAGE_FILTER: &str = "AND ($2 IS NULL OR model = $2) AND ($3 IS NULL OR client_key_id = $3)
     AND ($4 IS NULL OR upstream_key_id = $4)";

/// Usage of one model, client key or upstream key.
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct Breakdown {
    /// The key's id (client and upstream key breakdowns), to filter by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
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
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// A setting, set to `initial` first if it was not set: of instances starting together on
    /// one database, the first one's value wins and all of them get it.
    pub async fn setting_or_init(&self, name: &str, initial: &str) -> Result<String, StorageError> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(initial)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Sets a setting.
    pub async fn set_setting(&self, name: &str, value: &str) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Opens an admin session (`id` is the token's `sid` claim).
    pub async fn create_admin_session(
        &self,
        id: &str,
        created_at_ms: i64,
        expires_at_ms: i64,
    ) -> Result<(), StorageError> {
        sqlx::query(
            "INSERT INTO admin_sessions (id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(created_at_ms)
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the admin session `id` exists, is not revoked and has not expired at `now_ms`.
    pub async fn admin_session_is_open(&self, id: &str, now_ms: i64) -> Result<bool, StorageError> {
        let row = sqlx::query(
            "SELECT id FROM admin_sessions
             WHERE id = $1 AND revoked_at_ms IS NULL AND expires_at_ms > $2",
        )
        .bind(id)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Revokes the admin session `id` (a logout); whether it was open.
    pub async fn revoke_admin_session(&self, id: &str, now_ms: i64) -> Result<bool, StorageError> {
        let done = sqlx::query(
            "UPDATE admin_sessions SET revoked_at_ms = $2 WHERE id = $1 AND revoked_at_ms IS NULL",
        )
        .bind(id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every open admin session (the admin password changed); how many there were.
    pub async fn revoke_all_admin_sessions(&self, now_ms: i64) -> Result<u64, StorageError> {
        let done =
            sqlx::query("UPDATE admin_sessions SET revoked_at_ms = $1 WHERE revoked_at_ms IS NULL")
                .bind(now_ms)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Deletes the admin sessions expired at `now_ms` (revoked or not: an expired token is
    /// refused on its own); how many.
    pub async fn prune_admin_sessions(&self, now_ms: i64) -> Result<u64, StorageError> {
        let done = sqlx::query("DELETE FROM admin_sessions WHERE expires_at_ms <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
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
            "INSERT INTO client_keys (name, digest, prefix, source) VALUES ($1, $2, $3, 'api') RETURNING id",
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
        let conditions = "($1 IS NULL OR model = $1) AND ($2 IS NULL OR client_key_id = $2)
             AND ($3 IS NULL OR upstream_key_id = $3) AND status BETWEEN $4 AND $5
             AND at_ms >= $6";
        let model = filter.model.as_deref().filter(|m| !m.is_empty());
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM request_logs WHERE {conditions}"
        ))
        .bind(model)
        .bind(filter.client_key_id)
        .bind(filter.upstream_key_id)
        .bind(status_min)
        .bind(status_max)
        .bind(filter.since_ms.unwrap_or(0))
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(&format!(
            "SELECT id, at_ms, client_key_id, upstream_key_id, project, model, route, status, latency_ms,
                    prompt_tokens, completion_tokens, thoughts_tokens, streamed, attempts, upstream_error
             FROM request_logs WHERE {conditions} ORDER BY id DESC LIMIT $7 OFFSET $8"
        ))
        .bind(model)
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
                    streamed: row.try_get::<i64, _>("streamed")? != 0,
                    attempts: row.try_get("attempts")?,
                    upstream_error: row.try_get("upstream_error")?,
                })
            })
            .collect::<Result<Vec<_>, StorageError>>()?;
        Ok((rows, total))
    }

    /// Requests, errors and tokens per hour since `since_ms`, of the usage `filter` keeps.
    pub async fn hourly_series(
        &self,
        since_ms: i64,
        filter: &UsageFilter,
    ) -> Result<Vec<SeriesPoint>, StorageError> {
        let rows = with_usage_filter(
            sqlx::query(&format!(
                "SELECT (at_ms / 3600000) * 3600000 AS bucket, COUNT(*) AS requests,
                    CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT) AS errors,
                    CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) AS tokens
             FROM request_logs WHERE at_ms >= $1 {USAGE_FILTER} GROUP BY bucket ORDER BY bucket"
            ))
            .bind(since_ms),
            filter,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(series_point).collect()
    }

    /// Requests, errors and tokens per Pacific day from day `since_day`, of the usage `filter`
    /// keeps.
    pub async fn daily_series(
        &self,
        since_day: i32,
        filter: &UsageFilter,
    ) -> Result<Vec<SeriesPoint>, StorageError> {
        let rows = with_usage_filter(
            sqlx::query(&format!(
                "SELECT day AS bucket, CAST(SUM(requests) AS BIGINT) AS requests,
                    CAST(SUM(errors) AS BIGINT) AS errors,
                    CAST(SUM(prompt_tokens + completion_tokens) AS BIGINT) AS tokens
             FROM usage_daily WHERE day >= $1 {USAGE_FILTER} GROUP BY day ORDER BY day"
            ))
            .bind(since_day),
            filter,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(series_point).collect()
    }

    /// Usage from day `since_day` grouped by model, client key or upstream key, of the usage
    /// `filter` keeps.
    pub async fn breakdown(
        &self,
        by: BreakdownDimension,
        since_day: i32,
        filter: &UsageFilter,
    ) -> Result<Vec<Breakdown>, StorageError> {
        let column = match by {
            BreakdownDimension::Model => "model",
            BreakdownDimension::ClientKey => "CAST(client_key_id AS TEXT)",
            BreakdownDimension::UpstreamKey => "CAST(upstream_key_id AS TEXT)",
        };
        let rows = with_usage_filter(
            sqlx::query(&format!(
                "SELECT {column} AS name, CAST(SUM(requests) AS BIGINT) AS requests,
                    CAST(SUM(errors) AS BIGINT) AS errors,
                    CAST(SUM(prompt_tokens) AS BIGINT) AS prompt,
                    CAST(SUM(completion_tokens) AS BIGINT) AS completion
             FROM usage_daily WHERE day >= $1 {USAGE_FILTER}
             GROUP BY name ORDER BY requests DESC LIMIT 50"
            ))
            .bind(since_day),
            filter,
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                Ok(Breakdown {
                    id: match by {
                        BreakdownDimension::Model => None,
                        _ => name.parse().ok(),
                    },
                    name,
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

fn series_point(row: &AnyRow) -> Result<SeriesPoint, StorageError> {
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

/// The records of a batch summed per Pacific day, client key, upstream key and model (0 and ''
/// where there is none): requests, errors, prompt, completion, thinking and cached tokens.
fn daily_totals(
    records: &[crate::accounting::RequestRecord],
) -> std::collections::BTreeMap<(i32, i64, i64, &str), [i64; 6]> {
    let mut totals = std::collections::BTreeMap::new();
    for record in records {
        let key = (
            pool::pacific_day(record.at_ms),
            record.client_key_id.unwrap_or(0),
            record.upstream_key_id.unwrap_or(0),
            record.model.as_deref().unwrap_or(""),
        );
        let sums: &mut [i64; 6] = totals.entry(key).or_insert([0; 6]);
        sums[0] += 1;
        sums[1] += i64::from(record.status >= 400);
        sums[2] += to_i64(record.tokens.prompt);
        sums[3] += to_i64(record.tokens.completion);
        sums[4] += to_i64(record.tokens.thoughts);
        sums[5] += to_i64(record.tokens.cached);
    }
    totals
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Retires the `env` rows of `table` whose `column` is not in `configured`; returns how many.
async fn retire_missing(
    tx: &mut AnyConnection,
    backend: Backend,
    table: &str,
    column: &str,
    configured: &std::collections::HashSet<&str>,
) -> Result<usize, StorageError> {
    let select = format!(
        "SELECT id, {column} AS value FROM {table} WHERE source = 'env' AND retired_at IS NULL"
    );
    let rows = sqlx::query(&select).fetch_all(&mut *tx).await?;
    let update = format!(
        "UPDATE {table} SET retired_at = {} WHERE id = $1",
        backend.now_text()
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

/// What the database answered to a lease request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseGrant {
    /// A slice of this many requests.
    Granted(u32),
    /// Nothing left: the shared quota frees up at `until_ms` (Pacific midnight when `daily`).
    Exhausted {
        /// When to ask again (ms since the epoch, the database's clock).
        until_ms: u64,
        /// The daily limit is the one used up.
        daily: bool,
    },
}

/// One row of `cluster_events`: news from another instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    /// Row id (increasing).
    pub id: i64,
    /// `cooldown`, `limits`, `key_out`, `owner`, `response_deleted`, `keys`, `clients` or
    /// `settings`.
    pub kind: String,
    /// The project (cooldown, owner).
    pub project: Option<String>,
    /// The model (cooldown).
    pub model: Option<String>,
    /// The key (key_out).
    pub key_id: Option<i64>,
    /// Until when (cooldown).
    pub until_ms: Option<i64>,
    /// A daily cooldown.
    pub daily: bool,
    /// The reason (key_out), the resource name (owner) or the response id (response_deleted).
    pub detail: Option<String>,
    /// The client key that created the resource (owner).
    pub client_key_id: Option<i64>,
}

/// The database's clock in ms since the epoch, as SQL (PostgreSQL only).
const PG_NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

impl Storage {
    /// Grants up to `want` requests of `project`'s quota for `model` to `instance`, within
    /// `limits` (see `pool::lease` for why this bounds the combined rate). PostgreSQL only.
    pub async fn grant_lease(
        &self,
        instance: &str,
        want: &pool::LeaseWant,
        count: u32,
        next_midnight_ms: u64,
    ) -> Result<LeaseGrant, StorageError> {
        let mut tx = self.pool.begin().await?;
        // One grant at a time per project and model, across instances.
        sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2))) AS l")
            .bind(&want.project)
            .bind(&want.model)
            .fetch_one(&mut *tx)
            .await?;
        let now_ms: i64 = sqlx::query_scalar(&format!("SELECT {PG_NOW_MS}"))
            .fetch_one(&mut *tx)
            .await?;
        let today = pool::pacific_day(u64::try_from(now_ms).unwrap_or(0));
        let window_start = now_ms - to_i64(pool::lease::GRANT_WINDOW_MS);
        let used = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN granted_at_ms > $3 THEN count ELSE 0 END), 0) AS BIGINT) AS minute,
                    CAST(COALESCE(SUM(CASE WHEN day = $4 THEN count ELSE 0 END), 0) AS BIGINT) AS today,
                    CAST(COALESCE(MIN(CASE WHEN granted_at_ms > $3 THEN granted_at_ms END), 0) AS BIGINT) AS oldest
             FROM quota_leases
             WHERE project = $1 AND model = $2 AND (granted_at_ms > $3 OR day = $4)",
        )
        .bind(&want.project)
        .bind(&want.model)
        .bind(window_start)
        .bind(i64::from(today))
        .fetch_one(&mut *tx)
        .await?;
        let minute_used: i64 = used.try_get("minute")?;
        let day_used: i64 = used.try_get("today")?;
        let oldest: i64 = used.try_get("oldest")?;
        let left = |limit: Option<u32>, used: i64| {
            limit.map_or(i64::MAX, |limit| (i64::from(limit) - used).max(0))
        };
        let (minute_left, day_left) = (
            left(want.limits.rpm, minute_used),
            left(want.limits.rpd, day_used),
        );
        let granted = i64::from(count).min(minute_left).min(day_left);
        let answer = if granted > 0 {
            sqlx::query(
                "INSERT INTO quota_leases (project, model, day, granted_at_ms, count, instance)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&want.project)
            .bind(&want.model)
            .bind(i64::from(today))
            .bind(now_ms)
            .bind(granted)
            .bind(instance)
            .execute(&mut *tx)
            .await?;
            LeaseGrant::Granted(u32::try_from(granted).unwrap_or(u32::MAX))
        } else if day_left == 0 {
            LeaseGrant::Exhausted {
                until_ms: next_midnight_ms,
                daily: true,
            }
        } else {
            // The oldest slice in the window leaves it first.
            let frees_at = oldest.max(now_ms - to_i64(pool::lease::GRANT_WINDOW_MS))
                + to_i64(pool::lease::GRANT_WINDOW_MS);
            LeaseGrant::Exhausted {
                until_ms: u64::try_from(frees_at.max(now_ms + 1000)).unwrap_or(0),
                daily: false,
            }
        };
        tx.commit().await?;
        Ok(answer)
    }

    /// Publishes news for the other instances. PostgreSQL only.
    pub async fn publish_events(
        &self,
        instance: &str,
        events: &[ClusterEvent],
    ) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        for event in events {
            sqlx::query(&format!(
                "INSERT INTO cluster_events
                     (at_ms, instance, kind, project, model, key_id, until_ms, daily, detail, client_key_id)
                 VALUES ({PG_NOW_MS}, $1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(instance)
            .bind(&event.kind)
            .bind(event.project.as_deref())
            .bind(event.model.as_deref())
            .bind(event.key_id)
            .bind(event.until_ms)
            .bind(i64::from(event.daily))
            .bind(event.detail.as_deref())
            .bind(event.client_key_id)
            .execute(&mut *tx)
            .await?;
        }
        // Wakes the other instances' news loops now (PostgreSQL delivers the notification at
        // commit); their polling stays as the fallback.
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NEWS_CHANNEL)
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest event id (where a starting instance begins listening).
    pub async fn last_event_id(&self) -> Result<i64, StorageError> {
        Ok(
            sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM cluster_events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Events after `after` from other instances, oldest first; old events are deleted.
    pub async fn events_after(
        &self,
        after: i64,
        instance: &str,
    ) -> Result<Vec<ClusterEvent>, StorageError> {
        let rows = sqlx::query(
            "SELECT id, kind, project, model, key_id, until_ms, daily, detail, client_key_id
             FROM cluster_events
             WHERE id > $1 AND instance <> $2 ORDER BY id LIMIT 1000",
        )
        .bind(after)
        .bind(instance)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ClusterEvent {
                    id: row.try_get("id")?,
                    kind: row.try_get("kind")?,
                    project: row.try_get("project")?,
                    model: row.try_get("model")?,
                    key_id: row.try_get("key_id")?,
                    until_ms: row.try_get("until_ms")?,
                    daily: row.try_get::<i64, _>("daily")? != 0,
                    detail: row.try_get("detail")?,
                    client_key_id: row.try_get("client_key_id")?,
                })
            })
            .collect()
    }

    /// Deletes events older than an hour and leases older than two days.
    pub async fn prune_cluster_tables(&self) -> Result<(), StorageError> {
        sqlx::query(&format!(
            "DELETE FROM cluster_events WHERE at_ms < {PG_NOW_MS} - 3600000"
        ))
        .execute(&self.pool)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM quota_leases WHERE granted_at_ms < {PG_NOW_MS} - 2 * 86400000"
        ))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Creates an empty database named `gp_test_…` on the PostgreSQL server of `server_url` and
/// returns its URL: for the tests and the benchmark, which need a fresh database each. The
/// test command drops the leftovers of earlier runs.
pub async fn create_scratch_postgres(server_url: &str) -> Result<String, StorageError> {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(server_url).await?;
    let name = format!("gp_test_{}", hex::encode(rand::random::<[u8; 6]>()));
    connection
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    connection.close().await?;
    let mut url = url::Url::parse(server_url).map_err(|_| StorageError::UnsupportedUrl)?;
    url.set_path(&name);
    Ok(url.to_string())
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

    /// The PostgreSQL server the tests use (the test command starts one when there is none).
    pub fn test_postgres_server() -> String {
        std::env::var("GEMINI_POOL_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
    }

    async fn postgres_storage() -> Storage {
        let url = create_scratch_postgres(&test_postgres_server())
            .await
            .expect("PostgreSQL must run for the tests (./scripts/test.sh starts it)");
        Storage::open(&url).await.unwrap()
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

    /// Runs a test body on SQLite and on PostgreSQL.
    macro_rules! on_both_backends {
        ($name:ident, $body:ident) => {
            mod $name {
                use super::*;

                #[tokio::test]
                async fn sqlite() {
                    let (storage, _dir) = temp_storage().await;
                    $body(storage).await;
                }

                #[tokio::test]
                async fn postgres() {
                    $body(postgres_storage().await).await;
                }
            }
        };
    }

    on_both_backends!(env_keys_sync_adds_retires_and_keeps_api_keys, env_keys_sync);
    on_both_backends!(
        invalid_keys_and_resource_owners_survive_a_reload,
        invalid_keys_and_owners
    );
    on_both_backends!(usage_is_written_and_read_back_the_same, usage_round_trip);
    on_both_backends!(management_rows_change_and_disappear, management_rows);
    on_both_backends!(
        admin_sessions_are_open_until_revoked_or_expired_then_pruned,
        admin_sessions
    );

    async fn admin_sessions(storage: Storage) {
        let now = 1_700_000_000_000_i64;
        let hour = 3_600_000;
        for id in ["a", "b", "c"] {
            storage
                .create_admin_session(id, now, now + hour)
                .await
                .unwrap();
        }
        storage
            .create_admin_session("old", now - 2 * hour, now - hour)
            .await
            .unwrap();
        assert!(storage.admin_session_is_open("a", now).await.unwrap());
        assert!(
            !storage
                .admin_session_is_open("a", now + hour)
                .await
                .unwrap(),
            "expired"
        );
        assert!(!storage.admin_session_is_open("old", now).await.unwrap());
        assert!(!storage.admin_session_is_open("missing", now).await.unwrap());

        assert!(storage.revoke_admin_session("a", now).await.unwrap());
        assert!(
            !storage.revoke_admin_session("a", now + 1).await.unwrap(),
            "already"
        );
        assert!(!storage.admin_session_is_open("a", now).await.unwrap());
        assert!(storage.admin_session_is_open("b", now).await.unwrap());

        // A new password: every session still open ends (b, c, and the expired old one).
        assert_eq!(storage.revoke_all_admin_sessions(now).await.unwrap(), 3);
        assert!(!storage.admin_session_is_open("b", now).await.unwrap());
        assert!(!storage.admin_session_is_open("c", now).await.unwrap());

        // Only expired rows go, revoked or not.
        assert_eq!(storage.prune_admin_sessions(now).await.unwrap(), 1);
        assert_eq!(storage.prune_admin_sessions(now + hour).await.unwrap(), 3);
    }

    async fn env_keys_sync(storage: Storage) {
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

    async fn invalid_keys_and_owners(storage: Storage) {
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

        let owner = |resource: &str, client: Option<i64>, created_at_ms: i64| StoredOwner {
            resource: resource.to_owned(),
            project: "p".to_owned(),
            client_key_id: client,
            created_at_ms,
        };
        let day = 86_400_000;
        storage
            .save_resource_owner(&owner("files/a", Some(1), 10 * day), KeyId(1))
            .await
            .unwrap();
        storage
            .save_resource_owner(&owner("files/old", Some(2), 2 * day), KeyId(1))
            .await
            .unwrap();
        storage
            .save_resource_owner(&owner("cachedContents/c", None, 11 * day), KeyId(1))
            .await
            .unwrap();
        // Oldest first, from the given time on.
        assert_eq!(
            storage.resource_owners(3 * day, 10).await.unwrap(),
            vec![
                owner("files/a", Some(1), 10 * day),
                owner("cachedContents/c", None, 11 * day)
            ]
        );
        // The newest when there are more than the limit.
        assert_eq!(
            storage.resource_owners(0, 1).await.unwrap(),
            vec![owner("cachedContents/c", None, 11 * day)]
        );
        // Newest first for the management API, filtered by client key, with its name.
        let (rows, total) = storage
            .resource_owner_rows(&ResourceFilter::default(), 0)
            .await
            .unwrap();
        assert_eq!(total, 3);
        let names: Vec<&str> = rows.iter().map(|row| row.resource.as_str()).collect();
        assert_eq!(names, ["cachedContents/c", "files/a", "files/old"]);
        let filter = ResourceFilter {
            client_key_id: Some(1),
            ..ResourceFilter::default()
        };
        let (rows, total) = storage.resource_owner_rows(&filter, 0).await.unwrap();
        assert_eq!((rows.len(), total), (1, 1));
        assert_eq!(rows[0].resource, "files/a");
        assert_eq!(rows[0].created_at_ms, 10 * day);
        let page_two = ResourceFilter {
            page: Some(2),
            per_page: Some(2),
            ..ResourceFilter::default()
        };
        let (rows, total) = storage.resource_owner_rows(&page_two, 0).await.unwrap();
        assert_eq!((rows.len(), total), (1, 3));
        assert_eq!(rows[0].resource, "files/old");

        assert_eq!(storage.prune_resource_owners(3 * day).await.unwrap(), 1);
        storage.delete_resource_owner("files/a").await.unwrap();
        assert_eq!(
            storage.resource_owners(0, 10).await.unwrap(),
            vec![owner("cachedContents/c", None, 11 * day)]
        );
    }

    async fn usage_round_trip(storage: Storage) {
        use crate::accounting::{RequestRecord, Tokens};
        let now_ms = 1_795_636_800_000u64;
        let today = pool::pacific_day(now_ms);
        let record = |status: u16, model: &str, prompt: u64, streamed: bool| RequestRecord {
            at_ms: now_ms,
            client_key_id: Some(1),
            upstream_key_id: Some(2),
            project: Some("p".to_owned()),
            model: Some(model.to_owned()),
            route: "/v1/chat/completions",
            status,
            latency_ms: 12,
            tokens: Tokens {
                prompt,
                completion: 5,
                thoughts: 2,
                cached: 1,
            },
            streamed,
            attempts: 1,
            upstream_error: None,
        };
        let counts = [pool::DayCount {
            project: "p".to_owned(),
            model: "m1".to_owned(),
            day: today,
            count: 7,
        }];
        storage
            .write_accounting(
                &[
                    record(200, "m1", 10, true),
                    record(429, "m1", 0, false),
                    record(200, "m2", 3, false),
                ],
                &counts,
            )
            .await
            .unwrap();
        // A lower count never replaces a higher one.
        let lower = [pool::DayCount {
            count: 3,
            ..counts[0].clone()
        }];
        storage.write_accounting(&[], &lower).await.unwrap();
        assert_eq!(storage.quota_counts(today).await.unwrap(), counts.to_vec());

        let totals = storage
            .usage_totals(UsageDimension::UpstreamKey, today)
            .await
            .unwrap();
        assert_eq!(
            totals[&2],
            UsageTotals {
                requests: 3,
                errors: 1,
                prompt_tokens: 13,
                completion_tokens: 15,
                thoughts_tokens: 6,
                requests_today: 3,
            }
        );
        assert_eq!(
            storage.client_usage_on(today).await.unwrap(),
            vec![(1, 3, 28)]
        );
        let hourly = storage
            .hourly_series(0, &UsageFilter::default())
            .await
            .unwrap();
        assert_eq!(hourly.len(), 1);
        assert_eq!(
            (hourly[0].requests, hourly[0].errors, hourly[0].tokens),
            (3, 1, 28)
        );
        let daily = storage
            .daily_series(today, &UsageFilter::default())
            .await
            .unwrap();
        assert_eq!(daily[0].bucket, i64::from(today));
        assert_eq!((daily[0].requests, daily[0].errors), (3, 1));
        let by_model = storage
            .breakdown(BreakdownDimension::Model, today, &UsageFilter::default())
            .await
            .unwrap();
        assert_eq!(by_model[0].name, "m1");
        assert_eq!((by_model[0].requests, by_model[0].prompt_tokens), (2, 10));
        let only_m2 = UsageFilter {
            model: Some("m2".to_owned()),
            ..UsageFilter::default()
        };
        let m2_daily = storage.daily_series(today, &only_m2).await.unwrap();
        assert_eq!((m2_daily[0].requests, m2_daily[0].tokens), (1, 8));
        let m2_hourly = storage.hourly_series(0, &only_m2).await.unwrap();
        assert_eq!(m2_hourly[0].requests, 1);
        let nobody = UsageFilter {
            client_key_id: Some(99),
            ..UsageFilter::default()
        };
        assert!(
            storage
                .daily_series(today, &nobody)
                .await
                .unwrap()
                .is_empty()
        );
        let by_key = storage
            .breakdown(
                BreakdownDimension::UpstreamKey,
                today,
                &UsageFilter::default(),
            )
            .await
            .unwrap();
        assert_eq!((by_key[0].name.as_str(), by_key[0].id), ("2", Some(2)));

        let (rows, total) = storage
            .request_logs(&LogFilter {
                model: Some("m1".to_owned()),
                status: Some("error".to_owned()),
                ..LogFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(total, 1);
        assert_eq!((rows[0].status, rows[0].streamed), (429, false));
        let (rows, total) = storage
            .request_logs(&LogFilter {
                model: Some(String::new()),
                per_page: Some(1),
                ..LogFilter::default()
            })
            .await
            .unwrap();
        assert_eq!((rows.len(), total), (1, 3));
        assert_eq!(storage.request_log_count().await.unwrap(), 3);

        // A busy second: more rows than one insert carries, one daily total.
        let busy = vec![record(200, "m3", 2, false); 1201];
        storage.write_accounting(&busy, &[]).await.unwrap();
        assert_eq!(storage.request_log_count().await.unwrap(), 1204);
        let by_model = storage
            .breakdown(BreakdownDimension::Model, today, &UsageFilter::default())
            .await
            .unwrap();
        let m3 = by_model.iter().find(|b| b.name == "m3").unwrap();
        assert_eq!((m3.requests, m3.prompt_tokens), (1201, 2402));
    }

    async fn management_rows(storage: Storage) {
        let (added, duplicates) = storage
            .add_upstream_keys(&[
                spec("k1", Some("p")),
                spec("k1", Some("p")),
                spec("k2", None),
            ])
            .await
            .unwrap();
        assert_eq!((added, duplicates), (2, 1));
        assert!(
            storage
                .update_upstream_key(1, Some(false), Some(Some("q".to_owned())))
                .await
                .unwrap()
        );
        let rows = storage.upstream_key_rows().await.unwrap();
        assert_eq!(
            (rows[0].enabled, rows[0].project.as_deref()),
            (false, Some("q"))
        );
        assert!(!rows[0].created_at.is_empty());
        // Ids come from a sequence: PostgreSQL spends one on the duplicate, SQLite does not.
        let k2 = rows
            .iter()
            .find(|row| row.key.expose_secret() == "k2")
            .unwrap()
            .id;
        assert!(storage.delete_upstream_key(k2).await.unwrap());
        assert!(!storage.delete_upstream_key(k2).await.unwrap());

        let limits = pool::ClientLimits {
            rpm: Some(5),
            allowed_models: Some(vec!["m1".to_owned()]),
            ..pool::ClientLimits::default()
        };
        let id = storage
            .create_client_key("team", "digest-1", "gp-abc", &limits)
            .await
            .unwrap();
        assert!(
            storage
                .update_client_key(id, Some("renamed"), Some(false))
                .await
                .unwrap()
        );
        let rows = storage.client_key_rows().await.unwrap();
        assert_eq!((rows[0].name.as_str(), rows[0].enabled), ("renamed", false));
        assert_eq!(rows[0].limits, limits);
        assert!(storage.delete_client_key(id).await.unwrap());

        assert_eq!(storage.setting("x").await.unwrap(), None);
        assert_eq!(
            storage.setting_or_init("x", "first").await.unwrap(),
            "first"
        );
        assert_eq!(
            storage.setting_or_init("x", "second").await.unwrap(),
            "first"
        );
        storage.set_setting("x", "third").await.unwrap();
        assert_eq!(
            storage.setting("x").await.unwrap().as_deref(),
            Some("third")
        );
    }

    #[tokio::test]
    async fn leases_never_grant_more_than_the_limit_across_instances() {
        let storage = postgres_storage().await;
        let want = pool::LeaseWant {
            project: "p".to_owned(),
            model: "m".to_owned(),
            limits: pool::Limits {
                rpm: Some(10),
                rpd: Some(25),
                tpm: None,
            },
        };
        // Two instances ask for slices of 4 at the same time, many times over.
        let mut granted = 0;
        for _ in 0..3 {
            let (a, b) = tokio::join!(
                storage.grant_lease("a", &want, 4, 0),
                storage.grant_lease("b", &want, 4, 0)
            );
            for answer in [a.unwrap(), b.unwrap()] {
                if let LeaseGrant::Granted(count) = answer {
                    granted += count;
                }
            }
        }
        assert_eq!(
            granted, 10,
            "the per-minute limit bounds the slices in the window"
        );
        match storage.grant_lease("a", &want, 4, 0).await.unwrap() {
            LeaseGrant::Exhausted { until_ms, daily } => {
                assert!(!daily);
                let now = u64::try_from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis(),
                )
                .unwrap();
                // Free again when the first slice leaves the window of a minute plus a lease.
                assert!(
                    until_ms > now + 60_000
                        && until_ms <= now + pool::lease::GRANT_WINDOW_MS + 1_000
                );
            }
            other => panic!("{other:?}"),
        }
        // The daily limit: slices granted earlier today count even outside the minute window.
        sqlx::query("UPDATE quota_leases SET granted_at_ms = granted_at_ms - 3600000")
            .execute(&storage.pool)
            .await
            .unwrap();
        let mut more = 0;
        while let LeaseGrant::Granted(count) = storage.grant_lease("b", &want, 4, 0).await.unwrap()
        {
            more += count;
        }
        assert_eq!(more, 10, "a full minute again");
        sqlx::query("UPDATE quota_leases SET granted_at_ms = granted_at_ms - 3600000")
            .execute(&storage.pool)
            .await
            .unwrap();
        let mut rest = 0;
        let last = loop {
            match storage.grant_lease("b", &want, 4, 42).await.unwrap() {
                LeaseGrant::Granted(count) => rest += count,
                exhausted => break exhausted,
            }
        };
        assert_eq!(rest, 5, "25 a day");
        assert_eq!(
            last,
            LeaseGrant::Exhausted {
                until_ms: 42,
                daily: true
            }
        );
    }

    #[tokio::test]
    async fn news_reaches_the_other_instances_only() {
        let storage = postgres_storage().await;
        let start = storage.last_event_id().await.unwrap();
        let cooldown = ClusterEvent {
            id: 0,
            kind: "cooldown".to_owned(),
            project: Some("p".to_owned()),
            model: Some("m".to_owned()),
            key_id: None,
            until_ms: Some(123),
            daily: true,
            detail: None,
            client_key_id: None,
        };
        let owner = ClusterEvent {
            kind: "owner".to_owned(),
            model: None,
            until_ms: None,
            daily: false,
            detail: Some("files/f".to_owned()),
            client_key_id: Some(42),
            ..cooldown.clone()
        };
        storage
            .publish_events("a", &[cooldown.clone(), owner.clone()])
            .await
            .unwrap();
        assert!(storage.events_after(start, "a").await.unwrap().is_empty());
        let seen = storage.events_after(start, "b").await.unwrap();
        assert_eq!(seen.len(), 2);
        let without_id = |event: &ClusterEvent| ClusterEvent {
            id: 0,
            ..event.clone()
        };
        assert_eq!(without_id(&seen[0]), cooldown);
        // The owner's client key travels with the news.
        assert_eq!(without_id(&seen[1]), owner);
        assert!(
            storage
                .events_after(seen[1].id, "b")
                .await
                .unwrap()
                .is_empty()
        );
        storage.prune_cluster_tables().await.unwrap();
        assert_eq!(storage.last_event_id().await.unwrap(), seen[1].id);
    }
}
