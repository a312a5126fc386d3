//! Several instances on one PostgreSQL database.
//!
//! Two background tasks per instance:
//!
//! - the **lease refiller** asks the database for slices of the shared quota (see
//!   `pool::lease`) for the projects whose lease is empty or running low, every 100 ms or at
//!   once when a request found no lease;
//! - the **news loop** publishes what this instance learned (quota cooldowns and learned
//!   limits, keys taken out of service, resource owners and their client keys, management
//!   changes) and applies what the others published. It runs at once when this instance
//!   learns something, and at once when another instance announces news (PostgreSQL
//!   `LISTEN`/`NOTIFY` on [`store::NEWS_CHANNEL`]); every [`NEWS_INTERVAL`] anyway, as
//!   the fallback when the listening connection is down. So a 429 learned by one instance stops
//!   the others within a few milliseconds.
//!
//! Usage needs no coordination: every instance writes its own request rows and adds to the same
//! daily totals, and the dashboard of any instance reads them from the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use pool::{KeyId, Learned, Pool};
use tokio::sync::{Notify, watch};

use store::{ClusterEvent, LeaseGrant, NewsKind, Storage};

/// How often news is published and read.
pub const NEWS_INTERVAL: Duration = Duration::from_millis(500);
/// How often leases are refilled without being asked.
const REFILL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a request waits for a lease before it is answered as out of quota.
pub const LEASE_WAIT: Duration = Duration::from_secs(2);

/// News this instance must tell the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announcement {
    /// Upstream keys were added, changed or removed.
    Keys,
    /// Client keys were added, changed or removed.
    Clients,
    /// Runtime settings changed.
    Settings,
}

/// What another instance changed through the management API, for this one to reload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changed {
    /// Upstream keys.
    pub keys: bool,
    /// Client keys.
    pub clients: bool,
    /// Runtime settings.
    pub settings: bool,
}

/// What news from the other instances makes this one do besides teaching its pool. The
/// application implements it (`state.rs`), so the cluster needs nothing above the services; it
/// holds it weakly and stops when the application is gone.
pub trait NewsFollower: Send + Sync + 'static {
    /// Reloads what changed from the database.
    fn reload(
        &self,
        changed: Changed,
    ) -> futures_util::future::BoxFuture<'_, Result<(), store::StorageError>>;
    /// Forgets a stored response another instance deleted.
    fn forget_response(&self, id: &str);
}

