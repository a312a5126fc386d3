//! What instances sharing one PostgreSQL database coordinate through: quota leases and news.

use sqlx::Row;

use crate::db::{Storage, StorageError, to_i64};

/// The PostgreSQL channel on which instances announce news (`LISTEN`/`NOTIFY`).
pub const NEWS_CHANNEL: &str = "gemini_pool_news";

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

/// What a piece of news is about (the `kind` column of `cluster_events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewsKind {
    /// A project cools for a model.
    Cooldown,
    /// Limits learned from Google's quota errors.
    Limits,
    /// A key was taken out of service.
    KeyOut,
    /// The owner of a created file or cached content.
    Owner,
    /// A stored response was deleted.
    ResponseDeleted,
    /// Upstream keys changed through the management API.
    Keys,
    /// Client keys changed.
    Clients,
    /// Runtime settings changed.
    Settings,
    /// A kind this version does not know (written by a newer instance): ignored, not an error,
    /// so that instances of two versions can share a database during an upgrade.
    Unknown(String),
}

impl NewsKind {
    /// The column's text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Cooldown => "cooldown",
            Self::Limits => "limits",
            Self::KeyOut => "key_out",
            Self::Owner => "owner",
            Self::ResponseDeleted => "response_deleted",
            Self::Keys => "keys",
            Self::Clients => "clients",
            Self::Settings => "settings",
            Self::Unknown(other) => other,
        }
    }

    fn from_column(text: String) -> Self {
        match text.as_str() {
            "cooldown" => Self::Cooldown,
            "limits" => Self::Limits,
            "key_out" => Self::KeyOut,
            "owner" => Self::Owner,
            "response_deleted" => Self::ResponseDeleted,
            "keys" => Self::Keys,
            "clients" => Self::Clients,
            "settings" => Self::Settings,
            _ => Self::Unknown(text),
        }
    }
}

/// One row of `cluster_events`: news from another instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    /// Row id (increasing).
    pub id: i64,
    /// What it is about.
    pub kind: NewsKind,
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
            .bind(event.kind.as_str())
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
                    kind: NewsKind::from_column(row.try_get("kind")?),
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
