//! Flame's PKI and TLS: the cluster CA, the certificates it issues, and the rustls/tonic
//! configurations built from them. A library only: the head, nodes and clients wire it in.
//!
//! # The model (kubeadm / k3s)
//! - The head owns one **cluster CA** ([`ClusterCa`], ECDSA P-256, in its state dir). Its
//!   SHA-256 fingerprint is part of every token, so whoever holds a token can pin the CA.
//! - The head serves TLS with a **server certificate** signed by the CA ([`ClusterCa::
//!   issue_server`]) and sends the chain `[leaf, CA]` so that a client holding only the
//!   fingerprint can find the CA in the handshake ([`fetch_pinned_ca`]).
//! - A node makes its own key ([`NodeKey`]) and sends a CSR; the head signs it
//!   ([`ClusterCa::sign_node`]) into a certificate whose identity is the URI SAN
//!   `flame-node:<name>` ([`node_name_of`]); it also serves the node's object server as
//!   `<name>.node.flame` ([`node_server_name`]). The node's private key never leaves the node.
//!
//! # Files
//! - [`ca`] — the cluster CA: create once, load, issue server and node certificates.
//! - [`node`] — node keys, CSRs, node names and reading a node's name from a certificate.
//! - [`head`] — the head's server certificate: issue, keep, reissue when it no longer fits.
//! - [`names`] — the names a head's certificate must carry (interfaces, host name).
//! - [`files`] — private key files (0600, refused when others may read them), identities.
//! - [`config`] — rustls and tonic configurations (server, client, mutual TLS).
//! - [`pinning`] — the first contact: fetch the head's CA and check it against a fingerprint.

mod ca;
mod config;
mod files;
mod head;
mod names;
mod node;
mod pinning;
#[cfg(test)]
mod tests;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::FlameError;

pub use ca::{ClusterCa, SignedNode, CA_CERT_FILE, CA_COMMON_NAME, CA_KEY_FILE};
pub use config::{
    client_rustls_config, client_tls, server_rustls_config, server_rustls_config_mtls, server_tls,
};
pub use files::{read_private_file, write_private_file};
pub use head::{HEAD_CERT_FILE, HEAD_KEY_FILE};
pub use names::server_names;
pub use node::{
    node_cert_of, node_name_of, node_server_name, peer_node, peer_node_name, serves_node_name,
    validate_node_name, NodeCert, NodeKey, MAX_NODE_NAME_BYTES, NODE_DNS_SUFFIX, NODE_URI_PREFIX,
};
pub use pinning::fetch_pinned_ca;

/// A certificate chain and its private key, both PEM.
///
/// For a head's server identity ([`ClusterCa::issue_server`]) `cert_pem` is the leaf
/// followed by the CA certificate: the CA must travel in the handshake so that a client that
/// knows only the CA's fingerprint can pin it. For a node it is the node's certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    // Never print a private key (logs end up in bug reports).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl Identity {
    /// The certificates of `cert_pem`, leaf first.
    pub fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>, FlameError> {
        certs_from_pem(&self.cert_pem, "the identity's certificate")
    }

    /// The private key of `key_pem`.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, FlameError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| {
            FlameError::InvalidArgument(format!("the identity's private key is not PEM: {e}"))
        })
    }
}

/// Every certificate of a PEM text; `what` names the text in errors.
pub(crate) fn certs_from_pem(
    pem: &str,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, FlameError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FlameError::InvalidArgument(format!("{what} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(FlameError::InvalidArgument(format!(
            "{what} holds no certificate (expected -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// The PEM text of one DER certificate (LF line ends, as rcgen writes them).
pub(crate) fn cert_der_to_pem(der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("CERTIFICATE", der), config)
}
