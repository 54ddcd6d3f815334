//! How to reach a head with given [`Credentials`]: plaintext for `http://`, TLS for
//! `https://` (trusting only the cluster CA, presenting the node's certificate if any), and
//! the bearer token every call carries; and the head's Unix socket for a local node's
//! executors ([`HEAD_SOCKET_ENV`]). Resolved once per client: pinning the CA by the
//! token's fingerprint is a handshake, done at first contact and never again on reconnects.
//!
//! Connection failures are turned into errors that say what to do: a plaintext client at a
//! TLS head, a TLS client at a plaintext head, and a head whose certificate does not chain to
//! the CA each get their own message naming TLS and the fix.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::credentials::Credentials;
use crate::error::{error_chain, FlameError, Result};

/// Set by a node for its executors when the head is in the same process tree and serves a
/// Unix socket in its private state dir (`flame-daemon start`, `flame.init()`): the path the
/// executors connect to instead of the address's TCP port, with the same bearer token.
pub const HEAD_SOCKET_ENV: &str = "FLAME_HEAD_SOCKET";

/// A resolved way to a head: address, TLS configuration and bearer header value.
#[derive(Clone, Debug)]
pub struct Transport {
    address: String,
    tls: Option<ClientTlsConfig>,
    /// The CA trusted for `https://` (given, or pinned on first contact).
    ca_pem: Option<String>,
    bearer: Option<MetadataValue<Ascii>>,
    /// The head's Unix socket, tried before the address on every new channel (see
    /// [`Transport::with_local_socket`]).
    local_socket: Option<String>,
}

/// How long the head's Unix socket may take to accept before the TCP address is used.
pub const SOCKET_TIMEOUT: Duration = Duration::from_secs(2);

impl Transport {
    /// Resolve `address` (already normalized, `http://` or `https://`) with `creds`. For an
    /// `https://` head with no CA given, the token's fingerprint pins it (one handshake).
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed token or address, or an `https://` head with
    /// neither a CA nor a token; what pinning reports (`Unauthenticated` for a CA that is not
    /// the token's, `Unreachable`, `Timeout`).
    pub async fn resolve(address: &str, creds: &Credentials, timeout: Duration) -> Result<Self> {
        let token = creds.parsed_token()?;
        let bearer =
            match &token {
                Some(t) => Some(t.bearer().parse().map_err(|_| {
                    FlameError::InvalidArgument("the token is not ASCII text".into())
                })?),
                None => None,
            };
        let uri: tonic::transport::Uri = address
            .parse()
            .map_err(|e| FlameError::InvalidArgument(format!("bad address '{address}': {e}")))?;
        let host = uri.host().unwrap_or_default().to_string();
        let (tls, ca_pem) = match uri.scheme_str() {
            Some("https") => {
                let ca_pem = match (&creds.ca_pem, &token) {
                    (Some(ca), _) => ca.clone(),
                    (None, Some(t)) => {
                        crate::tls::fetch_pinned_ca(address, &t.ca_fingerprint, timeout).await?
                    }
                    (None, None) => {
                        return Err(FlameError::InvalidArgument(format!(
                            "{address} uses TLS and no cluster CA is known: give a token \
                             (its CA fingerprint pins the head's CA), FLAME_CA_FILE, or run \
                             `flame login {address}`"
                        )))
                    }
                };
                let tls = crate::tls::client_tls(&ca_pem, &host, creds.identity.as_ref());
                (Some(tls), Some(ca_pem))
            }
            Some("http") => (None, None),
            other => {
                return Err(FlameError::InvalidArgument(format!(
                    "bad address '{address}': the scheme must be http:// or https://, got {}",
                    other.unwrap_or("none")
                )))
            }
        };
        Ok(Transport {
            address: address.to_string(),
            tls,
            ca_pem,
            bearer,
            local_socket: None,
        })
    }

    /// This transport, trying the head's Unix socket at `path` first on every new channel
    /// (reconnects included) and the address when the socket does not answer.
    #[must_use]
    pub fn with_local_socket(&self, path: &str) -> Transport {
        Transport {
            local_socket: Some(path.to_string()),
            ..self.clone()
        }
    }

