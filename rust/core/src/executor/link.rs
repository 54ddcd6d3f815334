//! The executor's network side: a private single-threaded tokio runtime on a background
//! thread that owns the `ExecutorStream` to the session manager.
//!
//! Commands go to the host thread over a std channel, in order, so anything sent ahead while
//! a task runs just waits (prefetch). Results come back over an unbounded channel and are
//! coalesced: the writer takes everything queued at that instant and sends it as one
//! `TaskResultBatch`. It never waits for more, so a lone result goes out at once, while a
//! burst of fast tasks (or a slow network) costs one message instead of one per task.
//!
//! Heartbeats (`ExecutorPing`) are answered here, never by the host: a long task must not
//! look like a frozen executor, and a frozen process (SIGSTOP) answers nothing at all. Before
//! a large result batch the writer announces its size, so the session manager allows for its
//! transfer instead of mistaking a busy link for a silent executor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use super::orphan::{self, HostAlive, Watch};
use super::window::Window;
use super::MAX_MESSAGE_BYTES;
use crate::client::{Credentials, StateStamp, Transport, HEAD_SOCKET_ENV};
use crate::error::{error_chain, FlameError, Result};
use crate::ids::ExecutorId;
use crate::proto::{self, backend_client::BackendClient, executor_message};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// Wire messages in flight towards tonic. Kept small on purpose: when the stream is slow the
/// writer blocks here and results pile up in the outbound queue, where they get coalesced.
const WIRE_QUEUE: usize = 2;
/// A result batch is cut once it holds this many payload bytes, so coalescing large outputs
/// cannot build a message over [`MAX_MESSAGE_BYTES`].
const BATCH_SOFT_BYTES: usize = 4 * 1024 * 1024;
/// After the host is done, how long to wait for the session manager to close its side, which
/// is how we know our last messages were delivered.
const LINGER: Duration = Duration::from_secs(1);
/// A result batch at least this large is announced (`ExecutorPong::sending_bytes`) first.
const ANNOUNCE_BYTES: usize = 1 << 20;

/// From the network thread to the host thread.
pub(super) enum Inbound {
    Command(proto::ExecutorCommand),
    /// The session manager ended the stream cleanly.
    Closed,
    Lost(FlameError),
}

/// From the host thread to the network thread.
pub(super) enum Outbound {
    Result(proto::TaskResult),
    Message(executor_message::Msg),
}

pub(super) struct Link {
    pub(super) inbound: std_mpsc::Receiver<Inbound>,
    outbound: Option<mpsc::UnboundedSender<Outbound>>,
    broken: Arc<AtomicBool>,
    /// Dropped when the host is done; see [`orphan`].
    host_alive: Option<HostAlive>,
    thread: Option<JoinHandle<()>>,
    /// Tasks received and not started; the blocked state (see `window.rs`).
    pub(super) window: Arc<Window>,
}

impl Link {
    /// Starts the network thread; it connects, registers and then relays until told to stop.
    /// With `orphan_grace`, once the stream ends the host has that long to be done before the
    /// process is stopped ([`orphan`]).
    pub(super) fn open(
        address: &str,
        creds: &Credentials,
        id: ExecutorId,
        connect_timeout: Duration,
        orphan_grace: Option<Duration>,
    ) -> Result<Link> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FlameError::Internal(format!("cannot start executor runtime: {e}")))?;
        let (in_tx, in_rx) = std_mpsc::channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let broken = Arc::new(AtomicBool::new(false));
        let window = Window::new(&out_tx);
        let (host_alive, orphan) = orphan_grace.map(orphan::watch).unzip();
        let net = Network {
            orphan,
            address: address.to_string(),
            creds: creds.clone(),
            id,
            inbound: in_tx,
            broken: broken.clone(),
            window: window.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("flame-{id}-net"))
            .spawn(move || runtime.block_on(net.run(connect_timeout, out_rx)))
            .map_err(|e| {
                FlameError::Internal(format!("cannot start executor network thread: {e}"))
            })?;
        Ok(Link {
            inbound: in_rx,
            outbound: Some(out_tx),
            broken,
            host_alive,
            thread: Some(thread),
            window,
        })
    }

    /// Queues a message for the session manager. Dropped silently once the link is down: the
    /// host learns that from the terminal [`Inbound`] event, not from here.
    pub(super) fn send(&self, item: Outbound) {
        if let Some(tx) = &self.outbound {
            let _ = tx.send(item);
        }
    }

    /// True once the stream has ended or failed; queued commands are then moot.
    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    /// Flushes what was sent, closes our side of the stream and waits for the network thread.
    pub(super) fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.outbound = None;
        self.host_alive = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Network {
    address: String,
    /// The node's credentials, handed down through the environment.
    creds: Credentials,
    id: ExecutorId,
    inbound: std_mpsc::Sender<Inbound>,
    broken: Arc<AtomicBool>,
    window: Arc<Window>,
    orphan: Option<Watch>,
}

