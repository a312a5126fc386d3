//! The state every handler shares: configuration, storage, the key pool, client keys and the
//! one upstream HTTP client.

use std::ops::Deref;
use std::sync::Arc;

use pool::{Limits, LimitsTable, Pool, SystemClock};

use crate::config::Config;
use crate::service::accounting::Accountant;
use crate::service::call_memory::CallMemoryStore;
use crate::service::clients::ClientKeys;
use crate::service::upstream::Upstream;
use store::{Storage, StorageError};

/// A failure while starting the gateway.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened, migrated or read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The upstream HTTP client could not be built (for instance a bad proxy).
    #[error("cannot build the upstream HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
    /// The admin password could not be hashed.
    #[error("cannot set up the admin login: {0}")]
    Admin(String),
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
    pub client_gate: Arc<pool::ClientGate>,
    /// Where request records go.
    pub meter_sinks: crate::service::accounting::MeterSinks,
    /// The upstream client.
    pub upstream: Arc<Upstream>,
    /// Tool calls returned to clients (thought signatures, upstream ids).
    pub calls: Arc<CallMemoryStore>,
    /// Admin credentials and session keys.
    pub admin: crate::service::admin_auth::AdminAuth,
    /// The link to the other instances (PostgreSQL only).
    pub cluster: Option<Arc<crate::service::cluster::Cluster>>,
    /// Settings changed at runtime.
    pub settings: crate::service::settings::Runtime,
    /// Who owns which file and cached content.
    pub owners: crate::service::ownership::Owners,
    /// The failover loop and the commit points every route uses.
    pub relay: Arc<crate::service::relay::Relay>,
    /// Failed client authentications per address.
    pub auth_throttle: crate::service::auth_throttle::AuthThrottle,
    /// Stored Responses (`/v1/responses` with `store`).
    pub responses: crate::service::response_store::ResponseStore,
}

impl App {
    /// Tells the other instances (if any) about a change made here.
    pub fn announce(&self, what: crate::service::cluster::Announcement) {
        if let Some(cluster) = &self.cluster {
            cluster.announce(what);
        }
    }

    /// Tells the other instances (if any) that a stored response was deleted here.
    pub fn announce_response_deleted(&self, id: &str) {
        if let Some(cluster) = &self.cluster {
            cluster.announce_response_deleted(id);
        }
    }
}

impl crate::service::cluster::NewsFollower for App {
    fn reload(
        &self,
        changed: crate::service::cluster::Changed,
    ) -> futures_util::future::BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            if changed.keys {
                self.pool.replace_keys(self.storage.upstream_keys().await?);
            }
            if changed.clients {
                self.clients.replace(self.storage.client_keys().await?);
            }
            if changed.settings {
                self.settings.load().await?;
            }
            Ok(())
        })
    }

    fn forget_response(&self, id: &str) {
        self.responses.forget(id);
    }
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
        let client_sync =
            crate::service::clients::sync_configured_client_keys(&storage, &config.client_keys)
                .await?;
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
        // Owners of files and cached contents: the expired ones go, then the others are
        // loaded oldest first (the map evicts the oldest when full), no more than it holds.
        let since = crate::service::ownership::expired_before_ms(pool.affinity(), pool.now_ms());
        storage.prune_resource_owners(since).await?;
        let most = i64::try_from(pool.affinity().limits().max_resources).unwrap_or(i64::MAX);
        for owner in storage.resource_owners(since, most).await? {
            pool.affinity().restore_resource(
                &owner.resource,
                pool::ResourceOwner {
                    project: owner.project.into(),
                    client: owner.client_key_id,
                    created_at_ms: u64::try_from(owner.created_at_ms).unwrap_or(0),
                },
            );
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
        let admin = admin_auth(&config, &storage).await?;
        let cluster = match storage.backend() {
            store::Backend::Sqlite => None,
            store::Backend::Postgres => {
                let cluster = crate::service::cluster::Cluster::join(
                    storage.clone(),
                    Arc::clone(&pool),
                    &config.database_url,
                )
                .await?;
                tracing::info!(
                    instance = cluster.instance(),
                    "sharing quota with the instances on this database"
                );
                Some(cluster)
            }
        };
        let shared = cluster.is_some();
        let storage_for_responses = storage.clone();
        let (key_checks, key_check_queue) =
            tokio::sync::mpsc::channel(crate::service::probe::KEY_CHECK_QUEUE);
        let upstream = Arc::new(upstream);
        let client_gate = Arc::new(client_gate);
        let meter_sinks = crate::service::accounting::MeterSinks {
            accountant: accountant.clone(),
            pool: Arc::clone(&pool),
            client_gate: Arc::clone(&client_gate),
        };
        let relay = Arc::new(crate::service::relay::Relay::new(
            Arc::clone(&pool),
            Arc::clone(&upstream),
            storage.clone(),
            cluster.clone(),
            key_checks,
        ));
        let settings = crate::service::settings::Runtime::new(
            Arc::clone(&pool),
            Arc::clone(&upstream),
            accountant.clone(),
            storage.clone(),
        );
        let owners = crate::service::ownership::Owners::new(
            Arc::clone(&pool),
            storage.clone(),
            cluster.clone(),
        );
        let state = Self(Arc::new(App {
            config,
            storage,
            pool,
            clients,
            client_gate,
            meter_sinks,
            upstream,
            accountant,
            calls: Arc::default(),
            admin,
            cluster,
            relay,
            owners,
            settings,
            auth_throttle: crate::service::auth_throttle::AuthThrottle::default(),
            responses: crate::service::response_store::ResponseStore::start(
                storage_for_responses,
                shared,
            ),
        }));
        if let Some(cluster) = &state.cluster {
            let follower: Arc<dyn crate::service::cluster::NewsFollower> = state.0.clone();
            let follower = Arc::downgrade(&follower);
            cluster.spawn(follower);
        }
        crate::service::probe::check_keys(Arc::downgrade(&state.relay), key_check_queue);
        state.owners.spawn_pruner();
        // Limits learned from the upstream before a restart (the pool believes them for a day).
        for learned in state.storage.learned_limits().await? {
            state.pool.apply_learned_limits(&learned);
        }
        state.settings.load().await?;
        Ok(state)
    }
}

