use super::*;

use crate::testing::{create_scratch_postgres, test_postgres_server};
use pool::KeyId;
use secrecy::{ExposeSecret, SecretString};

fn spec(key: &str, project: Option<&str>) -> NewUpstreamKey {
    NewUpstreamKey {
        key: SecretString::from(key),
        project: project.map(str::to_owned),
    }
}

async fn postgres_storage() -> Storage {
    let url = create_scratch_postgres(&test_postgres_server())
        .await
        .expect("PostgreSQL must run for the tests (./scripts/test.sh starts it)");
    Storage::open(&url).await.unwrap()
}

async fn temp_storage() -> (Storage, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}/nested/db.sqlite?mode=rwc",
        dir.path().display()
    );
    (Storage::open(&url).await.unwrap(), dir)
}

#[tokio::test]
async fn the_database_file_and_its_folder_are_created() {
    let (storage, dir) = temp_storage().await;
    storage.ping().await.unwrap();
    assert!(dir.path().join("nested/db.sqlite").exists());
}

/// Runs a test body on SQLite and on PostgreSQL.
macro_rules! on_both_backends {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let (storage, _dir) = temp_storage().await;
                $body(storage).await;
            }

            #[tokio::test]
            async fn postgres() {
                $body(postgres_storage().await).await;
            }
        }
    };
}

on_both_backends!(env_keys_sync_adds_retires_and_keeps_api_keys, env_keys_sync);
on_both_backends!(
    invalid_keys_and_resource_owners_survive_a_reload,
    invalid_keys_and_owners
);
on_both_backends!(usage_is_written_and_read_back_the_same, usage_round_trip);
on_both_backends!(management_rows_change_and_disappear, management_rows);
on_both_backends!(
    admin_sessions_are_open_until_revoked_or_expired_then_pruned,
    admin_sessions
);

async fn admin_sessions(storage: Storage) {
    let now = 1_700_000_000_000_i64;
    let hour = 3_600_000;
    for id in ["a", "b", "c"] {
        storage
            .create_admin_session(id, now, now + hour)
            .await
            .unwrap();
    }
    storage
        .create_admin_session("old", now - 2 * hour, now - hour)
        .await
        .unwrap();
    assert!(storage.admin_session_is_open("a", now).await.unwrap());
    assert!(
        !storage
            .admin_session_is_open("a", now + hour)
            .await
            .unwrap(),
        "expired"
    );
    assert!(!storage.admin_session_is_open("old", now).await.unwrap());
    assert!(!storage.admin_session_is_open("missing", now).await.unwrap());

    assert!(storage.revoke_admin_session("a", now).await.unwrap());
    assert!(
        !storage.revoke_admin_session("a", now + 1).await.unwrap(),
        "already"
    );
    assert!(!storage.admin_session_is_open("a", now).await.unwrap());
    assert!(storage.admin_session_is_open("b", now).await.unwrap());

    // A new password: every session still open ends (b, c, and the expired old one).
    assert_eq!(storage.revoke_all_admin_sessions(now).await.unwrap(), 3);
    assert!(!storage.admin_session_is_open("b", now).await.unwrap());
    assert!(!storage.admin_session_is_open("c", now).await.unwrap());

    // Only expired rows go, revoked or not.
    assert_eq!(storage.prune_admin_sessions(now).await.unwrap(), 1);
    assert_eq!(storage.prune_admin_sessions(now + hour).await.unwrap(), 3);
}

