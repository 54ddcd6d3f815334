//! An executor whose stream to the session manager ends while a task runs stops by itself
//! within the orphan grace, and takes what it started along: the session manager never takes
//! it back, so nothing may keep running for nobody.

use std::time::Duration;

use flame_core::executor::orphan::ORPHAN_GRACE;
use flame_core::proto::{self, executor_command, executor_message, ExecutorCommand};
use prost::bytes::Bytes;

use super::fake_head::Harness;
use super::ECHO;

fn command(msg: executor_command::Msg) -> Result<ExecutorCommand, tonic::Status> {
    Ok(ExecutorCommand { msg: Some(msg) })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_that_loses_its_stream_mid_task_stops_within_the_grace() {
    let mut h = Harness::start("orphan-grace").await;
    let (task, token, mut node) = h.node(1, &[ECHO]).await;
    let mut heartbeats = 0;
    node.spawn(1).await;
    let (id, commands, mut inbound) = h.executor_conns(1).await.pop().expect("executor");

    let bind = proto::BindSession {
        session_id: 1,
        application: "echo".into(),
        ..Default::default()
    };
    let task_of = |task_id: u64, input: &'static str| proto::TaskAssignment {
        task_id,
        input: Bytes::from_static(input.as_bytes()),
        attempt: 1,
    };
    let tasks = proto::TaskBatch {
        session_id: 1,
        tasks: vec![task_of(1, "sleep:1"), task_of(2, "sleep:60000")],
    };
    for msg in [
        executor_command::Msg::Bind(bind),
        executor_command::Msg::Tasks(tasks),
    ] {
        commands.send(command(msg)).await.expect("executor stream");
    }
    // Task 1's result means task 2 (60 s) is running now.
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .expect("no result within 10 s")
            .expect("executor stream")
            .and_then(|m| m.msg);
        match msg {
            Some(executor_message::Msg::Results(_)) => break,
            Some(_) => continue,
            None => panic!("the executor ended its stream"),
        }
    }

    // The session manager goes away (its side of the stream ends); the node stays.
    let lost_at = tokio::time::Instant::now();
    drop((commands, inbound));
    let exit = tokio::time::timeout(ORPHAN_GRACE * 3, node.next_exit(&mut heartbeats))
        .await
        .expect("the executor kept running after losing its stream");
    let took = lost_at.elapsed();
    assert_eq!(exit.executor_id, id);
    assert!(
        took >= ORPHAN_GRACE - Duration::from_millis(500) && took < ORPHAN_GRACE * 2,
        "stopped {took:?} after losing its stream (grace {ORPHAN_GRACE:?})"
    );
    assert!(
        exit.stderr_tail.contains("still running"),
        "{}",
        exit.stderr_tail
    );
    h.no_children_left().await;

    token.cancel();
    while node.next().await.is_some() {}
    drop(node);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("node stops")
        .expect("node task")
        .expect("clean stop");
    h.stop().await;
}
