//! The daemon's Prometheus metrics, and the tasks/s history behind the dashboard's chart.
//!
//! Each daemon owns its own recorder (never the process-global one): an embedded cluster, or
//! several in one test process, must not mix their numbers. Handles are registered once; the
//! hot path then costs an atomic add per batch of tasks (counters are bumped with the batch's
//! size, not per task) and a histogram sample per finished task.
//!
//! Gauges that describe current state (queue depth per session, executors by state) are not
//! kept up to date on the hot path at all: `/metrics` asks the session manager for a snapshot
//! and [`Metrics::render`] writes them from it, so no series outlives its session.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram, Key, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds of per-second completion counts kept for the dashboard's chart.
pub const HISTORY_SECS: usize = 300;

/// Handles to every series the daemon updates as it runs. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    pub submitted: Counter,
    pub succeeded: Counter,
    pub failed: Counter,
    pub cancelled: Counter,
    pub retried: Counter,
    /// How long tasks ran, as their executors measured it, seconds.
    pub task_run: Histogram,
    /// One pass of the scheduler over its queues, seconds.
    pub schedule: Histogram,
    /// One group commit of the storage thread, seconds.
    pub storage_commit: Histogram,
    /// Objects on nodes (#12): the nodes' counters summed (each node's heartbeat adds what
    /// its own counter grew by), and the head's lineage re-runs.
    pub object_transfers: Counter,
    pub object_transferred_bytes: Counter,
    pub object_spilled_bytes: Counter,
    pub object_reconstructions: Counter,
}

const RUN_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];
const FAST_BUCKETS: &[f64] = &[
    0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0,
];

impl Metrics {
    pub fn new() -> Arc<Self> {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("flame_task_run_seconds".into()), RUN_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), FAST_BUCKETS)
            })
            .expect("bucket lists are non-empty constants");
        let recorder = builder.build_recorder();
        let meta = Metadata::new("flame_daemon", Level::INFO, Some(module_path!()));
        let counter = |name: &'static str, help: &'static str| {
            recorder.describe_counter(name.into(), None, help.into());
            recorder.register_counter(&Key::from_static_name(name), &meta)
        };
        let histogram = |name: &'static str, help: &'static str| {
            recorder.describe_histogram(name.into(), Some(metrics::Unit::Seconds), help.into());
            recorder.register_histogram(&Key::from_static_name(name), &meta)
        };
        Arc::new(Self {
            handle: recorder.handle(),
            submitted: counter(
                "flame_tasks_submitted_total",
                "Tasks accepted by the daemon",
            ),
            succeeded: counter("flame_tasks_succeeded_total", "Tasks that succeeded"),
            failed: counter("flame_tasks_failed_total", "Tasks that failed for good"),
            cancelled: counter("flame_tasks_cancelled_total", "Tasks cancelled"),
            retried: counter(
                "flame_tasks_retried_total",
                "Attempts lost and queued again (executor lost, retryable error)",
            ),
            task_run: histogram(
                "flame_task_run_seconds",
                "Task run time, measured by the executor",
            ),
            schedule: histogram("flame_scheduler_decision_seconds", "One scheduling pass"),
            storage_commit: histogram("flame_storage_commit_seconds", "One storage group commit"),
            object_transfers: counter(
                "flame_object_transfers_total",
                "Objects fetched by a node from another node",
            ),
            object_transferred_bytes: counter(
                "flame_object_transferred_bytes_total",
                "Bytes of objects fetched by nodes from other nodes",
            ),
            object_spilled_bytes: counter(
                "flame_object_spilled_bytes_total",
                "Bytes of objects spilled to disk by nodes over budget",
            ),
            object_reconstructions: counter(
                "flame_object_reconstructions_total",
                "Tasks run again to rebuild a result object lost with its node",
            ),
        })
    }

    /// The Prometheus text: recorded series, then the state gauges from `snap`.
    pub fn render(&self, snap: &StateGauges) -> String {
        let mut out = self.handle.render();
        let mut gauge = |name: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        let plain = |v: u64| vec![(String::new(), v)];
        gauge("flame_nodes", "Nodes connected", &plain(snap.nodes));
        gauge(
            "flame_sessions_open",
            "Open sessions",
            &plain(snap.sessions_open),
        );
        let by_state: Vec<_> = snap
            .executors
            .iter()
            .map(|(s, n)| (format!("{{state=\"{s}\"}}"), *n))
            .collect();
        gauge("flame_executors", "Executors by state", &by_state);
        let per = |pick: fn(&SessionGauge) -> u64| -> Vec<(String, u64)> {
            snap.sessions
                .iter()
                .map(|s| (format!("{{session=\"{}\"}}", s.id), pick(s)))
                .collect()
        };
        gauge(
            "flame_session_queue_depth",
            "Pending tasks per open session",
            &per(|s| s.pending),
        );
        gauge(
            "flame_session_running",
            "Running tasks per open session",
            &per(|s| s.running),
        );
        let stores: Vec<_> = snap
            .object_stores
            .iter()
            .map(|(node, bytes)| (format!("{{node=\"{node}\"}}"), *bytes))
            .collect();
        gauge(
            "flame_object_store_bytes",
            "Bytes of objects in each node's store (memory and spilled), as last reported",
            &stores,
        );
        out
    }
}

