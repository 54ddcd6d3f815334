//! End-to-end tests of the daemon on loopback: a real head and node, real executor processes
//! (`flame-echo-executor`, so no Python is needed), and the Rust client.

mod common;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use flame_core::client::Client;
use flame_core::ids::{SessionId, TaskId};
use flame_core::model::{ErrorKind, SessionSpec, TaskState};
use flame_core::proto;
use flame_daemon::local::LocalCluster;
use flame_daemon::session_manager::ManagerConfig;

async fn start(state_dir: &Path, slots: u32) -> LocalCluster {
    start_on(state_dir, slots, 0).await
}

async fn start_on(state_dir: &Path, slots: u32, port: u16) -> LocalCluster {
    let manager = ManagerConfig {
        release_delay: Duration::from_millis(200),
        ..Default::default()
    };
    start_with(state_dir, slots, port, manager).await
}

/// A head (with these tunables) and a node of `slots` echo executors, on 127.0.0.1.
async fn start_with(
    state_dir: &Path,
    slots: u32,
    port: u16,
    manager: ManagerConfig,
) -> LocalCluster {
    let mut head = common::head_config(state_dir, manager);
    head.port = port;
    common::start_cluster(head, common::echo_node(state_dir, slots))
        .await
        .expect("cluster starts")
}

async fn connect(cluster: &LocalCluster) -> Client {
    Client::connect(
        cluster.address(),
        &common::admin(&cluster.head),
        Duration::from_secs(5),
        "test",
    )
    .await
    .expect("client connects")
}

