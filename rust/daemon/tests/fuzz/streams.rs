//! Phase 2, task streams: random messages on several streams (one with a real client id, the
//! others with junk ones) while sessions close under them, then a probe that each stream still
//! works and ends cleanly; draining and closing what the fuzzing left; raw frames on streams.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic::Status;

use flame_core::client::CLIENT_ID_HEADER;
use flame_core::model::SessionSpec;
use flame_core::proto::{self, client_message, frontend_client::FrontendClient, server_message};

use crate::findings::{broken, checkpoint, describe_bytes, err, ok_or, Findings, UNDECODABLE};
use crate::gen::Gen;
use crate::messages::describe_message;
use crate::wire::{exchange, hang, Authed};
use crate::{CALL_TIMEOUT, RAW_STREAMS, STREAM_MESSAGES, TASK_STREAMS};

/// One task stream: messages go in through `tx`, completions come out of `completions`.
struct TaskStream {
    client: u32,
    tx: Option<mpsc::UnboundedSender<proto::ClientMessage>>,
    completions: mpsc::UnboundedReceiver<proto::TaskCompletion>,
    reader: JoinHandle<Result<(), Status>>,
}

impl TaskStream {
    async fn open(fe: &FrontendClient<Authed>, header: &str, client: u32) -> TaskStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut req = tonic::Request::new(UnboundedReceiverStream::new(rx));
        if let Ok(v) = header.parse() {
            req.metadata_mut().insert(CLIENT_ID_HEADER, v);
        }
        let mut inbound = fe
            .clone()
            .stream(req)
            .await
            .unwrap_or_else(|e| broken("a task stream opens", e))
            .into_inner();
        let (done, completions) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some(m) = inbound.message().await? {
                if let Some(server_message::Msg::Completions(b)) = m.msg {
                    for c in b.items {
                        let _ = done.send(c);
                    }
                }
            }
            Ok(())
        });
        TaskStream {
            client,
            tx: Some(tx),
            completions,
            reader,
        }
    }

    fn send(&self, m: proto::ClientMessage) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(m).is_ok())
    }

    fn check(&mut self, f: &mut Findings, sent: &HashMap<(u64, u64), Vec<Bytes>>) {
        while let Ok(c) = self.completions.try_recv() {
            f.completion(&c, sent);
        }
    }
}

/// On any Frontend stub: a plain one, or a client's (which stamps its state identity).
pub async fn create_echo<T>(fe: &FrontendClient<T>) -> u64
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        max_retries: 3,
        ..Default::default()
    };
    let req = proto::CreateSessionRequest {
        spec: Some(spec.into()),
    };
    let created = fe.clone().create_session(req).await;
    created
        .unwrap_or_else(|e| broken("a valid session can be created", e))
        .into_inner()
        .id
}

