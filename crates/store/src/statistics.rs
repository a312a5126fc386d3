//! Reads of usage for the dashboard and the management API.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Storage, StorageError};

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
