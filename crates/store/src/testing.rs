//! Helpers for the tests of this crate and of the crates above it (feature `test-support`).

use sqlx::Executor;

use crate::db::StorageError;

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

/// The PostgreSQL server the tests use: `GEMINI_POOL_TEST_POSTGRES`, else the local one (the test
/// command starts one when there is none).
pub fn test_postgres_server() -> String {
    std::env::var("GEMINI_POOL_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}
