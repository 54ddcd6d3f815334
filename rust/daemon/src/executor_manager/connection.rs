//! The node's `NodeStream` to the session manager: connecting with backoff, registering, and
//! waiting for the session manager to accept the node.

use std::time::Duration;

use flame_core::error::{error_chain, FlameError, Result};
use flame_core::proto::{backend_client::BackendClient, node_command, node_message};
use flame_core::proto::{NodeCommand, NodeMessage, NodeRegister, NodeRegistered};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use super::system::memory_bytes;
use super::NodeConfig;

/// How long a node keeps trying to reach and register with the session manager.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// Messages to the session manager not yet taken by the stream (heartbeats and exit reports).
const OUTBOX: usize = 256;

/// A registered node's stream.
pub(super) struct HeadStream {
    pub(super) outbox: mpsc::Sender<NodeMessage>,
    pub(super) commands: tonic::Streaming<NodeCommand>,
    pub(super) registered: NodeRegistered,
}

/// Connects and registers, retrying with backoff. `Ok(None)` when shut down meanwhile.
///
/// # Errors
/// [`FlameError::Unreachable`] after [`GIVE_UP_AFTER`] without a registration, naming the
/// address and the last failure; [`FlameError::InvalidArgument`] for a malformed address.
pub(super) async fn connect(
    config: &NodeConfig,
    shutdown: &CancellationToken,
) -> Result<Option<HeadStream>> {
    let endpoint = Endpoint::from_shared(config.head.clone())
        .map_err(|e| FlameError::InvalidArgument(format!("head address '{}': {e}", config.head)))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Keepalive notices a head whose machine vanished without closing TCP.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let deadline = Instant::now() + GIVE_UP_AFTER;
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            attempt = tokio::time::timeout_at(deadline, register(&endpoint, config)) => attempt,
        };
        let reason = match attempt {
            Ok(Ok(head)) => return Ok(Some(head)),
            Ok(Err(reason)) => reason,
            Err(_) => "registration did not complete in time".to_string(),
        };
        if Instant::now() + backoff >= deadline {
            return Err(FlameError::Unreachable {
                address: config.head.clone(),
                reason: format!("gave up after {GIVE_UP_AFTER:?}: {reason}"),
            });
        }
        tracing::debug!(head = %config.head, "node not registered yet: {reason}");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// One attempt: open the stream, send `NodeRegister`, wait for `NodeRegistered`.
async fn register(endpoint: &Endpoint, config: &NodeConfig) -> Result<HeadStream, String> {
    let channel = endpoint.connect().await.map_err(|e| error_chain(&e))?;
    let (outbox, rx) = mpsc::channel(OUTBOX);
    let register = NodeRegister {
        name: config.name.clone(),
        slots: config.slots,
        memory_bytes: memory_bytes(),
        previous_node_id: 0,
    };
    // The queue is empty and its receiver alive, so this cannot fail.
    let _ = outbox.try_send(NodeMessage {
        msg: Some(node_message::Msg::Register(register)),
    });
    let mut client = BackendClient::new(channel);
    let response = client.node_stream(ReceiverStream::new(rx)).await;
    let mut commands = response
        .map_err(|s| format!("NodeStream refused: {}", s.message()))?
        .into_inner();
    match commands.message().await {
        Ok(Some(NodeCommand {
            msg: Some(node_command::Msg::Registered(registered)),
        })) => Ok(HeadStream {
            outbox,
            commands,
            registered,
        }),
        Ok(Some(other)) => Err(format!("expected NodeRegistered first, got {other:?}")),
        Ok(None) => Err("stream ended before NodeRegistered".into()),
        Err(status) => Err(format!(
            "stream failed before NodeRegistered: {}",
            status.message()
        )),
    }
}