    /// The head's Unix socket this transport tries first, if any.
    pub fn local_socket(&self) -> Option<&str> {
        self.local_socket.as_deref()
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Whether this is a TLS (`https://`) head.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The CA this transport trusts (PEM), for `https://` heads.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The `authorization` value every call carries, if there is a token.
    pub fn bearer(&self) -> Option<&MetadataValue<Ascii>> {
        self.bearer.as_ref()
    }

    /// An endpoint for the head with TLS set up; callers add their own timeouts.
    ///
    /// # Errors
    /// `InvalidArgument` for a malformed address or TLS configuration.
    pub fn endpoint(&self) -> Result<Endpoint> {
        let endpoint = Endpoint::from_shared(self.address.clone()).map_err(|e| {
            FlameError::InvalidArgument(format!("bad address '{}': {e}", self.address))
        })?;
        match &self.tls {
            Some(tls) => endpoint.tls_config(tls.clone()).map_err(|e| {
                FlameError::InvalidArgument(format!(
                    "TLS for {}: {}",
                    self.address,
                    error_chain(&e)
                ))
            }),
            None => Ok(endpoint),
        }
    }

    /// An endpoint on the head's Unix socket at `path` (see [`HEAD_SOCKET_ENV`]). No TLS:
    /// only the head's OS user can reach the socket, and the head checks that too.
    ///
    /// # Errors
    /// `InvalidArgument` for a path that is not a valid socket address.
    pub fn socket_endpoint(path: &str) -> Result<Endpoint> {
        Endpoint::from_shared(format!("unix://{path}"))
            .map_err(|e| FlameError::InvalidArgument(format!("bad head socket path '{path}': {e}")))
    }

    /// A channel on the head's Unix socket at `path`, within [`SOCKET_TIMEOUT`].
    ///
    /// # Errors
    /// `Unreachable` when nothing accepts there in time.
    pub async fn socket_channel(path: &str) -> Result<Channel> {
        let endpoint = Self::socket_endpoint(path)?
            .connect_timeout(SOCKET_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let unreachable = |reason: String| FlameError::Unreachable {
            address: format!("unix://{path}"),
            reason,
        };
        match tokio::time::timeout(SOCKET_TIMEOUT, endpoint.connect()).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(unreachable(error_chain(&e))),
            Err(_) => Err(unreachable(format!("no answer within {SOCKET_TIMEOUT:?}"))),
        }
    }

    /// A new channel with the client's options, or an error saying why not within
    /// `timeout` (see [`Transport::explain`]).
    ///
    /// # Errors
    /// As [`Transport::explain`].
    pub async fn channel(&self, timeout: Duration) -> Result<Channel> {
        if let Some(path) = &self.local_socket {
            match Self::socket_channel(path).await {
                Ok(channel) => return Ok(channel),
                Err(e) => tracing::debug!("the head's socket {path}: {e}; using {}", self.address),
            }
        }
        let endpoint = self
            .endpoint()?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        match tokio::time::timeout(timeout, endpoint.connect()).await {
            Err(_) => Err(FlameError::Unreachable {
                address: self.address.clone(),
                reason: format!("no answer within {timeout:?}"),
            }),
            Ok(Err(e)) => Err(self.explain(&error_chain(&e)).await),
            Ok(Ok(channel)) => Ok(channel),
        }
    }

    /// The error for a connection or first call that failed with `reason`: TLS problems
    /// get a message naming TLS and the fix; everything else is `Unreachable`.
    pub async fn explain(&self, reason: &str) -> FlameError {
        let address = &self.address;
        let unreachable = |reason: String| FlameError::Unreachable {
            address: address.clone(),
            reason,
        };
        if self.tls.is_some() {
            let r = reason.to_ascii_lowercase();
            if r.contains("invalid peer certificate")
                || r.contains("unknownissuer")
                || r.contains("badsignature")
                || r.contains("notvalidforname")
            {
                return FlameError::Unauthenticated(format!(
                    "the TLS certificate of the head at {address} does not verify against the \
                     cluster CA this client trusts ({reason}): the CA file (FLAME_CA_FILE, \
                     ca=, or the ~/.flame/credentials entry) belongs to another cluster, or \
                     the head's CA was rotated — run `flame login {address}` again with a \
                     token of this cluster"
                ));
            }
            if r.contains("invalidcontenttype")
                || r.contains("corrupt message")
                || r.contains("wrong version number")
            {
                let plain = address.replacen("https://", "http://", 1);
                return unreachable(format!(
                    "the head does not speak TLS ({reason}); connect with {plain}"
                ));
            }
            return unreachable(reason.to_string());
        }
        // A plaintext client at a TLS head sees only a closed connection; a TLS handshake
        // with a fingerprint nobody has tells whether the head speaks TLS.
        let tls_address = address.replacen("http://", "https://", 1);
        let nobody = "0".repeat(64);
        let probe = crate::tls::fetch_pinned_ca(&tls_address, &nobody, Duration::from_secs(2));
        if let Err(FlameError::Unauthenticated(_)) = probe.await {
            return unreachable(format!(
                "the head speaks TLS and this client connected in plaintext ({reason}); \
                 connect with {tls_address}"
            ));
        }
        unreachable(reason.to_string())
    }
}
