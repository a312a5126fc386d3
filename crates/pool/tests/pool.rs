//! The pool through its public API: picks spread over projects, tried keys and projects, quota
//! windows and the Pacific day, what failures and successes teach, the capacity storm, and
//! sharing the quota with other instances.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use pool::lease;
use pool::{
    DayCount, Failure, KeyId, KeyRecord, Learned, LearnedLimit, Limits, LimitsTable,
    MAX_QUOTA_COOLDOWN, ManualClock, PickError, PickRequest, Pool, QuotaExhausted, QuotaWindow,
    mask_secret, pacific_day,
};
use secrecy::SecretString;

const FLASH: &str = "gemini-2.5-flash";
/// 2026-11-24 12:00 Pacific (20:00 UTC).
const NOW: u64 = 1_795_636_800_000;

fn model_request(model: &str) -> PickRequest<'_> {
    PickRequest {
        model: Some(model),
        ..PickRequest::default()
    }
}

fn limited(rpm: Option<u32>, rpd: Option<u32>) -> LimitsTable {
    LimitsTable {
        default: Limits {
            rpm,
            rpd,
            tpm: None,
        },
        ..LimitsTable::default()
    }
}

/// A per-minute quota 429 as Google sends it: RetryInfo, the model in QuotaFailure.
fn minute_quota(retry_secs: Option<u64>, model: Option<&str>) -> Failure {
    Failure::Quota(QuotaExhausted {
        window: QuotaWindow::Minute,
        retry_after: retry_secs.map(Duration::from_secs),
        model: model.map(str::to_owned),
        limit: None,
    })
}

fn daily_quota() -> Failure {
    Failure::Quota(QuotaExhausted {
        window: QuotaWindow::Day,
        retry_after: Some(Duration::from_secs(47)),
        model: Some(FLASH.to_owned()),
        limit: Some(LearnedLimit::RequestsPerDay(250)),
    })
}

fn record(id: i64, project: Option<&str>) -> KeyRecord {
    KeyRecord {
        id: KeyId(id),
        secret: SecretString::from(format!("AIzaSyTestKey{id:0>26}")),
        project: project.map(str::to_owned),
        enabled: true,
        out_of_service: None,
    }
}

#[test]
fn with_a_shared_quota_requests_go_out_only_under_a_lease() {
    let clock = Arc::new(ManualClock::at(NOW));
    let pool = Pool::with_clock(
        vec![record(1, Some("p"))],
        limited(Some(20), None),
        clock.clone(),
    );
    pool.share_quota();
    assert_eq!(
        pool.pick(&model_request(FLASH)).unwrap_err(),
        PickError::AwaitingLease
    );
    let wants = pool.lease_wants();
    assert_eq!(wants.len(), 1);
    assert_eq!(
        (wants[0].project.as_str(), wants[0].model.as_str()),
        ("p", FLASH)
    );
    assert!(pool.lease_wants().is_empty(), "a want is handed out once");

    pool.grant_lease(&wants[0], 2, NOW + lease::LEASE_LIFETIME_MS, false);
    assert!(pool.pick(&model_request(FLASH)).is_ok());
    // Half of a two-request lease is left: the refill is asked for before it runs out.
    assert_eq!(pool.lease_wants().len(), 1);
    assert!(pool.pick(&model_request(FLASH)).is_ok());
    assert_eq!(
        pool.pick(&model_request(FLASH)).unwrap_err(),
        PickError::AwaitingLease
    );

    // A lease that lapsed serves nothing, even with requests left.
    pool.grant_lease(&wants[0], 5, NOW + lease::LEASE_LIFETIME_MS, false);
    clock.advance(Duration::from_millis(lease::LEASE_LIFETIME_MS));
    assert_eq!(
        pool.pick(&model_request(FLASH)).unwrap_err(),
        PickError::AwaitingLease
    );

    // Nothing left in the shared quota: the project cools down like after a 429.
    let want = pool.lease_wants().remove(0);
    pool.grant_lease(&want, 0, pool.now_ms() + 30_000, false);
    assert!(matches!(
        pool.pick(&model_request(FLASH)).unwrap_err(),
        PickError::Exhausted { daily: false, .. }
    ));
    // Calls without model quota need no lease.
    assert!(pool.pick(&PickRequest::default()).is_ok());
}