/// Current state, as `/metrics` renders it (see [`Metrics::render`]).
#[derive(Clone, Debug, Default)]
pub struct StateGauges {
    pub nodes: u64,
    pub sessions_open: u64,
    /// (state, count) for starting, idle, binding, bound, unbinding.
    pub executors: Vec<(&'static str, u64)>,
    pub sessions: Vec<SessionGauge>,
    /// (node name, bytes in its object store).
    pub object_stores: Vec<(String, u64)>,
}

#[derive(Clone, Debug)]
pub struct SessionGauge {
    pub id: u64,
    pub pending: u64,
    pub running: u64,
}

/// Tasks finished per second over the last [`HISTORY_SECS`] seconds: a ring of counters
/// indexed by the second, so recording is one add and reading copies 300 integers.
#[derive(Debug)]
pub struct Throughput {
    counts: [u32; HISTORY_SECS],
    /// The second (since the daemon started) that `counts[second % HISTORY_SECS]` holds.
    second: u64,
}

impl Default for Throughput {
    fn default() -> Self {
        Self {
            counts: [0; HISTORY_SECS],
            second: 0,
        }
    }
}

impl Throughput {
    /// Count `n` tasks finished at `elapsed` since the daemon started.
    pub fn record(&mut self, elapsed: Duration, n: u32) {
        self.advance(elapsed.as_secs());
        let slot = &mut self.counts[(self.second as usize) % HISTORY_SECS];
        *slot = slot.saturating_add(n);
    }

    /// Counts of the last [`HISTORY_SECS`] whole seconds before `elapsed`, oldest first (the
    /// second in progress is left out: it would always look like a drop).
    pub fn history(&mut self, elapsed: Duration) -> Vec<u32> {
        let now = elapsed.as_secs();
        self.advance(now);
        (0..HISTORY_SECS as u64)
            .map(|back| now.checked_sub(HISTORY_SECS as u64 - back))
            .map(|s| s.map_or(0, |s| self.counts[(s as usize) % HISTORY_SECS]))
            .collect()
    }

    /// Move to second `now`, zeroing the slots of the seconds skipped in between.
    fn advance(&mut self, now: u64) {
        if now <= self.second {
            return;
        }
        let skipped = (now - self.second).min(HISTORY_SECS as u64);
        for k in 1..=skipped {
            self.counts[((self.second + k) as usize) % HISTORY_SECS] = 0;
        }
        self.second = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_keeps_per_second_counts_and_forgets_old_ones() {
        let mut t = Throughput::default();
        t.record(Duration::from_millis(100), 5);
        t.record(Duration::from_millis(900), 2);
        t.record(Duration::from_millis(2500), 4);
        let h = t.history(Duration::from_millis(3100));
        assert_eq!(h.len(), HISTORY_SECS);
        assert_eq!(&h[HISTORY_SECS - 3..], &[7, 0, 4]);
        // Long after, everything has rolled out; a new count lands in its own second.
        t.record(Duration::from_secs(1000), 1);
        let h = t.history(Duration::from_secs(1001));
        assert_eq!(h.iter().sum::<u32>(), 1);
        assert_eq!(h[HISTORY_SECS - 1], 1);
    }

    #[test]
    fn render_has_counters_histograms_and_state_gauges() {
        let m = Metrics::new();
        m.submitted.increment(3);
        m.task_run.record(0.02);
        let snap = StateGauges {
            nodes: 1,
            sessions_open: 1,
            executors: vec![("bound", 2)],
            sessions: vec![SessionGauge {
                id: 7,
                pending: 10,
                running: 2,
            }],
            object_stores: vec![("n1".into(), 4096)],
        };
        let text = m.render(&snap);
        assert!(text.contains("flame_tasks_submitted_total 3"), "{text}");
        assert!(
            text.contains("flame_task_run_seconds_bucket{le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flame_executors{state=\"bound\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("flame_session_queue_depth{session=\"7\"} 10"),
            "{text}"
        );
        assert!(
            text.contains("flame_object_store_bytes{node=\"n1\"} 4096"),
            "{text}"
        );
        // A second daemon's metrics are its own.
        assert!(!Metrics::new().render(&snap).contains("submitted_total 3"));
    }
}
