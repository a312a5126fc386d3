//! What the pool reports of itself, built on demand from the key table and the books (never on
//! the request path): for the operator, and for persistence, with the way persisted figures
//! come back after a restart.

use std::sync::Arc;

use crate::failure::CoolingReason;
use crate::pool::{Pool, lock};
use crate::quota::book::Check;
use crate::quota::pacific::next_pacific_midnight_ms;
use crate::report::{
    Cooldown, DayCount, KeyCensus, LearnedLimits, ModelOverview, ProjectModelState,
};

impl Pool {
    /// How many keys are in which state.
    pub fn census(&self) -> KeyCensus {
        let now = self.clock.now_ms();
        let table = self.table.load();
        let mut census = KeyCensus {
            total: table.keys.len(),
            ..KeyCensus::default()
        };
        for key in &table.keys {
            if !key.is_enabled() {
                census.disabled += 1;
            } else if key.is_out_of_service() {
                census.out_of_service += 1;
            } else if key.checking_until_ms() > now {
                census.checking += 1;
            }
        }
        census
    }

    /// Every project and model the pool has seen, with quota used, limits, learned limits and
    /// cooldowns.
    pub fn project_states(&self) -> Vec<ProjectModelState> {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let mut all = Vec::new();
        for entry in &self.books {
            for view in lock(entry.value()).views(now, today) {
                all.push(ProjectModelState {
                    project: view.project.to_string(),
                    model: entry.key().clone(),
                    minute_used: view.minute_used,
                    day_used: view.day_used,
                    tokens_used: view.tokens_used,
                    limits: view.limits,
                    learned: view.learned,
                    cooling: view
                        .cooling
                        .map(|(until_ms, reason)| Cooldown { until_ms, reason }),
                });
            }
        }
        all.sort_by(|a, b| (&a.project, &a.model).cmp(&(&b.project, &b.model)));
        all
    }

    /// Cooldowns in force (quota and capacity), as `(project, model, cooldown)`.
    pub fn cooldowns(&self) -> Vec<(String, String, Cooldown)> {
        self.project_states()
            .into_iter()
            .filter_map(|state| {
                state
                    .cooling
                    .filter(|c| c.reason != CoolingReason::Health)
                    .map(|cooling| (state.project, state.model, cooling))
            })
            .collect()
    }

    /// For each model with quota, how its projects stand now.
    pub fn model_overview(&self) -> Vec<ModelOverview> {
        let now = self.clock.now_ms();
        let today = self.today.day(now);
        let table = self.table.load();
        let serving_projects: Vec<&Arc<str>> = (0..table.projects.len())
            .filter(|&i| table.keys_of(i).iter().any(|key| key.is_available(now)))
            .map(|i| &table.projects[i].name)
            .collect();
        let in_service = (0..table.projects.len())
            .filter(|&i| table.keys_of(i).iter().any(|key| key.is_usable()))
            .count();
        let mut all = Vec::new();
        for entry in &self.books {
            if entry.key().is_empty() {
                continue;
            }
            let mut book = lock(entry.value());
            let mut overview = ModelOverview {
                model: entry.key().clone(),
                projects: in_service,
                serving: 0,
                cooling_quota: 0,
                cooling_capacity: 0,
                next_probe_ms: None,
            };
            for project in &serving_projects {
                match book.check(project, now, today, || next_pacific_midnight_ms(now)) {
                    Check::Open(_) => overview.serving += 1,
                    Check::Closed {
                        cooling: CoolingReason::QuotaMinute | CoolingReason::QuotaDay,
                        ..
                    } => overview.cooling_quota += 1,
                    Check::Closed {
                        cooling: CoolingReason::Capacity(_),
                        ..
                    } => overview.cooling_capacity += 1,
                    // A lease is fetched when needed: the project can serve.
                    Check::Closed {
                        cooling: CoolingReason::Lease,
                        ..
                    } => overview.serving += 1,
                    Check::Closed { .. } => {}
                }
            }
            overview.next_probe_ms = book.storm();
            all.push(overview);
        }
        all.sort_by(|a, b| a.model.cmp(&b.model));
        all
    }

    /// Learned limits in force, for persistence.
    pub fn learned_limits(&self) -> Vec<LearnedLimits> {
        let now = self.clock.now_ms();
        let mut all = Vec::new();
        for entry in &self.books {
            for (project, limits, at_ms) in lock(entry.value()).learned(now) {
                all.push(LearnedLimits {
                    project: project.to_string(),
                    model: entry.key().clone(),
                    limits,
                    at_ms,
                });
            }
        }
        all
    }

    /// Applies a limit learned earlier (after a restart) or by another instance.
    pub fn apply_learned_limits(&self, learned: &LearnedLimits) {
        let today = self.today.day(learned.at_ms);
        let model = (!learned.model.is_empty()).then_some(learned.model.as_str());
        let project: Arc<str> = learned.project.as_str().into();
        lock(&self.book(model)).learn_limits(&project, learned.limits, learned.at_ms, today);
    }

    /// Today's request counts per project and model.
    pub fn day_counts(&self) -> Vec<DayCount> {
        let today = self.today.day(self.clock.now_ms());
        let mut counts = Vec::new();
        for entry in &self.books {
            for (project, count) in lock(entry.value()).day_counts(today) {
                counts.push(DayCount {
                    project: project.to_string(),
                    model: entry.key().clone(),
                    day: today,
                    count,
                });
            }
        }
        counts
    }

    /// Restores a count saved before a restart (ignored unless it is for today).
    pub fn restore_day_count(&self, count: &DayCount) {
        if count.day != self.today.day(self.clock.now_ms()) {
            return;
        }
        let model = (!count.model.is_empty()).then_some(count.model.as_str());
        let project: Arc<str> = count.project.as_str().into();
        lock(&self.book(model)).restore_day_count(&project, count.day, count.count);
    }
}
