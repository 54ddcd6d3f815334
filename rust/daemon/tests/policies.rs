//! Scheduling policies end to end: a real head and node with echo executors, the policies
//! chosen in the manager config as the `[scheduler]` table would.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flame_core::client::Client;
use flame_core::ids::SessionId;
use flame_core::model::{SessionSpec, TaskState};
use flame_core::proto::{self, TaskCompletion};
use flame_core::scheduler::Policies;
use flame_daemon::local::LocalCluster;
use flame_daemon::session_manager::ManagerConfig;

async fn start(state_dir: &std::path::Path, slots: u32, policies: Policies) -> LocalCluster {
    let manager = ManagerConfig {
        release_delay: Duration::from_millis(200),
        policies,
        ..Default::default()
    };
    common::start_echo_cluster(state_dir, slots, manager).await
}

async fn open(client: &Client, priority: i32) -> SessionId {
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        priority,
        max_retries: 0,
        ..Default::default()
    };
    let req = proto::CreateSessionRequest {
        spec: Some(spec.into()),
    };
    let info = client.frontend().create_session(req).await.unwrap();
    SessionId(info.into_inner().id)
}

async fn running(client: &Client, sid: SessionId) -> u64 {
    let req = proto::SessionRef { session_id: sid.0 };
    client
        .frontend()
        .get_session(req)
        .await
        .unwrap()
        .into_inner()
        .running
}

/// Completions of `n` tasks, each with when it arrived.
async fn collect(client: &Client, n: usize) -> HashMap<u64, (TaskCompletion, Instant)> {
    let mut done = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.len() < n {
        assert!(Instant::now() < deadline, "only {} of {n} done", done.len());
        let batch = client
            .next_completions(Duration::from_millis(100))
            .await
            .expect("stream open");
        for c in batch {
            done.insert(c.task_id, (c, Instant::now()));
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_kills_a_lower_priority_task_and_reruns_it_without_charging_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let policies = Policies::from_names(&["priority", "fair_share", "preemption"]).unwrap();
    let cluster = start(dir.path(), 1, policies).await;
    let client = common::admin_client(&cluster.head, "test").await;
    let low = open(&client, 0).await;
    let low_ids = client
        .submit(low, vec![Bytes::from_static(b"sleep:4000")])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while running(&client, low).await == 0 {
        assert!(Instant::now() < deadline, "the low task never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let high = open(&client, 5).await;
    let submitted = Instant::now();
    let high_ids = client
        .submit(high, vec![Bytes::from_static(b"urgent")])
        .unwrap();
    let done = collect(&client, 2).await;
    let (h, h_at) = &done[&high_ids[0].0];
    let (l, l_at) = &done[&low_ids[0].0];
    assert_eq!(h.state, TaskState::Succeeded.as_i32());
    // The only slot was busy for 4 s more: the urgent task did not wait for it.
    assert!(h_at.duration_since(submitted) < Duration::from_millis(3000));
    // max_retries = 0, yet the killed task ran again: preemption is not charged.
    assert_eq!(l.state, TaskState::Succeeded.as_i32(), "{l:?}");
    assert_eq!(l.attempts, 1);
    assert!(l_at > h_at);
    cluster.stop().await;
}
