//! Phase 4, a normal session after the fuzzing: `FINAL_TASKS` echo tasks must each complete
//! once with their output, the session's counts must add up and the real node must still be
//! there. `collect` gathers a client's completions (also for the fake node's session).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use flame_core::client::Client;
use flame_core::ids::{SessionId, TaskId};
use flame_core::model::TaskState;
use flame_core::proto::{self, frontend_client::FrontendClient};

use crate::findings::{broken, short, Findings};
use crate::streams::create_echo;
use crate::wire::Authed;
use crate::FINAL_TASKS;

/// The completions of `ids`, waiting up to 30 s; a task that completes twice, or not at all,
/// is a finding.
pub async fn collect(
    client: &Client,
    ids: &[TaskId],
    f: &mut Findings,
) -> HashMap<u64, proto::TaskCompletion> {
    let mut done = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while done.len() < ids.len() && tokio::time::Instant::now() < deadline {
        let Some(batch) = client.next_completions(Duration::from_millis(200)).await else {
            f.bad("a client's task stream ended".into(), client.address());
            break;
        };
        for c in batch {
            let key = format!("task {} of session {}", c.task_id, c.session_id);
            if !ids.contains(&TaskId(c.task_id)) {
                f.bad("a completion came for a task never submitted".into(), key);
            } else if done.insert(c.task_id, c).is_some() {
                f.bad("a task completed twice".into(), key);
            }
        }
    }
    if done.len() < ids.len() {
        let left = format!("{} of {} tasks", ids.len() - done.len(), ids.len());
        f.bad("tasks did not complete within 30 s".into(), left);
    }
    done
}

pub async fn normal_session(f: &mut Findings, address: &str, fe: &FrontendClient<Authed>) {
    let client = Client::connect(
        address,
        &flame_core::client::Credentials::with_token(crate::common::test_token().to_string()),
        Duration::from_secs(5),
        "fuzz-final",
    )
    .await;
    let client = client.unwrap_or_else(|e| broken("a client connects after the fuzzing", e));
    let sid = create_echo(fe).await;
    let inputs: Vec<Bytes> = (0..FINAL_TASKS)
        .map(|i| Bytes::from(format!("final-{i}")))
        .collect();
    let ids = client.submit(SessionId(sid), inputs.clone()).unwrap();
    let done = collect(&client, &ids, f).await;
    for (id, input) in ids.iter().zip(&inputs) {
        match done.get(&id.0) {
            Some(c) if c.state != TaskState::Succeeded.as_i32() || c.output != input => {
                let c = short(&format!("{c:?}"));
                f.bad(
                    "a task of the normal session after the fuzzing went wrong".into(),
                    c,
                );
            }
            _ => {}
        }
    }
    let info = fe
        .clone()
        .get_session(proto::SessionRef { session_id: sid })
        .await;
    let info = info
        .unwrap_or_else(|e| broken("the session is there", e))
        .into_inner();
    if info.succeeded != FINAL_TASKS as u64 {
        f.bad(
            "the normal session's counts are wrong".into(),
            format!("{info:?}"),
        );
    }
    let cluster = fe.clone().get_cluster_info(proto::Empty {}).await;
    let cluster = cluster
        .unwrap_or_else(|e| broken("cluster info answers", e))
        .into_inner();
    if !cluster.nodes.iter().any(|n| n.alive && n.slots == 2) {
        f.bad(
            "the real node is missing from cluster info".into(),
            format!("{cluster:?}"),
        );
    }
}
