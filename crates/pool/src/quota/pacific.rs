//! Gemini's per-day quotas reset at midnight America/Los_Angeles, which moves between UTC-8 and
//! UTC-7 with daylight saving time; a fixed offset is wrong half the year. The time zone
//! database is compiled in (`chrono-tz`), so slim images without `/usr/share/zoneinfo` work.

use chrono::{DateTime, Datelike, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::America::Los_Angeles;

fn pacific(now_ms: u64) -> Option<DateTime<chrono_tz::Tz>> {
    let utc = Utc
        .timestamp_millis_opt(i64::try_from(now_ms).ok()?)
        .single()?;
    Some(utc.with_timezone(&Los_Angeles))
}

/// The Pacific calendar day of `now_ms`, as a day number (days since 0001-01-01).
pub fn pacific_day(now_ms: u64) -> i32 {
    pacific(now_ms).map_or(0, |time| time.date_naive().num_days_from_ce())
}

/// [`pacific_day`] remembered for the day it is: the time zone conversion costs more than the
/// rest of a key pick, and the answer changes once a day. Two atomic words each hold the day and
/// one end of it (start, end); a reader trusts them only when both name the same day, so a
/// reader racing a writer recomputes rather than pairs one day with another's bounds.
#[derive(Debug, Default)]
pub struct PacificDayCache {
    start: std::sync::atomic::AtomicU64,
    end: std::sync::atomic::AtomicU64,
}

/// `(seconds << 32) | day`, the day's bits as stored from an `i32`.
fn pack(ms: u64, day: i32) -> u64 {
    ((ms / 1000) << 32) | u64::from(day.cast_unsigned())
}

fn unpack(word: u64) -> (u64, i32) {
    let low = u32::try_from(word & u64::from(u32::MAX)).unwrap_or_default();
    ((word >> 32) * 1000, low.cast_signed())
}

impl PacificDayCache {
    /// The Pacific day of `now_ms`.
    pub fn day(&self, now_ms: u64) -> i32 {
        use std::sync::atomic::Ordering;
        let (start_ms, day) = unpack(self.start.load(Ordering::Acquire));
        let (end_ms, end_day) = unpack(self.end.load(Ordering::Acquire));
        if day == end_day && start_ms <= now_ms && now_ms < end_ms {
            return day;
        }
        let day = pacific_day(now_ms);
        let end_ms = next_pacific_midnight_ms(now_ms);
        // The start of the day: the midnight that follows the day before's last minute
        // (days are 23 to 25 hours long).
        let start_ms = (now_ms.saturating_sub(25 * 3600 * 1000)..now_ms)
            .step_by(3600 * 1000)
            .map(next_pacific_midnight_ms)
            .find(|midnight| *midnight <= now_ms && pacific_day(*midnight) == day)
            .unwrap_or(now_ms);
        self.start.store(pack(start_ms, day), Ordering::Release);
        self.end.store(pack(end_ms, day), Ordering::Release);
        day
    }
}

/// The next Pacific midnight after `now_ms`, in milliseconds since the epoch.
pub fn next_pacific_midnight_ms(now_ms: u64) -> u64 {
    let fallback = now_ms + 24 * 3600 * 1000;
    let Some(now) = pacific(now_ms) else {
        return fallback;
    };
    let Some(tomorrow) = now.date_naive().checked_add_days(Days::new(1)) else {
        return fallback;
    };
    // Midnight exists and is unambiguous in Los Angeles (the clocks change at 2:00), but take
    // the earliest reading to be safe.
    Los_Angeles
        .from_local_datetime(&tomorrow.and_time(NaiveTime::MIN))
        .earliest()
        .and_then(|midnight| u64::try_from(midnight.timestamp_millis()).ok())
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> u64 {
        u64::try_from(
            DateTime::parse_from_rfc3339(rfc3339)
                .unwrap()
                .timestamp_millis(),
        )
        .unwrap()
    }

    #[test]
    fn the_cached_day_is_the_computed_day_around_midnights_and_clock_jumps() {
        let cache = PacificDayCache::default();
        for at in [
            "2026-03-08T07:59:59Z",
            "2026-03-08T08:00:00Z",
            "2026-03-09T06:59:59Z",
            "2026-03-09T07:00:00Z",
            "2026-11-01T06:59:59Z",
            "2026-11-01T07:00:00Z",
            "2026-11-02T07:59:59Z",
            "2026-11-02T08:00:00Z",
            // The clock jumps back a week, then forward a year.
            "2026-10-25T12:00:00Z",
            "2027-10-25T12:00:00Z",
        ] {
            assert_eq!(cache.day(ms(at)), pacific_day(ms(at)), "{at}");
            assert_eq!(cache.day(ms(at)), pacific_day(ms(at)), "{at}, cached");
        }
    }

    #[test]
    fn midnight_follows_daylight_saving_time() {
        // Winter: UTC-8, so Pacific midnight is 08:00 UTC.
        assert_eq!(
            next_pacific_midnight_ms(ms("2026-01-15T20:00:00Z")),
            ms("2026-01-16T08:00:00Z")
        );
        // Summer: UTC-7, 07:00 UTC.
        assert_eq!(
            next_pacific_midnight_ms(ms("2026-07-15T20:00:00Z")),
            ms("2026-07-16T07:00:00Z")
        );
        // The night the clocks go forward (2026-03-08 02:00 PST → 03:00 PDT): the next midnight
        // is already in PDT, and that day has 23 hours.
        assert_eq!(
            next_pacific_midnight_ms(ms("2026-03-08T09:00:00Z")),
            ms("2026-03-09T07:00:00Z")
        );
        assert_eq!(
            next_pacific_midnight_ms(ms("2026-03-08T07:59:59Z")),
            ms("2026-03-08T08:00:00Z")
        );
        // The night they go back (2026-11-01 02:00 PDT → 01:00 PST): a 25-hour day.
        assert_eq!(
            next_pacific_midnight_ms(ms("2026-11-01T07:00:00Z")),
            ms("2026-11-02T08:00:00Z")
        );
    }

    #[test]
    fn the_pacific_day_changes_at_pacific_midnight_not_utc_midnight() {
        let before = pacific_day(ms("2026-07-16T06:59:59Z"));
        let after = pacific_day(ms("2026-07-16T07:00:00Z"));
        assert_eq!(after, before + 1);
        assert_eq!(
            pacific_day(ms("2026-07-16T00:00:00Z")),
            before,
            "UTC midnight is not a reset"
        );
    }
}
