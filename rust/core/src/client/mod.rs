//! The Rust client of the Frontend service, used by the Python binding (and any Rust caller).
//!
//! Unary calls map one-to-one to RPCs. Tasks go another way: [`Client::submit`] only assigns
//! ids and queues the inputs; a background task ([`stream`]) drains the queue and sends
//! whatever has accumulated as a few large `SubmitBatch` messages on one stream, so a tight
//! loop of calls costs a channel push each, not a round trip. Completions arrive on the same
//! stream in batches and are handed out by [`Client::next_completions`] in batches too.
//!
//! Nothing is lost when the daemon restarts: the client remembers every task it submitted
//! until its completion arrives. When the stream breaks it reconnects with backoff under the
//! same client id, asks for the completions of everything outstanding (`Watch`), and submits
//! again what the daemon says it never stored. Each completion is handed out at most once.
//!
//! That holds only while the daemon keeps its state. Every call carries the identity of the
//! state the client started on ([`stamp`]); when a reconnect finds the daemon on another
//! state (its state dir was deleted or replaced, and ids start again at 1), every outstanding
//! task fails with `ClusterStateLost` and the client sends nothing more: it never re-attaches
//! to whatever session now has its old ids.

mod credentials;
mod discover;
pub mod local_socket;
mod nested;
pub mod node_objects;
mod objects;
mod stamp;
mod stream;
#[cfg(test)]
mod tests_auth;
mod transport;

pub use credentials::{
    read_ca_file, Credentials, CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV, TOKEN_ENV,
};
pub use discover::{discover, Discovery};
pub use objects::{locate, ObjectClient, PlacedObject};
pub use stamp::{stub, Frontend, StateStamp, STATE_ID_HEADER};
pub use transport::{Transport, HEAD_SOCKET_ENV, SOCKET_TIMEOUT};

pub use nested::{create_session_request, opened_by_executor, EXECUTOR_ID_HEADER};
pub use stream::CLIENT_ID_HEADER;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::error::{FlameError, Result};
use crate::ids::{ClientId, NodeId, ObjectId, SessionId, TaskId};
use crate::proto;

/// Largest gRPC message the client sends or accepts.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;
/// How long the client keeps trying to reconnect after its stream broke, by default.
pub const DEFAULT_RECONNECT_FOR: Duration = Duration::from_secs(60);

enum Outbound {
    Submit(SessionId, Vec<proto::TaskSubmission>),
    Cancel(SessionId, TaskId),
    Watch(SessionId, Vec<TaskId>),
    /// Objects this client stored on a node: sent in queue order, so the head knows them
    /// before any task submitted after.
    Created(proto::ObjectsCreated),
}

/// The objects one task reads: `(id, size)` of each.
pub type Reads = Vec<(ObjectId, u64)>;

/// Ids of puts keep bit 31 clear: those with it set are task results
/// ([`ObjectId::result_of`]).
const MAX_PUT_COUNTER: u32 = (1 << 31) - 1;

/// Tasks submitted (or watched) and not completed yet, with the inputs of submitted ones
/// (kept to resubmit them if the daemon restarts before storing them; shared `Bytes`, not
/// copies). A watched task has no input here.
type Outstanding = Arc<Mutex<HashMap<(SessionId, TaskId), Option<Bytes>>>>;

/// Set, with the reason, once the daemon was found on another state than the client's.
type Lost = Arc<OnceLock<String>>;

