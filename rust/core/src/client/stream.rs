//! The client's task stream: one background task that sends queued submissions in batches,
//! hands completions out, and — when the stream breaks — reconnects with backoff, re-watches
//! every outstanding task and resubmits those the daemon never stored — unless the daemon
//! came back on another state: then every outstanding task fails with `ClusterStateLost` and
//! the stream ends, so nothing is watched or submitted into whatever now has the old ids.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use super::stamp::{stub, Frontend, StateStamp};
use super::{hello, Lost, Outbound, Outstanding};
use crate::error::{FlameError, Result};
use crate::ids::{ClientId, SessionId, TaskId};
use crate::model::{ErrorKind, TaskFailure, TaskState};
use crate::proto::{self, client_message, server_message};

/// A submit message is cut when it reaches this many bytes of input.
const BATCH_BYTES: usize = 4 << 20;
/// Most ids in one Watch message.
const WATCH_CHUNK: usize = 16_384;
/// Metadata key carrying the client id on the task stream (the daemon's client lease).
pub const CLIENT_ID_HEADER: &str = "flame-client-id";

/// One open task stream.
pub(super) struct Open {
    req_tx: mpsc::UnboundedSender<proto::ClientMessage>,
    inbound: tonic::Streaming<proto::ServerMessage>,
}

/// Everything the background task needs to keep a stream up.
pub(super) struct Link {
    pub address: String,
    pub transport: super::Transport,
    pub name: String,
    pub client_id: ClientId,
    pub timeout: Duration,
    pub reconnect_for: Duration,
    pub outstanding: Outstanding,
    pub completions: mpsc::UnboundedSender<Vec<proto::TaskCompletion>>,
    pub closed: CancellationToken,
    /// The state identity from the first hello ("" from a head too old to have one).
    pub state_id: String,
    /// Stamps every call with `state_id`.
    pub stamp: StateStamp,
    /// Set when a reconnect finds the daemon on another state.
    pub lost: Lost,
}

/// Why serving a stream stopped.
enum Stop {
    Closed,
    Broken,
}

/// What a reconnection attempt found.
enum Reconnect {
    Open(Box<Open>),
    /// The daemon is on another state than the client's; the reason.
    StateLost(String),
    GaveUp,
}

impl Link {
    /// Open the task stream on `frontend`, tagged with this client's id.
    pub(super) async fn open(&self, mut frontend: Frontend) -> Result<Open> {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let mut req = tonic::Request::new(UnboundedReceiverStream::new(req_rx));
        req.metadata_mut()
            .insert(CLIENT_ID_HEADER, self.client_id.0.into());
        let inbound = frontend
            .stream(req)
            .await
            .map_err(|s| match s.code() {
                tonic::Code::DataLoss => FlameError::from(s),
                _ => FlameError::Unreachable {
                    address: self.address.clone(),
                    reason: s.message().to_string(),
                },
            })?
            .into_inner();
        Ok(Open { req_tx, inbound })
    }

    /// Serve streams until the client closes or reconnection gives up.
    pub(super) async fn run(self, mut open: Open, mut out_rx: mpsc::UnboundedReceiver<Outbound>) {
        loop {
            match self.serve(&mut open, &mut out_rx).await {
                Stop::Closed => break,
                Stop::Broken => match self.reconnect().await {
                    Reconnect::Open(o) => open = *o,
                    Reconnect::StateLost(reason) => {
                        self.fail_outstanding(reason);
                        break;
                    }
                    Reconnect::GaveUp => break,
                },
            }
        }
        self.closed.cancel();
        // Dropping `self.completions` tells `next_completions` the stream is over.
    }

