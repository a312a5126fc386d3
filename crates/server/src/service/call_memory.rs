//! The gateway's memory of the tool calls it returned: the thought signature of each and whether
//! its id was the upstream's. Clients that drop `extra_content.google.thought_signature` when they
//! send the conversation back still get a valid Gemini 3 history, because the signature is found
//! here by the tool call id. Entries live 24 hours; the map is bounded.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use translate::common::signatures::{CallMemory, RememberedCall};

/// How long a call is remembered.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// The most calls remembered at once.
const CAPACITY: usize = 200_000;

/// Tool calls by id (sharded map: no global lock on the request path).
#[derive(Debug, Default)]
pub struct CallMemoryStore {
    calls: DashMap<String, (RememberedCall, Instant)>,
}

impl CallMemoryStore {
    /// Remembers calls that carry something worth remembering (a signature or an upstream id).
    pub fn remember(&self, calls: Vec<(String, RememberedCall)>) {
        let now = Instant::now();
        for (id, call) in calls {
            if call.signature.is_some() || call.upstream_id {
                self.calls.insert(id, (call, now));
            }
        }
        if self.calls.len() > CAPACITY {
            self.calls
                .retain(|_, (_, at)| now.duration_since(*at) < TTL);
            if self.calls.len() > CAPACITY {
                // Still full of live entries: forget the older half.
                let mut ages: Vec<Instant> =
                    self.calls.iter().map(|entry| entry.value().1).collect();
                ages.sort_unstable();
                let cutoff = ages[ages.len() / 2];
                self.calls.retain(|_, (_, at)| *at > cutoff);
            }
        }
    }
}

impl CallMemory for CallMemoryStore {
    fn recall(&self, id: &str) -> Option<RememberedCall> {
        let entry = self.calls.get(id)?;
        let (call, at) = entry.value();
        (at.elapsed() < TTL).then(|| call.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_with_signatures_or_upstream_ids_are_remembered() {
        let memory = CallMemoryStore::default();
        let signed = RememberedCall {
            signature: Some("s".into()),
            upstream_id: false,
        };
        let plain = RememberedCall::default();
        memory.remember(vec![("a".into(), signed.clone()), ("b".into(), plain)]);
        assert_eq!(memory.recall("a"), Some(signed));
        assert_eq!(memory.recall("b"), None, "nothing to remember");
    }
}