#[test]
fn what_one_instance_learns_is_kept_for_the_others_and_applied_there() {
    let pool = Pool::with_clock(
        vec![record(1, Some("p")), record(2, Some("q"))],
        limited(None, None),
        Arc::new(ManualClock::at(NOW)),
    );
    pool.record_failure(KeyId(1), Some(FLASH), &minute_quota(Some(26), Some(FLASH)));
    assert!(pool.take_learned().is_empty(), "alone, nothing is kept");

    pool.share_quota();
    pool.record_failure(KeyId(1), Some(FLASH), &minute_quota(Some(26), Some(FLASH)));
    pool.record_failure(
        KeyId(2),
        None,
        &Failure::KeyInvalid {
            reason: "API_KEY_INVALID".into(),
        },
    );
    let learned = pool.take_learned();
    assert!(
        matches!(&learned[0], Learned::Cooldown { project, model, daily: false, .. } if project == "p" && model == FLASH)
    );
    assert_eq!(
        learned[1],
        Learned::KeyOutOfService {
            key: KeyId(2),
            reason: "API_KEY_INVALID".into()
        }
    );

    let other = Pool::with_clock(
        vec![record(1, Some("p")), record(2, Some("q"))],
        limited(None, None),
        Arc::new(ManualClock::at(NOW)),
    );
    other.apply_remote_cooldown("p", FLASH, NOW + 60_000, false);
    other.apply_remote_out_of_service(KeyId(2), "API_KEY_INVALID");
    assert_eq!(other.cooldowns().len(), 1);
    assert!(matches!(
        other.pick(&model_request(FLASH)).unwrap_err(),
        PickError::Exhausted { daily: false, .. }
    ));
    assert!(!other.key(KeyId(2)).unwrap().is_usable());
}

#[test]
fn picks_spread_over_projects_by_quota_left() {
    fastrand::seed(7);
    let clock = Arc::new(ManualClock::at(NOW));
    let limits = LimitsTable {
        default: Limits {
            rpm: Some(100),
            rpd: None,
            tpm: None,
        },
        ..LimitsTable::default()
    };
    let pool = Pool::with_clock(
        vec![
            record(1, Some("a")),
            record(2, Some("b")),
            record(3, Some("c")),
        ],
        limits,
        clock,
    );
    let mut per_project: HashMap<String, u32> = HashMap::new();
    for _ in 0..30 {
        let key = pool.pick(&model_request(FLASH)).unwrap();
        *per_project.entry(key.project().to_string()).or_default() += 1;
    }
    let counts: Vec<u32> = per_project.values().copied().collect();
    assert_eq!(counts.len(), 3, "{per_project:?}");
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 4, "{per_project:?}");
}

#[test]
fn disabled_and_invalid_keys_are_skipped_and_the_reason_is_kept() {
    let mut disabled = record(1, None);
    disabled.enabled = false;
    let pool = Pool::new(vec![disabled, record(2, None), record(3, None)]);
    pool.record_failure(
        KeyId(2),
        None,
        &Failure::KeyInvalid {
            reason: "API_KEY_INVALID".into(),
        },
    );
    for _ in 0..4 {
        assert_eq!(pool.pick(&PickRequest::default()).unwrap().id(), KeyId(3));
    }
    assert_eq!(
        pool.key(KeyId(2))
            .unwrap()
            .out_of_service_reason()
            .as_deref(),
        Some("API_KEY_INVALID")
    );
    pool.record_failure(
        KeyId(3),
        None,
        &Failure::KeyInvalid {
            reason: "CONSUMER_SUSPENDED".into(),
        },
    );
    assert!(!pool.has_usable_key());
    assert_eq!(
        pool.pick(&PickRequest::default()).unwrap_err(),
        PickError::NoUsableKey
    );
}

