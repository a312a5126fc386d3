//! The capacity gate of one model.
//!
//! Capacity failures (an overloaded model, a 429 without quota details) cool the project that
//! met them for a second or a few, doubling while they go on. When every project of the model
//! is cooling for capacity the model does not go dark: one request per [`PROBE_INTERVAL_MS`] is
//! let through as a probe, the rest are answered at once with the upstream's status and a
//! `Retry-After`, and the first success brings every project back.
//!
//! The book of the model keeps each project's cooldown; the gate keeps which of them cool for
//! capacity, and whether the model is in a storm.

use std::sync::Arc;

use crate::maps::FastMap;

/// The first capacity backoff of a project; it doubles with each capacity failure in a row.
const CAPACITY_BACKOFF_FIRST_MS: u64 = 1_000;
/// The longest capacity backoff: overloads pass in seconds, and a project must not sit out a
/// recovered upstream for minutes.
pub(crate) const CAPACITY_BACKOFF_MAX_MS: u64 = 15_000;
/// While every project of a model cools for capacity, one request per this interval goes through.
pub(crate) const PROBE_INTERVAL_MS: u64 = 1_000;

/// What the capacity gate says to a request that found no project open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// No project is cooling for capacity: the gate has nothing to say.
    NotCooling,
    /// This request may go to a capacity-cooled project as the probe of this interval.
    Probe,
    /// Not now: the next probe may go at `until`; the upstream answered `status`.
    Refuse { until: u64, status: u16 },
}

/// The full capacity backoff after `level` capacity failures in a row: a second, doubling with
/// each failure up to [`CAPACITY_BACKOFF_MAX_MS`].
pub(crate) fn backoff_ms(level: u32) -> u64 {
    CAPACITY_BACKOFF_FIRST_MS
        .saturating_mul(1u64 << level.min(8))
        .min(CAPACITY_BACKOFF_MAX_MS)
}

/// The projects of one model cooling for capacity, and the gate over them.
#[derive(Debug)]
pub(crate) struct CapacityGate {
    /// Projects cooling for capacity now, and until when.
    cooled: FastMap<Arc<str>, u64>,
    /// Every project was found cooling for capacity (the gate is closed, probing).
    storm: bool,
    /// When the gate lets the next probe through.
    next_probe_at: u64,
    /// The status of the last capacity failure (what refused requests are answered).
    status: u16,
}

impl Default for CapacityGate {
    fn default() -> Self {
        Self {
            cooled: FastMap::default(),
            storm: false,
            next_probe_at: 0,
            status: 503,
        }
    }
}

impl CapacityGate {
    /// `project` cools for capacity until `until`, after the upstream answered `status`.
    pub fn cooling(&mut self, project: &Arc<str>, until: u64, status: u16) {
        self.cooled.insert(Arc::clone(project), until);
        self.status = status;
    }

    /// `project` no longer cools for capacity.
    pub fn forget(&mut self, project: &Arc<str>) {
        self.cooled.remove(project);
    }

    /// The gate, for a request that found no open project: see the module docs.
    pub fn gate(&mut self, now: u64) -> Gate {
        self.cooled.retain(|_, until| *until > now);
        if self.cooled.is_empty() {
            self.storm = false;
            return Gate::NotCooling;
        }
        self.storm = true;
        if now >= self.next_probe_at {
            self.next_probe_at = now.saturating_add(PROBE_INTERVAL_MS);
            Gate::Probe
        } else {
            Gate::Refuse {
                until: self.next_probe_at,
                status: self.status,
            }
        }
    }

    /// The projects cooling for capacity, soonest back first: where a probe goes.
    pub fn cooled(&self) -> Vec<Arc<str>> {
        let mut projects: Vec<(&Arc<str>, &u64)> = self.cooled.iter().collect();
        projects.sort_by_key(|(_, until)| **until);
        projects.into_iter().map(|(p, _)| Arc::clone(p)).collect()
    }

    /// Whether the gate is closed for capacity now, and when it probes next.
    pub fn storm(&self) -> Option<u64> {
        self.storm.then_some(self.next_probe_at)
    }

    /// Ends a storm after a success: the projects that were cooling for capacity, to bring back
    /// at once (`None` when the model was not in a storm).
    pub fn end_storm(&mut self) -> Option<Vec<Arc<str>>> {
        if !self.storm {
            return None;
        }
        self.storm = false;
        Some(self.cooled.drain().map(|(p, _)| p).collect())
    }
}