async fn env_keys_sync(storage: Storage) {
    let report = storage
        .sync_upstream_keys(&[spec("k1", None), spec("k2", Some("p"))])
        .await
        .unwrap();
    assert_eq!(
        report,
        SyncReport {
            added: 2,
            retired: 0
        }
    );
    sqlx::query("INSERT INTO upstream_keys (api_key, source) VALUES ('k-api', 'api')")
        .execute(&storage.pool)
        .await
        .unwrap();

    // Same list again: nothing changes.
    let again = storage
        .sync_upstream_keys(&[spec("k1", None), spec("k2", Some("p"))])
        .await
        .unwrap();
    assert_eq!(again, SyncReport::default());

    // k1 leaves the variable, k2 moves project, k3 arrives.
    let report = storage
        .sync_upstream_keys(&[spec("k2", Some("q")), spec("k3", None)])
        .await
        .unwrap();
    assert_eq!(
        report,
        SyncReport {
            added: 2,
            retired: 1
        }
    );
    let keys: Vec<(String, Option<String>)> = storage
        .upstream_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.secret.expose_secret().to_owned(), k.project))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("k2".to_owned(), Some("q".to_owned())),
            ("k-api".to_owned(), None),
            ("k3".to_owned(), None),
        ]
    );

    // k1 comes back under its old id.
    storage
        .sync_upstream_keys(&[spec("k1", None)])
        .await
        .unwrap();
    let ids: Vec<i64> = storage
        .upstream_keys()
        .await
        .unwrap()
        .iter()
        .map(|k| k.id.0)
        .collect();
    assert_eq!(ids, vec![1, 3]);
}

#[tokio::test]
async fn configured_client_keys_are_kept_in_step() {
    let (storage, _dir) = temp_storage().await;
    let key = |digest| NewClientKey {
        name: "from CLIENT_API_KEYS",
        digest,
        prefix: "gp-",
    };
    let report = storage
        .sync_client_keys(&[key("d1"), key("d2")])
        .await
        .unwrap();
    assert_eq!(
        report,
        SyncReport {
            added: 2,
            retired: 0
        }
    );
    let report = storage.sync_client_keys(&[key("d2")]).await.unwrap();
    assert_eq!(
        report,
        SyncReport {
            added: 0,
            retired: 1
        }
    );
    let rows = storage.client_keys().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].digest, "d2");
    let rows = storage.client_key_rows().await.unwrap();
    assert_eq!(rows[0].source, KeySource::Env);
}

async fn invalid_keys_and_owners(storage: Storage) {
    storage
        .sync_upstream_keys(&[spec("k1", Some("p"))])
        .await
        .unwrap();
    storage
        .mark_key_invalid(KeyId(1), "API_KEY_INVALID")
        .await
        .unwrap();
    let keys = storage.upstream_keys().await.unwrap();
    assert_eq!(keys[0].out_of_service.as_deref(), Some("API_KEY_INVALID"));

    let owner = |resource: &str, client: Option<i64>, created_at_ms: i64| StoredOwner {
        resource: resource.to_owned(),
        project: "p".to_owned(),
        client_key_id: client,
        created_at_ms,
    };
    let day = 86_400_000;
    storage
        .save_resource_owner(&owner("files/a", Some(1), 10 * day), KeyId(1))
        .await
        .unwrap();
    storage
        .save_resource_owner(&owner("files/old", Some(2), 2 * day), KeyId(1))
        .await
        .unwrap();
    storage
        .save_resource_owner(&owner("cachedContents/c", None, 11 * day), KeyId(1))
        .await
        .unwrap();
    // Oldest first, from the given time on.
    assert_eq!(
        storage.resource_owners(3 * day, 10).await.unwrap(),
        vec![
            owner("files/a", Some(1), 10 * day),
            owner("cachedContents/c", None, 11 * day)
        ]
    );
    // The newest when there are more than the limit.
    assert_eq!(
        storage.resource_owners(0, 1).await.unwrap(),
        vec![owner("cachedContents/c", None, 11 * day)]
    );
    // Newest first for the management API, filtered by client key, with its name.
    let (rows, total) = storage
        .resource_owner_rows(&ResourceFilter::default(), 0)
        .await
        .unwrap();
    assert_eq!(total, 3);
    let names: Vec<&str> = rows.iter().map(|row| row.resource.as_str()).collect();
    assert_eq!(names, ["cachedContents/c", "files/a", "files/old"]);
    let filter = ResourceFilter {
        client_key_id: Some(1),
        ..ResourceFilter::default()
    };
    let (rows, total) = storage.resource_owner_rows(&filter, 0).await.unwrap();
    assert_eq!((rows.len(), total), (1, 1));
    assert_eq!(rows[0].resource, "files/a");
    assert_eq!(rows[0].created_at_ms, 10 * day);
    let page_two = ResourceFilter {
        page: Some(2),
        per_page: Some(2),
        ..ResourceFilter::default()
    };
    let (rows, total) = storage.resource_owner_rows(&page_two, 0).await.unwrap();
    assert_eq!((rows.len(), total), (1, 3));
    assert_eq!(rows[0].resource, "files/old");

    assert_eq!(storage.prune_resource_owners(3 * day).await.unwrap(), 1);
    storage.delete_resource_owner("files/a").await.unwrap();
    assert_eq!(
        storage.resource_owners(0, 10).await.unwrap(),
        vec![owner("cachedContents/c", None, 11 * day)]
    );
}