/// This instance's link to the others.
pub struct Cluster {
    /// A random name for this process, so it skips its own news.
    instance: String,
    storage: Storage,
    pool: Arc<Pool>,
    refill_asked: Notify,
    refilled: watch::Sender<u64>,
    pending: std::sync::Mutex<Vec<ClusterEvent>>,
    last_seen: AtomicI64,
    /// This instance has news to publish, or another one announced some: exchange now.
    exchange_asked: Notify,
    database_url: String,
    /// The listening connection opened at the start (so that news is heard from the first
    /// request on), until the listener task takes it.
    first_listener: std::sync::Mutex<Option<sqlx::postgres::PgListener>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Joins the instances sharing `storage`: from now on the pool needs leases.
    pub async fn join(
        storage: Storage,
        pool: Arc<Pool>,
        database_url: &str,
    ) -> Result<Arc<Self>, store::StorageError> {
        pool.share_quota();
        let last_seen = storage.last_event_id().await?;
        let first_listener = match listener_for(database_url).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "could not listen for news from the other instances: polling every {} ms", NEWS_INTERVAL.as_millis());
                None
            }
        };
        Ok(Arc::new(Self {
            instance: hex::encode(rand::random::<[u8; 8]>()),
            storage,
            pool,
            refill_asked: Notify::new(),
            refilled: watch::channel(0).0,
            pending: std::sync::Mutex::new(Vec::new()),
            last_seen: AtomicI64::new(last_seen),
            exchange_asked: Notify::new(),
            database_url: database_url.to_owned(),
            first_listener: std::sync::Mutex::new(first_listener),
        }))
    }

    /// This instance's name in the shared tables.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Starts the refiller and the news loop; they run as long as the process.
    pub fn spawn(self: &Arc<Self>, app: std::sync::Weak<dyn NewsFollower>) {
        let refiller = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = refiller.refill_asked.notified() => {}
                    () = tokio::time::sleep(REFILL_INTERVAL) => {}
                }
                refiller.refill().await;
                refiller.refilled.send_modify(|round| *round += 1);
            }
        });
        let listener = Arc::clone(self);
        let listener_app = app.clone();
        tokio::spawn(async move { listener.listen(listener_app).await });
        let news = Arc::clone(self);
        tokio::spawn(async move {
            let mut rounds: u64 = 0;
            loop {
                tokio::select! {
                    () = news.exchange_asked.notified() => {}
                    () = tokio::time::sleep(NEWS_INTERVAL) => {}
                }
                let Some(app) = app.upgrade() else { break };
                news.exchange_news(&*app).await;
                rounds += 1;
                if rounds.is_multiple_of(120)
                    && let Err(error) = news.storage.prune_cluster_tables().await
                {
                    tracing::warn!(%error, "could not prune the cluster tables");
                }
            }
        });
    }

    /// Publishes what this instance just learned without waiting for the next round.
    pub fn publish_soon(&self) {
        self.exchange_asked.notify_one();
    }

    /// Listens for the other instances' announcements and runs the news loop on each, for as
    /// long as the gateway lives; reconnects after a second when the connection drops (polling
    /// carries on meanwhile).
    async fn listen(self: Arc<Self>, app: std::sync::Weak<dyn NewsFollower>) {
        let mut ready = self
            .first_listener
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        while app.strong_count() > 0 {
            let listener = match ready.take() {
                Some(listener) => Ok(listener),
                None => listener_for(&self.database_url).await,
            };
            match listener {
                Ok(mut listener) => {
                    // News published while no one listened is read by this exchange.
                    self.exchange_asked.notify_one();
                    self.relay_notifications(&mut listener, &app).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "could not listen for news from the other instances")
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Wakes the news loop for every notification of another instance, until the connection
    /// drops or the gateway is gone.
    async fn relay_notifications(
        &self,
        listener: &mut sqlx::postgres::PgListener,
        app: &std::sync::Weak<dyn NewsFollower>,
    ) {
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        if notification.payload() != self.instance {
                            self.exchange_asked.notify_one();
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("the news listener lost its connection");
                        return;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the news listener failed");
                        return;
                    }
                },
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if app.strong_count() == 0 {
                        return;
                    }
                }
            }
        }
    }

    /// Asks for leases now and waits (at most [`LEASE_WAIT`]) until the refiller has run.
    pub async fn refill_now(&self) {
        let mut round = self.refilled.subscribe();
        round.mark_unchanged();
        self.refill_asked.notify_one();
        let _ = tokio::time::timeout(LEASE_WAIT, round.changed()).await;
    }

    async fn refill(&self) {
        for want in self.pool.lease_wants() {
            let size = pool::lease::lease_size(want.limits);
            let midnight = pool::next_pacific_midnight_ms(self.pool.now_ms());
            match self
                .storage
                .grant_lease(&self.instance, &want, size, midnight)
                .await
            {
                Ok(LeaseGrant::Granted(count)) => {
                    let until = self.pool.now_ms() + pool::lease::LEASE_LIFETIME_MS;
                    self.pool.grant_lease(&want, count, until, false);
                }
                Ok(LeaseGrant::Exhausted { until_ms, daily }) => {
                    tracing::debug!(project = %want.project, model = %want.model, "shared quota used up");
                    self.pool.grant_lease(&want, 0, until_ms, daily);
                }
                Err(error) => {
                    // No lease: the project waits and is asked for again; nothing is sent
                    // beyond what was granted.
                    tracing::warn!(%error, "could not get a quota lease");
                }
            }
        }
    }

    /// Queues news for the others (sent with the next exchange).
    pub fn announce(&self, what: Announcement) {
        let kind = match what {
            Announcement::Keys => NewsKind::Keys,
            Announcement::Clients => NewsKind::Clients,
            Announcement::Settings => NewsKind::Settings,
        };
        self.queue(event(kind));
    }

    /// Queues the owner of a created resource for the others: its project and the client key
    /// that created it. The client travels in the news itself rather than being read back from
    /// `resource_owners` on arrival: that row is written in the background and may not be
    /// there yet, and the others must refuse other clients from the moment they hear of it.
    pub fn announce_owner(&self, resource: &str, project: &str, client: Option<i64>) {
        self.queue(ClusterEvent {
            project: Some(project.to_owned()),
            detail: Some(resource.to_owned()),
            client_key_id: client,
            ..event(NewsKind::Owner)
        });
        self.publish_soon();
    }

    /// Tells the others at once that a stored response was deleted, so that none keeps serving
    /// it from memory.
    pub fn announce_response_deleted(&self, id: &str) {
        self.queue(ClusterEvent {
            detail: Some(id.to_owned()),
            ..event(NewsKind::ResponseDeleted)
        });
        self.exchange_asked.notify_one();
    }

    fn queue(&self, news: ClusterEvent) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.push(news);
        }
    }

    async fn exchange_news(&self, app: &dyn NewsFollower) {
        let mut outgoing: Vec<ClusterEvent> = self
            .pool
            .take_learned()
            .into_iter()
            .map(|learned| match learned {
                Learned::Cooldown {
                    project,
                    model,
                    until_ms,
                    daily,
                } => ClusterEvent {
                    project: Some(project),
                    model: Some(model),
                    until_ms: Some(i64::try_from(until_ms).unwrap_or(i64::MAX)),
                    daily,
                    ..event(NewsKind::Cooldown)
                },
                Learned::Limits(learned) => ClusterEvent {
                    project: Some(learned.project),
                    model: Some(learned.model),
                    until_ms: Some(i64::try_from(learned.at_ms).unwrap_or(i64::MAX)),
                    detail: Some(
                        serde_json::json!({
                            "rpm": learned.limits.rpm,
                            "rpd": learned.limits.rpd,
                            "tpm": learned.limits.tpm,
                        })
                        .to_string(),
                    ),
                    ..event(NewsKind::Limits)
                },
                Learned::KeyOutOfService { key, reason } => ClusterEvent {
                    key_id: Some(key.0),
                    detail: Some(reason),
                    ..event(NewsKind::KeyOut)
                },
            })
            .collect();
        if let Ok(mut pending) = self.pending.lock() {
            outgoing.append(&mut pending);
        }
        if !outgoing.is_empty()
            && let Err(error) = self.storage.publish_events(&self.instance, &outgoing).await
        {
            tracing::warn!(%error, "could not publish news to the other instances");
        }
        let after = self.last_seen.load(Ordering::Relaxed);
        let incoming = match self.storage.events_after(after, &self.instance).await {
            Ok(incoming) => incoming,
            Err(error) => {
                tracing::warn!(%error, "could not read news from the other instances");
                return;
            }
        };
        let (mut keys, mut clients, mut settings) = (false, false, false);
        for news in &incoming {
            self.last_seen.store(news.id, Ordering::Relaxed);
            match &news.kind {
                NewsKind::Cooldown => {
                    if let (Some(project), Some(until)) = (&news.project, news.until_ms) {
                        self.pool.apply_remote_cooldown(
                            project,
                            news.model.as_deref().unwrap_or(""),
                            u64::try_from(until).unwrap_or(0),
                            news.daily,
                        );
                    }
                }
                NewsKind::Limits => {
                    if let (Some(project), Some(at), Some(detail)) =
                        (&news.project, news.until_ms, &news.detail)
                    {
                        let figures: serde_json::Value =
                            serde_json::from_str(detail).unwrap_or_default();
                        let count = |name: &str| {
                            figures
                                .get(name)
                                .and_then(serde_json::Value::as_u64)
                                .filter(|value| *value > 0)
                        };
                        self.pool.apply_learned_limits(&pool::LearnedLimits {
                            project: project.clone(),
                            model: news.model.clone().unwrap_or_default(),
                            limits: pool::Limits {
                                rpm: count("rpm").and_then(|v| u32::try_from(v).ok()),
                                rpd: count("rpd").and_then(|v| u32::try_from(v).ok()),
                                tpm: count("tpm"),
                            },
                            at_ms: u64::try_from(at).unwrap_or(0),
                        });
                    }
                }
                NewsKind::KeyOut => {
                    if let Some(id) = news.key_id {
                        self.pool.apply_remote_out_of_service(
                            KeyId(id),
                            news.detail.as_deref().unwrap_or("unusable"),
                        );
                    }
                }
                NewsKind::Owner => {
                    // Until this news arrives (milliseconds after the creation, see `listen`),
                    // this instance does not know the resource and would not refuse it.
                    if let (Some(project), Some(resource)) = (&news.project, &news.detail) {
                        self.pool.affinity().remember_resource(
                            resource,
                            project.as_str().into(),
                            news.client_key_id,
                        );
                    }
                }
                NewsKind::ResponseDeleted => {
                    if let Some(id) = &news.detail {
                        app.forget_response(id);
                    }
                }
                NewsKind::Keys => keys = true,
                NewsKind::Clients => clients = true,
                NewsKind::Settings => settings = true,
                NewsKind::Unknown(other) => {
                    tracing::debug!(kind = %other, "unknown cluster news ignored");
                }
            }
        }
        let changed = Changed {
            keys,
            clients,
            settings,
        };
        if changed != Changed::default()
            && let Err(error) = app.reload(changed).await
        {
            tracing::warn!(%error, "could not reload after news from another instance");
        }
    }
}

/// A connection listening on the news channel.
async fn listener_for(database_url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let mut listener = sqlx::postgres::PgListener::connect(database_url).await?;
    listener.listen(store::NEWS_CHANNEL).await?;
    Ok(listener)
}

fn event(kind: NewsKind) -> ClusterEvent {
    ClusterEvent {
        id: 0,
        kind,
        project: None,
        model: None,
        key_id: None,
        until_ms: None,
        daily: false,
        detail: None,
        client_key_id: None,
    }
}
