//! Any bytes as an upstream error answer, under any status: reading it (its `RetryInfo`,
//! `QuotaFailure` and key problem) and mapping it to OpenAI's shape never panic, and the
//! `Retry-After` it leads to stays within an hour whatever delay the upstream wrote.
#![no_main]

use libfuzzer_sys::fuzz_target;
use translate::openai::errors::from_upstream;
use translate::gemini::UpstreamError;

fuzz_target!(|data: &[u8]| {
    let Some((&status, body)) = data.split_first() else {
        return;
    };
    let status = 400 + u16::from(status) % 200;
    let error = UpstreamError::parse(body);
    let _ = error.key_problem();
    let _ = error.is_daily_quota();
    let mapped = from_upstream(status, body, "gemini-2.5-flash");
    assert!(mapped.retry_after.is_none_or(|seconds| seconds <= 3600));
    let _ = serde_json::to_string(&mapped.body());
});
