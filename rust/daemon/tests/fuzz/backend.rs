//! Phase 3, the Backend: builders of node and executor messages, raw frames on the backend
//! streams, and executor and node streams that do not register properly — each refused with a
//! clear status. The node and executor that register and then lie are in `fake_node.rs`.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use flame_core::proto::{self, backend_client::BackendClient, executor_message, node_message};

use crate::findings::{describe_bytes, err, ok_or, Findings, INVALID, UNDECODABLE};
use crate::gen::Gen;
use crate::wire::{exchange, hang, Authed};
use crate::{CALL_TIMEOUT, RAW_BACKEND_STREAMS};

fn exec_msg(m: executor_message::Msg) -> proto::ExecutorMessage {
    proto::ExecutorMessage { msg: Some(m) }
}

fn node_msg(m: node_message::Msg) -> proto::NodeMessage {
    proto::NodeMessage { msg: Some(m) }
}

pub fn exec_register(executor_id: u64) -> proto::ExecutorMessage {
    exec_msg(executor_message::Msg::Register(proto::ExecutorRegister {
        executor_id,
    }))
}

pub fn node_register(slots: u32, previous_node_id: u64) -> proto::NodeMessage {
    let name = "fuzz-node".into();
    let r = proto::NodeRegister {
        name,
        slots,
        memory_bytes: u64::MAX,
        previous_node_id,
        ..Default::default()
    };
    node_msg(node_message::Msg::Register(r))
}

pub fn exited(executor_id: u64) -> proto::NodeMessage {
    let stderr_tail = "fuzz".into();
    let e = proto::ExecutorExited {
        executor_id,
        exit_code: 1,
        signal: 0,
        stderr_tail,
    };
    node_msg(node_message::Msg::Exited(e))
}

pub fn heartbeat() -> proto::NodeMessage {
    node_msg(node_message::Msg::Heartbeat(proto::Heartbeat::default()))
}

pub fn results(results: Vec<proto::TaskResult>) -> proto::ExecutorMessage {
    exec_msg(executor_message::Msg::Results(proto::TaskResultBatch {
        results,
    }))
}

pub fn entered(session_id: u64) -> proto::ExecutorMessage {
    exec_msg(executor_message::Msg::Entered(proto::SessionEntered {
        session_id,
        error: None,
    }))
}

pub fn left(session_id: u64) -> proto::ExecutorMessage {
    exec_msg(executor_message::Msg::Left(proto::SessionLeft {
        session_id,
    }))
}

/// The next message of a stream within `wait`; `None` on timeout, error or end.
pub async fn next<T>(s: &mut Streaming<T>, wait: Duration) -> Option<T> {
    tokio::time::timeout(wait, s.message()).await.ok()?.ok()?
}