#[test]
fn tried_keys_are_not_picked_again() {
    let pool = Pool::new(vec![record(1, None), record(2, None)]);
    let first = pool.pick(&PickRequest::default()).unwrap().id();
    let tried = [first];
    let second = pool
        .pick(&PickRequest {
            tried: &tried,
            ..PickRequest::default()
        })
        .unwrap()
        .id();
    assert_ne!(first, second);
    let both = [first, second];
    let request = PickRequest {
        tried: &both,
        ..PickRequest::default()
    };
    assert_eq!(pool.pick(&request).unwrap_err(), PickError::AllTried);
}

#[test]
fn a_project_restriction_only_yields_keys_of_that_project() {
    let pool = Pool::new(vec![
        record(1, Some("alpha")),
        record(2, Some("beta")),
        record(3, Some("beta")),
        record(4, None),
    ]);
    for _ in 0..8 {
        let key = pool
            .pick(&PickRequest {
                project: Some("beta"),
                ..PickRequest::default()
            })
            .unwrap();
        assert_eq!(&**key.project(), "beta");
    }
    let lone = pool.key(KeyId(4)).unwrap();
    assert_eq!(&**lone.project(), "~key-4");
    let request = PickRequest {
        project: Some("gamma"),
        ..PickRequest::default()
    };
    assert_eq!(pool.pick(&request).unwrap_err(), PickError::NoUsableKey);
}

#[test]
fn replacing_keys_keeps_learned_health_of_keys_that_stay() {
    let pool = Pool::new(vec![record(1, None), record(2, None)]);
    pool.record_failure(
        KeyId(1),
        None,
        &Failure::KeyInvalid {
            reason: "leaked".into(),
        },
    );
    pool.replace_keys(vec![record(1, None), record(2, None), record(5, None)]);
    assert!(!pool.key(KeyId(1)).unwrap().is_usable());
    assert!(pool.key(KeyId(5)).unwrap().is_usable());
    assert_eq!(pool.keys().len(), 3);
}

#[test]
fn a_new_key_table_with_projects_reordered_keeps_each_project_its_keys_and_cooldown() {
    let clock = Arc::new(ManualClock::at(NOW));
    let pool = Pool::with_clock(
        vec![
            record(1, Some("alpha")),
            record(2, Some("beta")),
            record(3, Some("gamma")),
        ],
        LimitsTable::default(),
        clock,
    );
    pool.pick(&model_request(FLASH)).unwrap();
    pool.record_failure(KeyId(2), Some(FLASH), &minute_quota(Some(30), None));
    // Other projects before, between and after: every project has another index now.
    pool.replace_keys(vec![
        record(7, Some("delta")),
        record(3, Some("gamma")),
        record(8, Some("epsilon")),
        record(2, Some("beta")),
        record(1, Some("alpha")),
        record(9, Some("alpha")),
    ]);
    for project in ["alpha", "gamma", "delta", "epsilon"] {
        for _ in 0..4 {
            let key = pool
                .pick(&PickRequest {
                    model: Some(FLASH),
                    project: Some(project),
                    ..PickRequest::default()
                })
                .unwrap();
            assert_eq!(&**key.project(), project);
        }
    }
    let beta = PickRequest {
        model: Some(FLASH),
        project: Some("beta"),
        ..PickRequest::default()
    };
    assert!(
        matches!(pool.pick(&beta), Err(PickError::Exhausted { .. })),
        "beta still cools"
    );
    for _ in 0..40 {
        assert_ne!(
            &**pool.pick(&model_request(FLASH)).unwrap().project(),
            "beta"
        );
    }
    // Back to the first table: the cooldown follows beta to its old place.
    pool.replace_keys(vec![
        record(1, Some("alpha")),
        record(2, Some("beta")),
        record(3, Some("gamma")),
    ]);
    for _ in 0..20 {
        assert_ne!(
            &**pool.pick(&model_request(FLASH)).unwrap().project(),
            "beta"
        );
    }
}

