//! The database handle: opening SQLite or PostgreSQL, migrations, and what every aggregate
//! module shares (the dialect's placeholders and clock, the sync of configured keys).

use std::str::FromStr;

use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, AnyPool, Executor, Row};

/// SQLite migrations, embedded in the binary and run at start.
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
/// PostgreSQL migrations: the same schema in PostgreSQL's types.
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// The thread name sqlx gives each SQLite connection's worker, as Linux shows it (cut to 15
/// bytes).
pub(crate) const SQLITE_WORKER_THREAD: &str = "sqlx-sqlite-wor";
/// How much lower than the request threads SQLite's worker threads run (in nice steps).
pub(crate) const SQLITE_WORKER_NICE_STEPS: i32 = 10;

/// Lowers the scheduling priority of SQLite's worker threads (sqlx runs every statement of a
/// connection on a thread of its own) to [`SQLITE_WORKER_NICE_STEPS`] below the calling thread's
/// (a request thread's; the same value each time, however often it is called).
///
/// Why: the accounting's once-a-second write runs there, a burst of a few milliseconds of CPU.
/// On a gateway given one core, at equal priority the request threads took turns with it, and a
/// request that arrived during the burst waited up to a scheduler slice: the latency tail. Ten
/// steps lower, a waking request thread is run first, while the writer still gets about a tenth
/// of a saturated core, far more than it needs, so records are not held back. Best effort (Linux
/// only, where the nice value is per thread): where `/proc` cannot be read, the threads keep
/// their priority.
fn lower_sqlite_workers_priority() {
    #[cfg(target_os = "linux")]
    {
        let Ok(threads) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        let ours = rustix::process::getpriority_process(None).unwrap_or(0);
        let lowered = (ours + SQLITE_WORKER_NICE_STEPS).min(19);
        for thread in threads.flatten() {
            let is_worker = std::fs::read_to_string(thread.path().join("comm"))
                .is_ok_and(|name| name.trim_end() == SQLITE_WORKER_THREAD);
            let id = thread
                .file_name()
                .to_str()
                .and_then(|id| id.parse::<i32>().ok())
                .and_then(rustix::process::Pid::from_raw);
            if let (true, Some(id)) = (is_worker, id) {
                // On Linux a thread id names that one thread here.
                let _ = rustix::process::setpriority_process(Some(id), lowered);
            }
        }
    }
}

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
    pub(crate) fn placeholder(self, n: usize) -> String {
        match self {
            Self::Sqlite => "?".to_owned(),
            Self::Postgres => format!("${n}"),
        }
    }

    /// SQL for the current time as ISO-8601 text, the form of the `*_at` columns.
    pub(crate) fn now_text(self) -> &'static str {
        match self {
            Self::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            Self::Postgres => {
                "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            }
        }
    }
}

/// Where a key came from (the `source` column of both key tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// `GEMINI_API_KEYS` or `CLIENT_API_KEYS`: kept in step with the variable at every start.
    Env,
    /// The management API: left alone by the variable.
    Api,
}

impl KeySource {
    /// The column's text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Env => "env",
            Self::Api => "api",
        }
    }

    pub(crate) fn from_column(row: &sqlx::any::AnyRow) -> Result<Self, StorageError> {
        match row.try_get::<String, _>("source")?.as_str() {
            "env" => Ok(Self::Env),
            "api" => Ok(Self::Api),
            other => Err(StorageError::UnexpectedValue {
                column: "source",
                value: other.to_owned(),
            }),
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
    /// A column holds a value this version does not know (a newer version wrote it, or the
    /// database was edited by hand).
    #[error("the {column} column holds an unknown value {value:?}")]
    UnexpectedValue {
        /// The column.
        column: &'static str,
        /// What it holds.
        value: String,
    },
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
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// The SQLite file, to tell when it was deleted under a running gateway.
    file: Option<std::path::PathBuf>,
}

impl Storage {
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
                            // The connection's worker thread exists by now.
                            lower_sqlite_workers_priority();
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
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Retires the `env` rows of `table` whose `column` is not in `configured`; returns how many.
pub(crate) async fn retire_missing(
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
