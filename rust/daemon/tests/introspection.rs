//! End-to-end tests of the introspection RPCs (GetTask, ListTasks, ListExecutors, the unary
//! CancelTask) on a real head and node with echo executors, over loopback gRPC.

mod common;

use std::time::Duration;

use bytes::Bytes;
use flame_core::client::Client;
use flame_core::ids::{SessionId, TaskId};
use flame_core::model::{ErrorKind, TaskState};
use flame_core::proto;
use flame_daemon::local::LocalCluster;
use flame_daemon::session_manager::ManagerConfig;

async fn start(state_dir: &std::path::Path) -> LocalCluster {
    common::start_echo_cluster(state_dir, 1, ManagerConfig::default()).await
}

/// Wait for `n` completions; panics after 30 s.
async fn wait_done(client: &Client, n: usize) {
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen < n {
        assert!(tokio::time::Instant::now() < deadline, "{seen} of {n} done");
        seen += client
            .next_completions(Duration::from_millis(200))
            .await
            .expect("stream open")
            .len();
    }
}

async fn task(
    client: &Client,
    sid: SessionId,
    t: TaskId,
) -> Result<proto::TaskInfo, tonic::Status> {
    let r = proto::TaskRef {
        session_id: sid.0,
        task_id: t.0,
    };
    client.frontend().get_task(r).await.map(|r| r.into_inner())
}

async fn list(
    client: &Client,
    sid: SessionId,
    state: Option<TaskState>,
    limit: u32,
) -> proto::TaskList {
    let req = proto::ListTasksRequest {
        session_id: sid.0,
        state: state.map_or(0, TaskState::as_i32),
        limit,
        offset: 0,
    };
    client
        .frontend()
        .list_tasks(req)
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_show_their_state_timings_placement_and_failure() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path()).await;
    let client = common::admin_client(&cluster.head, "test").await;
    let sid = common::open_echo_session(&client).await;
    let done = client
        .submit(
            sid,
            vec![Bytes::from_static(b"ok"), Bytes::from_static(b"fail:boom")],
        )
        .unwrap();
    wait_done(&client, 2).await;

    let failed = task(&client, sid, done[1]).await.unwrap();
    assert_eq!(failed.state, TaskState::Failed.as_i32());
    let e = failed.error.as_ref().unwrap();
    assert_eq!(e.kind, ErrorKind::ErrorUserException as i32);
    assert!(e.message.contains("boom"), "{e:?}");
    assert!(e.payload.is_empty(), "introspection never ships payloads");
    assert!(failed.executor_id != 0 && failed.node_id != 0, "{failed:?}");
    assert!(failed.created_ms > 0);
    assert!(failed.created_ms <= failed.started_ms && failed.started_ms <= failed.finished_ms);
    let ok = task(&client, sid, done[0]).await.unwrap();
    assert_eq!(
        (ok.state, ok.output_bytes),
        (TaskState::Succeeded.as_i32(), 2)
    );

    // Run times are the executor's own: the second of two 300 ms tasks sent to one executor
    // together waited for the first, but its run time does not count that wait.
    let naps = client
        .submit(sid, vec![Bytes::from_static(b"sleep:300"); 2])
        .unwrap();
    wait_done(&client, 2).await;
    for t in naps {
        let info = task(&client, sid, t).await.unwrap();
        let ran = info.finished_ms - info.started_ms;
        assert!((300..600).contains(&ran), "ran {ran} ms: {info:?}");
    }

    // A long task is running: memory says so, storage alone would say pending.
    let slow = client
        .submit(sid, vec![Bytes::from_static(b"sleep:20000")])
        .unwrap()[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let running = loop {
        let page = list(&client, sid, Some(TaskState::Running), 10).await;
        if page.total == 1 {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never running: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(running.tasks[0].task_id, slow.0);
    let info = task(&client, sid, slow).await.unwrap();
    assert_eq!(info.state, TaskState::Running.as_i32());
    assert!(info.started_ms > 0 && info.finished_ms == 0 && info.executor_id != 0);

    let all = list(&client, sid, None, 0).await;
    assert_eq!(all.total, 5);
    let states: Vec<i32> = all.tasks.iter().map(|t| t.state).collect();
    assert!(states.contains(&TaskState::Running.as_i32()), "{states:?}");
    let page = list(&client, sid, None, 1).await;
    assert_eq!(
        (page.tasks.len(), page.total),
        (1, 5),
        "a page is bounded by its limit"
    );
    let succeeded = list(&client, sid, Some(TaskState::Succeeded), 10).await;
    assert_eq!(succeeded.tasks.len(), 3);
    assert_eq!(succeeded.tasks[0].task_id, done[0].0);

    let execs = client
        .frontend()
        .list_executors(proto::Empty {})
        .await
        .unwrap()
        .into_inner()
        .executors;
    assert_eq!(execs.len(), 1, "{execs:?}");
    assert_eq!((execs[0].session_id, execs[0].inflight), (sid.0, 1));
    assert_eq!(execs[0].id, info.executor_id);

    // The unary cancel kills the running task and answers it cancelled.
    let r = proto::TaskRef {
        session_id: sid.0,
        task_id: slow.0,
    };
    let cancelled = client.frontend().cancel_task(r).await.unwrap().into_inner();
    assert_eq!(cancelled.state, TaskState::Cancelled.as_i32());
    let again = client.frontend().cancel_task(r).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    assert!(
        again.message().contains("already finished (cancelled)"),
        "{again:?}"
    );
    // Read-your-writes: reads (on reader connections) right after the acknowledged cancel
    // see it, in a filtered page and in the session's counts.
    let page = list(&client, sid, Some(TaskState::Cancelled), 10).await;
    let ids: Vec<u64> = page.tasks.iter().map(|t| t.task_id).collect();
    assert_eq!((ids, page.total), (vec![slow.0], 1));
    let info = client
        .frontend()
        .get_session(proto::SessionRef { session_id: sid.0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.cancelled, info.running), (1, 0), "{info:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_introspection_requests_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path()).await;
    let client = common::admin_client(&cluster.head, "test").await;
    let sid = common::open_echo_session(&client).await;
    let mut fe = client.frontend();

    let missing = task(&client, sid, TaskId(77)).await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("no task 77"), "{missing:?}");
    let zero = task(&client, sid, TaskId(0)).await.unwrap_err();
    assert_eq!(zero.code(), tonic::Code::InvalidArgument);

    let mut req = proto::ListTasksRequest {
        session_id: sid.0,
        limit: 5000,
        ..Default::default()
    };
    let too_many = fe.list_tasks(req).await.unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    assert!(too_many.message().contains("at most 1000"), "{too_many:?}");
    req.limit = 10;
    req.state = 42;
    let bad_state = fe.list_tasks(req).await.unwrap_err();
    assert!(bad_state.message().contains("42"), "{bad_state:?}");
    req.state = 0;
    req.session_id = 999;
    let unknown = fe.list_tasks(req).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(unknown.message().contains("999"), "{unknown:?}");

    let r = proto::TaskRef {
        session_id: sid.0,
        task_id: 5,
    };
    assert_eq!(
        fe.cancel_task(r).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    // A closed session's tasks are answered from storage.
    let ids = client.submit(sid, vec![Bytes::from_static(b"x")]).unwrap();
    wait_done(&client, 1).await;
    fe.close_session(proto::SessionRef { session_id: sid.0 })
        .await
        .unwrap();
    let after = list(&client, sid, None, 10).await;
    assert_eq!(after.total, 1);
    assert_eq!(after.tasks[0].task_id, ids[0].0);
    cluster.stop().await;
}
