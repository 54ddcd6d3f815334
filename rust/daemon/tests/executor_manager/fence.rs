//! A node fences itself (#13): told the head's node timeout on registering, it stops every
//! executor once it has heard nothing from the head for that long (the head has given their
//! tasks to other nodes by then), and registers again under its id. A head that answers
//! each heartbeat keeps the node's executors running.

use std::time::{Duration, Instant};

use flame_core::proto::{node_command, node_message, HeadHeartbeat};

use super::fake_head::{within, Harness};
use super::ECHO;

const TIMEOUT_MS: u32 = 400;

#[tokio::test(flavor = "multi_thread")]
async fn a_node_that_hears_nothing_from_the_head_stops_its_executors_and_registers_again() {
    let mut h = Harness::start("fence-silent").await;
    h.node_timeout_ms = TIMEOUT_MS;
    let config = h.config(2, &[ECHO]);
    let (task, token, mut node) = h.node_with(config, 7).await;
    node.spawn(1).await;
    let executors = h.executors(1).await;
    let silent_since = Instant::now();
    assert_eq!(h.tagged_pids().len(), 1);

    // The head reads the node's heartbeats and says nothing: as seen from a node cut off
    // from it (its stream stays open, so only the silence tells).
    let mut heartbeats = 0;
    // Heartbeats keep coming either way: bound the wait as a whole.
    let exit = tokio::time::timeout(Duration::from_secs(8), node.next_exit(&mut heartbeats))
        .await
        .expect("the node still runs its executor 8 s into the head's silence: no fence");
    let fenced_after = silent_since.elapsed();
    assert_eq!(exit.executor_id, 1);
    assert!(
        fenced_after >= Duration::from_millis(u64::from(TIMEOUT_MS)),
        "fenced after {fenced_after:?}, before the node timeout"
    );
    assert!(heartbeats > 0, "heartbeats went on until the fence");
    h.no_children_left().await;

    // Then it registers again, asking for the id it had.
    let (node2, register) = h.accept(7).await;
    assert_eq!(register.previous_node_id, 7);
    assert!(!task.is_finished(), "the node keeps running");

    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    drop((node, node2, executors));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_the_head_answers_keeps_its_executors() {
    let mut h = Harness::start("fence-answered").await;
    h.node_timeout_ms = TIMEOUT_MS;
    let config = h.config(2, &[ECHO]);
    let (task, token, mut node) = h.node_with(config, 8).await;
    node.spawn(1).await;
    let executors = h.executors(1).await;

    // Three node timeouts of heartbeats, each answered: nothing may be stopped.
    let until = Instant::now() + 3 * Duration::from_millis(u64::from(TIMEOUT_MS));
    while Instant::now() < until {
        match node.next().await {
            Some(node_message::Msg::Heartbeat(_)) => {
                node.send(node_command::Msg::HeadHeartbeat(HeadHeartbeat {}))
                    .await
            }
            Some(node_message::Msg::ObjectsAdded(_) | node_message::Msg::ObjectsRemoved(_)) => {}
            other => panic!("the node sent {other:?} while the head answered"),
        }
    }
    assert_eq!(h.tagged_pids().len(), 1, "the executor was stopped");

    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    h.no_children_left().await;
    drop((node, executors));
    h.stop().await;
}
