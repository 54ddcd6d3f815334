//! The head's object directory (#12), end to end over the real protocols: a head with
//! scripted nodes on the Backend stream (registering with an object server address, reporting
//! copies and store statistics, running a task through a scripted executor) and a client on
//! its task stream announcing objects. `LocateObjects` answers holders with their addresses;
//! a node's loss makes its only copies lost (naming it) and re-runs the task of a lost
//! result; deletes and a lease running out reach the holders' streams; `/metrics` shows it.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use flame_core::auth::TokenKind;
use flame_core::client::CLIENT_ID_HEADER;
use flame_core::ids::{ClientId, ObjectId, SessionId, TaskId};
use flame_core::proto::{
    self, backend_client::BackendClient, client_message, executor_command, executor_message,
    frontend_client::FrontendClient, node_command, node_message,
};
use flame_daemon::http::HttpPort;
use flame_daemon::server::Head;
use flame_daemon::session_manager::ManagerConfig;

type Intercepted = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>, Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        if let Some(c) = &self.1 {
            req.metadata_mut().insert(CLIENT_ID_HEADER, c.clone());
        }
        Ok(req)
    }
}

async fn channel(head: &Head) -> Channel {
    Endpoint::from_shared(head.address.clone())
        .unwrap()
        .connect()
        .await
        .expect("the head answers")
}

const WAIT: Duration = Duration::from_secs(20);

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scripted node: its Backend stream, under its own node token.
struct FakeNode {
    id: u64,
    tx: Option<mpsc::UnboundedSender<proto::NodeMessage>>,
    cmds: Streaming<proto::NodeCommand>,
    be: BackendClient<Intercepted>,
}

fn node_msg(m: node_message::Msg) -> proto::NodeMessage {
    proto::NodeMessage { msg: Some(m) }
}

impl FakeNode {
    async fn join(head: &Head, name: &str, object_address: &str) -> FakeNode {
        let token = head.security.issue(TokenKind::Node, name, false, 0);
        let bearer = Bearer(token.bearer().parse().unwrap(), None);
        let mut be = BackendClient::with_interceptor(channel(head).await, bearer);
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(node_msg(node_message::Msg::Register(proto::NodeRegister {
            name: name.into(),
            slots: 1,
            memory_bytes: 1 << 30,
            object_address: object_address.into(),
            ..Default::default()
        })))
        .unwrap();
        let mut cmds = be
            .node_stream(UnboundedReceiverStream::new(rx))
            .await
            .expect("a node registers")
            .into_inner();
        let id = match next(&mut cmds).await {
            node_command::Msg::Registered(r) => r.node_id,
            other => panic!("first command: {other:?}"),
        };
        FakeNode {
            id,
            tx: Some(tx),
            cmds,
            be,
        }
    }

    fn send(&self, m: node_message::Msg) {
        self.tx.as_ref().unwrap().send(node_msg(m)).unwrap();
    }

    fn stats(&self, stats: proto::ObjectStoreStats) {
        self.send(node_message::Msg::Heartbeat(proto::Heartbeat {
            memory_available: 1 << 30,
            objects: Some(stats),
        }));
    }

    /// The next command that `pick` takes, skipping others.
    async fn expect<T>(&mut self, what: &str, pick: impl Fn(node_command::Msg) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.cmds.message())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("the node stream stays up")
                .expect("the node stream stays open");
            if let Some(t) = m.msg.and_then(&pick) {
                return t;
            }
        }
    }

    /// The node dies: its stream ends.
    fn die(&mut self) {
        self.tx = None;
    }
}

async fn next(cmds: &mut Streaming<proto::NodeCommand>) -> node_command::Msg {
    tokio::time::timeout(WAIT, cmds.message())
        .await
        .expect("a command in time")
        .expect("stream up")
        .and_then(|c| c.msg)
        .expect("a command")
}

/// A client: its hello'd id, a Frontend stub, and its task stream.
struct RawClient {
    id: u32,
    fe: FrontendClient<Intercepted>,
    tx: Option<mpsc::UnboundedSender<proto::ClientMessage>>,
    completions: Streaming<proto::ServerMessage>,
}

