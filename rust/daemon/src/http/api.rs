//! The HTTP handlers: `/metrics` and the JSON API the dashboard polls. Each asks through the
//! same paths as the gRPC introspection (the actor's memory for the overview, [`Reads`] for
//! stored rows) and turns the answer into JSON here (the proto types stay at this edge).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use flame_core::auth::Principal;
use serde::Deserialize;
use serde_json::{json, Value};

use flame_core::ids::{SessionId, TaskId, TaskKey};
use flame_core::model::TaskState;
use flame_core::proto;
use flame_core::view::page_size;
use flame_core::FlameError;

use super::params::{id, ApiPath, ApiQuery};
use super::ApiError;
use crate::metrics::{SessionGauge, StateGauges};
use crate::reads::{Reads, TaskQuery};
use crate::session_manager::{Event, Overview};

type ApiResult = Result<Json<Value>, ApiError>;

/// Failed tasks shown with their tracebacks on a session page.
const FAILURES_SHOWN: u32 = 20;

pub async fn metrics(State(r): State<Reads>) -> Result<Response, ApiError> {
    let m = r.manager();
    let o = m.call(|reply| Event::Overview { reply }).await?;
    let mut executors: Vec<(&'static str, u64)> =
        ["starting", "idle", "binding", "bound", "unbinding"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
    for e in &o.executors {
        if let Some(slot) = executors.iter_mut().find(|(s, _)| *s == e.state) {
            slot.1 += 1;
        }
    }
    let open = o
        .sessions
        .iter()
        .filter(|s| s.state == proto::SessionState::SessionOpen as i32);
    let snap = StateGauges {
        nodes: o.cluster.nodes.iter().filter(|n| n.alive).count() as u64,
        sessions_open: u64::from(o.cluster.sessions_open),
        executors,
        sessions: open
            .map(|s| SessionGauge {
                id: s.id,
                pending: s.pending,
                running: s.running,
            })
            .collect(),
        object_stores: o
            .objects
            .iter()
            .map(|n| (n.name.clone(), n.stats.memory_bytes + n.stats.spilled_bytes))
            .collect(),
    };
    let text = m.metrics.render(&snap);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Whether `p` may see sessions of `user` (its own; an admin all).
fn sees(p: &Principal, user: &str) -> bool {
    match p {
        Principal::User { admin: true, .. } => true,
        Principal::User { name, .. } => name == user,
        Principal::Node { .. } => false,
    }
}

fn owner(s: &proto::SessionInfo) -> &str {
    s.spec.as_ref().map_or("", |p| p.user.as_str())
}

/// The overview as `p` may see it: its own sessions, and the executors working for them.
fn visible(p: &Principal, mut o: Overview) -> Overview {
    if p.is_admin() {
        return o;
    }
    o.sessions.retain(|s| sees(p, owner(s)));
    let mine: std::collections::HashSet<u64> = o.sessions.iter().map(|s| s.id).collect();
    o.executors.retain(|e| mine.contains(&e.session_id));
    let open = proto::SessionState::SessionOpen as i32;
    o.cluster.sessions_open = o.sessions.iter().filter(|s| s.state == open).count() as u32;
    o
}

/// 403 unless `p` may see `s`.
fn check_owner(p: &Principal, s: &proto::SessionInfo) -> Result<(), ApiError> {
    if sees(p, owner(s)) {
        return Ok(());
    }
    let who = match p {
        Principal::User { name, .. } | Principal::Node { name } => name,
    };
    Err(ApiError(FlameError::PermissionDenied(format!(
        "session {} belongs to user {}; you are {who}",
        s.id,
        owner(s)
    ))))
}

pub async fn overview(State(r): State<Reads>, Extension(p): Extension<Principal>) -> ApiResult {
    let o: Overview = r.manager().call(|reply| Event::Overview { reply }).await?;
    let o = visible(&p, o);
    Ok(Json(json!({
        "now_ms": o.now_ms,
        "nodes": o.cluster.nodes.iter().map(node_json).collect::<Vec<_>>(),
        "tasks_pending": o.cluster.tasks_pending,
        "tasks_running": o.cluster.tasks_running,
        "sessions_open": o.cluster.sessions_open,
        "executors": o.executors.iter().map(executor_json).collect::<Vec<_>>(),
        "sessions": o.sessions.iter().map(session_json).collect::<Vec<_>>(),
        "tasks_per_second": o.tasks_per_second,
        "objects": o.objects.iter().map(objects_json).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
pub struct TaskFilter {
    state: Option<String>,
    limit: Option<u32>,
    offset: Option<u64>,
}

/// A session, a page of its tasks (`?state=&limit=&offset=`), and its latest failures.
pub async fn session(
    State(r): State<Reads>,
    Extension(p): Extension<Principal>,
    ApiPath(raw): ApiPath<String>,
    ApiQuery(f): ApiQuery<TaskFilter>,
) -> ApiResult {
    let session = SessionId(id("session id", &raw)?);
    let state = f.state.as_deref().map(TaskState::from_name).transpose()?;
    let query = TaskQuery {
        session,
        state,
        limit: page_size(f.limit.unwrap_or(0))?,
        offset: f.offset.unwrap_or(0),
    };
    let page = r.session_page(query, FAILURES_SHOWN).await?;
    check_owner(&p, &page.session)?;
    Ok(Json(json!({
        "session": session_json(&page.session),
        "tasks": page.tasks.tasks.iter().map(task_json).collect::<Vec<_>>(),
        "total": page.tasks.total,
        "failures": page.failures.iter().map(task_json).collect::<Vec<_>>(),
    })))
}

/// A task, with what it printed: "" while it runs (logs arrive with the result) or if it
/// printed nothing.
pub async fn task(
    State(r): State<Reads>,
    Extension(p): Extension<Principal>,
    ApiPath((sid, tid)): ApiPath<(String, String)>,
) -> ApiResult {
    let key = TaskKey {
        session: SessionId(id("session id", &sid)?),
        task: TaskId(id("task id", &tid)?),
    };
    check_owner(&p, &r.session(key.session).await?)?;
    let (t, log) = r.task(key).await?;
    let mut v = task_json(&t);
    v["log"] = json!(log);
    Ok(Json(v))
}

/// A node and its executors.
pub async fn node(
    State(r): State<Reads>,
    Extension(p): Extension<Principal>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult {
    let id = id("node id", &raw)?;
    let o = r.manager().call(|reply| Event::Overview { reply }).await?;
    let o = visible(&p, o);
    let node = o
        .cluster
        .nodes
        .iter()
        .find(|n| n.id == id)
        .ok_or_else(|| FlameError::NotFound(format!("node {id} is not connected")))?;
    let executors: Vec<Value> = o
        .executors
        .iter()
        .filter(|e| e.node_id == id)
        .map(executor_json)
        .collect();
    Ok(Json(
        json!({ "node": node_json(node), "executors": executors }),
    ))
}

fn node_json(n: &proto::NodeInfo) -> Value {
    json!({
        "id": n.id, "name": n.name, "slots": n.slots, "executors": n.executors,
        "busy": n.busy, "alive": n.alive,
    })
}

/// A node's object store (#12): what the directory says it holds, and its last heartbeat.
fn objects_json(n: &crate::session_manager::NodeObjects) -> Value {
    json!({
        "node_id": n.node.0, "name": n.name, "objects": n.objects, "bytes": n.bytes,
        "memory_bytes": n.stats.memory_bytes, "spilled_bytes": n.stats.spilled_bytes,
        "budget_bytes": n.stats.budget_bytes,
    })
}

fn executor_json(e: &proto::ExecutorInfo) -> Value {
    json!({
        "id": e.id, "node_id": e.node_id, "state": e.state,
        "session_id": (e.session_id != 0).then_some(e.session_id), "inflight": e.inflight,
    })
}

fn session_json(s: &proto::SessionInfo) -> Value {
    let state = if s.state == proto::SessionState::SessionClosed as i32 {
        "closed"
    } else {
        "open"
    };
    let application = s.spec.as_ref().map_or("", |p| p.application.as_str());
    json!({
        "id": s.id, "application": application, "state": state,
        "pending": s.pending, "running": s.running, "succeeded": s.succeeded,
        "failed": s.failed, "cancelled": s.cancelled, "executors": s.executors,
        "created_ms": s.created_ms,
    })
}

fn task_json(t: &proto::TaskInfo) -> Value {
    let nonzero = |v: i64| (v != 0).then_some(v);
    let error = t.error.as_ref().map(|e| {
        let kind = proto::ErrorKind::try_from(e.kind)
            .map(|k| k.as_str_name().trim_start_matches("ERROR_").to_lowercase())
            .unwrap_or_else(|_| format!("unknown ({})", e.kind));
        json!({ "kind": kind, "message": e.message, "traceback": e.traceback })
    });
    json!({
        "session_id": t.session_id, "task_id": t.task_id,
        "state": TaskState::from_i32(t.state).map_or("unknown", |s| s.name()),
        "attempts": t.attempts, "created_ms": t.created_ms,
        "started_ms": nonzero(t.started_ms), "finished_ms": nonzero(t.finished_ms),
        "executor_id": (t.executor_id != 0).then_some(t.executor_id),
        "node_id": (t.node_id != 0).then_some(t.node_id),
        "output_bytes": t.output_bytes, "error": error,
    })
}
