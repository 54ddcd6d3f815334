//! The node's `NodeStream` to the session manager: connecting with backoff, registering, and
//! waiting for the session manager to accept the node.
//!
//! The first registration gives up after [`GIVE_UP_AFTER`]: a head never reached is most
//! likely a wrong address, and saying so beats waiting forever. Once the node has been
//! registered, the head going away is an outage to wait out (it is restarting, or its machine
//! is), so reconnecting never gives up — only shutdown ends it.
//!
//! The exception is a head that refuses the node's credentials (UNAUTHENTICATED or
//! PERMISSION_DENIED: a wrong node token, a revoked certificate): asking again cannot help,
//! so the node stops at once with the head's message.

use std::time::Duration;

use flame_core::client::{StateStamp, Transport};
use flame_core::error::{error_chain, FlameError, Result};
use flame_core::proto::{backend_client::BackendClient, node_command, node_message};
use flame_core::proto::{NodeCommand, NodeMessage, NodeRegister, NodeRegistered};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::system::{cpu_count, memory_available_bytes};
use super::NodeConfig;

/// How long a node that was never registered keeps trying to reach the session manager.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// Longest one attempt may take: TCP connect plus the wait for `NodeRegistered`.
const ATTEMPT: Duration = Duration::from_secs(10);
/// Fewest seconds between two warnings about an unreachable session manager.
const WARN_EVERY: Duration = Duration::from_secs(5);
/// Messages to the session manager not yet taken by the stream (heartbeats and exit reports).
const OUTBOX: usize = 256;

/// A registered node's stream.
pub(super) struct HeadStream {
    pub(super) outbox: mpsc::Sender<NodeMessage>,
    pub(super) commands: tonic::Streaming<NodeCommand>,
    pub(super) registered: NodeRegistered,
}

/// Delays between attempts: 100 ms, doubling up to 2 s.
pub(super) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(2);

    pub(super) fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    pub(super) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(Self::CAP);
        delay
    }

    /// Sleeps the next delay; `false` when shut down meanwhile.
    pub(super) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(self.next_delay()) => true,
        }
    }
}

/// Connects and registers, retrying with `backoff`. `previous` is the id the node had before
/// it lost the session manager (`None` the first time), asked for again on registering.
/// `transport` is resolved on the first attempt that reaches the head (pinning the CA by the
/// token's fingerprint when no CA was given) and kept. `Ok(None)` when shut down meanwhile.
///
/// # Errors
/// For a node never registered: [`FlameError::Unreachable`] after [`GIVE_UP_AFTER`], naming
/// the address and the last failure. [`FlameError::InvalidArgument`] for a malformed
/// address or token. Always: `Unauthenticated` / `PermissionDenied` when the head refuses the
/// node's credentials.
pub(super) async fn connect(
    config: &NodeConfig,
    transport: &mut Option<Transport>,
    previous: Option<u64>,
    backoff: &mut Backoff,
    shutdown: &CancellationToken,
) -> Result<Option<HeadStream>> {
    let give_up = previous.is_none().then(|| Instant::now() + GIVE_UP_AFTER);
    // Reconnecting, the loss has just been logged: a head back within seconds is not worth a
    // warning.
    let mut last_warning = previous.map(|_| Instant::now());
    loop {
        let attempt_deadline = Instant::now() + ATTEMPT;
        let attempt_deadline = give_up.map_or(attempt_deadline, |g| g.min(attempt_deadline));
        let attempt = attempt(config, transport, previous.unwrap_or(0));
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            attempt = tokio::time::timeout_at(attempt_deadline, attempt) => attempt,
        };
        let reason = match attempt {
            Ok(Ok(head)) => return Ok(Some(head)),
            Ok(Err(FlameError::Unauthenticated(m))) if config.credentials.is_empty() => {
                return Err(FlameError::Unauthenticated(format!(
                    "{m} (this node has no credentials: join with `flame-daemon node --head \
                     {} --join-token T`)",
                    config.head
                )))
            }
            Ok(Err(
                e @ (FlameError::Unauthenticated(_)
                | FlameError::PermissionDenied(_)
                | FlameError::InvalidArgument(_)),
            )) => return Err(e),
            Ok(Err(FlameError::Unreachable { reason, .. })) => reason,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "registration did not complete in time".to_string(),
        };
        if let Some(give_up) = give_up {
            if Instant::now() + backoff.next >= give_up {
                return Err(FlameError::Unreachable {
                    address: config.head.clone(),
                    reason: format!("gave up after {GIVE_UP_AFTER:?}: {reason}"),
                });
            }
        }
        if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            last_warning = Some(Instant::now());
            tracing::warn!(head = %config.head, "session manager not reachable, retrying: {reason}");
        } else {
            tracing::debug!(head = %config.head, "session manager not reachable: {reason}");
        }
        if !backoff.wait(shutdown).await {
            return Ok(None);
        }
    }
}

