//! The state every handler shares: configuration, storage, the key pool, client keys and the
//! one upstream HTTP client.

use std::ops::Deref;
use std::sync::Arc;

use pool::{Limits, LimitsTable, Pool, SystemClock};

use crate::accounting::Accountant;
use crate::auth::ClientKeys;
use crate::call_memory::CallMemoryStore;
use crate::config::Config;
use crate::storage::{Storage, StorageError};
use crate::upstream::Upstream;

/// A failure while starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened, migrated or read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The upstream HTTP client could not be built (for instance a bad proxy).
    #[error("cannot build the upstream HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// Everything the handlers share.
pub struct App {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub storage: Storage,
    /// The upstream key pool.
    pub pool: Arc<Pool>,
    /// The accounting writer.
    pub accountant: Accountant,
    /// Accepted client keys.
    pub clients: ClientKeys,
    /// Per-client limits in force.
    pub client_gate: pool::ClientGate,
    /// The upstream client.
    pub upstream: Upstream,
    /// Tool calls returned to clients (thought signatures, upstream ids).
    pub calls: Arc<CallMemoryStore>,
}

/// Cheap-to-clone handle on [`App`].
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    /// Opens the database, syncs the configured keys into it, and loads the pool, the client
    /// keys and the remembered resource owners.
    pub async fn initialize(config: Config) -> Result<Self, StartError> {
        let storage = Storage::open(&config.database_url).await?;
        let upstream_sync = storage.sync_upstream_keys(&config.upstream_keys).await?;
        let client_sync = storage.sync_client_keys(&config.client_keys).await?;
        tracing::info!(
            upstream_added = upstream_sync.added,
            upstream_retired = upstream_sync.retired,
            client_added = client_sync.added,
            client_retired = client_sync.retired,
            "configured keys synced"
        );
        let limits = LimitsTable {
            default: Limits {
                rpm: Some(config.default_rpm_limit),
                rpd: Some(config.default_rpd_limit),
                tpm: None,
            },
            ..LimitsTable::default()
        };
        let pool = Arc::new(Pool::with_clock(
            storage.upstream_keys().await?,
            limits,
            Arc::new(SystemClock),
        ));
        // Today's quota use survives a restart.
        for count in storage
            .quota_counts(pool::pacific_day(pool.now_ms()))
            .await?
        {
            pool.restore_day_count(&count);
        }
        let accountant = {
            let pool = Arc::clone(&pool);
            Accountant::start(storage.clone(), move || pool.day_counts())
        };
        for (resource, project) in storage.resource_owners().await? {
            pool.affinity().remember_resource(resource, project.into());
        }
        let clients = ClientKeys::default();
        clients.replace(storage.client_keys().await?);
        let client_gate = pool::ClientGate::default();
        let today = pool::pacific_day(pool.now_ms());
        for (client, requests, tokens) in storage.client_usage_on(today).await? {
            client_gate.restore(client, today, requests, tokens);
        }
        if clients.is_empty() {
            tracing::warn!(
                "no client keys: every API request will get 401 until one is added (CLIENT_API_KEYS)"
            );
        }
        if !pool.has_usable_key() {
            tracing::warn!("no usable upstream key: set GEMINI_API_KEYS");
        }
        let upstream = Upstream::new(&config)?;
        Ok(Self(Arc::new(App {
            config,
            storage,
            pool,
            clients,
            client_gate,
            upstream,
            accountant,
            calls: Arc::default(),
        })))
    }
}
