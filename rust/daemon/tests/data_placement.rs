//! Data-aware placement end to end (#12): a real head with two nodes of echo executors on
//! loopback. A client announces an object on node B (`ClientMessage.created`, as a client
//! does after storing it there) and submits tasks that read it (`TaskSubmission.reads`): with
//! the `data_aware` policy they run on B's executors; without it they spread over both nodes.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use flame_core::auth::TokenKind;
use flame_core::client::{Client, Credentials, CLIENT_ID_HEADER};
use flame_core::ids::SessionId;
use flame_core::model::TaskState;
use flame_core::proto::{self, client_message, server_message};
use flame_core::scheduler::Policies;
use flame_daemon::executor_manager::run_node;
use flame_daemon::local::LocalCluster;
use flame_daemon::session_manager::ManagerConfig;

const TASKS: u64 = 8;

/// The head with its node "a", plus node "b" (2 slots each), and a connected client.
struct TwoNodes {
    cluster: LocalCluster,
    b_stop: CancellationToken,
    b: tokio::task::JoinHandle<flame_core::Result<()>>,
    client: Client,
}

async fn start(dir: &Path, policies: Policies) -> TwoNodes {
    let manager = ManagerConfig {
        release_delay: Duration::from_millis(200),
        policies,
        // Long enough that no task gives up waiting for B in this test.
        data_wait: Duration::from_secs(30),
        ..Default::default()
    };
    let (a_dir, b_dir) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let mut a = common::echo_node(&a_dir, 2);
    a.name = "a".into();
    let cluster = common::start_cluster(common::head_config(&a_dir, manager), a)
        .await
        .expect("cluster starts");
    let mut b = common::echo_node(&b_dir, 2);
    b.name = "b".into();
    b.head = cluster.address().to_string();
    let token = cluster.head.security.issue(TokenKind::Node, "b", false, 0);
    b.credentials = Credentials::with_token(token.to_string());
    let b_stop = CancellationToken::new();
    let b = tokio::spawn(run_node(b, b_stop.clone()));
    let client = common::admin_client(&cluster.head, "test").await;
    TwoNodes {
        cluster,
        b_stop,
        b,
        client,
    }
}

impl TwoNodes {
    /// Node ids by name, once both nodes joined.
    async fn nodes(&self) -> HashMap<String, u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let info = self
                .client
                .frontend()
                .get_cluster_info(proto::Empty {})
                .await
                .expect("cluster info")
                .into_inner();
            if info.nodes.len() == 2 {
                return info.nodes.into_iter().map(|n| (n.name, n.id)).collect();
            }
            assert!(Instant::now() < deadline, "the two nodes did not join");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.client.close();
        self.cluster.head.manager.shutdown().await;
        self.b_stop.cancel();
        let _ = self.b.await;
        self.cluster.stop().await;
    }
}

/// Announce an 8 MiB object on `node`, submit `TASKS` tasks reading it on a task stream of
/// this client, and return the node each task ran on.
async fn run_reading_tasks(t: &TwoNodes, node: u64) -> Vec<u64> {
    let client = &t.client;
    let sid = common::open_echo_session(client).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut req = tonic::Request::new(UnboundedReceiverStream::new(rx));
    req.metadata_mut()
        .insert(CLIENT_ID_HEADER, client.client_id().0.into());
    let mut inbound = client
        .frontend()
        .stream(req)
        .await
        .expect("task stream")
        .into_inner();
    let object = proto::ObjectStored {
        object_id: (u64::from(client.client_id().0) << 32) | 1,
        size: 8 << 20,
    };
    let created = client_message::Msg::Created(proto::ObjectsCreated {
        node_id: node,
        objects: vec![object],
        nested: Vec::new(),
    });
    tx.send(proto::ClientMessage { msg: Some(created) })
        .unwrap();
    // Task ids of their own (this stream is not the client's): high in its id space.
    let base = (u64::from(client.client_id().0) << 32) | 0x4000_0000;
    let tasks = (1..=TASKS)
        .map(|k| proto::TaskSubmission {
            task_id: base + k,
            input: Bytes::from_static(b"sleep:100"),
            reads: vec![object],
        })
        .collect();
    let submit = client_message::Msg::Submit(proto::SubmitBatch {
        session_id: sid.0,
        tasks,
    });
    tx.send(proto::ClientMessage { msg: Some(submit) }).unwrap();
    let mut done = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (done.len() as u64) < TASKS {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, inbound.message())
            .await
            .expect("tasks finish within 30 s")
            .expect("stream open")
            .expect("a message");
        if let Some(server_message::Msg::Completions(b)) = msg.msg {
            for c in b.items {
                assert_eq!(c.state, TaskState::Succeeded.as_i32(), "{c:?}");
                done.insert(c.task_id);
            }
        }
    }
    drop(tx);
    let mut ran_on = Vec::new();
    for id in done {
        let r = proto::TaskRef {
            session_id: sid.0,
            task_id: id,
        };
        let info = client
            .frontend()
            .get_task(r)
            .await
            .expect("task")
            .into_inner();
        ran_on.push(info.node_id);
    }
    close(client, sid).await;
    ran_on
}

async fn close(client: &Client, sid: SessionId) {
    let r = proto::SessionRef { session_id: sid.0 };
    client.frontend().close_session(r).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_reading_an_object_run_on_the_node_holding_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = start(dir.path(), Policies::default()).await;
    let nodes = t.nodes().await;
    let b = nodes["b"];
    let ran_on = run_reading_tasks(&t, b).await;
    assert_eq!(ran_on, vec![b; TASKS as usize], "every task ran on b");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_data_aware_the_same_tasks_spread_over_both_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let policies = Policies::from_names(&["priority", "fair_share"]).unwrap();
    let t = start(dir.path(), policies).await;
    let nodes = t.nodes().await;
    let ran_on = run_reading_tasks(&t, nodes["b"]).await;
    let used: HashSet<u64> = ran_on.iter().copied().collect();
    assert_eq!(
        used,
        HashSet::from([nodes["a"], nodes["b"]]),
        "spread: {ran_on:?}"
    );
    t.stop().await;
}
