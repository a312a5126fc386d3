//! The scheduler's day counts and the limits learned from Google's quota errors.

use sqlx::Row;

use crate::db::{Storage, StorageError, to_i64};

impl Storage {
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
}