    async fn serve(&self, open: &mut Open, out_rx: &mut mpsc::UnboundedReceiver<Outbound>) -> Stop {
        // Large outputs arrive in parts ahead of their completion (see `crate::parts`).
        let mut parts = crate::parts::Assembler::new(usize::MAX);
        loop {
            tokio::select! {
                _ = self.closed.cancelled() => return Stop::Closed,
                m = out_rx.recv() => {
                    let Some(first) = m else { return Stop::Closed };
                    let mut pending = vec![first];
                    while pending.len() < 65_536 {
                        match out_rx.try_recv() {
                            Ok(m) => pending.push(m),
                            Err(_) => break,
                        }
                    }
                    for msg in encode(pending) {
                        if open.req_tx.send(msg).is_err() {
                            return Stop::Broken;
                        }
                    }
                }
                msg = open.inbound.message() => match msg {
                    Ok(Some(proto::ServerMessage { msg: Some(server_message::Msg::Part(p)) })) => {
                        parts.add(p);
                    }
                    Ok(Some(proto::ServerMessage { msg: Some(server_message::Msg::Completions(mut b)) })) => {
                        for c in b.items.iter_mut().filter(|c| c.output_in_parts) {
                            c.output = parts.take(c.session_id, c.task_id);
                            c.output_in_parts = false;
                        }
                        self.deliver(b.items);
                    }
                    Ok(Some(proto::ServerMessage { msg: Some(server_message::Msg::Unknown(u)) })) => {
                        self.resubmit(open, u);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Stop::Broken,
                    Err(e) => {
                        tracing::debug!(error = %e, "task stream broke");
                        return Stop::Broken;
                    }
                },
            }
        }
    }

    /// Hand out completions of outstanding tasks, each at most once.
    fn deliver(&self, items: Vec<proto::TaskCompletion>) {
        let fresh: Vec<_> = match self.outstanding.lock() {
            Ok(mut o) => items
                .into_iter()
                .filter(|c| {
                    o.remove(&(SessionId(c.session_id), TaskId(c.task_id)))
                        .is_some()
                })
                .collect(),
            Err(_) => items,
        };
        if !fresh.is_empty() {
            let _ = self.completions.send(fresh);
        }
    }

    /// The daemon never stored these tasks (they were in flight when it died): send them
    /// again with the same ids. A watched task we have no input for fails instead.
    fn resubmit(&self, open: &Open, unknown: proto::UnknownTasks) {
        let session = SessionId(unknown.session_id);
        let mut again = Vec::new();
        let mut missing = Vec::new();
        if let Ok(o) = self.outstanding.lock() {
            for t in unknown.task_ids {
                match o.get(&(session, TaskId(t))) {
                    Some(Some(input)) => again.push(proto::TaskSubmission {
                        task_id: t,
                        input: input.clone(),
                        reads: Vec::new(),
                    }),
                    Some(None) => missing.push(t),
                    None => {}
                }
            }
        }
        if !again.is_empty() {
            tracing::info!(session = %session, tasks = again.len(), "resubmitting tasks the daemon did not store");
            let _ = open.req_tx.send(submit_message(session, again));
        }
        if !missing.is_empty() {
            let items = missing
                .into_iter()
                .map(|t| proto::TaskCompletion {
                    session_id: session.0,
                    task_id: t,
                    state: TaskState::Failed.as_i32(),
                    output: Bytes::new(),
                    error: Some(
                        TaskFailure::new(
                            ErrorKind::ErrorInvalidArgument,
                            format!("session {session} has no task {t}"),
                        )
                        .into(),
                    ),
                    attempts: 0,
                    output_in_parts: false,
                    log: String::new(),
                })
                .collect();
            self.deliver(items);
        }
    }

    /// The daemon lost the client's state: remember why (every later call fails with it)
    /// and fail every outstanding task with it. Nothing is sent to the daemon.
    fn fail_outstanding(&self, reason: String) {
        tracing::error!(address = %self.address, %reason, "cluster state lost");
        let _ = self.lost.set(reason.clone());
        let keys: Vec<(SessionId, TaskId)> = match self.outstanding.lock() {
            Ok(o) => o.keys().copied().collect(),
            Err(_) => Vec::new(),
        };
        let failure: proto::TaskError = TaskFailure::new(
            ErrorKind::ErrorClusterStateLost,
            format!("cluster state lost: {reason}"),
        )
        .into();
        let items = keys
            .into_iter()
            .map(|(s, t)| proto::TaskCompletion {
                session_id: s.0,
                task_id: t.0,
                state: TaskState::Failed.as_i32(),
                output: Bytes::new(),
                error: Some(failure.clone()),
                attempts: 0,
                log: String::new(),
                output_in_parts: false,
            })
            .collect();
        self.deliver(items);
    }

    /// Whether the daemon that answered `reply` serves the state this client started on;
    /// the reason if not.
    fn same_state(&self, reply: &proto::HelloReply) -> std::result::Result<(), String> {
        if self.state_id.is_empty() || reply.state_id == self.state_id {
            return Ok(());
        }
        Err(format!(
            "the daemon at {} came back on another state ({}; this client started on {}):              its state dir was deleted or replaced, so this client's sessions and tasks are              gone; open new ones with a new connection",
            self.address, reply.state_id, self.state_id
        ))
    }

    /// Why the head now answering at this address is another cluster than the one this
    /// client's token is for (its CA differs from the token's fingerprint), if it is.
    async fn another_cluster(&self) -> Option<String> {
        let bearer = self.transport.bearer()?.to_str().ok()?;
        let token = crate::auth::Token::parse(bearer.strip_prefix(crate::auth::BEARER_PREFIX)?);
        let ours = token.ok()?.ca_fingerprint;
        let channel = self.transport.channel(self.timeout).await.ok()?;
        let mut frontend = stub(channel, StateStamp::default());
        let call = frontend.discover(proto::Empty {});
        let theirs = tokio::time::timeout(self.timeout, call).await.ok()?.ok()?;
        let theirs = theirs.into_inner().ca_fingerprint;
        (!theirs.is_empty() && theirs != ours).then(|| {
            format!(
                "the daemon at {} came back as another cluster (its CA is {}..., this client's \
                 token is for {}...): its state dir was deleted or replaced, so this client's \
                 sessions and tasks are gone; connect again with a token of the new cluster",
                self.address,
                &theirs[..theirs.len().min(16)],
                &ours[..ours.len().min(16)]
            )
        })
    }

    /// Reconnect with backoff until it works, the client closes, `reconnect_for` passes, or
    /// the daemon turns out to be on another state.
    async fn reconnect(&self) -> Reconnect {
        let deadline = Instant::now() + self.reconnect_for;
        let mut backoff = Duration::from_millis(100);
        let mut last_log = Instant::now();
        tracing::warn!(address = %self.address, "lost the connection to the Flame daemon; reconnecting");
        loop {
            tokio::select! {
                _ = self.closed.cancelled() => return Reconnect::GaveUp,
                _ = tokio::time::sleep(backoff) => {}
            }
            let attempt = async {
                let (channel, reply) =
                    hello(&self.transport, self.timeout, &self.name, self.client_id.0).await?;
                // Checked before the stream opens: nothing is watched or resubmitted into
                // another state, whose ids may name other clients' sessions.
                if let Err(reason) = self.same_state(&reply) {
                    return Err(FlameError::ClusterStateLost(reason));
                }
                self.open(stub(channel, self.stamp.clone())).await
            };
            match attempt.await {
                Ok(open) => {
                    tracing::info!(address = %self.address, "reconnected to the Flame daemon");
                    self.rewatch(&open);
                    return Reconnect::Open(Box::new(open));
                }
                Err(FlameError::ClusterStateLost(reason)) => return Reconnect::StateLost(reason),
                // The head no longer accepts these credentials (revoked, expired): retrying
                // cannot help.
                Err(e @ (FlameError::Unauthenticated(_) | FlameError::PermissionDenied(_))) => {
                    // A head with another CA than the token names is another cluster state
                    // (its state dir was deleted or replaced): say that, as for a new state id.
                    if let Some(reason) = self.another_cluster().await {
                        return Reconnect::StateLost(reason);
                    }
                    tracing::error!(address = %self.address, error = %e, "the head refuses this client's credentials");
                    return Reconnect::GaveUp;
                }
                Err(e) if Instant::now() >= deadline => {
                    tracing::error!(address = %self.address, error = %e, "giving up reconnecting");
                    return Reconnect::GaveUp;
                }
                Err(e) => {
                    if last_log.elapsed() > Duration::from_secs(5) {
                        tracing::warn!(address = %self.address, error = %e, "still reconnecting");
                        last_log = Instant::now();
                    }
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Ask for every outstanding task again on a new stream.
    fn rewatch(&self, open: &Open) {
        let mut by_session: HashMap<SessionId, Vec<u64>> = HashMap::new();
        if let Ok(o) = self.outstanding.lock() {
            for (s, t) in o.keys() {
                by_session.entry(*s).or_default().push(t.0);
            }
        }
        for (session, mut ids) in by_session {
            ids.sort_unstable();
            for chunk in ids.chunks(WATCH_CHUNK) {
                let msg = proto::ClientMessage {
                    msg: Some(client_message::Msg::Watch(proto::Watch {
                        session_id: session.0,
                        task_ids: chunk.to_vec(),
                    })),
                };
                let _ = open.req_tx.send(msg);
            }
        }
    }
}

fn submit_message(session: SessionId, tasks: Vec<proto::TaskSubmission>) -> proto::ClientMessage {
    proto::ClientMessage {
        msg: Some(client_message::Msg::Submit(proto::SubmitBatch {
            session_id: session.0,
            tasks,
        })),
    }
}

/// Queued requests as few, large messages: consecutive submits to one session are merged
/// (up to [`BATCH_BYTES`] of input each); order is kept.
fn encode(pending: Vec<Outbound>) -> Vec<proto::ClientMessage> {
    let mut out = Vec::new();
    let mut current: Option<(SessionId, Vec<proto::TaskSubmission>, usize)> = None;
    let flush = |cur: &mut Option<(SessionId, Vec<proto::TaskSubmission>, usize)>,
                 out: &mut Vec<proto::ClientMessage>| {
        if let Some((s, tasks, _)) = cur.take() {
            out.push(submit_message(s, tasks));
        }
    };
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
                        flush(&mut current, &mut out);
                        current = Some((s, tasks, bytes));
                    }
                }
            }
            Outbound::Cancel(s, t) => {
                flush(&mut current, &mut out);
                out.push(proto::ClientMessage {
                    msg: Some(client_message::Msg::Cancel(proto::CancelTask {
                        session_id: s.0,
                        task_id: t.0,
                    })),
                });
            }
            Outbound::Created(created) => {
                flush(&mut current, &mut out);
                out.push(proto::ClientMessage {
                    msg: Some(client_message::Msg::Created(created)),
                });
            }
            Outbound::Watch(s, ts) => {
                flush(&mut current, &mut out);
                out.push(proto::ClientMessage {
                    msg: Some(client_message::Msg::Watch(proto::Watch {
                        session_id: s.0,
                        task_ids: ts.into_iter().map(|t| t.0).collect(),
                    })),
                });
            }
        }
    }
    flush(&mut current, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: u64, ids: &[u64], bytes: usize) -> Outbound {
        Outbound::Submit(
            SessionId(s),
            ids.iter()
                .map(|t| proto::TaskSubmission {
                    task_id: *t,
                    input: Bytes::from(vec![0u8; bytes]),
                    reads: Vec::new(),
                })
                .collect(),
        )
    }