#[test]
fn picks_run_beside_new_models_table_changes_and_reports_without_deadlock() {
    // The pick holds a read lock of one shard of the model books while it runs: new books
    // (writes to the map), reports (iterations) and key tables changing under it must still
    // all finish.
    let pool = Arc::new(Pool::new((0..40).map(|id| record(id, None)).collect()));
    let pickers: Vec<_> = (0..3)
        .map(|thread| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for i in 0..3_000 {
                    let model = format!("model-{}", (i * 7 + thread) % 200);
                    let _ = pool.pick(&model_request(&model));
                }
            })
        })
        .collect();
    for i in 0..300i64 {
        pool.record_failure(KeyId(i % 40), Some("model-3"), &minute_quota(Some(1), None));
        let _ = pool.project_states();
        let _ = pool.lease_wants();
        if i % 50 == 0 {
            pool.replace_keys((0..40 + i / 50).map(|id| record(id, None)).collect());
        }
    }
    for picker in pickers {
        picker.join().unwrap();
    }
}

#[test]
fn masking_never_shows_the_middle_of_a_key() {
    let key = "AIzaSyA1234567890abcdefghijklmnopqrstu";
    assert_eq!(mask_secret(key), "AIza…rstu");
    assert_eq!(mask_secret("short-key"), "…");
    let pool = Pool::new(vec![record(7, None)]);
    let debug = format!("{:?}", pool.key(KeyId(7)).unwrap());
    assert!(!debug.contains("TestKey"), "{debug}");
}

#[test]
fn the_minute_window_slides_and_keys_of_a_project_share_it() {
    let clock = Arc::new(ManualClock::at(NOW));
    let pool = Pool::with_clock(
        vec![record(1, Some("p")), record(2, Some("p"))],
        limited(Some(2), None),
        clock.clone(),
    );
    let first = pool.pick(&model_request(FLASH)).unwrap().id();
    clock.advance(Duration::from_secs(20));
    let second = pool.pick(&model_request(FLASH)).unwrap().id();
    assert_ne!(first, second, "both keys of the project are used");
    assert_eq!(
        pool.pick(&model_request(FLASH)).unwrap_err(),
        PickError::Exhausted {
            retry_after: Duration::from_secs(40),
            daily: false
        }
    );
    // Another model has its own quota.
    assert!(pool.pick(&model_request("gemini-2.5-pro")).is_ok());
    clock.advance(Duration::from_secs(40));
    assert!(
        pool.pick(&model_request(FLASH)).is_ok(),
        "the first request left the window"
    );
    assert!(pool.pick(&model_request(FLASH)).is_err());
}

#[test]
fn the_daily_quota_resets_at_pacific_midnight_across_a_dst_change() {
    // 2026-11-01 20:00 UTC is 12:00 PST, the day the clocks went back: the next midnight is
    // 2026-11-02 08:00 UTC, twelve hours later.
    let noon = 1_793_563_200_000;
    let clock = Arc::new(ManualClock::at(noon));
    let pool = Pool::with_clock(
        vec![record(1, Some("p"))],
        limited(None, Some(3)),
        clock.clone(),
    );
    for _ in 0..3 {
        pool.pick(&model_request(FLASH)).unwrap();
    }
    assert_eq!(
        pool.pick(&model_request(FLASH)).unwrap_err(),
        PickError::Exhausted {
            retry_after: Duration::from_secs(12 * 3600),
            daily: true
        }
    );
    assert_eq!(
        pool.day_counts(),
        vec![DayCount {
            project: "p".into(),
            model: FLASH.into(),
            day: pacific_day(noon),
            count: 3
        }]
    );
    clock.advance(Duration::from_secs(12 * 3600 - 1));
    assert!(pool.pick(&model_request(FLASH)).is_err());
    clock.advance(Duration::from_secs(1));
    assert!(
        pool.pick(&model_request(FLASH)).is_ok(),
        "a new Pacific day"
    );
}

