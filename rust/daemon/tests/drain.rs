//! Draining a node through the head's `DrainNode` call, end to end: a real head and node
//! with echo executors. The node reports its resources; once drained, the tasks it was sent
//! finish there, the rest stay pending (no other node here), and the node exits by itself.
//! Bad requests name the problem.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use flame_core::client::Client;
use flame_core::ids::SessionId;
use flame_core::model::{SessionSpec, TaskState};
use flame_core::proto;
use flame_daemon::local::LocalCluster;
use flame_daemon::session_manager::ManagerConfig;

async fn start(state_dir: &std::path::Path) -> LocalCluster {
    // A fixed window of 4, so that exactly four tasks are sent ahead to the executor.
    let manager = ManagerConfig {
        window: 4,
        window_max: 4,
        ..Default::default()
    };
    let mut node = common::echo_node(state_dir, 1);
    node.name = "drain-me".into();
    common::start_cluster(common::head_config(state_dir, manager), node)
        .await
        .expect("cluster starts")
}

async fn cluster_info(client: &Client) -> proto::ClusterInfo {
    let info = client.frontend().get_cluster_info(proto::Empty {}).await;
    info.expect("cluster info").into_inner()
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_finishes_what_it_was_sent_and_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path()).await;
    let client = common::admin_client(&cluster.head, "test").await;
    wait_until("the node joins", || async {
        !cluster_info(&client).await.nodes.is_empty()
    })
    .await;
    let node = cluster_info(&client).await.nodes.remove(0);
    assert_eq!((node.name.as_str(), node.slots), ("drain-me", 1));
    assert!(node.cpus >= 1 && node.memory_total > 0 && node.memory_available > 0);
    assert!(node.address.starts_with("127.0.0.1:"), "{}", node.address);
    assert!(node.alive && !node.draining);

    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        ..Default::default()
    };
    let req = proto::CreateSessionRequest {
        spec: Some(spec.into()),
    };
    let sid = SessionId(
        client
            .frontend()
            .create_session(req)
            .await
            .unwrap()
            .into_inner()
            .id,
    );
    // One executor with a window of 4: four tasks are sent to it, two stay queued.
    let inputs = (0..6).map(|_| Bytes::from_static(b"sleep:300")).collect();
    client.submit(sid, inputs).unwrap();
    wait_until("tasks run", || async {
        cluster_info(&client).await.tasks_running > 0
    })
    .await;

    let by_name = proto::NodeRef {
        id: 0,
        name: "drain-me".into(),
    };
    let drained = client.frontend().drain_node(by_name).await.unwrap();
    assert!(drained.into_inner().draining);

    let mut done = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "only {} of 4 sent tasks finished",
            done.len()
        );
        let batch = client.next_completions(Duration::from_secs(1)).await;
        done.extend(batch.expect("stream open"));
    }
    assert!(done
        .iter()
        .all(|c| c.state == TaskState::Succeeded.as_i32()));
    wait_until("the node leaves", || async {
        cluster_info(&client).await.nodes.iter().all(|n| !n.alive)
    })
    .await;
    wait_until("the node process ends", || async {
        cluster.node_finished()
    })
    .await;
    let info = cluster_info(&client).await;
    assert_eq!((info.tasks_pending, info.tasks_running), (2, 0), "{info:?}");
    assert!(
        client
            .next_completions(Duration::from_millis(500))
            .await
            .unwrap()
            .is_empty(),
        "nothing more ran"
    );

    let unknown = proto::NodeRef {
        id: 0,
        name: "nope".into(),
    };
    let err = client.frontend().drain_node(unknown).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("nope"), "{}", err.message());
    let empty = proto::NodeRef::default();
    let err = client.frontend().drain_node(empty).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    cluster.stop().await;
}