/// Raw frames on the backend streams: only a node's valid registration opens one; after it,
/// a frame that does not decode must end the stream with a status.
pub async fn fuzz_raw_backend(g: &mut Gen, f: &mut Findings, grpc: &Grpc<Channel>) {
    let mut running = Vec::new();
    for _ in 0..RAW_BACKEND_STREAMS {
        f.count("backend: raw frame sequences");
        let node = g.rng.chance(50);
        let mut frames = Vec::new();
        for _ in 0..=g.rng.below(2) {
            let valid = match (node, g.rng.below(4)) {
                (true, 0) => node_register(g.u32_edge(), g.rng.below(4)).encode_to_vec(),
                (true, 1) => heartbeat().encode_to_vec(),
                (true, 2) => exited(g.rng.next()).encode_to_vec(),
                (true, _) => proto::NodeMessage { msg: None }.encode_to_vec(),
                (false, 0 | 1) => exec_register((1 << 40) | g.rng.next() >> 24).encode_to_vec(),
                (false, 2) => entered(g.rng.next()).encode_to_vec(),
                (false, _) => results(vec![Default::default()]).encode_to_vec(),
            };
            let n = 1 + g.rng.below(32) as usize;
            let b = match g.rng.below(10) {
                0..=3 => valid,
                4..=5 => g.rng.bytes(n),
                _ => g.mutate(valid),
            };
            frames.push(Bytes::from(b));
        }
        let (path, expect) = if node {
            let decoded: Vec<_> = frames
                .iter()
                .map(|b| proto::NodeMessage::decode(&b[..]))
                .collect();
            let later = decoded[1..].iter().all(|m| m.is_ok());
            let path = "/flame.Backend/NodeStream";
            match &decoded[0] {
                Err(_) => (path, err(UNDECODABLE)),
                // A mutated name is not the node token's: refused (#11).
                Ok(proto::NodeMessage {
                    msg: Some(node_message::Msg::Register(r)),
                }) if r.name != "fuzz-node" => (path, err(&[Code::PermissionDenied])),
                Ok(proto::NodeMessage {
                    msg: Some(node_message::Msg::Register(r)),
                }) if r.slots > 0 => (path, if later { ok_or(&[]) } else { err(UNDECODABLE) }),
                Ok(_) => (path, err(INVALID)),
            }
        } else {
            let first = proto::ExecutorMessage::decode(&frames[0][..]);
            (
                "/flame.Backend/ExecutorStream",
                err(if first.is_ok() { INVALID } else { UNDECODABLE }),
            )
        };
        let input: Vec<String> = frames.iter().map(|b| describe_bytes(b)).collect();
        let input = format!("raw frames on {path}: {}", input.join(" | "));
        running.push((exchange(grpc, path, frames), path, input, expect));
    }
    for (task, path, input, expect) in running {
        f.judge(path, &input, &task.await.unwrap(), expect);
    }
}

/// Executor streams from no executor this daemon started, node streams that do not register
/// properly: each refused with a clear status.
pub async fn bad_registrations(g: &mut Gen, f: &mut Findings, mut be: BackendClient<Authed>) {
    let junk = g.rng.next();
    let none = proto::ExecutorMessage { msg: None };
    let execs: Vec<(Vec<proto::ExecutorMessage>, String)> = vec![
        (vec![], "no message at all".into()),
        (vec![exec_register(0)], "Register executor 0".into()),
        (
            vec![exec_register(u64::MAX)],
            "Register executor u64::MAX".into(),
        ),
        (
            vec![exec_register(junk)],
            format!("Register executor {junk}"),
        ),
        (vec![none], "msg: None".into()),
        (vec![entered(1)], "SessionEntered first".into()),
        (vec![results(vec![])], "an empty result batch first".into()),
        (vec![left(1)], "SessionLeft first".into()),
    ];
    for (msgs, input) in execs {
        f.count("backend: bad executor registrations");
        let call = be.executor_stream(tokio_stream::iter(msgs));
        let r = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(hang()));
        f.judge(
            "ExecutorStream",
            &format!("ExecutorStream: {input}"),
            &r,
            err(INVALID),
        );
    }
    let nodes = vec![
        (vec![], "no message at all", err(INVALID)),
        (
            vec![proto::NodeMessage { msg: None }],
            "msg: None",
            err(INVALID),
        ),
        (vec![heartbeat()], "Heartbeat first", err(INVALID)),
        (vec![exited(1)], "ExecutorExited first", err(INVALID)),
        (
            vec![node_register(0, 0)],
            "Register with 0 slots",
            err(INVALID),
        ),
        (
            vec![node_register(0, u64::MAX)],
            "Register with 0 slots as node u64::MAX",
            err(INVALID),
        ),
        (
            vec![node_register(1, u64::MAX)],
            "Register as node u64::MAX",
            ok_or(INVALID),
        ),
        (
            vec![node_register(u32::MAX, 1)],
            "Register u32::MAX slots as node 1",
            ok_or(INVALID),
        ),
    ];
    for (msgs, input, expect) in nodes {
        f.count("backend: bad node registrations");
        // An accepted node leaves at once: its message stream is already over.
        let call = be.node_stream(tokio_stream::iter(msgs));
        let r = tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| Err(hang()));
        f.judge("NodeStream", &format!("NodeStream: {input}"), &r, expect);
    }
}
