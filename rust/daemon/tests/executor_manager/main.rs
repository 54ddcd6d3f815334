//! Node agent tests against an in-process fake session manager on 127.0.0.1:0 (`fake_head.rs`),
//! with real child processes (`flame-echo-executor`). The fake hands each `NodeStream` and
//! `ExecutorStream` to the test, which plays the session manager by hand — and can restart
//! it on the same address, as a head restarting would. The real `flame-daemon head` and
//! `flame-daemon node` processes are tested in `node_process.rs`.
//!
//! Children of this test process are found through /proc by a per-test environment tag, so
//! the tests can check that a stopped node leaves none behind even while others run alongside.

use std::time::Duration;

use flame_core::proto::{executor_command, node_command, node_message, ExecutorCommand};
use flame_daemon::executor_manager::{run_node, NodeConfig};
use tokio_util::sync::CancellationToken;

mod fake_head;
mod fence;
mod orphans;
mod pins;
mod resources;
mod store;

use fake_head::{within, Harness};

const ECHO: &str = env!("CARGO_BIN_EXE_flame-echo-executor");

fn shutdown_cmd() -> ExecutorCommand {
    let reason = "test".into();
    ExecutorCommand {
        msg: Some(executor_command::Msg::Shutdown(
            flame_core::proto::Shutdown { reason },
        )),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn spawns_kills_refuses_and_reaps_executors() {
    let mut h = Harness::start("spawn-kill").await;
    let (task, token, mut node) = h.node(2, &[ECHO]).await;
    let mut heartbeats = 0;

    node.spawn(1).await;
    node.spawn(2).await;
    node.spawn(3).await;
    // Two slots: the third is refused at once, reported as an exit.
    let refused = node.next_exit(&mut heartbeats).await;
    assert_eq!(
        (refused.executor_id, refused.exit_code, refused.signal),
        (3, -1, 0)
    );
    assert!(
        refused.stderr_tail.contains("slots"),
        "{}",
        refused.stderr_tail
    );
    let executors = h.executors(2).await;
    assert_eq!(
        executors.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(h.tagged_pids().len(), 2);

    node.send(node_command::Msg::Kill(flame_core::proto::KillExecutor {
        executor_id: 1,
        reason: "test".into(),
    }))
    .await;
    let killed = node.next_exit(&mut heartbeats).await;
    assert_eq!(
        (killed.executor_id, killed.exit_code, killed.signal),
        (1, -1, libc::SIGKILL)
    );

    // An executor told to shut down exits by itself, with code 0.
    executors[1]
        .1
        .send(Ok(shutdown_cmd()))
        .await
        .expect("executor 2 stream");
    let clean = node.next_exit(&mut heartbeats).await;
    assert_eq!(
        (clean.executor_id, clean.exit_code, clean.signal),
        (2, 0, 0)
    );

    // Freed slots are usable again.
    node.spawn(4).await;
    let _four = h.executors(1).await;
    let pids = h.tagged_pids();
    assert_eq!(pids.len(), 1);
    assert!(heartbeats > 0 || matches!(node.next().await, Some(node_message::Msg::Heartbeat(_))));

    token.cancel();
    // The node reports what it stopped while the stream is still up, then ends its side.
    let stopped = node.next_exit(&mut heartbeats).await;
    assert_eq!((stopped.executor_id, stopped.signal), (4, libc::SIGTERM));
    while let Some(msg) = node.next().await {
        assert!(matches!(msg, node_message::Msg::Heartbeat(_)), "{msg:?}");
    }
    drop(node);
    within(task).await.expect("node task").expect("clean stop");
    assert!(
        h.tagged_pids().is_empty(),
        "children left behind: {:?}",
        h.tagged_pids()
    );
    drop((executors, _four));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_runs_beyond_its_slots_as_far_as_the_head_allows() {
    let mut h = Harness::start("beyond-slots").await;
    let (task, token, mut node) = h.node(1, &[ECHO]).await;
    let mut heartbeats = 0;
    node.spawn(1).await;
    // One executor of this node is blocked in a nested wait: one more may start.
    node.spawn_beyond(2, 1).await;
    let executors = h.executors(2).await;
    assert_eq!(h.tagged_pids().len(), 2);
    // But not two more.
    node.spawn_beyond(3, 1).await;
    let refused = node.next_exit(&mut heartbeats).await;
    assert_eq!((refused.executor_id, refused.exit_code), (3, -1));
    assert!(
        refused.stderr_tail.contains("nested waits"),
        "{}",
        refused.stderr_tail
    );
    token.cancel();
    let mut stopped = vec![
        node.next_exit(&mut heartbeats).await.executor_id,
        node.next_exit(&mut heartbeats).await.executor_id,
    ];
    stopped.sort_unstable();
    assert_eq!(stopped, [1, 2]);
    while node.next().await.is_some() {}
    drop(node);
    within(task).await.expect("node task").expect("clean stop");
    assert!(h.tagged_pids().is_empty(), "{:?}", h.tagged_pids());
    drop(executors);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_outlives_a_head_restart_and_registers_again_under_its_id() {
    let mut h = Harness::start("head-restart").await;
    let config = h.config(4, &[ECHO]);
    let (task, token, node) = h.node_with(config, 42).await;
    node.spawn(1).await;
    node.spawn(2).await;
    let executors = h.executors(2).await;
    assert_eq!(h.tagged_pids().len(), 2);

    // The head restarts on the same address; the old one ends the node's stream.
    h.restart().await;
    drop(node);
    // The old fake still holds the executors' streams open, so they would not leave by
    // themselves: the node stops them, and only then registers again.
    let (node, register) = h.accept(42).await;
    assert_eq!(register.previous_node_id, 42, "asks for the id it had");
    assert!(
        h.tagged_pids().is_empty(),
        "children kept across the head's restart: {:?}",
        h.tagged_pids()
    );
    assert!(!task.is_finished(), "the node keeps running");

    // It serves the new head as before.
    node.spawn(3).await;
    let three = h.executors(1).await;
    assert_eq!(three[0].0, 3);
    assert_eq!(h.tagged_pids().len(), 1);

    let stopping = std::time::Instant::now();
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
    // Reaped before run_node returned; /proc may lag a moment behind.
    h.no_children_left().await;
    drop((node, executors, three));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_whose_head_is_gone_retries_until_shut_down() {
    let mut h = Harness::start("head-down").await;
    let (task, token, node) = h.node(2, &[ECHO]).await;
    node.spawn(1).await;
    let executors = h.executors(1).await;

    // The head goes away for good: its stream breaks and nothing listens any more.
    h.server_stop.cancel();
    drop((node, executors));
    h.no_children_left().await;
    // Several refused attempts later the node is still waiting for a head.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!task.is_finished(), "the node gave up on its head");

    // Shutdown is noticed in the middle of a backoff.
    let stopping = std::time::Instant::now();
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    assert!(
        stopping.elapsed() < Duration::from_millis(500),
        "stopped in {:?}",
        stopping.elapsed()
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_over_the_memory_limit_is_killed_and_reported() {
    let mut h = Harness::start("memory").await;
    let config = NodeConfig {
        executor_memory_bytes: Some(64 << 20),
        ..h.config(1, &[ECHO])
    };
    let (task, token, mut node) = h.node_with(config, 1).await;
    node.spawn(1).await;
    let executors = h.executors(1).await;
    let commands = &executors[0].1;
    let bind = executor_command::Msg::Bind(flame_core::proto::BindSession {
        session_id: 1,
        application: "echo".into(),
        ..Default::default()
    });
    let tasks = executor_command::Msg::Tasks(flame_core::proto::TaskBatch {
        session_id: 1,
        tasks: vec![flame_core::proto::TaskAssignment {
            task_id: 1,
            input: b"alloc:200".to_vec().into(),
            attempt: 1,
        }],
    });
    for msg in [bind, tasks] {
        let command = ExecutorCommand { msg: Some(msg) };
        commands.send(Ok(command)).await.expect("executor stream");
    }

    // The executor would hold 200 MiB for 10 s; the node kills it long before.
    let started = std::time::Instant::now();
    let exit = node.next_exit(&mut 0).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        (exit.executor_id, exit.exit_code, exit.signal),
        (1, -1, libc::SIGKILL)
    );
    let first = exit.stderr_tail.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("killed by flame: memory limit of 64 MiB exceeded (resident ")
            && first.ends_with(" MiB)"),
        "{}",
        exit.stderr_tail
    );
    assert!(h.tagged_pids().is_empty());

    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    drop((node, executors));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_start_is_reported_as_an_exit() {
    let mut h = Harness::start("no-binary").await;
    let (task, token, mut node) = h.node(1, &["/nonexistent/flame-executor"]).await;
    node.spawn(9).await;
    let exit = node.next_exit(&mut 0).await;
    assert_eq!((exit.executor_id, exit.exit_code), (9, -1));
    assert!(
        exit.stderr_tail.contains("failed to start"),
        "{}",
        exit.stderr_tail
    );
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    drop(node);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chatty_child_is_drained_and_its_stderr_tail_reported() {
    let mut h = Harness::start("chatty").await;
    // ~1.3 MB on stderr: far past a pipe buffer, so an undrained pipe would block the child.
    let script = "seq 1 200000 >&2; echo done; exit 3";
    let (task, token, mut node) = h.node(1, &["sh", "-c", script]).await;
    node.spawn(5).await;
    let exit = node.next_exit(&mut 0).await;
    assert_eq!((exit.executor_id, exit.exit_code, exit.signal), (5, 3, 0));
    let tail: Vec<&str> = exit.stderr_tail.lines().collect();
    assert_eq!(tail.len(), 50);
    assert_eq!((tail[0], tail[49]), ("199951", "200000"));
    token.cancel();
    drop(node);
    within(task).await.expect("node task").expect("clean stop");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_while_the_head_is_unreachable_returns_promptly() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let work_dir = tempfile::tempdir().expect("tempdir");
    let config = NodeConfig {
        work_dir: work_dir.path().into(),
        ..NodeConfig::new(address)
    };
    let token = CancellationToken::new();
    let task = tokio::spawn(run_node(config, token.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel();
    within(task)
        .await
        .expect("node task")
        .expect("shutdown before registering is not an error");
}
