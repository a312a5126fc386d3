//! Runtime settings and admin sessions.

use crate::db::{Storage, StorageError};

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
}