impl Network {
    async fn run(self, connect_timeout: Duration, outbound: mpsc::UnboundedReceiver<Outbound>) {
        let (wire_tx, wire_rx) = mpsc::channel(WIRE_QUEUE);
        // Register goes first so the session manager knows whose stream this is. The queue is
        // empty and its receiver alive, so this cannot fail.
        let register = proto::ExecutorRegister {
            executor_id: self.id.0,
        };
        let _ = wire_tx.try_send(message(executor_message::Msg::Register(register)));
        let mut stream = match self.open(connect_timeout, wire_rx).await {
            Ok(stream) => stream,
            Err(e) => return self.finish(Inbound::Lost(e)),
        };
        // Weak: the request stream must still end when the writer is done (see LINGER).
        let pongs = wire_tx.downgrade();
        let writer = write_loop(outbound, wire_tx);
        tokio::pin!(writer);
        let mut linger_until: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = &mut writer, if linger_until.is_none() => {
                    linger_until = Some(Instant::now() + LINGER);
                }
                _ = sleep_until(linger_until) => return,
                msg = stream.message() => match msg {
                    Ok(Some(proto::ExecutorCommand {
                        msg: Some(proto::executor_command::Msg::Ping(ping)),
                    })) => answer(&pongs, ping.seq),
                    Ok(Some(cmd)) => {
                        // Tasks that arrive while the running one is blocked go back.
                        if !self.window.arrived(&cmd) {
                            continue;
                        }
                        // The host may already be gone (shutting down); nothing to do then.
                        let _ = self.inbound.send(Inbound::Command(cmd));
                    }
                    Ok(None) => return self.finish(Inbound::Closed),
                    Err(status) => {
                        let reason = format!("{}: {}", self.address, status.message());
                        return self.finish(Inbound::Lost(FlameError::ConnectionLost(reason)));
                    }
                },
            }
        }
    }

    fn finish(&self, event: Inbound) {
        self.broken.store(true, Ordering::Release);
        let why = match &event {
            Inbound::Lost(e) => format!("lost the session manager: {e}"),
            _ => "the session manager ended the stream".to_string(),
        };
        let _ = self.inbound.send(event);
        if let Some(orphan) = &self.orphan {
            orphan.wait(&why);
        }
    }

    /// Connects (retrying refused connections: the executor may start before the server
    /// listens) and opens the stream, all within `timeout`.
    async fn open(
        &self,
        timeout: Duration,
        wire_rx: mpsc::Receiver<proto::ExecutorMessage>,
    ) -> Result<tonic::Streaming<proto::ExecutorCommand>> {
        let unreachable = |reason: String| FlameError::Unreachable {
            address: self.address.clone(),
            reason,
        };
        let transport = Transport::resolve(&self.address, &self.creds, timeout).await?;
        let deadline = Instant::now() + timeout;
        // The head's Unix socket when the node gave one (same machine, same OS user): no TLS
        // or TCP per task. If it cannot be reached, the address's TCP port as always.
        let socket = std::env::var(HEAD_SOCKET_ENV)
            .ok()
            .filter(|p| !p.is_empty());
        if let Some(path) = socket {
            match Transport::socket_channel(&path).await {
                Ok(channel) => return self.stream(channel, &transport, deadline, wire_rx).await,
                Err(e) => tracing::warn!("the head's socket: {e}; using {}", self.address),
            }
        }
        let endpoint = transport
            .endpoint()?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            // Keepalive notices a session manager whose host vanished without closing TCP.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let mut backoff = Duration::from_millis(50);
        let channel = loop {
            match tokio::time::timeout_at(deadline, endpoint.connect()).await {
                Ok(Ok(channel)) => break channel,
                Ok(Err(e)) if Instant::now() + backoff < deadline => {
                    tracing::debug!("connecting to {}: {}", self.address, error_chain(&e));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Ok(Err(e)) => return Err(transport.explain(&error_chain(&e)).await),
                Err(_) => return Err(unreachable(format!("no connection within {timeout:?}"))),
            }
        };
        self.stream(channel, &transport, deadline, wire_rx).await
    }

    /// Opens the `ExecutorStream` on `channel` by `deadline`, with the bearer token.
    async fn stream(
        &self,
        channel: tonic::transport::Channel,
        transport: &Transport,
        deadline: Instant,
        wire_rx: mpsc::Receiver<proto::ExecutorMessage>,
    ) -> Result<tonic::Streaming<proto::ExecutorCommand>> {
        let unreachable = |reason: String| FlameError::Unreachable {
            address: self.address.clone(),
            reason,
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let stamp = StateStamp::default().with_bearer(transport.bearer().cloned());
        let mut client = BackendClient::with_interceptor(channel, stamp)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let call = client.executor_stream(ReceiverStream::new(wire_rx));
        match tokio::time::timeout_at(deadline, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(match status.code() {
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                    FlameError::from(status)
                }
                _ => unreachable(format!("ExecutorStream refused: {}", status.message())),
            }),
            Err(_) => Err(unreachable(format!("no ExecutorStream within {timeout:?}"))),
        }
    }
}

