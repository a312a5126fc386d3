//! The admin login under attack: parallel guesses from one address get at most the allowed
//! number of password verdicts, failures back off doubling per address and per user name, the
//! argon2 work is bounded (the real binary's peak memory stays small under 200 parallel logins),
//! and the real admin always gets back in once the wait is over.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{Harness, Setup};
use futures_util::future::join_all;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";
const JWT_SECRET: &str = "0123456789abcdef0123456789abcdef-test";
/// Failed logins an address (or a user name) may have before the backoff starts.
const FREE_FAILURES: usize = 5;

async fn gateway() -> Harness {
    let mut setup = Setup::with_keys(&[("AIzaSyThrottleKey000000000000000000000", "alpha")]);
    setup.env.push(("ADMIN_PASSWORD", PASSWORD.to_owned()));
    setup.env.push(("JWT_SECRET", JWT_SECRET.to_owned()));
    Harness::start(setup).await
}

/// A client whose connections leave from `address` (any 127.x.y.z is the loopback on Linux), so
/// that one test can log in from many addresses.
fn client_from(address: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(address))
        .build()
        .unwrap()
}

/// What one login attempt got.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `Retry-After` in seconds, on a 429.
    retry_after: Option<u64>,
}

async fn attempt(http: &reqwest::Client, base: &str, username: &str, password: &str) -> Answer {
    let response = http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let status = response.status().as_u16();
    if status == 429 {
        assert!(retry_after.is_some(), "a 429 without Retry-After");
    }
    Answer {
        status,
        retry_after,
    }
}

/// Tries the right password, waiting each `Retry-After`, until it logs in; returns how long that
/// took. Panics when it takes longer than `limit`.
async fn log_in_after_the_wait(http: &reqwest::Client, base: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answer = attempt(http, base, "admin", PASSWORD).await;
        if answer.status == 200 {
            return started.elapsed();
        }
        assert_eq!(answer.status, 429, "the right password was refused");
        assert!(
            started.elapsed() < limit,
            "still refused after {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(answer.retry_after.unwrap())).await;
    }
}

fn count(answers: &[Answer], status: u16) -> usize {
    answers.iter().filter(|a| a.status == status).count()
}

#[tokio::test]
async fn parallel_wrong_passwords_from_one_address_get_at_most_five_verdicts() {
    let gw = gateway().await;
    let base = gw.url("");
    let answers = join_all((0..64).map(|_| attempt(&gw.http, &base, "admin", "wrong"))).await;
    let (checked, refused) = (count(&answers, 401), count(&answers, 429));
    eprintln!("64 parallel wrong passwords: {checked} checked (401), {refused} refused (429)");
    assert_eq!(checked + refused, 64, "{answers:?}");
    assert!(
        checked <= FREE_FAILURES,
        "{checked} of 64 parallel guesses got a password verdict"
    );
    // The real admin is not locked out: once the wait is over, the right password works.
    let waited = log_in_after_the_wait(&gw.http, &base, Duration::from_secs(20)).await;
    eprintln!("the right password logged in after {waited:?}");
}