impl RawClient {
    async fn connect(head: &Head) -> RawClient {
        let token: MetadataValue<Ascii> = common::test_token().bearer().parse().unwrap();
        let ch = channel(head).await;
        let mut fe = FrontendClient::with_interceptor(ch.clone(), Bearer(token.clone(), None));
        let id = fe
            .hello(proto::HelloRequest {
                client_name: "directory-test".into(),
                previous_client_id: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .client_id;
        let header = id.to_string().parse().unwrap();
        let mut streaming = FrontendClient::with_interceptor(ch, Bearer(token, Some(header)));
        let (tx, rx) = mpsc::unbounded_channel();
        let completions = streaming
            .stream(UnboundedReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        RawClient {
            id,
            fe,
            tx: Some(tx),
            completions,
        }
    }

    fn object(&self, n: u64) -> ObjectId {
        ObjectId(((self.id as u64) << 32) | n)
    }

    fn send(&self, m: client_message::Msg) {
        let m = proto::ClientMessage { msg: Some(m) };
        self.tx.as_ref().unwrap().send(m).unwrap();
    }

    fn created(&self, node: u64, objects: &[(ObjectId, u64)]) {
        self.send(client_message::Msg::Created(proto::ObjectsCreated {
            node_id: node,
            objects: stored(objects),
            nested: Vec::new(),
        }));
    }

    async fn locate(&self, ids: &[ObjectId]) -> Vec<proto::ObjectLocation> {
        let req = proto::ObjectRefs {
            object_ids: ids.iter().map(|i| i.0).collect(),
        };
        self.fe
            .clone()
            .locate_objects(req)
            .await
            .expect("LocateObjects answers")
            .into_inner()
            .objects
    }

    async fn locate_one(&self, id: ObjectId) -> proto::ObjectLocation {
        self.locate(&[id]).await.remove(0)
    }
}

fn stored(objects: &[(ObjectId, u64)]) -> Vec<proto::ObjectStored> {
    objects
        .iter()
        .map(|(id, size)| proto::ObjectStored {
            object_id: id.0,
            size: *size,
        })
        .collect()
}

fn holders(loc: &proto::ObjectLocation) -> Vec<(String, String)> {
    loc.holders
        .iter()
        .map(|h| (h.node_name.clone(), h.address.clone()))
        .collect()
}

async fn start(dir: &std::path::Path, lease: Duration) -> Head {
    let manager = ManagerConfig {
        // Scripted nodes and executors answer no heartbeat checks.
        node_timeout: Duration::from_secs(600),
        executor_timeout: Duration::ZERO,
        client_lease: lease,
        ..Default::default()
    };
    let mut cfg = common::head_config(dir, manager);
    cfg.http = HttpPort::Exactly(0);
    cfg.metrics_public = true;
    common::start_head(cfg).await.expect("head starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locate_answers_holders_and_a_lost_node_loses_its_only_copies() {
    let dir = tempfile::tempdir().unwrap();
    let head = start(dir.path(), Duration::from_secs(60)).await;
    let n1 = FakeNode::join(&head, "n1", "http://127.0.0.2:7001").await;
    let mut n2 = FakeNode::join(&head, "n2", "http://127.0.0.3:7002").await;
    let client = RawClient::connect(&head).await;
    let (x, y, never) = (client.object(1), client.object(2), client.object(3));
    client.created(n1.id, &[(x, 100)]);
    client.created(n2.id, &[(y, 50)]);
    // n2 fetched a copy of x.
    n2.send(node_message::Msg::ObjectsAdded(proto::ObjectsAdded {
        objects: stored(&[(x, 100)]),
    }));
    wait_until("x has two holders", || async {
        client.locate_one(x).await.holders.len() == 2
    })
    .await;
    let locs = client.locate(&[x, y, never]).await;
    let n1h = ("n1".to_string(), "http://127.0.0.2:7001".to_string());
    let n2h = ("n2".to_string(), "http://127.0.0.3:7002".to_string());
    assert_eq!(
        holders(&locs[0]),
        vec![n1h.clone(), n2h.clone()],
        "primary first"
    );
    assert_eq!(locs[0].size, 100);
    assert_eq!(holders(&locs[1]), vec![n2h]);
    assert!(locs[2].holders.is_empty());
    assert!(
        locs[2].lost.contains("not known") && locs[2].lost.contains(&never.to_string()),
        "{:?}",
        locs[2]
    );
    let list = client
        .fe
        .clone()
        .list_objects(proto::ListObjectsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.total, 2);
    assert_eq!(list.objects[0].object_id, x.0);
    assert_eq!(list.objects[0].primary_node, n1.id);
    assert_eq!(list.objects[0].copy_nodes, vec![n2.id]);

    // A bad id is refused, naming it.
    let bad = client
        .fe
        .clone()
        .locate_objects(proto::ObjectRefs {
            object_ids: vec![7],
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("0x7"), "{}", bad.message());

    n2.die();
    wait_until("y is lost with n2", || async {
        !client.locate_one(y).await.lost.is_empty()
    })
    .await;
    let locs = client.locate(&[x, y]).await;
    assert_eq!(holders(&locs[0]), vec![n1h], "x keeps its primary");
    assert!(locs[1].holders.is_empty() && !locs[1].rebuilding);
    assert!(
        locs[1].lost.contains("n2") && locs[1].lost.contains(&y.to_string()),
        "{:?}",
        locs[1]
    );
    head.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_an_expired_lease_reach_the_holders() {
    let dir = tempfile::tempdir().unwrap();
    let head = start(dir.path(), Duration::from_millis(500)).await;
    let mut n1 = FakeNode::join(&head, "n1", "http://127.0.0.2:7001").await;
    let mut n2 = FakeNode::join(&head, "n2", "http://127.0.0.3:7002").await;
    let mut client = RawClient::connect(&head).await;
    let (x, y) = (client.object(1), client.object(2));
    client.created(n1.id, &[(x, 10), (y, 20)]);
    n2.send(node_message::Msg::ObjectsAdded(proto::ObjectsAdded {
        objects: stored(&[(x, 10)]),
    }));
    wait_until("x has two holders", || async {
        client.locate_one(x).await.holders.len() == 2
    })
    .await;
    let req = proto::ObjectRefs {
        object_ids: vec![x.0],
    };
    client.fe.clone().delete_objects(req).await.unwrap();
    let deletes = |m: node_command::Msg| match m {
        node_command::Msg::DeleteObjects(r) => Some(r.object_ids),
        _ => None,
    };
    assert_eq!(n1.expect("n1 deletes x", deletes).await, vec![x.0]);
    assert_eq!(n2.expect("n2 deletes x", deletes).await, vec![x.0]);
    assert!(client.locate_one(x).await.lost.contains("not known"));

    // The client goes; once its lease runs out its other object goes from n1 too.
    client.tx = None;
    assert_eq!(n1.expect("n1 deletes y", deletes).await, vec![y.0]);
    let fresh = RawClient::connect(&head).await;
    assert!(fresh.locate_one(y).await.lost.contains("not known"));
    drop(client.completions);
    head.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_inside_another_lives_until_its_container_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let head = start(dir.path(), Duration::from_secs(600)).await;
    let mut n1 = FakeNode::join(&head, "n1", "http://127.0.0.2:7001").await;
    let client = RawClient::connect(&head).await;
    let (inner, outer) = (client.object(1), client.object(2));
    client.created(n1.id, &[(inner, 10)]);
    client.send(client_message::Msg::Created(proto::ObjectsCreated {
        node_id: n1.id,
        objects: stored(&[(outer, 20)]),
        nested: vec![proto::ObjectNesting {
            container: outer.0,
            contains: vec![inner.0],
        }],
    }));
    wait_until("both are held", || async {
        client
            .locate(&[inner, outer])
            .await
            .iter()
            .all(|l| !l.holders.is_empty())
    })
    .await;
    let delete = |ids: Vec<u64>| {
        let mut fe = client.fe.clone();
        async move {
            fe.delete_objects(proto::ObjectRefs { object_ids: ids })
                .await
        }
    };
    // The creator drops its ref to the inner object: the container still holds it (the
    // delete's reply comes after the head applied it, so this is no race).
    delete(vec![inner.0]).await.unwrap();
    assert_eq!(
        holders(&client.locate_one(inner).await).len(),
        1,
        "kept by its container"
    );

    delete(vec![outer.0]).await.unwrap();
    let deletes = |m: node_command::Msg| match m {
        node_command::Msg::DeleteObjects(r) => Some(r.object_ids),
        _ => None,
    };
    let mut gone = n1.expect("n1 deletes both", deletes).await;
    gone.sort_unstable();
    assert_eq!(
        gone,
        vec![inner.0, outer.0],
        "the container released its content"
    );
    assert!(client.locate_one(inner).await.lost.contains("not known"));
    drop(client);
    head.stop().await;
}

/// Submit one task into `sid` (the scripted executor makes it a 4 KiB result object).
fn submit_one(client: &RawClient, sid: SessionId) -> TaskId {
    let task = TaskId::compose(ClientId(client.id), 1);
    client.send(client_message::Msg::Submit(proto::SubmitBatch {
        session_id: sid.0,
        tasks: vec![proto::TaskSubmission {
            task_id: task.0,
            input: Bytes::from_static(b"make 4 KiB"),
            reads: Vec::new(),
        }],
    }));
    task
}

/// Wait until some node holds `object`.
async fn wait_held(client: &RawClient, object: ObjectId, what: &str) {
    wait_until(what, || async {
        !client.locate_one(object).await.holders.is_empty()
    })
    .await;
}

/// A scripted executor for `node`: registers, enters the session it is bound to, and answers
/// the first task it is sent with a result object; returns the task it ran.
async fn run_one_task(
    node: &mut FakeNode,
    size: u64,
) -> (TaskId, mpsc::UnboundedSender<proto::ExecutorMessage>) {
    let eid = node
        .expect("a spawn", |m| match m {
            node_command::Msg::Spawn(s) => Some(s.executor_id),
            _ => None,
        })
        .await;
    let (tx, rx) = mpsc::unbounded_channel();
    let msg = |m| proto::ExecutorMessage { msg: Some(m) };
    tx.send(msg(executor_message::Msg::Register(
        proto::ExecutorRegister { executor_id: eid },
    )))
    .unwrap();
    let mut cmds = node
        .be
        .executor_stream(UnboundedReceiverStream::new(rx))
        .await
        .expect("the executor registers")
        .into_inner();
    loop {
        let c = tokio::time::timeout(WAIT, cmds.message())
            .await
            .expect("a command in time")
            .unwrap()
            .expect("executor stream open");
        match c.msg {
            Some(executor_command::Msg::Bind(b)) => {
                tx.send(msg(executor_message::Msg::Entered(proto::SessionEntered {
                    session_id: b.session_id,
                    error: None,
                })))
                .unwrap();
            }
            Some(executor_command::Msg::Tasks(batch)) => {
                let task = TaskId(batch.tasks[0].task_id);
                let object = ObjectId::result_of(task);
                let result = proto::TaskResult {
                    session_id: batch.session_id,
                    task_id: task.0,
                    ok: true,
                    output: Bytes::from_static(b"by reference"),
                    output_object: Some(proto::ObjectStored {
                        object_id: object.0,
                        size,
                    }),
                    ..Default::default()
                };
                tx.send(msg(executor_message::Msg::Results(
                    proto::TaskResultBatch {
                        results: vec![result],
                    },
                )))
                .unwrap();
                return (task, tx);
            }
            _ => {}
        }
    }
}

/// A head with node n1, and a client whose one task (in the admin's echo session) made a
/// 4 KiB result object on n1: the scripted executor that ran it is `executor`.
struct OneResult {
    head: Head,
    n1: FakeNode,
    client: RawClient,
    admin: flame_core::client::Client,
    sid: SessionId,
    task: TaskId,
    executor: mpsc::UnboundedSender<proto::ExecutorMessage>,
}

async fn one_result(dir: &std::path::Path) -> OneResult {
    let head = start(dir, Duration::from_secs(60)).await;
    let mut n1 = FakeNode::join(&head, "n1", "http://127.0.0.2:7001").await;
    let client = RawClient::connect(&head).await;
    let admin = common::admin_client(&head, "test").await;
    let sid: SessionId = common::open_echo_session(&admin).await;
    let task = submit_one(&client, sid);
    let (ran, executor) = run_one_task(&mut n1, 4096).await;
    assert_eq!(ran, task, "n1 ran the task submitted");
    OneResult {
        head,
        n1,
        client,
        admin,
        sid,
        task,
        executor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_result_object_runs_its_task_again() {
    let dir = tempfile::tempdir().unwrap();
    let OneResult {
        head,
        mut n1,
        mut client,
        admin,
        sid,
        task,
        executor: _exec1,
    } = one_result(dir.path()).await;
    let object = ObjectId::result_of(task);
    assert_eq!(object.producer(), Some(task));
    // The client hears of the result (the small frame) as usual.
    let done = tokio::time::timeout(WAIT, client.completions.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(format!("{done:?}").contains("by reference"), "{done:?}");
    let loc = client.locate_one(object).await;
    assert_eq!(
        holders(&loc),
        vec![("n1".into(), "http://127.0.0.2:7001".into())]
    );
    let list = client
        .fe
        .clone()
        .list_objects(proto::ListObjectsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (list.objects[0].session_id, list.objects[0].task_id),
        (sid.0, task.0)
    );

    // n1 dies with the only copy: the object is rebuilding until the task ran again.
    n1.die();
    wait_until("the result is rebuilding", || async {
        client.locate_one(object).await.rebuilding
    })
    .await;
    let mut n2 = FakeNode::join(&head, "n2", "http://127.0.0.3:7002").await;
    let (again, _exec2) = run_one_task(&mut n2, 4096).await;
    assert_eq!(again, task, "the task that made the lost object runs again");
    wait_held(&client, object, "the rebuilt result is held by n2").await;
    let loc = client.locate_one(object).await;
    assert_eq!(
        holders(&loc),
        vec![("n2".into(), "http://127.0.0.3:7002".into())]
    );
    assert!(!loc.rebuilding && loc.lost.is_empty());
    // One task, run twice: the session counts it once.
    let counts = || async {
        let info = admin
            .frontend()
            .get_session(proto::SessionRef { session_id: sid.0 })
            .await
            .unwrap()
            .into_inner();
        (info.pending, info.running, info.succeeded)
    };
    wait_until("the rerun is counted done", || async {
        counts().await.0 + counts().await.1 == 0
    })
    .await;
    assert_eq!(counts().await, (0, 0, 1), "a rerun is not a second success");

    let metrics = http_get(head.dashboard_url.as_deref().unwrap(), "/metrics").await;
    assert!(
        metrics.contains("flame_object_reconstructions_total 1"),
        "{metrics}"
    );
    head.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_picks_the_freest_node_and_metrics_show_the_stores() {
    let dir = tempfile::tempdir().unwrap();
    let head = start(dir.path(), Duration::from_secs(60)).await;
    let n1 = FakeNode::join(&head, "n1", "http://127.0.0.2:7001").await;
    let n2 = FakeNode::join(&head, "n2", "http://127.0.0.3:7002").await;
    let _no_server = FakeNode::join(&head, "n3", "").await;
    let client = RawClient::connect(&head).await;
    let stats = |memory: u64, budget: u64, transfers: u64, spilled: u64| proto::ObjectStoreStats {
        memory_bytes: memory,
        budget_bytes: budget,
        transfers_total: transfers,
        transferred_bytes: transfers * 1000,
        spilled_total_bytes: spilled,
        objects: 1,
        spilled_bytes: 0,
    };
    n1.stats(stats(900, 1000, 2, 0));
    n2.stats(stats(100, 1000, 1, 5));
    n2.stats(stats(150, 1000, 3, 7));
    let place = || async {
        client
            .fe
            .clone()
            .place_object(proto::ObjectStored {
                object_id: client.object(1).0,
                size: 10,
            })
            .await
            .unwrap()
            .into_inner()
    };
    wait_until("n2 is placed on", || async {
        place().await.node_id == n2.id
    })
    .await;
    let h = place().await;
    assert_eq!(
        (h.node_name.as_str(), h.address.as_str()),
        ("n2", "http://127.0.0.3:7002")
    );

    let base = head.dashboard_url.clone().unwrap();
    // Heartbeats travel on the nodes' streams: wait for the last one to count.
    wait_until("the counters add up", || async {
        http_get(&base, "/metrics")
            .await
            .contains("flame_object_transfers_total 5")
    })
    .await;
    let text = http_get(&base, "/metrics").await;
    assert!(
        text.contains("flame_object_store_bytes{node=\"n1\"} 900"),
        "{text}"
    );
    assert!(
        text.contains("flame_object_store_bytes{node=\"n2\"} 150"),
        "{text}"
    );
    // Counters are the sums of the nodes' counters.
    assert!(text.contains("flame_object_transfers_total 5"), "{text}");
    assert!(
        text.contains("flame_object_spilled_bytes_total 7"),
        "{text}"
    );
    // The dashboard's overview: objects per node.
    let overview: serde_json::Value =
        serde_json::from_str(&http_get(&base, "/api/overview").await).unwrap();
    let stores = overview["objects"].as_array().expect("objects per node");
    let n1_store = stores.iter().find(|s| s["name"] == "n1").expect("n1");
    assert_eq!(n1_store["memory_bytes"], 900, "{overview}");
    drop(n1);
    head.stop().await;
}

/// GET `path` over plain HTTP, as the test process's admin.
async fn http_get(base: &str, path: &str) -> String {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = tokio::net::TcpStream::connect(host).await.unwrap();
    let token = common::test_token();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).await.unwrap();
    raw.split_once("\r\n\r\n")
        .expect("a response")
        .1
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_a_node_announces_to_a_restarted_head_is_rebuilt_when_lost() {
    let dir = tempfile::tempdir().unwrap();
    let OneResult {
        head,
        n1,
        client,
        admin,
        task,
        executor: _exec,
        ..
    } = one_result(dir.path()).await;
    let object = ObjectId::result_of(task);
    wait_held(&client, object, "the result is held").await;
    drop((client, admin, n1));
    head.stop().await;

    // A new head on the same state: the node joins again and announces what it holds,
    // which says nothing of the task that made it. Then it dies with the only copy.
    let head = start(dir.path(), Duration::from_secs(60)).await;
    let mut n1 = FakeNode::join(&head, "n1", "http://127.0.0.2:7001").await;
    n1.send(node_message::Msg::ObjectsAdded(proto::ObjectsAdded {
        objects: stored(&[(object, 4096)]),
    }));
    let client = RawClient::connect(&head).await;
    wait_held(&client, object, "the re-announced result is held").await;
    n1.die();
    wait_until("the result is rebuilding", || async {
        let loc = client.locate_one(object).await;
        assert!(loc.lost.is_empty(), "not lost: {}", loc.lost);
        loc.rebuilding
    })
    .await;
    let mut n2 = FakeNode::join(&head, "n2", "http://127.0.0.3:7002").await;
    let (again, _exec2) = run_one_task(&mut n2, 4096).await;
    assert_eq!(again, task, "the task named by the result's id runs again");
    wait_held(&client, object, "the rebuilt result is held by n2").await;
    head.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_result_object_drops_its_tasks_kept_input() {
    use flame_core::storage::{SqliteStorage, Storage};
    let dir = tempfile::tempdir().unwrap();
    let OneResult {
        head,
        mut n1,
        client,
        admin,
        sid,
        task,
        executor: _exec,
    } = one_result(dir.path()).await;
    let object = ObjectId::result_of(task);
    wait_held(&client, object, "the result is held").await;
    let req = proto::ObjectRefs {
        object_ids: vec![object.0],
    };
    client.fe.clone().delete_objects(req).await.unwrap();
    n1.expect("n1 deletes the result", |m| match m {
        node_command::Msg::DeleteObjects(r) => Some(r.object_ids),
        _ => None,
    })
    .await;
    drop((client, admin, n1));
    head.stop().await; // the writer drains before the head is down

    let mut db = SqliteStorage::open(&dir.path().join("flame.db")).unwrap();
    let key = flame_core::ids::TaskKey { session: sid, task };
    let record = db.get_task(key).unwrap().expect("the task is stored");
    assert!(
        record.input.is_empty(),
        "its result is gone, so is its kept input: {:?}",
        record.input
    );
}