pub async fn fuzz_streams(g: &mut Gen, f: &mut Findings, fe: &FrontendClient<Authed>) {
    let hello = proto::HelloRequest {
        client_name: "fuzz".into(),
        previous_client_id: 0,
    };
    let id = fe
        .clone()
        .hello(hello)
        .await
        .map(|r| r.into_inner().client_id)
        .unwrap_or(0);
    let mut streams = Vec::new();
    for k in 0..TASK_STREAMS as u32 {
        // The client-id header: a real one, then junk the daemon must shrug off.
        let header = match k {
            0 => id.to_string(),
            _ => g
                .rng
                .pick(&["", "abc", "-5", "4294967296", "0", " 7"])
                .to_string(),
        };
        streams.push(TaskStream::open(fe, &header, 100 + k).await);
    }
    let mut recent = Vec::new();
    let mut closing = Vec::new();
    for i in 0..STREAM_MESSAGES {
        if g.rng.chance(3) && !g.open.is_empty() {
            // Close a session while tasks stream into it (judged when the fuzzing is over).
            let sid = g
                .open
                .swap_remove(g.rng.below(g.open.len() as u64) as usize);
            let mut fe = fe.clone();
            let req = proto::SessionRef { session_id: sid };
            let close = async move { fe.close_session(req).await };
            closing.push((sid, tokio::spawn(tokio::time::timeout(CALL_TIMEOUT, close))));
            g.closed.push(sid);
        } else if g.rng.chance(1) {
            g.open.push(create_echo(fe).await);
        }
        let k = g.rng.below(TASK_STREAMS as u64) as usize;
        let m = g.client_message(streams[k].client);
        f.count(match &m.msg {
            Some(client_message::Msg::Submit(_)) => "stream: submits",
            Some(client_message::Msg::Watch(_)) => "stream: watches",
            Some(client_message::Msg::Cancel(_)) => "stream: cancels",
            Some(client_message::Msg::Created(_)) => "stream: objects created",
            None => "stream: empty messages",
        });
        recent.push(format!("stream {k}: {}", describe_message(&m)));
        if recent.len() > 25 {
            recent.remove(0);
        }
        if !streams[k].send(m) {
            f.bad(
                "a task stream closed during the fuzzing".into(),
                recent.join("; "),
            );
        }
        if i % 25 == 24 {
            streams.iter_mut().for_each(|s| s.check(f, &g.sent));
            tokio::time::sleep(Duration::from_millis(2)).await;
            checkpoint("stream fuzzing", None, f, &recent).await;
        }
    }
    for (sid, close) in closing {
        let input = format!("CloseSession({sid}) while tasks stream in");
        let r = close.await.unwrap().unwrap_or_else(|_| Err(hang()));
        f.judge("CloseSession", &input, &r, ok_or(&[]));
    }
    checkpoint("stream fuzzing", Some(fe), f, &recent).await;

    // Every stream still carries tasks both ways, and ends cleanly when its client closes it.
    let probe = create_echo(fe).await;
    for (k, s) in streams.iter_mut().enumerate() {
        let task_id = ((9000 + k as u64) << 32) | 1;
        let input = Bytes::from(format!("probe-{k}"));
        g.remember(probe, task_id, &input);
        let tasks = vec![proto::TaskSubmission {
            task_id,
            input,
            reads: Vec::new(),
        }];
        let submit = client_message::Msg::Submit(proto::SubmitBatch {
            session_id: probe,
            tasks,
        });
        s.send(proto::ClientMessage { msg: Some(submit) });
        // Generous: the probe queues behind everything the fuzzing submitted.
        let deadline = tokio::time::Instant::now() + 3 * CALL_TIMEOUT;
        let mut seen = false;
        while !seen {
            let Ok(Some(c)) = tokio::time::timeout_at(deadline, s.completions.recv()).await else {
                break;
            };
            seen = c.session_id == probe && c.task_id == task_id;
            f.completion(&c, &g.sent);
        }
        if !seen {
            let why = if s.reader.is_finished() {
                "it ended"
            } else {
                "no completion"
            };
            f.bad(
                format!("a task stream stopped working after the fuzzing ({why})"),
                format!("stream {k}"),
            );
        }
    }
    for (k, mut s) in streams.into_iter().enumerate() {
        s.tx = None;
        let end = tokio::time::timeout(CALL_TIMEOUT, &mut s.reader).await;
        if !matches!(end, Ok(Ok(Ok(())))) {
            let end = format!("stream {k}: {end:?}");
            f.bad(
                "a task stream did not end cleanly when its client closed it".into(),
                end,
            );
        }
        s.check(f, &g.sent);
    }
}

/// Wait until the daemon has no unfinished task; how long that took.
pub async fn wait_idle(f: &mut Findings, fe: &FrontendClient<Authed>) -> Duration {
    let start = Instant::now();
    loop {
        let info = fe
            .clone()
            .get_cluster_info(proto::Empty {})
            .await
            .unwrap_or_else(|e| broken("cluster info answers", e));
        let info = info.into_inner();
        if info.tasks_pending + info.tasks_running == 0 {
            return start.elapsed();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let left = format!(
                "{} pending, {} running",
                info.tasks_pending, info.tasks_running
            );
            f.bad(
                "accepted tasks were still unfinished 20 s after the fuzzing".into(),
                left,
            );
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn close_all(g: &mut Gen, f: &mut Findings, fe: &FrontendClient<Authed>) {
    for sid in std::mem::take(&mut g.open) {
        let r = fe
            .clone()
            .close_session(proto::SessionRef { session_id: sid })
            .await;
        f.judge(
            "CloseSession",
            &format!("CloseSession({sid})"),
            &r,
            ok_or(&[]),
        );
        g.closed.push(sid);
    }
}

/// Raw frames on the task stream: a frame that does not decode must end the stream with a
/// status saying so; frames that decode are messages like any other.
pub async fn fuzz_raw_streams(g: &mut Gen, f: &mut Findings, grpc: &Grpc<Channel>) {
    let mut running = Vec::new();
    for _ in 0..RAW_STREAMS {
        f.count("stream: raw frame sequences");
        let mut frames = Vec::new();
        for _ in 0..=g.rng.below(3) {
            let valid = g.client_message(7777).encode_to_vec();
            let n = 1 + g.rng.below(48) as usize;
            let b = match g.rng.below(10) {
                0..=2 => valid,
                3..=5 => g.rng.bytes(n),
                _ => g.mutate(valid),
            };
            frames.push(Bytes::from(b));
        }
        let decodes = frames
            .iter()
            .all(|b| proto::ClientMessage::decode(&b[..]).is_ok());
        let expect = if decodes {
            ok_or(&[])
        } else {
            err(UNDECODABLE)
        };
        let input: Vec<String> = frames.iter().map(|b| describe_bytes(b)).collect();
        let input = format!("raw frames on Stream: {}", input.join(" | "));
        running.push((
            exchange(grpc, "/flame.Frontend/Stream", frames),
            input,
            expect,
        ));
    }
    for (task, input, expect) in running {
        f.judge("Stream", &input, &task.await.unwrap(), expect);
    }
}