async fn open(client: &Client, common_data: &'static [u8], retries: u32) -> SessionId {
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        common_data: Bytes::from_static(common_data),
        max_retries: retries,
        ..Default::default()
    };
    common::create_session(client, spec).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_run_and_each_completes_once_with_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 2).await;
    let client = connect(&cluster).await;
    let sid = open(&client, b"", 3).await;
    let inputs: Vec<Bytes> = (0..2000).map(|i| Bytes::from(format!("in-{i}"))).collect();
    let ids = client.submit(sid, inputs).unwrap();
    let done = common::collect(&client, &ids).await;
    for (i, id) in ids.iter().enumerate() {
        let c = &done[&id.0];
        assert_eq!(c.state, TaskState::Succeeded.as_i32());
        assert_eq!(c.output, Bytes::from(format!("in-{i}")));
    }
    let info = client
        .frontend()
        .get_session(proto::SessionRef { session_id: sid.0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.succeeded, 2000);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_classified_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 2).await;
    let client = connect(&cluster).await;

    let sid = open(&client, b"", 3).await;
    let ids = client
        .submit(sid, vec![Bytes::from_static(b"fail:boom")])
        .unwrap();
    let c = &common::collect(&client, &ids).await[&ids[0].0];
    assert_eq!(c.state, TaskState::Failed.as_i32());
    let e = c.error.as_ref().unwrap();
    assert_eq!(e.kind, ErrorKind::ErrorUserException as i32);
    assert!(e.message.contains("boom"));

    let bad = open(&client, b"fail-enter", 3).await;
    let ids = client
        .submit(
            bad,
            vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
        )
        .unwrap();
    for c in common::collect(&client, &ids).await.values() {
        let e = c.error.as_ref().unwrap();
        assert_eq!(e.kind, ErrorKind::ErrorSessionEnterFailed as i32, "{e:?}");
    }

    let ids = client
        .submit(SessionId(9999), vec![Bytes::from_static(b"x")])
        .unwrap();
    let c = &common::collect(&client, &ids).await[&ids[0].0];
    assert_eq!(
        c.error.as_ref().unwrap().kind,
        ErrorKind::ErrorSessionNotFound as i32
    );
    let status = client
        .frontend()
        .get_session(proto::SessionRef { session_id: 9999 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(status.message().contains("9999"));

    // The first session still works after all that.
    let ids = client.submit(sid, vec![Bytes::from_static(b"ok")]).unwrap();
    assert_eq!(
        common::collect(&client, &ids).await[&ids[0].0].output,
        Bytes::from_static(b"ok")
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_session_cancels_its_unfinished_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 1).await;
    let client = connect(&cluster).await;
    let sid = open(&client, b"", 3).await;
    let inputs = (0..20).map(|_| Bytes::from_static(b"sleep:100")).collect();
    let ids = client.submit(sid, inputs).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let info = client
        .frontend()
        .close_session(proto::SessionRef { session_id: sid.0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state, proto::SessionState::SessionClosed as i32);
    let done = common::collect(&client, &ids).await;
    let cancelled = done
        .values()
        .filter(|c| c.state == TaskState::Cancelled.as_i32())
        .count();
    assert!(cancelled >= 10, "most tasks were still queued: {cancelled}");
    let late = client.submit(sid, vec![Bytes::from_static(b"x")]).unwrap();
    let c = &common::collect(&client, &late).await[&late[0].0];
    assert_eq!(
        c.error.as_ref().unwrap().kind,
        ErrorKind::ErrorSessionClosed as i32
    );
    cluster.stop().await;
}

/// Pids of this process's children whose command is `name` and that run in `dir` (tests run
/// in parallel in one process; each cluster's executors work in its own state dir).
fn children_named(name: &str, dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let comm_ok = stat.contains(&format!("({name}"));
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        if comm_ok && ppid == Some(me) && cwd.as_deref() == Some(dir) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_executor_is_killed_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 1).await;
    let client = connect(&cluster).await;
    let sid = open(&client, b"", 3).await;
    let ids = client
        .submit(sid, vec![Bytes::from_static(b"sleep:1500")])
        .unwrap();
    let mut pids = Vec::new();
    for _ in 0..100 {
        pids = children_named("flame-echo-exec", dir.path());
        if !pids.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pids.len(), 1, "one executor runs the task");
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    let c = &common::collect(&client, &ids).await[&ids[0].0];
    assert_eq!(c.state, TaskState::Succeeded.as_i32(), "{c:?}");
    assert_eq!(c.attempts, 2);
    cluster.stop().await;
    assert!(
        children_named("flame-echo-exec", dir.path()).is_empty(),
        "no executor left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 1).await;
    let client = connect(&cluster).await;
    let sid = open(&client, b"", 3).await;
    let first = client
        .submit(sid, vec![Bytes::from_static(b"quick")])
        .unwrap();
    common::collect(&client, &first).await;
    let inputs = (0..8)
        .map(|i| Bytes::from(format!("sleep:{}", 50 + i)))
        .collect();
    let rest = client.submit(sid, inputs).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(client);
    cluster.stop().await;

    let cluster = start(dir.path(), 1).await;
    let client = connect(&cluster).await;
    common::assert_resumed(&client, sid, &first, &rest).await;
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_timeout_fails_and_the_executor_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 1).await;
    let client = connect(&cluster).await;
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        timeout_secs: 0.5,
        ..Default::default()
    };
    let sid = common::create_session(&client, spec).await;
    let started = std::time::Instant::now();
    let ids = client
        .submit(
            sid,
            vec![
                Bytes::from_static(b"sleep:30000"),
                Bytes::from_static(b"after"),
            ],
        )
        .unwrap();
    let done = common::collect(&client, &ids).await;
    let hung = &done[&ids[0].0];
    assert_eq!(
        hung.error.as_ref().unwrap().kind,
        ErrorKind::ErrorTimeout as i32
    );
    assert_eq!(
        done[&ids[1].0].output,
        Bytes::from_static(b"after"),
        "runs on a new executor"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_rides_through_a_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 1).await;
    let port = cluster.head.local_addr.port();
    let client = connect(&cluster).await;
    let sid = open(&client, b"", 3).await;
    let inputs = (0..20)
        .map(|i| Bytes::from(format!("sleep:{}", 40 + i)))
        .collect();
    let mut ids = client.submit(sid, inputs).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.stop().await; // graceful: running tasks finish, queued ones stay stored

    // Submitted while the daemon is down: queued in the client, sent after it reconnects.
    let later = (0..5).map(|i| Bytes::from(format!("later-{i}"))).collect();
    ids.extend(client.submit(sid, later).unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cluster = start_on(dir.path(), 1, port).await;
    let done = common::collect(&client, &ids).await;
    assert_eq!(done.len(), 25);
    for (i, id) in ids.iter().enumerate() {
        let c = &done[&id.0];
        assert_eq!(c.state, TaskState::Succeeded.as_i32(), "task {i}: {c:?}");
        let want = if i < 20 {
            format!("sleep:{}", 40 + i)
        } else {
            format!("later-{}", i - 20)
        };
        assert_eq!(c.output, Bytes::from(want));
    }
    assert_eq!(client.outstanding(), 0);
    let info = client
        .frontend()
        .get_session(proto::SessionRef { session_id: sid.0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.succeeded, 25, "each ran once: {info:?}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_of_a_client_that_stays_away_are_closed_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ManagerConfig {
        client_lease: Duration::from_millis(300),
        ..Default::default()
    };
    let cluster = start_with(dir.path(), 1, 0, manager).await;
    let owner = connect(&cluster).await;
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        owner: owner.client_id().0,
        ..Default::default()
    };
    let sid = common::create_session(&owner, spec).await.0;
    let ids = owner
        .submit(SessionId(sid), vec![Bytes::from_static(b"sleep:60000")])
        .unwrap();
    let _ = ids;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let observer = connect(&cluster).await;
    let state = |o: &Client| {
        let mut fe = o.frontend();
        async move {
            fe.get_session(proto::SessionRef { session_id: sid })
                .await
                .unwrap()
                .into_inner()
                .state
        }
    };
    assert_eq!(
        state(&observer).await,
        proto::SessionState::SessionOpen as i32,
        "owner still here"
    );
    owner.close();
    drop(owner);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while state(&observer).await != proto::SessionState::SessionClosed as i32 {
        assert!(
            std::time::Instant::now() < deadline,
            "the session was not closed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_task_printed_comes_with_its_completion_and_stays_retrievable() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start(dir.path(), 1).await;
    let client = connect(&cluster).await;
    let sid = open(&client, b"", 0).await;
    let inputs = vec![
        Bytes::from_static(b"say:hello\n"),
        Bytes::from_static(b"quiet"),
    ];
    let ids = client.submit(sid, inputs).unwrap();
    let done = common::collect(&client, &ids).await;
    assert_eq!(done[&ids[0].0].log, "hello\n");
    assert_eq!(done[&ids[1].0].log, "");

    let log = |task: TaskId| {
        let mut fe = client.frontend();
        async move {
            fe.get_task_log(proto::TaskRef {
                session_id: sid.0,
                task_id: task.0,
            })
            .await
        }
    };
    assert_eq!(log(ids[0]).await.unwrap().into_inner().text, "hello\n");
    assert_eq!(log(ids[1]).await.unwrap().into_inner().text, "");
    let unknown = log(TaskId(ids[1].0 + 1000)).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(
        unknown.message().contains("has no task"),
        "{}",
        unknown.message()
    );

    // A finished task watched later (as after a reconnect) comes from storage, log included.
    let other = connect(&cluster).await;
    other.watch(sid, vec![ids[0]]).unwrap();
    let again = common::collect(&other, &ids[..1]).await;
    assert_eq!(again[&ids[0].0].log, "hello\n");
    cluster.stop().await;
}
