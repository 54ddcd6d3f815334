//! Executor loop tests against an in-process fake Backend on 127.0.0.1:0. Each test starts its
//! own server and executor and stops both; the fake hands every `ExecutorStream` to the test,
//! which plays the session manager by hand.

use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::link::{coalesce, Outbound};
use super::*;
use crate::proto::backend_server::{Backend, BackendServer};
use crate::proto::{ExecutorCommand, ExecutorMessage, NodeCommand, NodeMessage};

const WAIT: Duration = Duration::from_secs(10);

/// One executor's stream, as the session manager sees it.
pub(super) struct Conn {
    inbound: Streaming<ExecutorMessage>,
    commands: mpsc::Sender<Result<ExecutorCommand, Status>>,
}

impl Conn {
    pub(super) async fn send(&self, msg: executor_command::Msg) {
        let cmd = ExecutorCommand { msg: Some(msg) };
        self.commands
            .send(Ok(cmd))
            .await
            .expect("executor stream open");
    }

    pub(super) async fn next(&mut self) -> Option<executor_message::Msg> {
        let msg = tokio::time::timeout(WAIT, self.inbound.message())
            .await
            .expect("timed out");
        msg.expect("stream error")
            .map(|m| m.msg.expect("message body"))
    }

    /// Reads result batches until `n` results arrived; returns them and the batch count.
    pub(super) async fn results(&mut self, n: usize) -> (Vec<proto::TaskResult>, usize) {
        let (mut all, mut batches) = (Vec::new(), 0);
        while all.len() < n {
            match self.next().await {
                Some(executor_message::Msg::Results(b)) => {
                    batches += 1;
                    all.extend(b.results);
                }
                other => panic!("expected results, got {other:?}"),
            }
        }
        (all, batches)
    }
}

struct FakeBackend {
    conns: mpsc::UnboundedSender<Conn>,
}

#[tonic::async_trait]
impl Backend for FakeBackend {
    type NodeStreamStream = ReceiverStream<Result<NodeCommand, Status>>;
    type ExecutorStreamStream = ReceiverStream<Result<ExecutorCommand, Status>>;

    async fn node_stream(
        &self,
        _: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::NodeStreamStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn executor_stream(
        &self,
        request: Request<Streaming<ExecutorMessage>>,
    ) -> Result<Response<Self::ExecutorStreamStream>, Status> {
        let (tx, rx) = mpsc::channel(64);
        let _ = self.conns.send(Conn {
            inbound: request.into_inner(),
            commands: tx,
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

pub(super) struct Server {
    pub(super) address: String,
    conns: mpsc::UnboundedReceiver<Conn>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub(super) async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, conns) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let serve = tonic::transport::Server::builder()
            .add_service(BackendServer::new(FakeBackend { conns: tx }))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            );
        let task = tokio::spawn(async move { serve.await.expect("serve") });
        Server {
            address,
            conns,
            stop,
            task,
        }
    }

    /// Accepts the next executor and checks it registered first, under its own id.
    pub(super) async fn accept(&mut self, id: u64) -> Conn {
        let mut conn = tokio::time::timeout(WAIT, self.conns.recv())
            .await
            .expect("timed out")
            .expect("conn");
        match conn.next().await {
            Some(executor_message::Msg::Register(r)) => assert_eq!(r.executor_id, id),
            other => panic!("expected register, got {other:?}"),
        }
        conn
    }

    pub(super) async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server stops")
            .expect("server task");
    }
}

/// Upper-cases its input; fails `fail:*` inputs, fails enter on common data `fail-enter`,
/// "prints" the rest of `say:*` inputs (its task log), and blocks on `block` until the test
/// opens the gate. Records every call.
struct TestHost {
    calls: Arc<Mutex<Vec<String>>>,
    gate: Option<std_mpsc::Receiver<()>>,
    log: String,
    /// Set by a `store:*` input: the task "stored" its result as its result object.
    stored: Option<(ObjectId, u64)>,
}

impl ServiceHost for TestHost {
    fn enter(&mut self, ctx: &SessionContext) -> Result<(), TaskFailure> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("enter {}", ctx.application));
        if ctx.common_data.as_ref() == b"fail-enter" {
            return Err(TaskFailure::new(
                ErrorKind::ErrorUserException,
                "constructor raised",
            ));
        }
        Ok(())
    }

    fn invoke(&mut self, _: SessionId, task: TaskId, input: Bytes) -> Result<Bytes, TaskFailure> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("invoke {}", task.0));
        if input.as_ref() == b"block" {
            if let Some(gate) = &self.gate {
                let _ = gate.recv();
            }
        }
        if input.as_ref() == b"wait" {
            // A nested wait, as `flame.get` inside a task does it.
            assert!(set_blocked(true));
            if let Some(gate) = &self.gate {
                let _ = gate.recv();
            }
            assert!(set_blocked(false));
        }
        if let Some(msg) = input.strip_prefix(b"fail:") {
            let msg = String::from_utf8_lossy(msg);
            return Err(TaskFailure::new(ErrorKind::ErrorUserException, msg));
        }
        if let Some(said) = input.strip_prefix(b"say:") {
            self.log = String::from_utf8_lossy(said).into_owned();
        }
        if input.starts_with(b"store:") {
            self.stored = Some((ObjectId::result_of(task), 5 << 20));
            return Ok(Bytes::from_static(b"REF"));
        }
        Ok(Bytes::from(input.to_ascii_uppercase()))
    }

    fn take_log(&mut self) -> String {
        std::mem::take(&mut self.log)
    }

    fn take_output_object(&mut self) -> Option<(ObjectId, u64)> {
        self.stored.take()
    }

    fn leave(&mut self) {
        self.calls.lock().unwrap().push("leave".into());
    }
}

