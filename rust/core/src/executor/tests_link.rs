//! Executor tests of what the link does beside running tasks: giving back the window while a
//! task waits on other tasks (nested calls), answering heartbeats from the network thread, and
//! sending large outputs ahead (announced, in parts). Same fake Backend as `tests.rs`.

use std::sync::mpsc as std_mpsc;

use bytes::Bytes;

use super::link::{coalesce, Outbound};
use super::tests::{bind, finished, shutdown, start_executor, tasks, Server};
use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_task_gives_back_the_tasks_queued_behind_it() {
    let mut server = Server::start().await;
    let (gate, gate_rx) = std_mpsc::channel();
    let (calls, exec) = start_executor(&server.address, Some(gate_rx));
    let mut conn = server.accept(7).await;
    conn.send(bind(1, b"")).await;
    conn.send(tasks(1, &[(10, "wait"), (11, "b"), (12, "c")]))
        .await;
    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Entered(_))
    ));
    // Blocked first, then the window behind the waiting task comes back, in order.
    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Blocked(_))
    ));
    match conn.next().await {
        Some(executor_message::Msg::Returned(r)) => {
            assert_eq!((r.session_id, r.task_ids), (1, vec![11, 12]))
        }
        other => panic!("expected returned tasks, got {other:?}"),
    }
    // What arrives while it waits goes straight back.
    conn.send(tasks(1, &[(13, "d")])).await;
    match conn.next().await {
        Some(executor_message::Msg::Returned(r)) => assert_eq!(r.task_ids, [13]),
        other => panic!("expected returned tasks, got {other:?}"),
    }
    gate.send(()).expect("host waits");
    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Unblocked(_))
    ));
    let (results, _) = conn.results(1).await;
    assert_eq!(results[0].task_id, 10);
    // Back from the wait, it takes tasks again.
    conn.send(tasks(1, &[(14, "e")])).await;
    let (results, _) = conn.results(1).await;
    assert_eq!(results[0].task_id, 14);
    conn.send(shutdown()).await;
    assert!(conn.next().await.is_none());
    drop(conn);
    finished(exec).await.expect("clean shutdown");
    // The returned tasks never ran here.
    let expected = ["enter app", "invoke 10", "invoke 14", "leave"];
    assert_eq!(*calls.lock().unwrap(), expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_is_answered_by_the_network_thread_while_a_task_runs() {
    let mut server = Server::start().await;
    let (open_gate, gate) = std_mpsc::channel();
    let (_, exec) = start_executor(&server.address, Some(gate));
    let mut conn = server.accept(7).await;
    conn.send(bind(1, b"")).await;
    conn.send(tasks(1, &[(1, "block")])).await;
    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Entered(_))
    ));
    // The host is stuck in task 1; the ping is answered all the same, and is not a command.
    let ping = proto::ExecutorPing { seq: 5 };
    conn.send(executor_command::Msg::Ping(ping)).await;
    match conn.next().await {
        Some(executor_message::Msg::Pong(p)) => assert_eq!((p.seq, p.sending_bytes), (5, 0)),
        other => panic!("expected a pong, got {other:?}"),
    }
    open_gate.send(()).expect("host waiting");
    let (done, _) = conn.results(1).await;
    assert_eq!(done[0].task_id, 1);
    conn.send(shutdown()).await;
    drop(conn);
    finished(exec).await.expect("clean shutdown");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_result_is_announced_before_it_is_sent() {
    let mut server = Server::start().await;
    let (_, exec) = start_executor(&server.address, None);
    let mut conn = server.accept(7).await;
    let mut no_limit = proto::BindSession {
        session_id: 1,
        application: "app".into(),
        ..Default::default()
    };
    no_limit.max_output_bytes = 0;
    conn.send(executor_command::Msg::Bind(no_limit)).await;
    let big = "x".repeat(2 << 20);
    conn.send(tasks(1, &[(1, big.as_str())])).await;
    assert!(matches!(
        conn.next().await,
        Some(executor_message::Msg::Entered(_))
    ));
    match conn.next().await {
        Some(executor_message::Msg::Pong(p)) => {
            assert_eq!(p.seq, 0);
            assert!(p.sending_bytes >= 2 << 20, "{}", p.sending_bytes);
        }
        other => panic!("expected the announcement, got {other:?}"),
    }
    let (done, _) = conn.results(1).await;
    assert_eq!(done[0].output.len(), 2 << 20);
    conn.send(shutdown()).await;
    drop(conn);
    finished(exec).await.expect("clean shutdown");
    server.stop().await;
}

#[test]
fn coalesce_sends_a_large_output_ahead_in_parts() {
    let big = Bytes::from(vec![5u8; 2 * crate::parts::PART_BYTES + 1]);
    let items = vec![Outbound::Result(proto::TaskResult {
        session_id: 1,
        task_id: 9,
        ok: true,
        output: big.clone(),
        error: None,
        log: String::new(),
        run_us: 1,
        output_in_parts: false,
        output_object: None,
        contains: Vec::new(),
    })];
    let msgs = coalesce(items);
    assert_eq!(msgs.len(), 4, "three parts, then the result");
    let mut asm = crate::parts::Assembler::new(usize::MAX);
    for m in &msgs[..3] {
        match &m.msg {
            Some(executor_message::Msg::Part(p)) => asm.add(p.clone()),
            other => panic!("expected a part, got {other:?}"),
        }
    }
    match &msgs[3].msg {
        Some(executor_message::Msg::Results(b)) => {
            let r = &b.results[0];
            assert!(r.output_in_parts && r.output.is_empty());
            assert_eq!(asm.take(1, 9), big);
        }
        other => panic!("expected the result, got {other:?}"),
    }
}