async fn usage_round_trip(storage: Storage) {
    let now_ms = 1_795_636_800_000u64;
    let today = pool::pacific_day(now_ms);
    let record = |status: u16, model: &str, prompt: u64, streamed: bool| RequestRecord {
        at_ms: now_ms,
        client_key_id: Some(1),
        upstream_key_id: Some(2),
        project: Some("p".to_owned()),
        model: Some(model.to_owned()),
        route: "/v1/chat/completions",
        status,
        latency_ms: 12,
        tokens: Tokens {
            prompt,
            completion: 5,
            thoughts: 2,
            cached: 1,
        },
        streamed,
        attempts: 1,
        upstream_error: None,
    };
    let counts = [pool::DayCount {
        project: "p".to_owned(),
        model: "m1".to_owned(),
        day: today,
        count: 7,
    }];
    storage
        .write_accounting(
            &[
                record(200, "m1", 10, true),
                record(429, "m1", 0, false),
                record(200, "m2", 3, false),
            ],
            &counts,
        )
        .await
        .unwrap();
    // A lower count never replaces a higher one.
    let lower = [pool::DayCount {
        count: 3,
        ..counts[0].clone()
    }];
    storage.write_accounting(&[], &lower).await.unwrap();
    assert_eq!(storage.quota_counts(today).await.unwrap(), counts.to_vec());

    let totals = storage
        .usage_totals(UsageDimension::UpstreamKey, today)
        .await
        .unwrap();
    assert_eq!(
        totals[&2],
        UsageTotals {
            requests: 3,
            errors: 1,
            prompt_tokens: 13,
            completion_tokens: 15,
            thoughts_tokens: 6,
            requests_today: 3,
        }
    );
    assert_eq!(
        storage.client_usage_on(today).await.unwrap(),
        vec![(1, 3, 28)]
    );
    let hourly = storage
        .hourly_series(0, &UsageFilter::default())
        .await
        .unwrap();
    assert_eq!(hourly.len(), 1);
    assert_eq!(
        (hourly[0].requests, hourly[0].errors, hourly[0].tokens),
        (3, 1, 28)
    );
    let daily = storage
        .daily_series(today, &UsageFilter::default())
        .await
        .unwrap();
    assert_eq!(daily[0].bucket, i64::from(today));
    assert_eq!((daily[0].requests, daily[0].errors), (3, 1));
    let by_model = storage
        .breakdown(BreakdownDimension::Model, today, &UsageFilter::default())
        .await
        .unwrap();
    assert_eq!(by_model[0].name, "m1");
    assert_eq!((by_model[0].requests, by_model[0].prompt_tokens), (2, 10));
    let only_m2 = UsageFilter {
        model: Some("m2".to_owned()),
        ..UsageFilter::default()
    };
    let m2_daily = storage.daily_series(today, &only_m2).await.unwrap();
    assert_eq!((m2_daily[0].requests, m2_daily[0].tokens), (1, 8));
    let m2_hourly = storage.hourly_series(0, &only_m2).await.unwrap();
    assert_eq!(m2_hourly[0].requests, 1);
    let nobody = UsageFilter {
        client_key_id: Some(99),
        ..UsageFilter::default()
    };
    assert!(
        storage
            .daily_series(today, &nobody)
            .await
            .unwrap()
            .is_empty()
    );
    let by_key = storage
        .breakdown(
            BreakdownDimension::UpstreamKey,
            today,
            &UsageFilter::default(),
        )
        .await
        .unwrap();
    assert_eq!((by_key[0].name.as_str(), by_key[0].id), ("2", Some(2)));

    let (rows, total) = storage
        .request_logs(&LogFilter {
            model: Some("m1".to_owned()),
            status: Some("error".to_owned()),
            ..LogFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!((rows[0].status, rows[0].streamed), (429, false));
    let (rows, total) = storage
        .request_logs(&LogFilter {
            model: Some(String::new()),
            per_page: Some(1),
            ..LogFilter::default()
        })
        .await
        .unwrap();
    assert_eq!((rows.len(), total), (1, 3));
    assert_eq!(storage.request_log_count().await.unwrap(), 3);

    // A busy second: more rows than one insert carries, one daily total.
    let busy = vec![record(200, "m3", 2, false); 1201];
    storage.write_accounting(&busy, &[]).await.unwrap();
    assert_eq!(storage.request_log_count().await.unwrap(), 1204);
    let by_model = storage
        .breakdown(BreakdownDimension::Model, today, &UsageFilter::default())
        .await
        .unwrap();
    let m3 = by_model.iter().find(|b| b.name == "m3").unwrap();
    assert_eq!((m3.requests, m3.prompt_tokens), (1201, 2402));
}

async fn management_rows(storage: Storage) {
    let (added, duplicates) = storage
        .add_upstream_keys(&[
            spec("k1", Some("p")),
            spec("k1", Some("p")),
            spec("k2", None),
        ])
        .await
        .unwrap();
    assert_eq!((added, duplicates), (2, 1));
    assert!(
        storage
            .update_upstream_key(1, Some(false), Some(Some("q".to_owned())))
            .await
            .unwrap()
    );
    let rows = storage.upstream_key_rows().await.unwrap();
    assert_eq!(
        (rows[0].enabled, rows[0].project.as_deref()),
        (false, Some("q"))
    );
    assert!(!rows[0].created_at.is_empty());
    // Ids come from a sequence: PostgreSQL spends one on the duplicate, SQLite does not.
    let k2 = rows
        .iter()
        .find(|row| row.key.expose_secret() == "k2")
        .unwrap()
        .id;
    assert!(storage.delete_upstream_key(k2).await.unwrap());
    assert!(!storage.delete_upstream_key(k2).await.unwrap());

    let limits = pool::ClientLimits {
        rpm: Some(5),
        allowed_models: Some(vec!["m1".to_owned()]),
        ..pool::ClientLimits::default()
    };
    let id = storage
        .create_client_key(
            NewClientKey {
                name: "team",
                digest: "digest-1",
                prefix: "gp-abc",
            },
            &limits,
        )
        .await
        .unwrap();
    assert!(
        storage
            .update_client_key(id, Some("renamed"), Some(false))
            .await
            .unwrap()
    );
    let rows = storage.client_key_rows().await.unwrap();
    assert_eq!((rows[0].name.as_str(), rows[0].enabled), ("renamed", false));
    assert_eq!(rows[0].limits, limits);
    assert!(storage.delete_client_key(id).await.unwrap());

    assert_eq!(storage.setting("x").await.unwrap(), None);
    assert_eq!(
        storage.setting_or_init("x", "first").await.unwrap(),
        "first"
    );
    assert_eq!(
        storage.setting_or_init("x", "second").await.unwrap(),
        "first"
    );
    storage.set_setting("x", "third").await.unwrap();
    assert_eq!(
        storage.setting("x").await.unwrap().as_deref(),
        Some("third")
    );
}

#[tokio::test]
async fn leases_never_grant_more_than_the_limit_across_instances() {
    let storage = postgres_storage().await;
    let want = pool::LeaseWant {
        project: "p".to_owned(),
        model: "m".to_owned(),
        limits: pool::Limits {
            rpm: Some(10),
            rpd: Some(25),
            tpm: None,
        },
    };
    // Two instances ask for slices of 4 at the same time, many times over.
    let mut granted = 0;
    for _ in 0..3 {
        let (a, b) = tokio::join!(
            storage.grant_lease("a", &want, 4, 0),
            storage.grant_lease("b", &want, 4, 0)
        );
        for answer in [a.unwrap(), b.unwrap()] {
            if let LeaseGrant::Granted(count) = answer {
                granted += count;
            }
        }
    }
    assert_eq!(
        granted, 10,
        "the per-minute limit bounds the slices in the window"
    );
    match storage.grant_lease("a", &want, 4, 0).await.unwrap() {
        LeaseGrant::Exhausted { until_ms, daily } => {
            assert!(!daily);
            let now = u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap();
            // Free again when the first slice leaves the window of a minute plus a lease.
            assert!(
                until_ms > now + 60_000 && until_ms <= now + pool::lease::GRANT_WINDOW_MS + 1_000
            );
        }
        other => panic!("{other:?}"),
    }
    // The daily limit: slices granted earlier today count even outside the minute window.
    sqlx::query("UPDATE quota_leases SET granted_at_ms = granted_at_ms - 3600000")
        .execute(&storage.pool)
        .await
        .unwrap();
    let mut more = 0;
    while let LeaseGrant::Granted(count) = storage.grant_lease("b", &want, 4, 0).await.unwrap() {
        more += count;
    }
    assert_eq!(more, 10, "a full minute again");
    sqlx::query("UPDATE quota_leases SET granted_at_ms = granted_at_ms - 3600000")
        .execute(&storage.pool)
        .await
        .unwrap();
    let mut rest = 0;
    let last = loop {
        match storage.grant_lease("b", &want, 4, 42).await.unwrap() {
            LeaseGrant::Granted(count) => rest += count,
            exhausted => break exhausted,
        }
    };
    assert_eq!(rest, 5, "25 a day");
    assert_eq!(
        last,
        LeaseGrant::Exhausted {
            until_ms: 42,
            daily: true
        }
    );
}

#[tokio::test]
async fn news_reaches_the_other_instances_only() {
    let storage = postgres_storage().await;
    let start = storage.last_event_id().await.unwrap();
    let cooldown = ClusterEvent {
        id: 0,
        kind: NewsKind::Cooldown,
        project: Some("p".to_owned()),
        model: Some("m".to_owned()),
        key_id: None,
        until_ms: Some(123),
        daily: true,
        detail: None,
        client_key_id: None,
    };
    let owner = ClusterEvent {
        kind: NewsKind::Owner,
        model: None,
        until_ms: None,
        daily: false,
        detail: Some("files/f".to_owned()),
        client_key_id: Some(42),
        ..cooldown.clone()
    };
    storage
        .publish_events("a", &[cooldown.clone(), owner.clone()])
        .await
        .unwrap();
    assert!(storage.events_after(start, "a").await.unwrap().is_empty());
    let seen = storage.events_after(start, "b").await.unwrap();
    assert_eq!(seen.len(), 2);
    let without_id = |event: &ClusterEvent| ClusterEvent {
        id: 0,
        ..event.clone()
    };
    assert_eq!(without_id(&seen[0]), cooldown);
    // The owner's client key travels with the news.
    assert_eq!(without_id(&seen[1]), owner);
    assert!(
        storage
            .events_after(seen[1].id, "b")
            .await
            .unwrap()
            .is_empty()
    );
    storage.prune_cluster_tables().await.unwrap();
    assert_eq!(storage.last_event_id().await.unwrap(), seen[1].id);
}

/// The nice value of each of this process's threads named `name`.
#[cfg(target_os = "linux")]
fn nice_of_threads_named(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|thread| {
            std::fs::read_to_string(thread.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .map(|thread| {
            let stat = std::fs::read_to_string(thread.path().join("stat")).unwrap();
            // Fields after the parenthesised name: state is the 3rd field, nice the 19th.
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            after_name.split(' ').nth(16).unwrap().parse().unwrap()
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn sqlite_worker_threads_run_below_the_request_threads() {
    let (storage, _dir) = temp_storage().await;
    // Several connections at once, so that more than one worker thread exists.
    let (a, b, c) = tokio::join!(storage.ping(), storage.ping(), storage.ping());
    a.unwrap();
    b.unwrap();
    c.unwrap();
    let ours = rustix::process::getpriority_process(None).unwrap();
    let lowered = (ours + crate::db::SQLITE_WORKER_NICE_STEPS).min(19);
    // Other tests open databases beside this one: a worker of theirs may be caught between its
    // start and its connection's set-up, so look a few times.
    let mut nice = Vec::new();
    for _ in 0..20 {
        nice = nice_of_threads_named(crate::db::SQLITE_WORKER_THREAD);
        if !nice.is_empty() && nice.iter().all(|&n| n == lowered) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("worker threads' nice values: {nice:?}, expected all {lowered}");
}
