//! The accounting write: request log rows, daily totals and the scheduler's day counts.

use crate::db::{Storage, StorageError, to_i64};

/// Tokens of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens (with tool-use prompt tokens).
    pub prompt: u64,
    /// Completion tokens, thinking included (as OpenAI counts reasoning).
    pub completion: u64,
    /// Thinking tokens (also inside `completion`).
    pub thoughts: u64,
    /// Cached prompt tokens (also inside `prompt`).
    pub cached: u64,
}

/// One finished request, as the request log and the daily totals record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// When it started (ms since the epoch).
    pub at_ms: u64,
    /// The client key.
    pub client_key_id: Option<i64>,
    /// The upstream key that served it (the last one tried).
    pub upstream_key_id: Option<i64>,
    /// That key's project.
    pub project: Option<String>,
    /// The model.
    pub model: Option<String>,
    /// The route template.
    pub route: &'static str,
    /// The HTTP status the client got.
    pub status: u16,
    /// From start to the end of the response body.
    pub latency_ms: u64,
    /// Tokens.
    pub tokens: Tokens,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// Upstream calls made for it (0 when none was, as for a refused request).
    pub attempts: u8,
    /// The last trouble met upstream (`capacity`, `quota`, `key_error`, `empty_answer`, …),
    /// also when a later key succeeded.
    pub upstream_error: Option<&'static str>,
}

/// How many rows the multi-row inserts of the request log hold: a batch goes out in the largest
/// that fit. Well under the bound-parameter limits of SQLite (32,766) and PostgreSQL (65,535).
///
/// Why a few fixed lengths: an insert as long as each batch was a statement of its own, prepared
/// afresh for every flush (and cached, pushing out the others). SQLite parsed it at about
/// 17,000 instructions a row, which was 13 % of all the instructions a translated chat request
/// cost the process (callgrind); PostgreSQL planned it anew each time. These few statements are
/// prepared once per connection.
const ROWS_PER_INSERT: [usize; 5] = [256, 64, 16, 4, 1];

/// The lengths, from [`ROWS_PER_INSERT`], of the inserts that write `rows` rows, longest first.
fn insert_lengths(mut rows: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        let length = ROWS_PER_INSERT.into_iter().find(|&length| length <= rows)?;
        rows -= length;
        Some(length)
    })
}

impl Storage {
    /// Writes a batch of request records and the scheduler's day counts in one transaction: the
    /// rows in multi-row inserts (see [`ROWS_PER_INSERT`]), the daily totals summed per (day,
    /// client, key, model) first, so a busy second costs a few statements rather than two per
    /// request.
    pub async fn write_accounting(
        &self,
        records: &[RequestRecord],
        day_counts: &[pool::DayCount],
    ) -> Result<(), StorageError> {
        const COLUMNS: usize = 15;
        let mut tx = self.pool.begin().await?;
        let mut rest = records;
        for length in insert_lengths(records.len()) {
            let (chunk, after) = rest.split_at(length);
            rest = after;
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

    /// The number of request log rows (for tests and the dashboard).
    pub async fn request_log_count(&self) -> Result<i64, StorageError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM request_logs")
            .fetch_one(&self.pool)
            .await?)
    }
}

/// The records of a batch summed per Pacific day, client key, upstream key and model (0 and ''
/// where there is none): requests, errors, prompt, completion, thinking and cached tokens.
fn daily_totals(
    records: &[RequestRecord],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_goes_out_in_the_few_fixed_insert_lengths_longest_first_and_whole() {
        for rows in 0..1_000 {
            let lengths: Vec<usize> = insert_lengths(rows).collect();
            assert_eq!(lengths.iter().sum::<usize>(), rows, "{rows} rows");
            assert!(
                lengths
                    .iter()
                    .all(|length| ROWS_PER_INSERT.contains(length))
            );
            assert!(
                lengths.windows(2).all(|pair| pair[0] >= pair[1]),
                "{lengths:?}"
            );
        }
        assert_eq!(insert_lengths(0).count(), 0);
        assert_eq!(
            insert_lengths(597).collect::<Vec<_>>(),
            [256, 256, 64, 16, 4, 1]
        );
    }
}
