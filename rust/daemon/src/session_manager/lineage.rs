//! Lineage on the head (#12): a task's result object left without a holder is rebuilt by
//! running its task again, once per loss. The task's input is read back from storage (the
//! scheduler forgets finished tasks); a rebuild that cannot happen (session closed, task
//! gone or failed) turns the object into a lost one with the reason.

use bytes::Bytes;

use flame_core::ids::{ExecutorId, ObjectId, SessionId, TaskId, TaskKey};
use flame_core::proto;

use super::actor::Actor;
use super::objects::ObjectEvent;
use super::Event;

impl Actor {
    /// Record the result objects in `results` (a task's large result stays on its
    /// executor's node) and the refs each result holds, and settle the rebuilds that ran without making theirs.
    pub(super) fn result_objects(&mut self, executor: ExecutorId, results: &[proto::TaskResult]) {
        let node = self.sched.executor(executor).map(|e| e.node);
        for r in results {
            let key = TaskKey {
                session: SessionId(r.session_id),
                task: TaskId(r.task_id),
            };
            let expected = ObjectId::result_of(key.task);
            if r.ok && !r.contains.is_empty() {
                // Refs inside the result live as long as it does: its container is the
                // result's object id (stored or inline), which its client deletes with it.
                let contains: Vec<ObjectId> = r.contains.iter().map(|&id| ObjectId(id)).collect();
                self.object_dir.dir.contains(expected, &contains);
            }
            match (&r.output_object, node) {
                (Some(o), Some(node)) if r.ok => {
                    if o.object_id != expected.0 {
                        tracing::warn!(%executor, task = %key, object = o.object_id,
                            "a result object not named after its task ignored");
                        continue;
                    }
                    self.object_added(expected, o.size, node, Some(key), true);
                }
                _ if self.object_dir.dir.is_rebuilding(expected) => {
                    let why = match &r.error {
                        Some(e) if !r.ok => format!("its task failed: {}", e.message),
                        _ => "its task ran again without storing it".to_string(),
                    };
                    self.object_dir.dir.rebuild_failed(
                        expected,
                        format!("object {expected} was lost and could not be rebuilt: {why}"),
                    );
                }
                _ => {}
            }
        }
    }

    /// Run `key` again to rebuild its lost result `object`: its input is read back from
    /// storage first (the scheduler forgets finished tasks), then it is queued (`rerun`).
    pub(super) fn rebuild(&mut self, object: ObjectId, key: TaskKey, node: &str) {
        if self.sched.session(key.session).is_none() {
            self.object_dir.dir.rebuild_failed(
                object,
                format!(
                    "object {object} was lost with node {node}, and its task {key} cannot run \
                     again: its session is closed"
                ),
            );
            return;
        }
        tracing::warn!(%object, task = %key, %node, "a task's result was lost with its node; running the task again");
        self.object_dir.reruns.insert(object);
        let me = self.self_tx.clone();
        self.store.read(move |st| {
            let found = st
                .get_task(key)
                .map(|r| r.map(|r| (r.input, r.attempts)))
                .map_err(|e| e.to_string());
            let _ = me.send(Event::Objects(ObjectEvent::Rerun { key, object, found }));
        });
    }

    /// A lost result a node announced to a restarted head (no producer came with it): its
    /// id names its task, whose session is found among the open ones in storage; then it
    /// is rebuilt as any other (`rerun`; session 0 there: in no open session).
    pub(super) fn rebuild_orphan(&mut self, object: ObjectId, task: TaskId, node: &str) {
        tracing::warn!(%object, %task, %node, "a re-announced task result was lost with its node; running its task again");
        let sessions: Vec<SessionId> = self.sched.sessions().map(|s| s.id).collect();
        self.object_dir.reruns.insert(object);
        let me = self.self_tx.clone();
        self.store.read(move |st| {
            let mut key = TaskKey {
                session: SessionId(0),
                task,
            };
            let mut found = Ok(None);
            for session in sessions {
                let k = TaskKey { session, task };
                match st.get_task(k) {
                    Ok(Some(r)) => {
                        key = k;
                        found = Ok(Some((r.input, r.attempts)));
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => found = Err(e.to_string()),
                }
            }
            let _ = me.send(Event::Objects(ObjectEvent::Rerun { key, object, found }));
        });
    }

    pub(super) fn rerun(
        &mut self,
        key: TaskKey,
        object: ObjectId,
        found: Result<Option<(Bytes, u32)>, String>,
    ) {
        if !self.object_dir.reruns.remove(&object) || !self.object_dir.dir.is_rebuilding(object) {
            return; // deleted, or held again (its node came back) meanwhile
        }
        if key.session.0 == 0 {
            let why = format!("its task {} is in no open session", key.task);
            self.object_dir.dir.rebuild_failed(
                object,
                format!("object {object} was lost and cannot be rebuilt: {why}"),
            );
            return;
        }
        self.object_dir.dir.set_producer(object, key);
        let queued = self
            .sched
            .session(key.session)
            .map(|s| s.tasks.contains_key(&key.task));
        let why = match (found, queued) {
            (_, None) => "its session is closed".to_string(),
            // Already queued or running (submitted again meanwhile): it rebuilds the object.
            (_, Some(true)) => return,
            (Err(e), _) => format!("its task could not be read back: {e}"),
            (Ok(None), _) => format!("its task {key} is no longer stored"),
            (Ok(Some((input, attempts))), Some(false)) => {
                self.metrics.object_reconstructions.increment(1);
                self.sched.rerun(key.session, (key.task, input, attempts));
                return;
            }
        };
        self.object_dir.dir.rebuild_failed(
            object,
            format!("object {object} was lost and cannot be rebuilt: {why}"),
        );
    }

    pub(super) fn stalled_rebuild(&self, id: ObjectId) -> Option<TaskKey> {
        if !self.object_dir.dir.is_rebuilding(id) || self.object_dir.reruns.contains(&id) {
            return None;
        }
        let key = self.object_dir.dir.producer(id)?;
        let alive = self
            .sched
            .session(key.session)
            .is_some_and(|s| s.tasks.contains_key(&key.task));
        (!alive).then_some(key)
    }
}
