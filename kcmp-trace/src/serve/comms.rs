//! Per-comm call counters for `/metrics`: a bounded top-K of the busiest comms plus an
//! `other` series, fed from the per-process totals.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use kcmp_trace_common::json::readout::ProcessRow;

/// Label value of the series that sums every comm without its own.
pub const OTHER_COMM: &str = "other";

/// Calls and errors of one comm series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommCounts {
    pub calls: u64,
    pub errors: u64,
}

/// Per-comm counters as a bounded top-K plus an `other` series.
///
/// Userspace owns these counters and feeds them per-process deltas, so they only grow: a
/// comm admitted to the top-K starts from zero (its earlier calls stay in `other`), and an
/// evicted comm's calls move to `other`, as do those of a comm that made no call for `ttl`
/// (its series ages out). The sum over all series always equals the calls the process
/// table saw.
#[derive(Debug)]
pub struct CommTable {
    k: usize,
    ttl: Duration,
    /// Per tgid: (calls, errors) at the previous update.
    seen: HashMap<u32, (u64, u64)>,
    /// Calls per second, smoothed over about a minute, of every comm recently active.
    rate: HashMap<String, f64>,
    selected: Vec<Selected>,
    other: CommCounts,
}

#[derive(Debug)]
struct Selected {
    comm: String,
    counts: CommCounts,
    since: Instant,
    last_call: Instant,
}

/// Smoothing time constant of the comm ranking.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// A comm keeps its series at least this long, so series do not flap.
const MIN_TENURE: Duration = Duration::from_secs(60);
/// A challenger must be this many times busier than the comm it replaces.
const HYSTERESIS: f64 = 2.0;

impl CommTable {
    pub fn new(k: usize, ttl: Duration) -> CommTable {
        CommTable {
            k,
            ttl,
            seen: HashMap::new(),
            rate: HashMap::new(),
            selected: Vec::new(),
            other: CommCounts::default(),
        }
    }

    /// Takes in the cumulative per-process rows read `dt` after the previous ones.
    pub fn update(&mut self, rows: &[ProcessRow], dt: Duration, now: Instant) {
        let mut deltas: HashMap<&str, (u64, u64)> = HashMap::new();
        let mut seen = HashMap::with_capacity(rows.len());
        for row in rows {
            let (calls, errors) = self.seen.get(&row.tgid).copied().unwrap_or((0, 0));
            let d = (
                row.calls.saturating_sub(calls),
                row.errors.saturating_sub(errors),
            );
            if d != (0, 0) {
                let e = deltas.entry(row.comm.as_str()).or_default();
                e.0 += d.0;
                e.1 += d.1;
            }
            seen.insert(row.tgid, (row.calls, row.errors));
        }
        self.seen = seen;

        let secs = dt.as_secs_f64().max(1e-3);
        let decay = (-secs / RATE_WINDOW.as_secs_f64()).exp();
        for r in self.rate.values_mut() {
            *r *= decay;
        }
        for (comm, (calls, _)) in &deltas {
            *self.rate.entry((*comm).to_owned()).or_default() +=
                (1.0 - decay) * *calls as f64 / secs;
        }
        self.age_out(now);
        let selected = &self.selected;
        self.rate
            .retain(|c, r| *r > 1e-3 || selected.iter().any(|s| &s.comm == c));

        self.rerank(now);

        for (comm, (calls, errors)) in deltas {
            let counts = match self.selected.iter_mut().find(|s| s.comm == comm) {
                Some(s) => {
                    s.last_call = now;
                    &mut s.counts
                }
                None => &mut self.other,
            };
            counts.calls += calls;
            counts.errors += errors;
        }
    }

    /// Series of comms that made no call for `ttl` go; their calls move to `other`.
    fn age_out(&mut self, now: Instant) {
        let ttl = self.ttl;
        let (stay, gone): (Vec<Selected>, Vec<Selected>) = std::mem::take(&mut self.selected)
            .into_iter()
            .partition(|s| now.duration_since(s.last_call) < ttl);
        for s in gone {
            self.rate.remove(&s.comm);
            self.other.calls += s.counts.calls;
            self.other.errors += s.counts.errors;
        }
        self.selected = stay;
    }

    fn rate_of(&self, comm: &str) -> f64 {
        self.rate.get(comm).copied().unwrap_or(0.0)
    }

    fn rerank(&mut self, now: Instant) {
        let mut challengers: Vec<(&String, f64)> = self
            .rate
            .iter()
            // A process named like the catch-all series stays in it, and so does an empty
            // comm (an empty label value is no label at all to Prometheus).
            .filter(|(c, r)| {
                **r > 0.0
                    && c.as_str() != OTHER_COMM
                    && !c.is_empty()
                    && !self.selected.iter().any(|s| &s.comm == *c)
            })
            .map(|(c, r)| (c, *r))
            .collect();
        challengers.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let challengers: Vec<(String, f64)> = challengers
            .into_iter()
            .take(self.k)
            .map(|(c, r)| (c.clone(), r))
            .collect();
        for (comm, rate) in challengers {
            if self.selected.len() < self.k {
                self.admit(comm, now);
                continue;
            }
            let weakest = self
                .selected
                .iter()
                .enumerate()
                .filter(|(_, s)| now.duration_since(s.since) >= MIN_TENURE)
                .min_by(|a, b| self.rate_of(&a.1.comm).total_cmp(&self.rate_of(&b.1.comm)))
                .map(|(i, s)| (i, self.rate_of(&s.comm)));
            match weakest {
                Some((i, weak)) if rate > HYSTERESIS * weak => {
                    let evicted = self.selected.swap_remove(i);
                    self.other.calls += evicted.counts.calls;
                    self.other.errors += evicted.counts.errors;
                    self.admit(comm, now);
                }
                // Challengers come busiest first: if this one cannot get in, none can.
                _ => break,
            }
        }
    }