#[tokio::test]
async fn failures_back_off_doubling_and_a_success_resets_the_count() {
    let gw = gateway().await;
    let base = gw.url("");
    for n in 1..=FREE_FAILURES {
        assert_eq!(
            attempt(&gw.http, &base, "admin", "wrong").await.status,
            401,
            "failure {n}"
        );
    }
    // The fifth failure started a wait of one second.
    let refused = attempt(&gw.http, &base, "admin", PASSWORD).await;
    assert_eq!((refused.status, refused.retry_after), (429, Some(1)));
    // Refused attempts are not failures: they do not lengthen the wait.
    for _ in 0..10 {
        assert_eq!(attempt(&gw.http, &base, "admin", "wrong").await.status, 429);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(attempt(&gw.http, &base, "admin", "wrong").await.status, 401);
    // The sixth failure doubled it.
    let refused = attempt(&gw.http, &base, "admin", "wrong").await;
    assert_eq!((refused.status, refused.retry_after), (429, Some(2)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        attempt(&gw.http, &base, "admin", PASSWORD).await.status,
        200
    );
    // A success starts the count again: the next failure is answered, not throttled.
    assert_eq!(attempt(&gw.http, &base, "admin", "wrong").await.status, 401);
    assert_eq!(
        attempt(&gw.http, &base, "admin", PASSWORD).await.status,
        200
    );
}

#[tokio::test]
async fn the_user_name_backs_off_across_addresses_but_spares_the_admins_own_address() {
    let gw = gateway().await;
    let base = gw.url("");
    let admin_home = client_from(Ipv4Addr::new(127, 0, 3, 1));
    assert_eq!(
        attempt(&admin_home, &base, "admin", PASSWORD).await.status,
        200
    );

    // Five addresses, one guess each: the sixth address is refused because of the user name.
    for host in 1..=5 {
        let guesser = client_from(Ipv4Addr::new(127, 0, 4, host));
        assert_eq!(attempt(&guesser, &base, "admin", "wrong").await.status, 401);
    }
    let fresh = client_from(Ipv4Addr::new(127, 0, 4, 6));
    let refused = attempt(&fresh, &base, "admin", "wrong").await;
    assert_eq!((refused.status, refused.retry_after), (429, Some(1)));
    // Another user name from that address is not held back by the admin's backoff.
    assert_eq!(attempt(&fresh, &base, "root", "wrong").await.status, 401);

    // The address the admin logged in from before gets in at once.
    assert_eq!(
        attempt(&admin_home, &base, "admin", PASSWORD).await.status,
        200
    );

    // From a new address, the admin waits out the backoff at most.
    for host in 11..=16 {
        let guesser = client_from(Ipv4Addr::new(127, 0, 4, host));
        attempt(&guesser, &base, "admin", "wrong").await;
    }
    let travelling = client_from(Ipv4Addr::new(127, 0, 5, 1));
    let waited = log_in_after_the_wait(&travelling, &base, Duration::from_secs(10)).await;
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
}

/// Reads a `/proc/<pid>/status` field in kB (`VmRSS`, `VmHWM`).
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .parse()
        .unwrap()
}

/// The real binary under 200 parallel logins, each from its own address with its own user name,
/// so that no throttle applies and only the bound on concurrent argon2 work stands between the
/// burst and the memory (each verification holds about 19 MiB).
#[tokio::test]
async fn two_hundred_parallel_logins_keep_the_binary_under_300_mib() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = common::spawn_binary(
        dir.path(),
        &[
            ("ADMIN_PASSWORD", PASSWORD.to_owned()),
            ("JWT_SECRET", JWT_SECRET.to_owned()),
        ],
    )
    .await;
    let pid = child.id().unwrap();
    let idle_kib = memory_kib(pid, "VmHWM");

    let clients: Vec<reqwest::Client> = (0..200u8)
        .map(|i| client_from(Ipv4Addr::new(127, 0, 10, i + 1)))
        .collect();
    let started = Instant::now();
    let answers = join_all(
        clients
            .iter()
            .enumerate()
            .map(|(i, http)| attempt_owned(http, &base, format!("intruder-{i}"))),
    )
    .await;
    let burst_time = started.elapsed();
    let peak_kib = memory_kib(pid, "VmHWM");
    let (checked, refused) = (count(&answers, 401), count(&answers, 429));
    eprintln!(
        "200 parallel logins from 200 addresses: {checked} checked, {refused} refused in {burst_time:?}; \
         VmHWM {} MiB idle, {} MiB after",
        idle_kib / 1024,
        peak_kib / 1024
    );
    assert_eq!(checked + refused, 200, "{answers:?}");
    assert!(peak_kib < 300 * 1024, "peak memory {} MiB", peak_kib / 1024);

    // And from one address: at most the allowed number get a verdict.
    let one = reqwest::Client::new();
    let answers = join_all((0..200).map(|_| attempt(&one, &base, "admin", "wrong"))).await;
    let checked = count(&answers, 401);
    eprintln!(
        "200 parallel logins from one address: {checked} checked, {} refused",
        count(&answers, 429)
    );
    assert!(checked <= FREE_FAILURES, "{checked} checked");

    // The admin, from an address of its own, still gets in.
    let admin = client_from(Ipv4Addr::new(127, 0, 11, 1));
    log_in_after_the_wait(&admin, &base, Duration::from_secs(20)).await;
    assert!(memory_kib(pid, "VmHWM") < 300 * 1024);
}

async fn attempt_owned(http: &reqwest::Client, base: &str, username: String) -> Answer {
    attempt(http, base, &username, "wrong").await
}
