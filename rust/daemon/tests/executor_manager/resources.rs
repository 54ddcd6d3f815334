//! What a node reports about itself and how it leaves: slots capped by what fits in its
//! memory at the executor memory limit, and the drain on shutdown (it tells the head, keeps
//! its executors until the head says it is drained, or stops them when its grace runs out).

use std::time::Duration;

use flame_core::proto::{node_command, node_message};
use flame_daemon::executor_manager::run_node;
use tokio_util::sync::CancellationToken;

use super::fake_head::{within, Harness, NodeConn};
use super::ECHO;

const GIB: u64 = 1 << 30;

/// The next message that is not a heartbeat.
async fn next_non_heartbeat(node: &mut NodeConn) -> Option<node_message::Msg> {
    loop {
        match node.next().await {
            Some(node_message::Msg::Heartbeat(h)) => {
                assert!(h.memory_available > 0, "heartbeats carry MemAvailable");
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slots_are_capped_by_memory_and_resources_are_reported() {
    let mut h = Harness::start("memory-fit").await;
    let mut config = h.config(8, &[ECHO]);
    config.executor_memory_bytes = Some(GIB);
    config.memory_bytes = Some(3 * GIB);
    let token = CancellationToken::new();
    let task = tokio::spawn(run_node(config, token.clone()));
    let (mut node, register) = h.accept(1).await;
    assert_eq!(register.slots, 3, "3 GiB hold three 1 GiB executors, not 8");
    assert_eq!(
        register.memory_bytes,
        3 * GIB,
        "the configured memory is reported"
    );
    assert!(register.cpus >= 1);
    for id in 1..=4 {
        node.spawn(id).await;
    }
    let refused = next_non_heartbeat(&mut node).await;
    match refused {
        Some(node_message::Msg::Exited(e)) => {
            assert_eq!(e.executor_id, 4);
            assert!(e.stderr_tail.contains("all 3 slots"), "{}", e.stderr_tail);
        }
        other => panic!("expected the fourth spawn refused, got {other:?}"),
    }
    let executors = h.executors(3).await;
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    drop((executors, node));
    h.no_children_left().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_drains_until_the_head_says_drained() {
    let mut h = Harness::start("drain").await;
    let mut config = h.config(2, &[ECHO]);
    config.drain_grace = Duration::from_secs(60);
    let token = CancellationToken::new();
    let mut task = tokio::spawn(run_node(config, token.clone()));
    let (mut node, _) = h.accept(1).await;
    node.spawn(1).await;
    let executors = h.executors(1).await;

    token.cancel();
    assert!(
        matches!(
            next_non_heartbeat(&mut node).await,
            Some(node_message::Msg::Drain(_))
        ),
        "the node tells the head it is draining"
    );
    // Still serving: its executor runs on and commands are carried out.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut task)
            .await
            .is_err(),
        "a draining node waits for the head"
    );
    assert_eq!(h.tagged_pids().len(), 1);
    node.send(node_command::Msg::Kill(flame_core::proto::KillExecutor {
        executor_id: 1,
        reason: "its node is draining".into(),
    }))
    .await;
    match next_non_heartbeat(&mut node).await {
        Some(node_message::Msg::Exited(e)) => assert_eq!(e.executor_id, 1),
        other => panic!("expected the exit report, got {other:?}"),
    }
    node.send(node_command::Msg::Drained(
        flame_core::proto::NodeDrained {},
    ))
    .await;
    within(task)
        .await
        .expect("node task")
        .expect("a drained node exits cleanly");
    drop((executors, node));
    h.no_children_left().await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_the_head_never_ends_stops_after_the_grace() {
    let mut h = Harness::start("drain-grace").await;
    let mut config = h.config(1, &[ECHO]);
    config.drain_grace = Duration::from_millis(300);
    let token = CancellationToken::new();
    let task = tokio::spawn(run_node(config, token.clone()));
    let (mut node, _) = h.accept(1).await;
    node.spawn(1).await;
    let executors = h.executors(1).await;
    token.cancel();
    assert!(matches!(
        next_non_heartbeat(&mut node).await,
        Some(node_message::Msg::Drain(_))
    ));
    // No answer: after the grace the node stops its executor itself and reports it.
    match next_non_heartbeat(&mut node).await {
        Some(node_message::Msg::Exited(e)) => assert_eq!(e.executor_id, 1),
        other => panic!("expected the exit report, got {other:?}"),
    }
    within(task).await.expect("node task").expect("clean stop");
    drop((executors, node));
    h.no_children_left().await;
    h.stop().await;
}