    fn admit(&mut self, comm: String, now: Instant) {
        self.selected.push(Selected {
            comm,
            counts: CommCounts::default(),
            since: now,
            last_call: now,
        });
    }

    /// The series to show: selected comms (busiest first) and `other`.
    pub fn series(&self) -> Vec<(String, CommCounts)> {
        let mut rows: Vec<(String, CommCounts)> = self
            .selected
            .iter()
            .map(|s| (s.comm.clone(), s.counts.clone()))
            .collect();
        rows.sort_by(|a, b| b.1.calls.cmp(&a.1.calls).then(a.0.cmp(&b.0)));
        rows.push((OTHER_COMM.to_owned(), self.other.clone()));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tgid: u32, comm: &str, calls: u64) -> ProcessRow {
        ProcessRow {
            tgid,
            comm: comm.into(),
            calls,
            errors: calls / 10,
            latency_sum_ns: 0,
        }
    }

    fn total(t: &CommTable) -> u64 {
        t.series().iter().map(|(_, n)| n.calls).sum()
    }

    #[test]
    fn comm_series_are_bounded_monotonic_and_sum_up() {
        let start = Instant::now();
        let step = Duration::from_secs(1);
        let mut t = CommTable::new(2, Duration::from_secs(3600));
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut check = |t: &CommTable, want_total: u64| {
            let series = t.series();
            assert!(series.len() <= 3);
            assert_eq!(total(t), want_total);
            for (comm, n) in &series {
                // A series that stays never goes backwards.
                if let Some(&before) = last.get(comm) {
                    assert!(n.calls >= before, "{comm}");
                }
            }
            last = series.into_iter().map(|(c, n)| (c, n.calls)).collect();
        };
        // a and b take the two slots; c is busier but new, so it waits out their tenure.
        t.update(&[row(1, "a", 10), row(2, "b", 20)], step, start);
        check(&t, 30);
        t.update(
            &[row(1, "a", 11), row(2, "b", 21), row(3, "c", 1000)],
            step,
            start + step,
        );
        check(&t, 1032);
        assert!(t.series().iter().all(|(c, _)| c != "c"));
        // After the tenure, c replaces the quietest one; a's calls move to other.
        let later = start + MIN_TENURE + step * 2;
        t.update(
            &[row(1, "a", 11), row(2, "b", 500), row(3, "c", 5000)],
            step,
            later,
        );
        check(&t, 5511);
        let names: Vec<String> = t.series().into_iter().map(|(c, _)| c).collect();
        assert!(
            names.contains(&"c".to_string()) && !names.contains(&"a".to_string()),
            "{names:?}"
        );
        // A process that vanished leaves its counts where they are.
        t.update(&[row(3, "c", 5001)], step, later + step);
        check(&t, 5512);
        // Comms named "other" never get a series of their own.
        let mut t = CommTable::new(2, Duration::from_secs(3600));
        t.update(&[row(9, OTHER_COMM, 3)], step, start);
        assert_eq!(
            t.series(),
            vec![(
                OTHER_COMM.to_string(),
                CommCounts {
                    calls: 3,
                    errors: 0
                }
            )]
        );
    }

    #[test]
    fn quiet_comms_age_out_into_other() {
        let start = Instant::now();
        let step = Duration::from_secs(1);
        let ttl = Duration::from_secs(600);
        let mut t = CommTable::new(3, ttl);
        t.update(&[row(1, "busy", 10), row(2, "quiet", 5)], step, start);
        let names =
            |t: &CommTable| -> Vec<String> { t.series().into_iter().map(|(c, _)| c).collect() };
        assert_eq!(names(&t), ["busy", "quiet", OTHER_COMM]);
        // busy keeps calling; quiet makes no call for the ttl.
        let mut calls = 10;
        let mut at = start;
        while at < start + ttl + step * 2 {
            at += step * 30;
            calls += 1;
            t.update(&[row(1, "busy", calls), row(2, "quiet", 5)], step * 30, at);
        }
        assert_eq!(names(&t), ["busy", OTHER_COMM]);
        assert_eq!(total(&t), calls + 5);
        let other = t.series().pop().expect("other").1;
        assert_eq!(other.calls, 5);
        // Back in business, it may earn a series again.
        t.update(
            &[row(1, "busy", calls), row(2, "quiet", 500)],
            step,
            at + step,
        );
        assert!(names(&t).contains(&"quiet".to_string()));
    }
}