#[test]
fn quota_answers_cool_the_project_for_that_model() {
    let clock = Arc::new(ManualClock::at(NOW));
    let pool = Pool::with_clock(
        vec![record(1, Some("p")), record(2, Some("q"))],
        LimitsTable::default(),
        clock.clone(),
    );
    // Per-minute, with RetryInfo 26 s, naming the model in QuotaFailure.
    pool.record_failure(
        KeyId(1),
        Some("something-else"),
        &minute_quota(Some(26), Some(FLASH)),
    );
    for _ in 0..6 {
        assert_eq!(&**pool.pick(&model_request(FLASH)).unwrap().project(), "q");
    }
    assert!(
        pool.pick(&model_request("gemini-2.5-pro")).is_ok(),
        "other models are not cooled"
    );
    // Per-day: until Pacific midnight, whatever RetryInfo says.
    pool.record_failure(KeyId(2), Some(FLASH), &daily_quota());
    let PickError::Exhausted { retry_after, daily } = pool.pick(&model_request(FLASH)).unwrap_err()
    else {
        panic!("expected exhaustion");
    };
    assert_eq!(
        (retry_after, daily),
        (Duration::from_secs(26), false),
        "p frees up first"
    );
    clock.advance(Duration::from_secs(26));
    assert_eq!(&**pool.pick(&model_request(FLASH)).unwrap().project(), "p");
    // No RetryInfo: until the next minute.
    let lone = Pool::with_clock(
        vec![record(1, None)],
        LimitsTable::default(),
        Arc::new(ManualClock::at(NOW + 15_000)),
    );
    lone.record_failure(KeyId(1), Some(FLASH), &minute_quota(None, None));
    assert_eq!(
        lone.pick(&model_request(FLASH)).unwrap_err(),
        PickError::Exhausted {
            retry_after: Duration::from_secs(45),
            daily: false
        }
    );
}

#[test]
fn absurd_delays_from_the_upstream_are_clamped() {
    let clock = Arc::new(ManualClock::at(NOW));
    let pool = Pool::with_clock(
        vec![record(1, Some("p"))],
        LimitsTable::default(),
        clock.clone(),
    );
    let huge = Failure::Quota(QuotaExhausted {
        window: QuotaWindow::Minute,
        retry_after: Some(Duration::MAX),
        model: None,
        limit: None,
    });
    pool.record_failure(KeyId(1), Some(FLASH), &huge);
    let PickError::Exhausted { retry_after, .. } = pool.pick(&model_request(FLASH)).unwrap_err()
    else {
        panic!("expected exhaustion");
    };
    assert_eq!(retry_after, MAX_QUOTA_COOLDOWN);
    clock.advance(MAX_QUOTA_COOLDOWN);
    assert!(
        pool.pick(&model_request(FLASH)).is_ok(),
        "back after the clamp"
    );
    // Another instance's figure is clamped the same way.
    pool.apply_remote_cooldown("p", FLASH, u64::MAX, false);
    let PickError::Exhausted { retry_after, .. } = pool.pick(&model_request(FLASH)).unwrap_err()
    else {
        panic!("expected exhaustion");
    };
    assert_eq!(retry_after, MAX_QUOTA_COOLDOWN);
}

