//! The Frontend's security calls (#11): `Discover` and `JoinNode` (no bearer token), and the
//! admin-only `CreateToken`, `ListTokens`, `RevokeToken` and `RevokeNode`.
//!
//! Join tokens are multi-use until they expire (as kubeadm's): one token can join a whole
//! rack. A TLS head answers a join with a certificate the cluster CA signs for the node's
//! own key (its private key never leaves the node); a plaintext (loopback) head answers
//! with a node token instead. Writes to `auth.db` run on a blocking thread.

use std::net::IpAddr;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use flame_core::auth::TokenKind;
use flame_core::model::now_ms;
use flame_core::proto;
use flame_core::FlameError;

use crate::security::tokens::TokenEntry;
use crate::security::{principal, Security};
use crate::session_manager::{Event, ManagerHandle, ObjectEvent};

/// Longest user name accepted.
const MAX_USER_NAME: usize = 64;

/// `PERMISSION_DENIED` unless the caller is an admin user ("only an admin may {what}").
fn require_admin<T>(req: &Request<T>, what: &str) -> Result<(), Status> {
    let p = principal(req)?;
    if p.is_admin() {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "only an admin may {what}; you are {p}"
        )))
    }
}

/// Run a blocking `auth.db` step off the runtime's workers.
async fn blocking<T: Send + 'static>(
    security: &Arc<Security>,
    f: impl FnOnce(&Security) -> Result<T, FlameError> + Send + 'static,
) -> Result<T, Status> {
    let security = security.clone();
    tokio::task::spawn_blocking(move || f(&security))
        .await
        .map_err(|e| Status::internal(format!("security task failed: {e}")))?
        .map_err(Status::from)
}

pub async fn discover(
    security: &Security,
    req: Request<proto::Empty>,
) -> Result<Response<proto::DiscoverReply>, Status> {
    // Only a peer on this machine may learn where admin.token is (it can read it only if
    // it runs as the head's OS user; the file is 0600).
    let local = req.remote_addr().is_some_and(|a| is_loopback_peer(a.ip()));
    let state_dir = match (&security.state_dir, local) {
        (Some(dir), true) => dir.display().to_string(),
        _ => String::new(),
    };
    Ok(Response::new(proto::DiscoverReply {
        tls: security.tls,
        ca_fingerprint: security.ca_fingerprint.clone(),
        state_dir,
        version: env!("CARGO_PKG_VERSION").to_string(),
    }))
}

pub(super) fn is_loopback_peer(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
        IpAddr::V4(v4) => v4.is_loopback(),
    }
}

pub async fn join_node(
    security: &Arc<Security>,
    req: Request<proto::JoinRequest>,
) -> Result<Response<proto::JoinReply>, Status> {
    let r = req.into_inner();
    let entry = security.tokens.check(&r.join_token).map_err(Status::from)?;
    if entry.kind != TokenKind::Join {
        return Err(Status::unauthenticated(format!(
            "the {} token {} is not a join token; make one with `flame-daemon token create \
             --node`",
            entry.kind.as_str(),
            entry.id
        )));
    }
    flame_core::tls::validate_node_name(&r.node_name).map_err(Status::from)?;
    let name = r.node_name;
    let ca_pem = security.ca_pem().unwrap_or_default().to_string();
    if !security.tls {
        let token = blocking(security, move |s| {
            s.issue_stored(TokenKind::Node, &name, false, 0)
        })
        .await?;
        return Ok(Response::new(proto::JoinReply {
            certificate_pem: String::new(),
            ca_pem,
            node_token: token.to_string(),
        }));
    }
    if r.csr_pem.trim().is_empty() {
        return Err(Status::invalid_argument(
            "this head serves TLS: a join needs a certificate request (csr_pem) for the \
             node's key",
        ));
    }
    let csr = r.csr_pem;
    let signed = blocking(security, move |s| {
        let ca =
            s.ca.as_ref()
                .ok_or_else(|| FlameError::Internal("this head has no CA".into()))?;
        let signed = ca.sign_node(&csr, &name)?;
        s.record_node_cert(&name, &signed)?;
        tracing::info!(node = %name, serial = signed.serial, "node joined: certificate signed");
        Ok(signed)
    })
    .await?;
    Ok(Response::new(proto::JoinReply {
        certificate_pem: signed.cert_pem,
        ca_pem,
        node_token: String::new(),
    }))
}

