//! The head's Unix socket for the executors of its own node (`flame-daemon start`, the
//! embedded cluster of `flame.init()`): `head.sock` in the head's private state dir.
//!
//! Every task crosses the executor's stream twice; over TCP with TLS that is a record to
//! seal and open each way, plus the loopback TCP stack. A Unix socket on the same machine
//! needs neither, and it is at least as private as TLS on loopback: the state dir is 0700
//! (so only the head's OS user can reach the socket at all, the user who can already read
//! `admin.token` beside it), the socket itself is 0600, and a connection from another uid
//! (checked with `SO_PEERCRED`) is dropped before a byte is read. Calls on it are
//! authenticated exactly as on the TCP port: the same interceptors, the node's bearer token.
//!
//! Remote nodes and all clients keep the TCP port (TLS when the head has it). When the
//! socket cannot be made (a state dir path too long for `sun_path`, a file system without
//! sockets) the head runs without it and executors use the TCP port as before.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt};

/// The socket's file name in the state dir.
pub const SOCKET_FILE: &str = "head.sock";

/// A bound socket: its path and its listener.
pub struct LocalSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl LocalSocket {
    /// Bind `state_dir/head.sock` (replacing a stale one: the caller holds the state dir's
    /// lock, so no other head uses it), mode 0600. `None`, logged, when it cannot be made.
    pub fn bind(state_dir: &Path) -> Option<LocalSocket> {
        let path = state_dir.join(SOCKET_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return unavailable(&path, &e),
        }
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => return unavailable(&path, &e),
        };
        let mode = std::fs::Permissions::from_mode(flame_core::private_files::FILE_MODE);
        if let Err(e) = std::fs::set_permissions(&path, mode) {
            let _ = std::fs::remove_file(&path);
            return unavailable(&path, &e);
        }
        Some(LocalSocket { path, listener })
    }

    /// The accepted connections of this user's processes; others are dropped (logged).
    pub fn incoming(self) -> impl Stream<Item = std::io::Result<UnixStream>> {
        let euid = flame_core::private_files::euid();
        UnixListenerStream::new(self.listener).filter(move |conn| match conn {
            Ok(stream) => match stream.peer_cred() {
                Ok(cred) if cred.uid() == euid => true,
                Ok(cred) => {
                    tracing::warn!(
                        uid = cred.uid(),
                        "refused a local-socket peer of another user"
                    );
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refused a local-socket peer without credentials");
                    false
                }
            },
            Err(_) => true,
        })
    }
}

fn unavailable(path: &Path, e: &dyn std::fmt::Display) -> Option<LocalSocket> {
    tracing::info!(
        path = %path.display(),
        error = %e,
        "no local socket for the node's executors; they use the TCP port"
    );
    None
}
