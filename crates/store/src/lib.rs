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

mod client_keys;
mod cluster;
mod db;
mod quota;
mod resources;
mod responses;
mod settings;
mod statistics;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod upstream_keys;
mod usage;

pub use client_keys::{ClientKeyAdminRow, ClientKeyRow, NewClientKey};
pub use cluster::{ClusterEvent, LeaseGrant, NEWS_CHANNEL, NewsKind};
pub use db::{Backend, KeySource, Storage, StorageError, SyncReport};
pub use resources::{ResourceFilter, ResourceOwnerRow, StoredOwner};
pub use responses::{NewResponse, StoredResponseRow};
pub use statistics::{
    Breakdown, BreakdownDimension, LogFilter, LogRow, SeriesPoint, UsageDimension, UsageFilter,
    UsageTotals,
};
pub use upstream_keys::{KeyStatus, NewUpstreamKey, UpstreamKeyRow};
pub use usage::{RequestRecord, Tokens};
