//! Joining a node to a head (#11), the kubeadm / k3s way: `flame-daemon node --head
//! https://head:8080 --join-token T` pins the head's CA by the fingerprint inside the token,
//! makes a key that never leaves the node, sends a certificate request with the token
//! (`JoinNode`), and keeps what it gets in its state dir for restarts:
//! `node.pem` + `node.key` + `ca.pem` (a TLS head), or `node.token` (a plaintext loopback
//! head, which issues a node token instead of a certificate). A restart finds them and needs
//! no token.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flame_core::auth::{Token, TokenKind};
use flame_core::client::Transport;
use flame_core::client::{normalize_address, read_ca_file, stub, Credentials, StateStamp};
use flame_core::error::{FlameError, Result};
use flame_core::proto;
use flame_core::tls::{read_private_file, write_private_file, Identity, NodeKey};

/// The node's certificate, its key and the cluster CA, in the node's state dir.
pub const NODE_CERT_FILE: &str = "node.pem";
pub const NODE_KEY_FILE: &str = "node.key";
pub const NODE_CA_FILE: &str = "ca.pem";
/// A plaintext head's node token, in the node's state dir.
pub const NODE_TOKEN_FILE: &str = "node.token";

/// How long each step of a join may take.
const STEP: Duration = Duration::from_secs(10);

/// `~/.flame/node`: where a node keeps its credentials by default.
pub fn default_node_state_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".flame").join("node")
}

/// The credentials of node `name` toward `head`: those kept in `state_dir`, else the result
/// of joining with `join_token` (then kept there).
///
/// No kept credentials and no join token: none (logged; a head that wants credentials
/// refuses the node with its reason). Kept credentials of another cluster than the join
/// token's: joins anew.
///
/// # Errors
/// `InvalidArgument` for a token that is not a join token; `Unauthenticated` with the head's words when it refuses the token
/// (wrong, expired, revoked) or its CA is not the one the token names; `Unreachable`;
/// `FailedPrecondition` when the state dir or its files cannot be used.
pub async fn node_credentials(
    head: &str,
    join_token: Option<&str>,
    state_dir: &Path,
    name: &str,
) -> Result<Credentials> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|e| {
            FlameError::FailedPrecondition(format!("node state dir {}: {e}", state_dir.display()))
        })?;
    let kept = kept(state_dir)?;
    let token_fp = join_token
        .and_then(|t| Token::parse(t).ok())
        .map(|t| t.ca_fingerprint);
    match (kept, token_fp) {
        // A join token of another cluster than the kept credentials': join that one.
        (Some(kept), Some(fp)) if kept_fingerprint(&kept).is_some_and(|k| k != fp) => {
            tracing::info!(state_dir = %state_dir.display(), "the join token names another cluster than the kept credentials; joining it");
        }
        (Some(kept), _) => {
            tracing::info!(state_dir = %state_dir.display(), "using the node credentials kept from an earlier join");
            return Ok(kept);
        }
        (None, _) => {}
    }
    let Some(join_token) = join_token else {
        // The head decides: one that wants credentials refuses the node with its reason
        // (and the node adds how to join, see `connection.rs`).
        tracing::warn!(
            "this node has not joined a head ({} holds no {NODE_CERT_FILE} or \
             {NODE_TOKEN_FILE}) and has no --join-token; connecting without credentials",
            state_dir.display()
        );
        return Ok(Credentials::none());
    };
    join(&normalize_address(head), join_token, state_dir, name).await
}

/// The CA fingerprint of kept credentials (their CA file's, or their node token's).
fn kept_fingerprint(kept: &Credentials) -> Option<String> {
    if let Some(ca) = &kept.ca_pem {
        let as_chain = Identity {
            cert_pem: ca.clone(),
            key_pem: String::new(),
        };
        let der = as_chain.cert_chain().ok()?.into_iter().next()?;
        return Some(flame_core::auth::fingerprint(&der));
    }
    let token = Token::parse(kept.token.as_deref()?).ok()?;
    Some(token.ca_fingerprint)
}

/// Credentials kept in `state_dir` by an earlier join, if any.
fn kept(dir: &Path) -> Result<Option<Credentials>> {
    let (cert, key, ca) = (
        dir.join(NODE_CERT_FILE),
        dir.join(NODE_KEY_FILE),
        dir.join(NODE_CA_FILE),
    );
    if cert.exists() && key.exists() && ca.exists() {
        return Ok(Some(Credentials {
            token: None,
            ca_pem: Some(read_ca_file(&ca, "the node's CA file")?),
            identity: Some(Identity::load(&cert, &key)?),
        }));
    }
    let token = dir.join(NODE_TOKEN_FILE);
    if token.exists() {
        let text = read_private_file(&token, "the node token")?;
        return Ok(Some(Credentials::with_token(text.trim())));
    }
    Ok(None)
}