pub async fn create_token(
    security: &Arc<Security>,
    req: Request<proto::TokenSpec>,
) -> Result<Response<proto::TokenCreated>, Status> {
    require_admin(&req, "create tokens")?;
    let spec = req.into_inner();
    let (kind, name) = match spec.kind.as_str() {
        "user" => {
            validate_user_name(&spec.user).map_err(Status::from)?;
            (TokenKind::User, spec.user)
        }
        "join" => {
            if spec.admin || !spec.user.is_empty() {
                return Err(Status::invalid_argument(
                    "a join token names no user and cannot be admin",
                ));
            }
            (TokenKind::Join, String::new())
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "token kind {other:?} cannot be created; use \"user\" or \"join\" (node tokens \
                 come from joining)"
            )))
        }
    };
    let expires_ms = match spec.expires_in_secs {
        0 => 0,
        secs => (now_ms().max(0) as u64).saturating_add(secs.saturating_mul(1000)),
    };
    let admin = spec.admin;
    let token = blocking(security, move |s| {
        s.issue_stored(kind, &name, admin, expires_ms)
    })
    .await?;
    let info = security
        .tokens
        .list()
        .into_iter()
        .find(|e| e.id == token.id)
        .map(info_of)
        .ok_or_else(|| Status::internal("the new token vanished"))?;
    tracing::info!(id = info.id, kind = %info.kind, name = %info.name, admin, "token created");
    Ok(Response::new(proto::TokenCreated {
        token: token.to_string(),
        info: Some(info),
    }))
}

pub async fn list_tokens(
    security: &Security,
    req: Request<proto::Empty>,
) -> Result<Response<proto::TokenList>, Status> {
    require_admin(&req, "list tokens")?;
    let tokens = security.tokens.list().into_iter().map(info_of).collect();
    Ok(Response::new(proto::TokenList { tokens }))
}

pub async fn revoke_token(
    security: &Arc<Security>,
    manager: &ManagerHandle,
    req: Request<proto::TokenRef>,
) -> Result<Response<proto::TokenInfo>, Status> {
    require_admin(&req, "revoke tokens")?;
    let id = req.into_inner().id;
    let entry = blocking(security, move |s| s.revoke_token(id)).await?;
    // Nodes forget what they were told about tokens (they may have said yes to this one).
    let fingerprints = security.revoked_cert_fingerprints();
    manager.send(Event::Objects(ObjectEvent::AccessRevoked { fingerprints }));
    tracing::info!(id, "token revoked");
    Ok(Response::new(info_of(entry)))
}

pub async fn revoke_node(
    security: &Arc<Security>,
    manager: &ManagerHandle,
    req: Request<proto::NodeRef>,
) -> Result<Response<proto::RevokedNode>, Status> {
    require_admin(&req, "revoke nodes")?;
    let name = req.into_inner().name;
    if name.is_empty() {
        return Err(Status::invalid_argument(
            "RevokeNode needs the node's name (as `flame-daemon token list` or flame.nodes() \
             shows it)",
        ));
    }
    let n = name.clone();
    let credentials = blocking(security, move |s| s.revoke_node(&n)).await?;
    let reason = format!("the credentials of node {name} were revoked");
    let dropped = manager
        .call(|reply| Event::DropNode {
            name: name.clone(),
            reason,
            reply,
        })
        .await
        .map_err(Status::from)?;
    // Other nodes' object servers refuse its certificates from now on, and forget its node
    // tokens if they had cached them as good.
    let fingerprints = security.revoked_cert_fingerprints();
    manager.send(Event::Objects(ObjectEvent::AccessRevoked { fingerprints }));
    if credentials == 0 && dropped == 0 {
        return Err(Status::not_found(format!(
            "no node named {name:?} holds credentials of this head or is connected"
        )));
    }
    tracing::warn!(node = %name, credentials, dropped, "node revoked");
    Ok(Response::new(proto::RevokedNode { name, credentials }))
}

/// A user name: 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
fn validate_user_name(name: &str) -> Result<(), FlameError> {
    if name.is_empty() {
        return Err(FlameError::InvalidArgument(
            "a user token needs a user name (--user NAME)".into(),
        ));
    }
    let ok = name.len() <= MAX_USER_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(FlameError::InvalidArgument(format!(
            "user name {name:?} must be 1 to {MAX_USER_NAME} letters, digits, '.', '_', '-' \
             or '@'"
        )))
    }
}

fn info_of(e: TokenEntry) -> proto::TokenInfo {
    proto::TokenInfo {
        id: e.id,
        kind: e.kind.as_str().to_string(),
        name: e.name,
        admin: e.admin,
        created_ms: e.created_ms,
        expires_ms: e.expires_ms,
        revoked_ms: e.revoked_ms,
    }
}