#[test]
fn a_capacity_storm_cools_projects_for_seconds_then_probes_once_a_second() {
    fastrand::seed(11);
    let clock = Arc::new(ManualClock::at(NOW));
    let pool = Pool::with_clock(
        vec![record(1, Some("p")), record(2, Some("q"))],
        LimitsTable::default(),
        clock.clone(),
    );
    let overloaded = Failure::Capacity { status: 503 };
    let first = pool.pick(&model_request(FLASH)).unwrap().id();
    pool.record_failure(first, Some(FLASH), &overloaded);
    let second = pool.pick(&model_request(FLASH)).unwrap().id();
    assert_ne!(first, second, "the other project serves meanwhile");
    pool.record_failure(second, Some(FLASH), &overloaded);
    // Every project cools for capacity: one probe now, then refusals with the status.
    assert!(pool.pick(&model_request(FLASH)).is_ok(), "the probe");
    let refusal = pool.pick(&model_request(FLASH)).unwrap_err();
    assert!(
        matches!(refusal, PickError::Capacity { status: 503, retry_after } if retry_after <= Duration::from_secs(1)),
        "{refusal:?}"
    );
    assert!(
        pool.keys().iter().all(|key| key.is_usable()),
        "no key is blamed"
    );
    assert_eq!(pool.model_overview()[0].cooling_capacity, 2);
    assert!(pool.model_overview()[0].next_probe_ms.is_some());
    // The next second's probe succeeds: every project is back at once.
    clock.advance(Duration::from_secs(1));
    let probe = pool.pick(&model_request(FLASH)).unwrap();
    pool.record_success(probe.id(), Some(FLASH));
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        seen.insert(pool.pick(&model_request(FLASH)).unwrap().id());
    }
    assert_eq!(seen.len(), 2, "both projects serve again");
    assert_eq!(pool.model_overview()[0].serving, 2);
    // Other models never noticed.
    assert!(pool.pick(&model_request("gemini-2.5-pro")).is_ok());
}

#[test]
fn capacity_cooldowns_end_within_seconds_even_without_a_success() {
    let clock = Arc::new(ManualClock::at(NOW));
    let pool = Pool::with_clock(
        vec![record(1, Some("p"))],
        LimitsTable::default(),
        clock.clone(),
    );
    for _ in 0..20 {
        pool.record_failure(KeyId(1), Some(FLASH), &Failure::Connection);
    }
    // The longest capacity backoff (`CAPACITY_BACKOFF_MAX_MS` of the quota book).
    clock.advance(Duration::from_secs(15));
    assert!(pool.pick(&model_request(FLASH)).is_ok());
    assert!(pool.key(KeyId(1)).unwrap().is_usable());
}

#[test]
fn a_learned_limit_is_what_the_project_is_held_to() {
    let clock = Arc::new(ManualClock::at(NOW));
    let pool = Pool::with_clock(
        vec![record(1, Some("p"))],
        limited(Some(10), None),
        clock.clone(),
    );
    let told = Failure::Quota(QuotaExhausted {
        window: QuotaWindow::Minute,
        retry_after: Some(Duration::from_secs(5)),
        model: Some(FLASH.to_owned()),
        limit: Some(LearnedLimit::RequestsPerMinute(2)),
    });
    let lesson = pool.record_failure(KeyId(1), Some(FLASH), &told);
    assert_eq!(lesson.learned.as_ref().unwrap().limits.rpm, Some(2));
    clock.advance(Duration::from_secs(61));
    assert!(pool.pick(&model_request(FLASH)).is_ok());
    assert!(pool.pick(&model_request(FLASH)).is_ok());
    assert!(
        matches!(
            pool.pick(&model_request(FLASH)).unwrap_err(),
            PickError::Exhausted { daily: false, .. }
        ),
        "two a minute, as the upstream said"
    );
    let learned = pool.learned_limits();
    assert_eq!(learned.len(), 1);
    let state = pool.project_states().remove(0);
    assert_eq!((state.limits.rpm, state.minute_used), (Some(2), 2));
    // Another instance (or a restart) applies it the same way.
    let other = Pool::with_clock(
        vec![record(1, Some("p"))],
        limited(Some(10), None),
        clock.clone(),
    );
    other.apply_learned_limits(&learned[0]);
    assert_eq!(other.project_states()[0].limits.rpm, Some(2));
}

