//! A whole cluster in one process: a head and one node on 127.0.0.1. This is what
//! `flame-daemon start` runs, what `flame.init()` embeds, and what integration tests use.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use flame_core::auth::TokenKind;
use flame_core::client::{Credentials, HEAD_SOCKET_ENV};
use flame_core::{FlameError, Result};

/// How long `start` waits for its node to register before going on without it.
const REGISTER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

use crate::executor_manager::{run_node, NodeConfig};
use crate::server::{Head, HeadConfig};

/// A node certificate of `head`'s CA for `node` (TLS heads only), recorded so that it can
/// be revoked like a joined node's.
fn certify(head: &Head, node: &mut NodeConfig) -> Result<()> {
    let Some(ca) = head.security.ca.as_ref().filter(|_| head.security.tls) else {
        return Ok(());
    };
    let key = flame_core::tls::NodeKey::generate();
    let signed = ca.sign_node(&key.csr_pem(&node.name), &node.name)?;
    head.security.record_node_cert(&node.name, &signed)?;
    node.credentials.identity = Some(key.identity(&signed.cert_pem));
    node.credentials.ca_pem = Some(ca.cert_pem().to_string());
    Ok(())
}

/// A running head plus its local node.
pub struct LocalCluster {
    pub head: Head,
    node_stop: CancellationToken,
    node: JoinHandle<Result<()>>,
}

impl LocalCluster {
    /// Start the head, then a node that connects to it. `node.head` is filled in, and so are
    /// `node.credentials` when empty: a node token the head issues for this node (its
    /// executors get it too, never the admin token).
    ///
    /// # Errors
    /// Whatever [`Head::start`] reports.
    pub async fn start(head: HeadConfig, mut node: NodeConfig) -> Result<Self> {
        let head = Head::start(head).await?;
        node.head = head.address.clone();
        if node.credentials.is_empty() {
            let token = head.security.issue(TokenKind::Node, &node.name, false, 0);
            node.credentials = Credentials::with_token(token.to_string());
            // On a TLS head it also gets a certificate, as a joined node does: without one
            // it could serve no objects over TCP (to clients on no node, to other nodes).
            if let Err(e) = certify(&head, &mut node) {
                head.stop().await;
                return Err(e);
            }
        }
        // The executors reach the head over its Unix socket (no TLS, no TCP per task; see
        // `local_socket`), authenticated by the node's token as on the TCP port. A node that
        // only has a certificate keeps TCP + mutual TLS: a socket carries no certificate.
        if let (Some(path), Some(_)) = (&head.local_socket, &node.credentials.token) {
            node.env
                .push((HEAD_SOCKET_ENV.to_string(), path.display().to_string()));
        }
        node.local_report = Some(head.local_node.clone());
        let mut registered = head.local_node.subscribe();
        let node_stop = CancellationToken::new();
        let stop = node_stop.clone();
        let mut node = tokio::spawn(async move {
            let r = run_node(node, stop).await;
            if let Err(e) = &r {
                tracing::error!(error = %e, "local node stopped with an error");
            }
            r
        });
        // Clients of this cluster use the node's object store (`HelloReply.node_socket`):
        // it is there before the first client says hello.
        tokio::select! {
            // The `Ref` the wait gives is not `Send`: drop it inside.
            _ = async { registered.wait_for(Option::is_some).await.map(|_| ()) } => {}
            ended = &mut node => {
                head.stop().await;
                return Err(match ended {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => FlameError::Internal("the local node stopped at once".into()),
                    Err(e) => FlameError::Internal(format!("the local node failed: {e}")),
                });
            }
            _ = tokio::time::sleep(REGISTER_WAIT) => {
                tracing::warn!("the local node has not registered within {REGISTER_WAIT:?}");
            }
        }
        Ok(Self {
            head,
            node_stop,
            node,
        })
    }

    pub fn address(&self) -> &str {
        &self.head.address
    }

    /// Whether the node task has ended (it only does on error or stop).
    pub fn node_finished(&self) -> bool {
        self.node.is_finished()
    }

    /// Stop executors, the node (reaping every child) and the head; persist everything.
    pub async fn stop(self) {
        // Executors are told to stop first so they exit cleanly; the node then reaps them
        // (and kills any that linger), and the head flushes its state last.
        self.head.manager.shutdown().await;
        self.node_stop.cancel();
        let _ = self.node.await;
        self.head.stop().await;
    }
}