/// The admin credentials: the password hash and the session-signing secret, each from the
/// configuration or, when not configured, generated once and kept in the database.
async fn admin_auth(
    config: &Config,
    storage: &Storage,
) -> Result<crate::service::admin_auth::AdminAuth, StartError> {
    use secrecy::{ExposeSecret, SecretString};
    let secret = match &config.jwt_secret {
        Some(secret) => secret.clone(),
        None => {
            let generated = hex::encode(rand::random::<[u8; 32]>());
            SecretString::from(storage.setting_or_init("jwt_secret", &generated).await?)
        }
    };
    let saved_hash = storage.setting("admin_password_hash").await?;
    // ADMIN_PASSWORD may hold an argon2 hash (from `gemini-pool hash-password`) instead of the
    // password itself, so that no plain password has to sit in `.env`.
    if let Some(given) = &config.admin_password
        && given.expose_secret().starts_with("$argon2")
    {
        // Kept like a hashed password, so that a different one next time is seen as a change.
        if saved_hash.as_deref() != Some(given.expose_secret()) {
            storage
                .set_setting("admin_password_hash", given.expose_secret())
                .await?;
            end_admin_sessions(storage).await?;
        }
        return Ok(crate::service::admin_auth::AdminAuth::new(
            config.admin_username.clone(),
            given.expose_secret().to_owned(),
            &secret,
        ));
    }
    let hash = match (&config.admin_password, saved_hash) {
        (Some(password), Some(saved))
            if {
                let (password, saved) = (password.expose_secret().to_owned(), saved.clone());
                tokio::task::spawn_blocking(move || {
                    crate::service::admin_auth::verify_password(&password, &saved)
                })
                .await
                .unwrap_or(false)
            } =>
        {
            saved
        }
        (Some(password), _) => {
            let password = password.expose_secret().to_owned();
            let hash = tokio::task::spawn_blocking(move || {
                crate::service::admin_auth::hash_password(&password)
            })
            .await
            .map_err(|e| StartError::Admin(e.to_string()))?
            .map_err(StartError::Admin)?;
            storage.set_setting("admin_password_hash", &hash).await?;
            end_admin_sessions(storage).await?;
            hash
        }
        (None, Some(saved)) => saved,
        (None, None) => {
            let password: String = {
                use rand::Rng;
                rand::rng()
                    .sample_iter(rand::distr::Alphanumeric)
                    .take(20)
                    .map(char::from)
                    .collect()
            };
            let for_hash = password.clone();
            let hash = tokio::task::spawn_blocking(move || {
                crate::service::admin_auth::hash_password(&for_hash)
            })
            .await
            .map_err(|e| StartError::Admin(e.to_string()))?
            .map_err(StartError::Admin)?;
            let kept = storage
                .setting_or_init("admin_password_hash", &hash)
                .await?;
            if kept != hash {
                // Another instance on this database generated it first and showed it.
                return Ok(crate::service::admin_auth::AdminAuth::new(
                    config.admin_username.clone(),
                    kept,
                    &secret,
                ));
            }
            // Shown once, on the console of the first start; only the hash is kept.
            #[expect(
                clippy::print_stderr,
                reason = "the generated password must reach the operator once, outside the logs"
            )]
            {
                eprintln!(
                    "gemini-pool: no ADMIN_PASSWORD set; generated the dashboard login {} / {password} (shown once; set ADMIN_PASSWORD to choose your own)",
                    config.admin_username
                );
            }
            hash
        }
    };
    Ok(crate::service::admin_auth::AdminAuth::new(
        config.admin_username.clone(),
        hash,
        &secret,
    ))
}

/// A new admin password (or the first): every admin session opened under the old one ends, on
/// every instance sharing the database, since each checks the session at every admin call.
async fn end_admin_sessions(storage: &Storage) -> Result<(), StartError> {
    let revoked = storage
        .revoke_all_admin_sessions(crate::service::admin_auth::unix_millis())
        .await?;
    if revoked > 0 {
        tracing::info!(
            revoked,
            "the admin password changed: every admin session is revoked"
        );
    }
    Ok(())
}