/// A connection to a session manager.
pub struct Client {
    address: String,
    transport: Transport,
    client_id: ClientId,
    max_payload: u64,
    frontend: Frontend,
    lost: Lost,
    /// Next task counter, locked together with the queue push so ids reach the wire in order.
    outbound: Mutex<(u32, mpsc::UnboundedSender<Outbound>)>,
    outstanding: Outstanding,
    completions: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<proto::TaskCompletion>>>,
    closed: CancellationToken,
    next_object: AtomicU32,
    /// The head's own node (#12): its id and object socket, for a client on its machine.
    local_node: Option<(u64, String)>,
    /// The head's Unix socket the task stream prefers (see `local_socket`), if any.
    stream_socket: Option<String>,
    /// The identity of the head's state (its hello's `state_id`): refs this client makes
    /// carry it, so a ref from another cluster is told from one of this cluster (#12).
    state_id: String,
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

/// Open a channel and say hello (keeping `previous` as the client id if non-zero). The hello
/// itself carries no state stamp (its answer is how the client learns the state), but it
/// carries the credentials.
async fn hello(
    transport: &Transport,
    timeout: Duration,
    name: &str,
    previous: u32,
) -> Result<(Channel, proto::HelloReply)> {
    let unreachable = |reason: String| FlameError::Unreachable {
        address: transport.address().to_string(),
        reason,
    };
    let channel = transport.channel(timeout).await?;
    let stamp = StateStamp::default().with_bearer(transport.bearer().cloned());
    let mut frontend = stub(channel.clone(), stamp);
    let req = proto::HelloRequest {
        client_name: name.to_string(),
        previous_client_id: previous,
    };
    let reply = match tokio::time::timeout(timeout, frontend.hello(req)).await {
        Err(_) => return Err(unreachable(format!("no hello within {timeout:?}"))),
        Ok(Ok(reply)) => reply.into_inner(),
        Ok(Err(s)) => {
            return Err(match s.code() {
                // The daemon is up but refuses new clients (its storage fails), or refuses
                // these credentials: say that.
                tonic::Code::ResourceExhausted
                | tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied => hint_login(FlameError::from(s), transport),
                _ => transport.explain(s.message()).await,
            });
        }
    };
    Ok((channel, reply))
}

/// An UNAUTHENTICATED refusal, with what the user can do about it.
fn hint_login(e: FlameError, transport: &Transport) -> FlameError {
    match e {
        FlameError::Unauthenticated(m) => FlameError::Unauthenticated(format!(
            "{m} (the head at {a} wants a token: run `flame login {a}`, set FLAME_TOKEN, or \
             pass token=)",
            a = transport.address()
        )),
        other => other,
    }
}

impl Client {
    /// Connect with `creds`, say hello, and open the task stream. After a break, the stream
    /// reconnects for up to [`DEFAULT_RECONNECT_FOR`].
    ///
    /// # Errors
    /// `Unreachable` naming the address when nothing answers within `timeout` (or a TLS
    /// mismatch, naming TLS and the fix); `Unauthenticated` when the head refuses the
    /// credentials or its certificate does not chain to the CA; `InvalidArgument` for a bad
    /// token or address.
    pub async fn connect(
        address: &str,
        creds: &Credentials,
        timeout: Duration,
        name: &str,
    ) -> Result<Client> {
        Self::connect_with(address, creds, timeout, name, DEFAULT_RECONNECT_FOR).await
    }