/// Join now: pin, key + CSR, `JoinNode`, keep the files, first mutual-TLS connection.
async fn join(head: &str, join_token: &str, dir: &Path, name: &str) -> Result<Credentials> {
    let started = Instant::now();
    let token = Token::parse(join_token)
        .map_err(|e| FlameError::InvalidArgument(format!("--join-token: {e}")))?;
    if token.kind != TokenKind::Join {
        return Err(FlameError::InvalidArgument(format!(
            "--join-token: this is a {} token; a node joins with a join token (`flame-daemon \
             token create --node`)",
            token.kind.as_str()
        )));
    }
    let tls = head.starts_with("https://");
    // Pinning: the CA whose fingerprint the token carries, checked in the handshake.
    let ca_pem = if tls {
        Some(flame_core::tls::fetch_pinned_ca(head, &token.ca_fingerprint, STEP).await?)
    } else {
        None
    };
    let pinned = started.elapsed();
    let key = tls.then(NodeKey::generate);
    let request = proto::JoinRequest {
        join_token: join_token.trim().to_string(),
        node_name: name.to_string(),
        csr_pem: key.as_ref().map(|k| k.csr_pem(name)).unwrap_or_default(),
    };
    let anonymous = Credentials {
        ca_pem: ca_pem.clone(),
        ..Credentials::none()
    };
    let transport = Transport::resolve(head, &anonymous, STEP).await?;
    let channel = transport.channel(STEP).await?;
    let mut frontend = stub(channel, StateStamp::default());
    let reply = tokio::time::timeout(STEP, frontend.join_node(request))
        .await
        .map_err(|_| FlameError::Timeout(format!("no answer to JoinNode within {STEP:?}")))??
        .into_inner();
    let rpc = started.elapsed();
    let creds = match key {
        Some(key) => {
            let identity = key.identity(&reply.certificate_pem);
            identity.save(&dir.join(NODE_CERT_FILE), &dir.join(NODE_KEY_FILE))?;
            let ca_pem = ca_pem.unwrap_or_default();
            write_private_file(&dir.join(NODE_CA_FILE), &ca_pem)?;
            Credentials {
                token: None,
                ca_pem: Some(ca_pem),
                identity: Some(identity),
            }
        }
        None => {
            if reply.node_token.is_empty() {
                return Err(FlameError::Internal(
                    "the head accepted the join but sent no node token".into(),
                ));
            }
            write_private_file(&dir.join(NODE_TOKEN_FILE), &reply.node_token)?;
            Credentials::with_token(reply.node_token)
        }
    };
    // The first connection with the new credentials (mutual TLS on a TLS head).
    Transport::resolve(head, &creds, STEP)
        .await?
        .channel(STEP)
        .await?;
    tracing::info!(
        node = name,
        head,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        pin_ms = pinned.as_secs_f64() * 1e3,
        join_rpc_ms = (rpc - pinned).as_secs_f64() * 1e3,
        state_dir = %dir.display(),
        "node joined"
    );
    Ok(creds)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use flame_core::tls::ClusterCa;

    use super::*;

    #[tokio::test]
    async fn kept_credentials_are_used_without_a_token_and_a_token_of_another_cluster_rejoins() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("node");
        let none = node_credentials("https://127.0.0.1:1", None, &state, "n1").await;
        assert_eq!(none.unwrap(), Credentials::none());
        let mode = fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        // A user token is not a join token; nothing is contacted.
        let user = Token::generate(TokenKind::User, 5, &"a".repeat(64)).to_string();
        let err = node_credentials("https://127.0.0.1:1", Some(&user), &state, "n1")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("a node joins with a join token"),
            "{err}"
        );

        // What an earlier join left: used as is.
        let ca = ClusterCa::load_or_create(&dir.path().join("ca")).unwrap();
        let key = NodeKey::generate();
        let signed = ca.sign_node(&key.csr_pem("n1"), "n1").unwrap();
        let identity = key.identity(&signed.cert_pem);
        identity
            .save(&state.join(NODE_CERT_FILE), &state.join(NODE_KEY_FILE))
            .unwrap();
        write_private_file(&state.join(NODE_CA_FILE), ca.cert_pem()).unwrap();
        let creds = node_credentials("https://127.0.0.1:1", None, &state, "n1")
            .await
            .unwrap();
        assert_eq!(creds.identity, Some(identity));
        assert_eq!(creds.ca_pem.as_deref(), Some(ca.cert_pem()));
        assert_eq!(creds.token, None);
        // A join token of the same cluster: still the kept ones (no contact).
        let same = Token::generate(TokenKind::Join, 8, &ca.fingerprint()).to_string();
        let again = node_credentials("https://127.0.0.1:1", Some(&same), &state, "n1").await;
        assert_eq!(again.unwrap(), creds);
        // Another cluster's join token: a new join (nothing listens there, so it fails).
        let other = Token::generate(TokenKind::Join, 8, &"c".repeat(64)).to_string();
        let err = node_credentials("https://127.0.0.1:1", Some(&other), &state, "n1")
            .await
            .unwrap_err();
        assert!(matches!(err, FlameError::Unreachable { .. }), "{err:?}");

        // A plaintext head's node token, kept 0600; a readable one is refused.
        let plain = dir.path().join("plain");
        let node_token = Token::generate(TokenKind::Node, 6, &"b".repeat(64)).to_string();
        fs::create_dir_all(&plain).unwrap();
        write_private_file(&plain.join(NODE_TOKEN_FILE), &node_token).unwrap();
        let creds = node_credentials("http://127.0.0.1:1", None, &plain, "n1")
            .await
            .unwrap();
        assert_eq!(creds, Credentials::with_token(node_token));
        let path = plain.join(NODE_TOKEN_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = node_credentials("http://127.0.0.1:1", None, &plain, "n1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
