//! The Rust client of the Frontend service, used by the Python binding (and any Rust caller).
//!
//! Unary calls map one-to-one to RPCs. Tasks go another way: [`Client::submit`] only assigns
//! ids and queues the inputs; a background task drains the queue and sends whatever has
//! accumulated as a few large `SubmitBatch` messages on one stream, so a tight loop of calls
//! costs a channel push each, not a round trip. Completions arrive on the same stream in
//! batches and are handed out by [`Client::next_completions`] in batches too.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::error::{error_chain, FlameError, Result};
use crate::ids::{ClientId, SessionId, TaskId};
use crate::proto::{self, client_message, frontend_client::FrontendClient, server_message};

/// Largest gRPC message the client sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
/// A submit message is cut when it reaches this many bytes of input.
const BATCH_BYTES: usize = 4 << 20;

enum Outbound {
    Submit(SessionId, Vec<proto::TaskSubmission>),
    Cancel(SessionId, TaskId),
    Watch(SessionId, Vec<TaskId>),
}

/// A connection to a session manager.
pub struct Client {
    address: String,
    client_id: ClientId,
    max_payload: u64,
    frontend: FrontendClient<Channel>,
    /// Next task counter, locked together with the queue push so ids reach the wire in order.
    outbound: Mutex<(u32, mpsc::UnboundedSender<Outbound>)>,
    completions: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<proto::TaskCompletion>>>,
    closed: CancellationToken,
}