    #[test]
    fn submits_merge_per_session_in_order_and_split_by_size() {
        let out = encode(vec![
            sub(1, &[1, 2], 10),
            sub(1, &[3], 10),
            sub(2, &[4], 10),
            Outbound::Cancel(SessionId(2), TaskId(4)),
            sub(2, &[5], BATCH_BYTES),
            sub(2, &[6], 1),
            Outbound::Created(proto::ObjectsCreated {
                node_id: 9,
                objects: vec![proto::ObjectStored {
                    object_id: 3,
                    size: 10,
                }],
                nested: Vec::new(),
            }),
            sub(2, &[7], 1),
        ]);
        let shape: Vec<String> = out
            .iter()
            .map(|m| match &m.msg {
                Some(client_message::Msg::Submit(b)) => format!(
                    "s{}:{:?}",
                    b.session_id,
                    b.tasks.iter().map(|t| t.task_id).collect::<Vec<_>>()
                ),
                Some(client_message::Msg::Cancel(c)) => format!("c{}", c.task_id),
                Some(client_message::Msg::Created(c)) => {
                    format!("n{}:{}", c.node_id, c.objects.len())
                }
                _ => "?".into(),
            })
            .collect();
        // An announcement of objects is never merged past: a task after it comes after it.
        assert_eq!(
            shape,
            [
                "s1:[1, 2, 3]",
                "s2:[4]",
                "c4",
                "s2:[5]",
                "s2:[6]",
                "n9:1",
                "s2:[7]"
            ]
        );
    }
}