/// One attempt: resolve the transport if not done yet, then [`register`].
async fn attempt(
    config: &NodeConfig,
    transport: &mut Option<Transport>,
    previous_node_id: u64,
) -> Result<HeadStream> {
    let resolved = match transport.take() {
        Some(t) => t,
        None => {
            let head = flame_core::client::normalize_address(&config.head);
            Transport::resolve(&head, &config.credentials, ATTEMPT).await?
        }
    };
    let result = register(&resolved, config, previous_node_id).await;
    *transport = Some(resolved);
    result
}

/// Open the stream, send `NodeRegister`, wait for `NodeRegistered`.
async fn register(
    transport: &Transport,
    config: &NodeConfig,
    previous_node_id: u64,
) -> Result<HeadStream> {
    let endpoint = transport
        .endpoint()?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Keepalive notices a head whose machine vanished without closing TCP.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .local_address(config.bind);
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return Err(transport.explain(&error_chain(&e)).await),
    };
    let unreachable = |reason: String| FlameError::Unreachable {
        address: config.head.clone(),
        reason,
    };
    let (outbox, rx) = mpsc::channel(OUTBOX);
    let register = NodeRegister {
        name: config.name.clone(),
        slots: config.slots,
        memory_bytes: config.memory_total(),
        previous_node_id,
        cpus: cpu_count(),
        memory_available: memory_available_bytes(),
        object_address: config.object_address.clone(),
    };
    // The queue is empty and its receiver alive, so this cannot fail.
    let _ = outbox.try_send(NodeMessage {
        msg: Some(node_message::Msg::Register(register)),
    });
    let stamp = StateStamp::default().with_bearer(transport.bearer().cloned());
    let mut client = BackendClient::with_interceptor(channel, stamp);
    let response = client.node_stream(ReceiverStream::new(rx)).await;
    let mut commands = response.map_err(refused)?.into_inner();
    match commands.message().await {
        Ok(Some(NodeCommand {
            msg: Some(node_command::Msg::Registered(registered)),
        })) => Ok(HeadStream {
            outbox,
            commands,
            registered,
        }),
        Ok(Some(other)) => Err(unreachable(format!(
            "expected NodeRegistered first, got {other:?}"
        ))),
        Ok(None) => Err(unreachable("stream ended before NodeRegistered".into())),
        Err(status) => Err(match refused(status) {
            FlameError::Unreachable { reason, .. } => {
                unreachable(format!("stream failed before NodeRegistered: {reason}"))
            }
            fatal => fatal,
        }),
    }
}

/// A NodeStream refusal: the head's own words for credentials it does not accept, else
/// something to retry.
fn refused(status: tonic::Status) -> FlameError {
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => FlameError::from(status),
        _ => FlameError::Unreachable {
            address: String::new(),
            reason: format!("NodeStream refused: {}", status.message()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.next_delay().as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 2000, 2000]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