/// `host:port` → `http://host:port`; an explicit scheme is kept.
pub fn normalize_address(address: &str) -> String {
    let a = address.trim().trim_end_matches('/');
    if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

impl Client {
    /// Connect, say hello, and open the task stream.
    ///
    /// # Errors
    /// `Unreachable` naming the address when nothing answers within `timeout`.
    pub async fn connect(address: &str, timeout: Duration, name: &str) -> Result<Client> {
        let address = normalize_address(address);
        let unreachable = |reason: String| FlameError::Unreachable {
            address: address.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| FlameError::InvalidArgument(format!("bad address '{address}': {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let mut frontend = FrontendClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let hello = proto::HelloRequest {
            client_name: name.to_string(),
            previous_client_id: 0,
        };
        let reply = tokio::time::timeout(timeout, frontend.hello(hello))
            .await
            .map_err(|_| unreachable(format!("no hello within {timeout:?}")))?
            .map_err(|s| unreachable(s.message().to_string()))?
            .into_inner();

        let (req_tx, req_rx) = mpsc::unbounded_channel::<proto::ClientMessage>();
        let inbound = frontend
            .stream(UnboundedReceiverStream::new(req_rx))
            .await
            .map_err(|s| unreachable(s.message().to_string()))?
            .into_inner();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let closed = CancellationToken::new();
        tokio::spawn(send_loop(out_rx, req_tx, closed.clone()));
        tokio::spawn(receive_loop(inbound, done_tx, closed.clone()));
        Ok(Client {
            address,
            client_id: ClientId(reply.client_id),
            max_payload: reply.max_message_bytes,
            frontend,
            outbound: Mutex::new((1, out_tx)),
            completions: tokio::sync::Mutex::new(done_rx),
            closed,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// Largest task input or output the daemon accepts.
    pub fn max_payload(&self) -> u64 {
        self.max_payload
    }

    /// A clone of the unary stub (cheap; shares the connection).
    pub fn frontend(&self) -> FrontendClient<Channel> {
        self.frontend.clone()
    }

    /// Queue tasks for `session` and return their ids. Never blocks on the network.
    ///
    /// # Errors
    /// `PayloadTooLarge` (nothing queued) if an input is over the daemon's limit;
    /// `ConnectionLost` if the connection is closed.
    pub fn submit(&self, session: SessionId, inputs: Vec<Bytes>) -> Result<Vec<TaskId>> {
        if let Some((i, big)) = inputs
            .iter()
            .enumerate()
            .find(|(_, b)| self.max_payload > 0 && b.len() as u64 > self.max_payload)
        {
            return Err(FlameError::PayloadTooLarge(format!(
                "task input #{i} is {} bytes; the daemon accepts at most {}",
                big.len(),
                self.max_payload
            )));
        }
        let mut guard = self.outbound.lock().map_err(|_| poisoned())?;
        let start = guard.0;
        let n = u32::try_from(inputs.len())
            .ok()
            .filter(|n| start.checked_add(*n).is_some())
            .ok_or_else(|| FlameError::InvalidArgument("this client ran out of task ids".into()))?;
        let ids: Vec<TaskId> = (0..n)
            .map(|k| TaskId::compose(self.client_id, start + k))
            .collect();
        let tasks = ids
            .iter()
            .zip(inputs)
            .map(|(id, input)| proto::TaskSubmission {
                task_id: id.0,
                input,
            })
            .collect();
        guard
            .1
            .send(Outbound::Submit(session, tasks))
            .map_err(|_| self.lost())?;
        guard.0 = start + n;
        Ok(ids)
    }

    /// Ask the daemon to cancel a task.
    ///
    /// # Errors
    /// `ConnectionLost` if the connection is closed.
    pub fn cancel(&self, session: SessionId, task: TaskId) -> Result<()> {
        let guard = self.outbound.lock().map_err(|_| poisoned())?;
        guard
            .1
            .send(Outbound::Cancel(session, task))
            .map_err(|_| self.lost())
    }

    /// Ask for the completions of these tasks on this connection.
    ///
    /// # Errors
    /// `ConnectionLost` if the connection is closed.
    pub fn watch(&self, session: SessionId, tasks: Vec<TaskId>) -> Result<()> {
        let guard = self.outbound.lock().map_err(|_| poisoned())?;
        guard
            .1
            .send(Outbound::Watch(session, tasks))
            .map_err(|_| self.lost())
    }

    /// Completions that arrived, waiting up to `timeout` for the first; an empty batch on
    /// timeout, `None` once the connection is closed and everything was handed out.
    pub async fn next_completions(&self, timeout: Duration) -> Option<Vec<proto::TaskCompletion>> {
        let mut rx = self.completions.lock().await;
        let mut batch = match tokio::time::timeout(timeout, rx.recv()).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(_) => return Some(Vec::new()),
        };
        while let Ok(mut more) = rx.try_recv() {
            batch.append(&mut more);
        }
        Some(batch)
    }

    /// Whether the task stream has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Close the task stream; pending completions are dropped.
    pub fn close(&self) {
        self.closed.cancel();
    }

    fn lost(&self) -> FlameError {
        FlameError::ConnectionLost(format!("the connection to {} is closed", self.address))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

fn poisoned() -> FlameError {
    FlameError::Internal("client state lock poisoned".into())
}

/// Drain queued submissions and send them as few, large messages (per session, in order).
async fn send_loop(
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    tx: mpsc::UnboundedSender<proto::ClientMessage>,
    closed: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = closed.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut pending = vec![first];
        while pending.len() < 65_536 {
            match rx.try_recv() {
                Ok(m) => pending.push(m),
                Err(_) => break,
            }
        }
        let mut current: Option<(SessionId, Vec<proto::TaskSubmission>, usize)> = None;
        let flush = |cur: &mut Option<(SessionId, Vec<proto::TaskSubmission>, usize)>| {
            cur.take().map(|(s, tasks, _)| proto::ClientMessage {
                msg: Some(client_message::Msg::Submit(proto::SubmitBatch {
                    session_id: s.0,
                    tasks,
                })),
            })
        };
        let mut out = Vec::new();
        for m in pending {
            match m {
                Outbound::Submit(s, mut tasks) => {
                    let bytes: usize = tasks.iter().map(|t| t.input.len()).sum();
                    match &mut current {
                        Some((cs, ct, cb)) if *cs == s && *cb + bytes <= BATCH_BYTES => {
                            ct.append(&mut tasks);
                            *cb += bytes;
                        }
                        _ => {
                            out.extend(flush(&mut current));
                            current = Some((s, tasks, bytes));
                        }
                    }
                }
                Outbound::Cancel(s, t) => {
                    out.extend(flush(&mut current));
                    out.push(proto::ClientMessage {
                        msg: Some(client_message::Msg::Cancel(proto::CancelTask {
                            session_id: s.0,
                            task_id: t.0,
                        })),
                    });
                }
                Outbound::Watch(s, ts) => {
                    out.extend(flush(&mut current));
                    out.push(proto::ClientMessage {
                        msg: Some(client_message::Msg::Watch(proto::Watch {
                            session_id: s.0,
                            task_ids: ts.into_iter().map(|t| t.0).collect(),
                        })),
                    });
                }
            }
        }
        out.extend(flush(&mut current));
        for m in out {
            if tx.send(m).is_err() {
                closed.cancel();
                return;
            }
        }
    }
}

/// Hand completion batches to `next_completions`; end (closing the channel) when the stream
/// ends or the client closes.
async fn receive_loop(
    mut inbound: tonic::Streaming<proto::ServerMessage>,
    tx: mpsc::UnboundedSender<Vec<proto::TaskCompletion>>,
    closed: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = closed.cancelled() => break,
            m = inbound.message() => m,
        };
        match msg {
            Ok(Some(proto::ServerMessage {
                msg: Some(server_message::Msg::Completions(b)),
            })) => {
                if tx.send(b.items).is_err() {
                    break;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "task stream ended with an error");
                break;
            }
        }
    }
    closed.cancel();
}