type Calls = Arc<Mutex<Vec<String>>>;

pub(super) fn start_executor(
    address: &str,
    gate: Option<std_mpsc::Receiver<()>>,
) -> (Calls, tokio::task::JoinHandle<Result<()>>) {
    let calls = Calls::default();
    let mut host = TestHost {
        calls: calls.clone(),
        gate,
        log: String::new(),
        stored: None,
    };
    let address = address.to_string();
    let handle = tokio::task::spawn_blocking(move || {
        run_executor(&address, &Credentials::none(), ExecutorId(7), &mut host)
    });
    (calls, handle)
}

pub(super) async fn finished(handle: tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("executor returns")
        .expect("executor thread")
}

pub(super) fn bind(session: u64, common_data: &'static [u8]) -> executor_command::Msg {
    executor_command::Msg::Bind(proto::BindSession {
        session_id: session,
        application: "app".into(),
        app_spec: Bytes::new(),
        common_data: Bytes::from_static(common_data),
        max_output_bytes: MAX_OUTPUT,
        result_object_bytes: 0,
    })
}

/// The result limit the test session manager binds with.
const MAX_OUTPUT: u64 = 1024;

pub(super) fn tasks(session: u64, inputs: &[(u64, &str)]) -> executor_command::Msg {
    let tasks = inputs
        .iter()
        .map(|(id, input)| proto::TaskAssignment {
            task_id: *id,
            input: Bytes::from(input.to_string()),
            attempt: 1,
        })
        .collect();
    executor_command::Msg::Tasks(proto::TaskBatch {
        session_id: session,
        tasks,
    })
}

pub(super) fn shutdown() -> executor_command::Msg {
    executor_command::Msg::Shutdown(proto::Shutdown {
        reason: "test".into(),
    })
}

