//! Phase 3, continued: a node that registers properly and the executor it is asked to start,
//! both lying (forged, oversized, error-less and duplicated results, sessions never entered,
//! exits of the real node's executors). The session they served must still finish every task
//! once, each lie answered by a classified failure or ignored.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use flame_core::client::Client;
use flame_core::ids::{SessionId, TaskId};
use flame_core::model::{ErrorKind, TaskState};
use flame_core::proto::{self, backend_client::BackendClient, executor_command, node_command};

use crate::backend::{
    entered, exec_register, exited, heartbeat, left, next, node_register, results,
};
use crate::findings::{broken, err, short, Findings, INVALID};
use crate::gen::Gen;
use crate::normal_session::collect;
use crate::streams::create_echo;
use crate::wire::{drain, hang, Authed};
use crate::{CALL_TIMEOUT, LIMIT};

/// A node that registers properly, and the executor it is asked to start, lie: forged,
/// oversized, error-less, duplicated results; sessions never entered; then the node reports
/// that the real node's executors exited. The session they served must still finish every
/// task once — each lie answered by a classified failure, or ignored.
pub async fn fake_node(
    g: &mut Gen,
    f: &mut Findings,
    mut be: BackendClient<Authed>,
    address: &str,
    dir: &Path,
) {
    f.count("backend: fake node and executor");
    let (ntx, nrx) = mpsc::unbounded_channel();
    ntx.send(node_register(4, 0)).unwrap();
    let node = be.node_stream(UnboundedReceiverStream::new(nrx)).await;
    let mut cmds = node
        .unwrap_or_else(|e| broken("a node that registers properly is accepted", e))
        .into_inner();
    match next(&mut cmds, CALL_TIMEOUT).await.and_then(|c| c.msg) {
        Some(node_command::Msg::Registered(_)) => {}
        other => f.bad(
            "a node's first command was not Registered".into(),
            format!("{other:?}"),
        ),
    }
    let client = Client::connect(
        address,
        &flame_core::client::Credentials::with_token(crate::common::test_token().to_string()),
        Duration::from_secs(5),
        "fuzz-hostile",
    )
    .await;
    let client = client.unwrap_or_else(|e| broken("a client connects", e));
    let sid = SessionId(create_echo(&client.frontend()).await);
    let inputs: Vec<Bytes> = (0..16)
        .map(|i| Bytes::from(format!("sleep:150 hostile-{i}")))
        .collect();
    let ids = client.submit(sid, inputs.clone()).unwrap();
    let mut spawned = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while spawned.is_none() && Instant::now() < deadline {
        if let Some(node_command::Msg::Spawn(s)) = next(&mut cmds, Duration::from_millis(200))
            .await
            .and_then(|c| c.msg)
        {
            spawned = Some(s.executor_id);
        }
    }
    let mut answered = HashMap::new();
    match spawned {
        Some(eid) => {
            let never = TaskId(ids[ids.len() - 1].0 + 1000);
            fake_executor(g, f, be.clone(), eid, sid, never, &mut answered).await
        }
        None => f.bad(
            "the fake node was never asked to start an executor".into(),
            "a 16-task session",
        ),
    }
    let mut lies = live_executors(dir);
    lies.extend([spawned.unwrap_or(0), u64::MAX, g.rng.next()]);
    for id in lies {
        let _ = ntx.send(exited(id));
    }
    for m in [
        heartbeat(),
        node_register(4, 0),
        proto::NodeMessage { msg: None },
    ] {
        let _ = ntx.send(m);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(ntx);
    let _ = drain(&mut cmds).await;

    let done = collect(&client, &ids, f).await;
    for (i, id) in ids.iter().enumerate() {
        let Some(c) = done.get(&id.0) else {
            continue;
        };
        let error = c.error.as_ref();
        let right = match answered.get(&id.0) {
            Some(0) => error.is_some_and(|e| e.kind == ErrorKind::ErrorPayloadTooLarge as i32),
            Some(1 | 2) => error.is_some_and(|e| !e.message.trim().is_empty()),
            _ => c.state == TaskState::Succeeded.as_i32() && c.output == inputs[i],
        };
        if !right {
            let how = match answered.get(&id.0) {
                Some(n) => format!("lie #{n} of a fake executor was taken wrongly"),
                None => {
                    "a task that the fake node and executor only lied about did not succeed".into()
                }
            };
            f.bad(
                how,
                short(&format!("task {i} of the session they served: {c:?}")),
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let info = client.frontend().get_cluster_info(proto::Empty {}).await;
        let info = info
            .unwrap_or_else(|e| broken("cluster info answers", e))
            .into_inner();
        if info.nodes.iter().filter(|n| n.alive).count() == 1 {
            break;
        }
        if Instant::now() > deadline {
            f.bad(
                "a node that left still counts as alive".into(),
                format!("{info:?}"),
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ids of the echo executors running now on the real node (read from their command lines).
fn live_executors(dir: &Path) -> Vec<u64> {
    let me = std::process::id().to_string();
    let mut ids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p = entry.path();
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        let cwd = std::fs::read_link(p.join("cwd")).ok();
        if ppid != Some(me.as_str()) || cwd.as_deref() != Some(dir) {
            continue;
        }
        let cmdline = std::fs::read(p.join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let at = args.iter().position(|a| *a == b"--executor-id");
        let id: Option<u64> =
            at.and_then(|i| std::str::from_utf8(args.get(i + 1)?).ok()?.parse().ok());
        ids.extend(id);
    }
    ids
}

async fn fake_executor(
    g: &mut Gen,
    f: &mut Findings,
    mut be: BackendClient<Authed>,
    eid: u64,
    sid: SessionId,
    never: TaskId,
    answered: &mut HashMap<u64, usize>,
) {
    let (etx, erx) = mpsc::unbounded_channel();
    etx.send(exec_register(eid)).unwrap();
    let call = be.executor_stream(UnboundedReceiverStream::new(erx));
    let mut cmds = match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(s)) => s.into_inner(),
        other => {
            let other = format!("{:?}", other.map(|r| r.map(|_| ())));
            return f.bad(
                "the executor a node was asked to start could not register".into(),
                other,
            );
        }
    };
    // The same executor registering a second time.
    let again = be.executor_stream(tokio_stream::iter(vec![exec_register(eid)]));
    let r = tokio::time::timeout(CALL_TIMEOUT, again)
        .await
        .unwrap_or_else(|_| Err(hang()));
    f.judge(
        "ExecutorStream",
        &format!("executor {eid} registering twice"),
        &r,
        err(INVALID),
    );
    // Lies before it is given anything: a result for a task never submitted (one it may already
    // have been given would be its own to answer), sessions it was never in.
    let forged = proto::TaskResult {
        session_id: sid.0,
        task_id: never.0,
        ok: true,
        output: Bytes::from_static(b"forged"),
        error: None,
        log: "forged output".into(),
        run_us: 0,
        output_in_parts: false,
        output_object: None,
        contains: Vec::new(),
    };
    let none = proto::ExecutorMessage { msg: None };
    for m in [
        results(vec![forged]),
        entered(g.rng.next()),
        left(g.rng.next()),
        none,
        exec_register(eid),
    ] {
        let _ = etx.send(m);
    }
    let mut batch = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while batch.is_none() && Instant::now() < deadline {
        match next(&mut cmds, Duration::from_millis(200))
            .await
            .and_then(|c| c.msg)
        {
            Some(executor_command::Msg::Bind(b)) => {
                let _ = etx.send(entered(b.session_id));
            }
            Some(executor_command::Msg::Tasks(t)) => batch = Some(t),
            _ => {}
        }
    }
    let Some(batch) = batch else {
        return f.bad(
            "the fake executor was given no tasks".into(),
            format!("session {sid}"),
        );
    };
    // Its answers: over the limit, failed without an error, an unknown error kind, right —
    // and then every one again, as a success.
    let mut lies = Vec::new();
    let mut again = Vec::new();
    for (i, t) in batch.tasks.iter().enumerate() {
        let r = proto::TaskResult {
            session_id: batch.session_id,
            task_id: t.task_id,
            ..Default::default()
        };
        let error = proto::TaskError {
            kind: 9999,
            message: "a kind nobody knows".into(),
            ..Default::default()
        };
        let r = match i % 4 {
            0 => proto::TaskResult {
                ok: true,
                output: Bytes::from(vec![b'o'; LIMIT + 1]),
                ..r
            },
            1 => proto::TaskResult { ok: false, ..r },
            2 => proto::TaskResult {
                ok: false,
                error: Some(error),
                ..r
            },
            _ => proto::TaskResult {
                ok: true,
                output: t.input.clone(),
                ..r
            },
        };
        if batch.session_id == sid.0 {
            answered.insert(t.task_id, i % 4);
        }
        again.push(proto::TaskResult {
            ok: true,
            output: Bytes::from_static(b"again"),
            ..r.clone()
        });
        lies.push(r);
    }
    let _ = etx.send(results(lies));
    let _ = etx.send(results(again));
    tokio::time::sleep(Duration::from_millis(200)).await;
}
