//! The dashboard's overview, answered from memory alone (it is asked for every second):
//! cluster, executors, open and recently closed sessions, and the tasks/s history.

use std::time::Instant;

use flame_core::ids::SessionId;
use flame_core::model::now_ms;
use flame_core::proto;

use super::actor::Actor;
use super::apply::open_info;

/// Closed sessions the overview keeps showing.
const CLOSED_KEPT: usize = 20;

/// A snapshot of what the dashboard's overview page and `/metrics` show.
#[derive(Clone, Debug)]
pub struct Overview {
    pub cluster: proto::ClusterInfo,
    pub executors: Vec<proto::ExecutorInfo>,
    /// Open sessions, newest first, then up to 20 recently closed ones.
    pub sessions: Vec<proto::SessionInfo>,
    /// Tasks finished in each of the last 300 whole seconds, oldest first.
    pub tasks_per_second: Vec<u32>,
    pub now_ms: i64,
    /// Objects and bytes per connected node (#12).
    pub objects: Vec<super::NodeObjects>,
}

impl Actor {
    pub(super) fn overview(&mut self, now: Instant) -> Overview {
        let executors = self.executor_infos();
        let mut sessions: Vec<proto::SessionInfo> = self.sched.sessions().map(open_info).collect();
        sessions.sort_unstable_by_key(|s| std::cmp::Reverse(s.id));
        sessions.extend(self.closed_recently.iter().cloned());
        let elapsed = now.saturating_duration_since(self.started);
        Overview {
            cluster: self.cluster_info(),
            executors,
            sessions,
            tasks_per_second: self.throughput.history(elapsed),
            now_ms: now_ms(),
            objects: self.node_objects(),
        }
    }

    /// Keep what a session looks like as it closes: closing cancels whatever is unfinished.
    pub(super) fn remember_closed(&mut self, id: SessionId) {
        let Some(s) = self.sched.session(id) else {
            return;
        };
        let mut info = open_info(s);
        info.cancelled += info.pending + info.running;
        info.pending = 0;
        info.running = 0;
        info.executors = 0;
        info.state = proto::SessionState::SessionClosed as i32;
        self.closed_recently.push_front(info);
        self.closed_recently.truncate(CLOSED_KEPT);
    }
}