    /// [`Client::connect`] with an explicit reconnection budget.
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub async fn connect_with(
        address: &str,
        creds: &Credentials,
        timeout: Duration,
        name: &str,
        reconnect_for: Duration,
    ) -> Result<Client> {
        let address = normalize_address(address);
        let transport = Transport::resolve(&address, creds, timeout).await?;
        let (channel, reply) = hello(&transport, timeout, name, 0).await?;
        let client_id = ClientId(reply.client_id);
        let stamp = StateStamp::new(&reply.state_id).with_bearer(transport.bearer().cloned());
        let frontend = stub(channel, stamp.clone());
        // The task stream (every submission and completion) goes over the head's own Unix
        // socket when this client is on its machine, as its user. Unary calls stay on the
        // address: their channel reconnects by itself, to wherever the address leads.
        let (stream_transport, stream_frontend) =
            match local_socket::adopt(&transport, &reply, name).await {
                Some((t, channel)) => (t, stub(channel, stamp.clone())),
                None => (transport.clone(), frontend.clone()),
            };
        let stream_socket = stream_transport.local_socket().map(str::to_string);
        let lost = Lost::default();
        let outstanding: Outstanding = Arc::default();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let closed = CancellationToken::new();
        let link = stream::Link {
            address: address.clone(),
            transport: stream_transport,
            name: name.to_string(),
            client_id,
            timeout,
            reconnect_for,
            outstanding: outstanding.clone(),
            completions: done_tx,
            closed: closed.clone(),
            state_id: reply.state_id.clone(),
            stamp,
            lost: lost.clone(),
        };
        let first = link.open(stream_frontend).await?;
        tokio::spawn(link.run(first, out_rx));
        Ok(Client {
            address,
            transport,
            client_id,
            max_payload: reply.max_message_bytes,
            frontend,
            lost,
            outbound: Mutex::new((1, out_tx)),
            outstanding,
            completions: tokio::sync::Mutex::new(done_rx),
            closed,
            next_object: AtomicU32::new(1),
            local_node: (reply.local_node_id != 0 && !reply.node_socket.is_empty())
                .then(|| (reply.local_node_id, reply.node_socket.clone())),
            stream_socket,
            state_id: reply.state_id,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The identity of the head's state this client talks to ("" from a head without one).
    pub fn state_id(&self) -> &str {
        &self.state_id
    }

    /// The head's Unix socket this client's task stream uses instead of the address (a
    /// client of the head's OS user on its machine), if any.
    pub fn task_stream_socket(&self) -> Option<&str> {
        self.stream_socket.as_deref()
    }

    /// The CA this client trusts for an `https://` head (given, or pinned by the token's
    /// fingerprint on connecting): what `flame login` keeps.
    pub fn ca_pem(&self) -> Option<&str> {
        self.transport.ca_pem()
    }

    /// How this client reaches its head (for more channels with the same credentials).
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// Largest task input or output the daemon accepts.
    pub fn max_payload(&self) -> u64 {
        self.max_payload
    }

    /// The node of the head's own machine (`flame-daemon start`, the embedded cluster): its
    /// id and the Unix socket of its object store; `None` for a head without one, or when
    /// this client is not on the head's machine.
    pub fn local_node(&self) -> Option<(u64, &str)> {
        self.local_node.as_ref().map(|(id, s)| (*id, s.as_str()))
    }

    /// A fresh id for an object this client makes (it owns it).
    ///
    /// # Errors
    /// `InvalidArgument` once the client has made 2^32 - 1 objects; `ClusterStateLost` once
    /// the daemon was found on another state (where this client's id may be someone else's).
    pub fn next_object_id(&self) -> Result<ObjectId> {
        self.check_state()?;
        let n = self.next_object.fetch_add(1, Ordering::Relaxed);
        // Puts use 2^31 - 1 ids: those with bit 31 set are task results (`result_of`).
        if n == 0 || n > MAX_PUT_COUNTER {
            self.next_object
                .store(MAX_PUT_COUNTER + 1, Ordering::Relaxed); // never wraps
            return Err(FlameError::InvalidArgument(format!(
                "this client ran out of object ids ({MAX_PUT_COUNTER} puts); connect again \
                 for more"
            )));
        }
        Ok(ObjectId(((self.client_id.0 as u64) << 32) | n as u64))
    }

    /// Object calls on this connection.
    pub fn objects(&self) -> ObjectClient {
        ObjectClient::new(self.frontend.clone()).with_nodes(&self.transport, None)
    }

    /// Tell the head that this client stored `objects` (id, size) on node `node`. Queued
    /// on the task stream like submissions, so the head knows them before any task
    /// submitted after this call. Never blocks on the network.
    ///
    /// # Errors
    /// `ClusterStateLost` once the daemon was found on another state; `ConnectionLost` if
    /// the connection is closed.
    pub fn announce_objects(&self, node: NodeId, objects: &[(ObjectId, u64)]) -> Result<()> {
        self.check_state()?;
        if objects.is_empty() {
            return Ok(());
        }
        let stored = objects
            .iter()
            .map(|(id, size)| proto::ObjectStored {
                object_id: id.0,
                size: *size,
            })
            .collect();
        self.send_created(proto::ObjectsCreated {
            node_id: node.0,
            objects: stored,
            nested: Vec::new(),
        })
    }

    /// [`Client::announce_objects`] for one object whose pickle holds refs to `contains`:
    /// the head keeps those alive while this object lives (refs nested in objects).
    ///
    /// # Errors
    /// As [`Client::announce_objects`].
    pub fn announce_container(
        &self,
        node: NodeId,
        object: (ObjectId, u64),
        contains: &[ObjectId],
    ) -> Result<()> {
        self.check_state()?;
        self.send_created(proto::ObjectsCreated {
            node_id: node.0,
            objects: vec![proto::ObjectStored {
                object_id: object.0 .0,
                size: object.1,
            }],
            nested: vec![proto::ObjectNesting {
                container: object.0 .0,
                contains: contains.iter().map(|c| c.0).collect(),
            }],
        })
    }

    fn send_created(&self, created: proto::ObjectsCreated) -> Result<()> {
        let guard = self.outbound.lock().map_err(|_| poisoned())?;
        guard
            .1
            .send(Outbound::Created(created))
            .map_err(|_| self.lost())
    }

    /// A clone of the unary stub (cheap; shares the connection, which reconnects by itself).
    /// Its calls carry the client's state identity, so a daemon on another state refuses
    /// them (`ClusterStateLost`).
    pub fn frontend(&self) -> Frontend {
        self.frontend.clone()
    }

    /// Queue tasks for `session` and return their ids. Never blocks on the network.
    ///
    /// # Errors
    /// `PayloadTooLarge` (nothing queued) if an input is over the daemon's limit;
    /// `ClusterStateLost` once the daemon was found on another state; `ConnectionLost` if
    /// the connection is closed.
    pub fn submit(&self, session: SessionId, inputs: Vec<Bytes>) -> Result<Vec<TaskId>> {
        self.submit_reading(session, inputs, Vec::new())
    }

    /// [`Client::submit`], with the objects each task reads (`reads[i]` for `inputs[i]`;
    /// missing entries read nothing): the head keeps them while the task is unfinished, and
    /// data-aware placement prefers a node that holds them.
    ///
    /// # Errors
    /// As [`Client::submit`]; `InvalidArgument` when there are more `reads` than inputs.
    pub fn submit_reading(
        &self,
        session: SessionId,
        inputs: Vec<Bytes>,
        reads: Vec<Reads>,
    ) -> Result<Vec<TaskId>> {
        self.check_state()?;
        if reads.len() > inputs.len() {
            return Err(FlameError::InvalidArgument(format!(
                "{} lists of objects read for {} tasks",
                reads.len(),
                inputs.len()
            )));
        }
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
        {
            let mut outstanding = self.outstanding.lock().map_err(|_| poisoned())?;
            for (id, input) in ids.iter().zip(&inputs) {
                outstanding.insert((session, *id), Some(input.clone()));
            }
        }
        let mut reads = reads.into_iter();
        let tasks = ids
            .iter()
            .zip(inputs)
            .map(|(id, input)| proto::TaskSubmission {
                task_id: id.0,
                input,
                reads: reads
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(object, size)| proto::ObjectStored {
                        object_id: object.0,
                        size,
                    })
                    .collect(),
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
        self.check_state()?;
        let guard = self.outbound.lock().map_err(|_| poisoned())?;
        guard
            .1
            .send(Outbound::Cancel(session, task))
            .map_err(|_| self.lost())
    }

    /// Ask for the completions of these tasks on this connection (tasks submitted by another
    /// client, or by an earlier run of this program). They are tracked as outstanding.
    ///
    /// # Errors
    /// `ConnectionLost` if the connection is closed.
    pub fn watch(&self, session: SessionId, tasks: Vec<TaskId>) -> Result<()> {
        self.check_state()?;
        {
            let mut outstanding = self.outstanding.lock().map_err(|_| poisoned())?;
            for t in &tasks {
                outstanding.entry((session, *t)).or_insert(None);
            }
        }
        let guard = self.outbound.lock().map_err(|_| poisoned())?;
        guard
            .1
            .send(Outbound::Watch(session, tasks))
            .map_err(|_| self.lost())
    }

    /// Completions that arrived, waiting up to `timeout` for the first; an empty batch on
    /// timeout, `None` once the connection is closed (or lost for good) and everything was
    /// handed out.
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

    /// Tasks submitted or watched whose completion has not arrived yet.
    pub fn outstanding(&self) -> usize {
        self.outstanding.lock().map_or(0, |o| o.len())
    }

    /// Whether the task stream has ended for good.
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Close the task stream; pending completions are dropped.
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// Why the client's cluster state is gone, if it is (see the module docs).
    pub fn state_lost(&self) -> Option<&str> {
        self.lost.get().map(String::as_str)
    }

    /// `Ok` unless the daemon was found on another state than the client's.
    ///
    /// # Errors
    /// `ClusterStateLost` with the reason once it was.
    pub fn check_state(&self) -> Result<()> {
        match self.lost.get() {
            Some(reason) => Err(FlameError::ClusterStateLost(reason.clone())),
            None => Ok(()),
        }
    }

    fn lost(&self) -> FlameError {
        if let Some(reason) = self.lost.get() {
            return FlameError::ClusterStateLost(reason.clone());
        }
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