fn unbind(session: u64) -> executor_command::Msg {
    executor_command::Msg::Unbind(proto::UnbindSession {
        session_id: session,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_queued_commands_in_order_and_shuts_down() {
    let mut server = Server::start().await;
    let (calls, exec) = start_executor(&server.address, None);
    let mut conn = server.accept(7).await;

    // Everything is sent ahead at once, as a prefetching session manager would.
    conn.send(bind(1, b"")).await;
    conn.send(tasks(1, &[(10, "a"), (11, "fail:bad input")]))
        .await;
    conn.send(tasks(1, &[(12, "c")])).await;
    conn.send(unbind(1)).await;
    conn.send(shutdown()).await;

    match conn.next().await {
        Some(executor_message::Msg::Entered(e)) => assert_eq!((e.session_id, e.error), (1, None)),
        other => panic!("expected entered, got {other:?}"),
    }
    let (results, _) = conn.results(3).await;
    let ids: Vec<u64> = results.iter().map(|r| r.task_id).collect();
    assert_eq!(ids, [10, 11, 12]);
    assert!(results[0].ok && results[0].output.as_ref() == b"A");
    let failure = results[1].error.clone().expect("error");
    assert!(!results[1].ok);
    assert_eq!(
        (failure.kind, failure.message.as_str()),
        (ErrorKind::ErrorUserException as i32, "bad input")
    );
    assert_eq!(results[2].output.as_ref(), b"C");
    assert!(matches!(conn.next().await, Some(executor_message::Msg::Left(l)) if l.session_id == 1));
    // Our side ends once the executor is done; then the server may end its side.
    assert!(conn.next().await.is_none());
    drop(conn);

    finished(exec).await.expect("clean shutdown");
    let expected = ["enter app", "invoke 10", "invoke 11", "invoke 12", "leave"];
    assert_eq!(*calls.lock().unwrap(), expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_stored_as_an_object_is_reported_with_its_task_only() {
    let mut server = Server::start().await;
    let (_, exec) = start_executor(&server.address, None);
    let mut conn = server.accept(7).await;
    conn.send(bind(1, b"")).await;
    conn.send(tasks(1, &[(5, "store:big"), (6, "plain")])).await;
    conn.send(shutdown()).await;
    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Entered(_))
    ));
    let (results, _) = conn.results(2).await;
    assert!(results[0].ok && results[0].output.as_ref() == b"REF");
    let stored = results[0].output_object.expect("output object");
    assert_eq!(
        (stored.object_id, stored.size),
        (ObjectId::result_of(TaskId(5)).0, 5 << 20)
    );
    // Reported once: the next task's result is inline again.
    assert_eq!(
        (results[1].output.as_ref(), &results[1].output_object),
        (&b"PLAIN"[..], &None)
    );
    drop(conn);
    finished(exec).await.expect("clean shutdown");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fast_results_are_coalesced_into_batches() {
    let mut server = Server::start().await;
    let (_, exec) = start_executor(&server.address, None);
    let mut conn = server.accept(7).await;
    conn.send(bind(1, b"")).await;
    let inputs: Vec<(u64, String)> = (0..2000).map(|i| (i, format!("x{i}"))).collect();
    let inputs: Vec<(u64, &str)> = inputs.iter().map(|(i, s)| (*i, s.as_str())).collect();
    conn.send(tasks(1, &inputs)).await;
    conn.send(shutdown()).await;

    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Entered(_))
    ));
    let (results, batches) = conn.results(2000).await;
    assert!(results
        .iter()
        .enumerate()
        .all(|(i, r)| r.ok && r.task_id == i as u64));
    assert!(
        batches < 2000 / 4,
        "{batches} batches for 2000 results: not coalescing"
    );
    drop(conn);
    finished(exec).await.expect("clean shutdown");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_is_not_held_back_while_the_next_task_runs() {
    let mut server = Server::start().await;
    let (open_gate, gate) = std_mpsc::channel();
    let (_, exec) = start_executor(&server.address, Some(gate));
    let mut conn = server.accept(7).await;
    conn.send(bind(1, b"")).await;
    conn.send(tasks(1, &[(1, "quick"), (2, "block")])).await;

    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Entered(_))
    ));
    // Task 2 is still blocked, so task 1's result must have been sent on its own.
    let (first, _) = conn.results(1).await;
    assert_eq!(
        (first[0].task_id, first[0].output.as_ref()),
        (1, &b"QUICK"[..])
    );
    open_gate.send(()).expect("host waiting");
    let (second, _) = conn.results(1).await;
    assert_eq!(second[0].task_id, 2);

    conn.send(shutdown()).await;
    drop(conn);
    finished(exec).await.expect("clean shutdown");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_enter_fails_tasks_without_invoking() {
    let mut server = Server::start().await;
    let (calls, exec) = start_executor(&server.address, None);
    let mut conn = server.accept(7).await;
    conn.send(bind(3, b"fail-enter")).await;
    conn.send(tasks(3, &[(1, "a"), (2, "b")])).await;
    conn.send(shutdown()).await;

    let kind = ErrorKind::ErrorSessionEnterFailed as i32;
    match conn.next().await {
        Some(executor_message::Msg::Entered(e)) => {
            let error = e.error.expect("enter error reported");
            assert_eq!(
                (error.kind, error.message.as_str()),
                (kind, "constructor raised")
            );
        }
        other => panic!("expected entered, got {other:?}"),
    }
    let (results, _) = conn.results(2).await;
    assert!(results
        .iter()
        .all(|r| !r.ok && r.error.as_ref().map(|e| e.kind) == Some(kind)));
    drop(conn);
    finished(exec).await.expect("clean shutdown");
    // No invoke, and no leave for a service that never entered.
    assert_eq!(*calls.lock().unwrap(), ["enter app"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_ending_the_stream_leaves_and_returns_ok() {
    let mut server = Server::start().await;
    let (calls, exec) = start_executor(&server.address, None);
    let mut conn = server.accept(7).await;
    conn.send(bind(1, b"")).await;
    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Entered(_))
    ));
    drop(conn);
    finished(exec).await.expect("a clean end is not an error");
    assert_eq!(*calls.lock().unwrap(), ["enter app", "leave"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_stream_is_connection_lost_naming_the_address() {
    let mut server = Server::start().await;
    let (_, exec) = start_executor(&server.address, None);
    let conn = server.accept(7).await;
    conn.commands
        .send(Err(Status::unavailable("going away")))
        .await
        .expect("open");
    let err = finished(exec).await.expect_err("stream broke");
    assert!(matches!(err, FlameError::ConnectionLost(_)), "{err:?}");
    assert!(err.to_string().contains(&server.address), "{err}");
    drop(conn);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_address_is_reported() {
    // A port that was just free: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let calls = Calls::default();
    let mut host = TestHost {
        calls,
        gate: None,
        log: String::new(),
        stored: None,
    };
    let timeout = Duration::from_millis(300);
    let err = run_with_timeout(
        &address,
        &Credentials::none(),
        ExecutorId(1),
        &mut host,
        timeout,
        None,
    )
    .expect_err("nothing there");
    assert!(matches!(err, FlameError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains(&address), "{err}");
}

#[test]
fn coalesce_batches_runs_of_results_and_keeps_order() {
    let result = |id: u64, size: usize| {
        Outbound::Result(proto::TaskResult {
            session_id: 1,
            task_id: id,
            ok: true,
            output: Bytes::from(vec![0u8; size]),
            error: None,
            log: String::new(),
            run_us: 0,
            output_in_parts: false,
            output_object: None,
            contains: Vec::new(),
        })
    };
    let left = || {
        Outbound::Message(executor_message::Msg::Left(proto::SessionLeft {
            session_id: 1,
        }))
    };
    let big = 3 * 1024 * 1024;
    let items = vec![
        result(1, 1),
        result(2, 1),
        left(),
        result(3, big),
        result(4, big),
        left(),
    ];
    let shape: Vec<Vec<u64>> = coalesce(items)
        .into_iter()
        .map(|m| match m.msg {
            Some(executor_message::Msg::Results(b)) => {
                b.results.iter().map(|r| r.task_id).collect()
            }
            _ => vec![],
        })
        .collect();
    // Two small results share a batch; two 3 MiB ones are split to stay under the soft cap.
    assert_eq!(shape, vec![vec![1, 2], vec![], vec![3], vec![4], vec![]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_over_the_limit_fails_before_it_is_sent() {
    let mut server = Server::start().await;
    let (_, exec) = start_executor(&server.address, None);
    let mut conn = server.accept(7).await;
    conn.send(bind(1, b"")).await;
    let big = "x".repeat(MAX_OUTPUT as usize + 1);
    conn.send(tasks(1, &[(1, big.as_str()), (2, "small")]))
        .await;
    conn.send(shutdown()).await;
    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Entered(_))
    ));
    let (results, _) = conn.results(2).await;
    let e = results[0].error.clone().expect("the big result fails");
    assert_eq!(e.kind, ErrorKind::ErrorPayloadTooLarge as i32);
    assert!(
        e.message.contains("1025 bytes") && e.message.contains("1024"),
        "{}",
        e.message
    );
    assert!(results[1].ok, "the executor keeps serving");
    drop(conn);
    finished(exec).await.expect("clean shutdown");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_task_printed_travels_with_its_result_only() {
    let mut server = Server::start().await;
    let (_, exec) = start_executor(&server.address, None);
    let mut conn = server.accept(7).await;
    conn.send(bind(1, b"")).await;
    conn.send(tasks(1, &[(1, "say:hello\n"), (2, "quiet")]))
        .await;
    conn.send(shutdown()).await;
    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Entered(_))
    ));
    let (results, _) = conn.results(2).await;
    assert_eq!(results[0].log, "hello\n");
    assert!(results[0].ok);
    assert_eq!(
        results[1].log, "",
        "a log is handed over once, not repeated"
    );
    drop(conn);
    finished(exec).await.expect("clean shutdown");
    server.stop().await;
}
