//! `Discover`: what a client may learn from a head before it has credentials (#11) —
//! whether it speaks TLS, its CA's fingerprint, its version, and, to a caller on the same
//! machine only, its state dir (where the OS user who runs the head finds `admin.token`).

use std::time::Duration;

use super::credentials::Credentials;
use super::stamp::{stub, StateStamp};
use super::transport::Transport;
use crate::error::{FlameError, Result};
use crate::proto;

/// A head's answer to `Discover`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    pub tls: bool,
    /// SHA-256 (hex) of the cluster CA certificate.
    pub ca_fingerprint: String,
    /// The head's state dir; empty unless the caller is on the head's machine (loopback).
    pub state_dir: String,
    pub version: String,
}

/// Ask the head at `address` (normalized) what it is. `creds` matter only for an
/// `https://` head, whose CA must be known (or pinned by a token) to talk to it at all.
///
/// # Errors
/// What connecting reports (`Unreachable`, TLS errors), or the head's refusal.
pub async fn discover(address: &str, creds: &Credentials, timeout: Duration) -> Result<Discovery> {
    let transport = Transport::resolve(address, creds, timeout).await?;
    let channel = transport.channel(timeout).await?;
    let mut frontend = stub(channel, StateStamp::default());
    let reply = tokio::time::timeout(timeout, frontend.discover(proto::Empty {}))
        .await
        .map_err(|_| FlameError::Unreachable {
            address: address.to_string(),
            reason: format!("no answer to Discover within {timeout:?}"),
        })??
        .into_inner();
    Ok(Discovery {
        tls: reply.tls,
        ca_fingerprint: reply.ca_fingerprint,
        state_dir: reply.state_dir,
        version: reply.version,
    })
}
