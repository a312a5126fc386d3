//! Cost of one pick at 10, 1k and 100k keys, with 0 %, 50 % and 99 % of the projects cooling
//! down for the model (each key its own project, the worst case for the scheduler), and the cost
//! of loading 100k keys. Run: `cargo bench -p pool --bench pick`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pool::{
    Failure, KeyId, KeyRecord, LimitsTable, ManualClock, PickRequest, Pool, QuotaExhausted,
    QuotaWindow,
};
use secrecy::SecretString;

fn records(count: i64) -> Vec<KeyRecord> {
    (0..count)
        .map(|i| KeyRecord {
            id: KeyId(i),
            secret: SecretString::from(format!("AIzaSyBench{i:028}")),
            project: None,
            enabled: true,
            out_of_service: None,
        })
        .collect()
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for keys in [10i64, 1_000, 100_000] {
        for cooling_percent in [0i64, 50, 99] {
            let clock = Arc::new(ManualClock::at(1_800_000_000_000));
            let pool = Pool::with_clock(records(keys), LimitsTable::default(), clock);
            let cooling = keys * cooling_percent / 100;
            for id in 0..cooling {
                pool.record_failure(
                    KeyId(id),
                    Some("gemini-2.5-flash"),
                    &Failure::Quota(QuotaExhausted {
                        window: QuotaWindow::Minute,
                        retry_after: Some(Duration::from_secs(3600)),
                        model: None,
                        limit: None,
                    }),
                );
            }
            // One pick moves the cooled projects out of the available set.
            pool.pick(&PickRequest {
                model: Some("gemini-2.5-flash"),
                ..PickRequest::default()
            })
            .unwrap();
            group.bench_with_input(
                BenchmarkId::new(format!("{cooling_percent}%_cooling"), keys),
                &pool,
                |b, pool| {
                    b.iter(|| {
                        black_box(
                            pool.pick(&PickRequest {
                                model: Some("gemini-2.5-flash"),
                                ..PickRequest::default()
                            })
                            .unwrap(),
                        );
                    });
                },
            );
        }
    }
    group.finish();
    c.bench_function("load_100k_keys", |b| {
        b.iter_with_large_drop(|| Pool::new(records(100_000)));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(30);
    targets = bench_pick
}
criterion_main!(benches);