#[test]
fn a_retry_goes_to_another_project_when_one_exists() {
    fastrand::seed(3);
    let pool = Pool::with_clock(
        vec![
            record(1, Some("p")),
            record(2, Some("p")),
            record(3, Some("q")),
        ],
        LimitsTable::default(),
        Arc::new(ManualClock::at(NOW)),
    );
    for _ in 0..10 {
        let tried = [KeyId(1)];
        let retry = pool
            .pick(&PickRequest {
                model: Some(FLASH),
                project: None,
                tried: &tried,
            })
            .unwrap();
        assert_eq!(retry.id(), KeyId(3), "q before p's other key");
    }
    let tried = [KeyId(1), KeyId(3)];
    let last = pool
        .pick(&PickRequest {
            model: Some(FLASH),
            project: None,
            tried: &tried,
        })
        .unwrap();
    assert_eq!(last.id(), KeyId(2), "then the tried project's other key");
    let all = [KeyId(1), KeyId(2), KeyId(3)];
    assert_eq!(
        pool.pick(&PickRequest {
            model: Some(FLASH),
            project: None,
            tried: &all
        })
        .unwrap_err(),
        PickError::AllTried
    );
}

#[test]
fn affinity_picks_stay_in_the_project_and_report_its_exhaustion() {
    let clock = Arc::new(ManualClock::at(NOW));
    let pool = Pool::with_clock(
        vec![record(1, Some("p")), record(2, Some("q"))],
        limited(Some(1), None),
        clock,
    );
    let request = PickRequest {
        model: Some(FLASH),
        project: Some("q"),
        tried: &[],
    };
    assert_eq!(pool.pick(&request).unwrap().id(), KeyId(2));
    assert!(matches!(
        pool.pick(&request).unwrap_err(),
        PickError::Exhausted { .. }
    ));
    assert_eq!(
        pool.pick(&model_request(FLASH)).unwrap().id(),
        KeyId(1),
        "others still serve unbound requests"
    );
}

#[test]
fn day_counts_survive_a_restart() {
    let clock = Arc::new(ManualClock::at(NOW));
    let before = Pool::with_clock(
        vec![record(1, Some("p"))],
        limited(None, Some(5)),
        clock.clone(),
    );
    for _ in 0..4 {
        before.pick(&model_request(FLASH)).unwrap();
    }
    let saved = before.day_counts();
    let after = Pool::with_clock(
        vec![record(1, Some("p"))],
        limited(None, Some(5)),
        clock.clone(),
    );
    for count in &saved {
        after.restore_day_count(count);
    }
    assert!(after.pick(&model_request(FLASH)).is_ok());
    assert!(matches!(
        after.pick(&model_request(FLASH)).unwrap_err(),
        PickError::Exhausted { daily: true, .. }
    ));
    // Yesterday's counts are not restored.
    let stale = DayCount {
        day: saved[0].day - 1,
        ..saved[0].clone()
    };
    let fresh = Pool::with_clock(vec![record(1, Some("p"))], limited(None, Some(5)), clock);
    fresh.restore_day_count(&stale);
    for _ in 0..5 {
        fresh.pick(&model_request(FLASH)).unwrap();
    }
}

#[test]
fn a_huge_pool_mostly_cooling_still_picks_the_ready_keys() {
    let keys: Vec<KeyRecord> = (0..100_000).map(|i| record(i, None)).collect();
    let pool = Pool::with_clock(keys, LimitsTable::default(), Arc::new(ManualClock::at(NOW)));
    let cooling = minute_quota(Some(600), None);
    for id in 0..99_000 {
        pool.record_failure(KeyId(id), Some(FLASH), &cooling);
    }
    for _ in 0..1000 {
        assert!(pool.pick(&model_request(FLASH)).unwrap().id().0 >= 99_000);
    }
}
