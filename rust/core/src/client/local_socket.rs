//! A client on the head's machine, of the head's OS user, moves to the head's Unix socket
//! (`HelloReply.head_socket`): the same services and interceptors as the TCP port, without
//! TLS records or the loopback TCP stack per message (issue #11's cost of TLS on loopback).
//!
//! The move is checked, never assumed: the socket file must be this user's (so no other
//! user planted it to catch the bearer token), and a hello over it must name the same state
//! and give back the same client id (so it is the same head, not another one of this user's
//! on the same path). Anything else keeps the TCP connection, silently: the socket is an
//! optimisation only.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tonic::transport::Channel;

use super::stamp::{stub, StateStamp};
use super::transport::{Transport, SOCKET_TIMEOUT};
use crate::proto;

/// `transport` preferring the head's socket and a channel on it, when `first` (the hello
/// over TCP) offered one that checks out; `None` to stay on TCP.
pub async fn adopt(
    transport: &Transport,
    first: &proto::HelloReply,
    name: &str,
) -> Option<(Transport, Channel)> {
    let path = first.head_socket.as_str();
    if path.is_empty() {
        return None;
    }
    if let Err(why) = owned_by_this_user(Path::new(path)) {
        tracing::debug!("not using the head's socket {path}: {why}");
        return None;
    }
    let channel = match Transport::socket_channel(path).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("not using the head's socket: {e}");
            return None;
        }
    };
    let stamp = StateStamp::default().with_bearer(transport.bearer().cloned());
    let req = proto::HelloRequest {
        client_name: name.to_string(),
        previous_client_id: first.client_id,
    };
    let mut frontend = stub(channel.clone(), stamp);
    match tokio::time::timeout(SOCKET_TIMEOUT, frontend.hello(req)).await {
        Ok(Ok(r)) if same_head(first, r.get_ref()) => {
            Some((transport.with_local_socket(path), channel))
        }
        Ok(Ok(r)) => {
            tracing::debug!(
                "not using the socket {path}: it leads to state {} (client {}), not {} ({})",
                r.get_ref().state_id,
                r.get_ref().client_id,
                first.state_id,
                first.client_id
            );
            None
        }
        Ok(Err(s)) => {
            tracing::debug!(
                "not using the socket {path}: hello refused: {}",
                s.message()
            );
            None
        }
        Err(_) => {
            tracing::debug!("not using the socket {path}: no hello within {SOCKET_TIMEOUT:?}");
            None
        }
    }
}

/// The hello over the socket answered for the same head state and the same client.
fn same_head(tcp: &proto::HelloReply, socket: &proto::HelloReply) -> bool {
    !tcp.state_id.is_empty() && tcp.state_id == socket.state_id && tcp.client_id == socket.client_id
}

/// `path` is a socket owned by this process's user, in a directory only that user can
/// change.
fn owned_by_this_user(path: &Path) -> Result<(), String> {
    let me = crate::private_files::euid();
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_socket() {
        return Err("not a socket".into());
    }
    if meta.uid() != me {
        return Err(format!("owned by uid {}, not {me}", meta.uid()));
    }
    let dir = path.parent().ok_or("no parent directory")?;
    let dir_meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if dir_meta.uid() != me || dir_meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is not this user's private directory",
            dir.display()
        ));
    }
    Ok(())
}
