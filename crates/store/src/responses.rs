//! Stored Responses (`/v1/responses`): the response and its input items as JSON text, and an
//! index of its output items (what `item_reference` finds). The JSON is the server's: the store
//! keeps it as text and never reads inside it.

use sqlx::Row;

use crate::db::{Storage, StorageError};

/// A response to store.
#[derive(Debug, Clone, Copy)]
pub struct NewResponse<'a> {
    /// `resp_…`.
    pub id: &'a str,
    /// The client key that created it.
    pub client_key_id: Option<i64>,
    /// When it was created (ms since the epoch).
    pub created_at_ms: u64,
    /// The response it continued.
    pub previous_response_id: Option<&'a str>,
    /// The response, as JSON.
    pub response: &'a str,
    /// Its input items, as a JSON array.
    pub input_items: &'a str,
    /// Its output items: each one's id and JSON.
    pub output_items: &'a [(&'a str, String)],
}

/// A stored response as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponseRow {
    /// The client key that created it.
    pub client_key_id: Option<i64>,
    /// When it was created (ms since the epoch).
    pub created_at_ms: u64,
    /// The response, as JSON.
    pub response: String,
    /// Its input items, as a JSON array.
    pub input_items: String,
}

impl Storage {
    /// Writes a stored response and indexes its output items.
    pub async fn save_response(&self, new: NewResponse<'_>) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO responses (id, client_key_id, created_at_ms, previous_response_id, response, input_items)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(new.id)
        .bind(new.client_key_id)
        .bind(i64::try_from(new.created_at_ms).unwrap_or(i64::MAX))
        .bind(new.previous_response_id)
        .bind(new.response)
        .bind(new.input_items)
        .execute(&mut *tx)
        .await?;
        for (item_id, item) in new.output_items {
            // An id already taken (by another response, whoever owns it) keeps its first owner.
            sqlx::query(
                "INSERT INTO response_items (id, response_id, client_key_id, item)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
            )
            .bind(*item_id)
            .bind(new.id)
            .bind(new.client_key_id)
            .bind(item.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Reads a stored response.
    pub async fn load_response(&self, id: &str) -> Result<Option<StoredResponseRow>, StorageError> {
        let Some(row) = sqlx::query(
            "SELECT client_key_id, created_at_ms, response, input_items FROM responses WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let created: i64 = row.try_get("created_at_ms")?;
        Ok(Some(StoredResponseRow {
            client_key_id: row.try_get("client_key_id")?,
            created_at_ms: u64::try_from(created).unwrap_or(0),
            response: row.try_get("response")?,
            input_items: row.try_get("input_items")?,
        }))
    }

    /// The response holding the output item `id`.
    pub async fn response_of_item(&self, id: &str) -> Result<Option<String>, StorageError> {
        let row = sqlx::query("SELECT response_id FROM response_items WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(row.try_get("response_id")?),
            None => None,
        })
    }

    /// Deletes a stored response and its items.
    pub async fn delete_response(&self, id: &str) -> Result<(), StorageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM response_items WHERE response_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM responses WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the responses created before `cutoff_ms` and their items.
    pub async fn prune_responses(&self, cutoff_ms: i64) -> Result<u64, StorageError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM response_items WHERE response_id IN
                (SELECT id FROM responses WHERE created_at_ms < $1)",
        )
        .bind(cutoff_ms)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM responses WHERE created_at_ms < $1")
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }
}