/// Answer a heartbeat. Queued on the wire in order (behind a result being sent, if any: its
/// announcement went first), from a task of its own so the reader never waits for room.
fn answer(wire: &mpsc::WeakSender<proto::ExecutorMessage>, seq: u64) {
    let Some(wire) = wire.upgrade() else {
        return;
    };
    let pong = proto::ExecutorPong {
        seq,
        sending_bytes: 0,
    };
    tokio::spawn(async move {
        let _ = wire.send(message(executor_message::Msg::Pong(pong))).await;
    });
}

/// Moves outbound items to the wire until the host drops its sender (or the wire closes).
async fn write_loop(
    mut outbound: mpsc::UnboundedReceiver<Outbound>,
    wire: mpsc::Sender<proto::ExecutorMessage>,
) {
    let mut queued = Vec::new();
    while outbound.recv_many(&mut queued, 4096).await > 0 {
        for msg in coalesce(queued.drain(..)) {
            let size = batch_bytes(&msg);
            if size >= ANNOUNCE_BYTES {
                let notice = proto::ExecutorPong {
                    seq: 0,
                    sending_bytes: size as u64,
                };
                let notice = message(executor_message::Msg::Pong(notice));
                if wire.send(notice).await.is_err() {
                    return;
                }
            }
            if wire.send(msg).await.is_err() {
                return;
            }
        }
    }
}

/// Turns queued items into wire messages, keeping their order: each run of consecutive
/// results becomes one batch (cut at [`BATCH_SOFT_BYTES`]); other messages sit between runs.
pub(super) fn coalesce(items: impl IntoIterator<Item = Outbound>) -> Vec<proto::ExecutorMessage> {
    let mut out = Vec::new();
    let mut batch: Vec<proto::TaskResult> = Vec::new();
    let mut batch_bytes = 0;
    let flush = |batch: &mut Vec<proto::TaskResult>, out: &mut Vec<proto::ExecutorMessage>| {
        if !batch.is_empty() {
            let results = std::mem::take(batch);
            out.push(message(executor_message::Msg::Results(
                proto::TaskResultBatch { results },
            )));
        }
    };
    for item in items {
        match item {
            Outbound::Result(mut r) => {
                let parts = crate::parts::split(r.session_id, r.task_id, &r.output);
                if !parts.is_empty() {
                    // A large output goes ahead in parts; the result follows without it.
                    flush(&mut batch, &mut out);
                    batch_bytes = 0;
                    out.extend(
                        parts
                            .into_iter()
                            .map(|p| message(executor_message::Msg::Part(p))),
                    );
                    r.output = bytes::Bytes::new();
                    r.output_in_parts = true;
                }
                let size = result_bytes(&r);
                if !batch.is_empty() && batch_bytes + size > BATCH_SOFT_BYTES {
                    flush(&mut batch, &mut out);
                    batch_bytes = 0;
                }
                batch_bytes += size;
                batch.push(r);
            }
            Outbound::Message(m) => {
                flush(&mut batch, &mut out);
                batch_bytes = 0;
                out.push(message(m));
            }
        }
    }
    flush(&mut batch, &mut out);
    out
}

/// Payload bytes of a result batch (0 for other messages).
fn batch_bytes(msg: &proto::ExecutorMessage) -> usize {
    match &msg.msg {
        Some(executor_message::Msg::Results(b)) => b.results.iter().map(result_bytes).sum(),
        _ => 0,
    }
}

fn result_bytes(r: &proto::TaskResult) -> usize {
    let error = r
        .error
        .as_ref()
        .map_or(0, |e| e.message.len() + e.traceback.len() + e.payload.len());
    r.output.len() + error + 32
}

fn message(msg: executor_message::Msg) -> proto::ExecutorMessage {
    proto::ExecutorMessage { msg: Some(msg) }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
