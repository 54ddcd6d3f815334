//! A node's side of its certificate: its own key, the certificate request it sends with a
//! join token, and the name a certificate carries.
//!
//! A node's identity is the URI SAN `flame-node:<name>` (the CN says the same, for humans and
//! tools that show only the subject). A URI SAN cannot be confused with a DNS name, so a
//! head's server certificate never passes for a node. A node certificate also serves the
//! node's object server (#12) under the DNS name `<name>.node.flame`, which clients dial by
//! that name; a head never carries a name under `.node.flame` (its certificate refuses
//! one), so a node certificate never passes for the head's either.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use x509_parser::extensions::GeneralName;

use super::Identity;
use crate::error::FlameError;

/// How a node certificate's URI SAN starts; the node's name follows.
pub const NODE_URI_PREFIX: &str = "flame-node:";
/// The DNS suffix of the name a node's object server is dialed by.
pub const NODE_DNS_SUFFIX: &str = ".node.flame";

/// The name a node's certificate carries for its object server: `<name>.node.flame`.
pub fn node_server_name(node_name: &str) -> String {
    format!("{node_name}{NODE_DNS_SUFFIX}")
}

/// Whether the node certificate `cert_pem` carries `<node_name>.node.flame`, so it can serve
/// objects (certificates signed before #12 do not: the node must join again).
pub fn serves_node_name(cert_pem: &str, node_name: &str) -> bool {
    let want = node_server_name(node_name).to_ascii_lowercase();
    let Ok(der) = super::certs_from_pem(cert_pem, "the node certificate") else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der[0]) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|n| matches!(n, GeneralName::DNSName(d) if d.to_ascii_lowercase() == want))
}

/// The longest node name (that of a DNS name).
pub const MAX_NODE_NAME_BYTES: usize = 253;

/// Checks a node name: 1 to 253 bytes of `[A-Za-z0-9._-]`. The error names the field.
pub fn validate_node_name(name: &str) -> Result<(), FlameError> {
    if name.is_empty() {
        return Err(FlameError::InvalidArgument(
            "node_name is empty; a node needs a name (letters, digits, '.', '_', '-')".into(),
        ));
    }
    if name.len() > MAX_NODE_NAME_BYTES {
        return Err(FlameError::InvalidArgument(format!(
            "node_name is {} bytes long; at most {MAX_NODE_NAME_BYTES} are allowed",
            name.len()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(FlameError::InvalidArgument(format!(
            "node_name {name:?} contains {bad:?}; only letters, digits, '.', '_' and '-' are \
             allowed"
        )));
    }
    Ok(())
}

/// A node's private key (ECDSA P-256). It stays on the node; only CSRs leave.
pub struct NodeKey {
    key: KeyPair,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl NodeKey {
    /// A new random key.
    ///
    /// # Panics
    /// If the operating system has no randomness to give (nothing could be secure then).
    pub fn generate() -> NodeKey {
        NodeKey {
            key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .expect("the OS random source failed"),
        }
    }

    /// A key read back from [`NodeKey::key_pem`] (a node's restart).
    pub fn from_pem(key_pem: &str) -> Result<NodeKey, FlameError> {
        KeyPair::from_pem(key_pem)
            .map(|key| NodeKey { key })
            .map_err(|e| FlameError::InvalidArgument(format!("the node key is not PEM: {e}")))
    }

    /// The private key, PKCS#8 PEM (write it 0600).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate request for `node_name` signed by this key (the signature proves the
    /// node holds the key). The head decides the certificate's contents; the name here is
    /// informative only.
    pub fn csr_pem(&self, node_name: &str) -> String {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, node_name);
        params
            .serialize_request(&self.key)
            .and_then(|csr| csr.pem())
            .expect("a request with only a common name always serializes")
    }

    /// This key with the certificate the head signed for it: the node's TLS identity.
    pub fn identity(&self, cert_pem: &str) -> Identity {
        Identity {
            cert_pem: cert_pem.to_string(),
            key_pem: self.key_pem(),
        }
    }
}

/// The node name in a certificate the cluster CA issued (its `flame-node:` URI SAN), or
/// `None` for any other certificate (a user's, a server's, garbage).
///
/// Does not check the signature: use it on certificates the TLS layer has verified, such as
/// tonic's `request.peer_certs()` on a head that trusts only the cluster CA.
pub fn node_name_of(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => uri
            .strip_prefix(NODE_URI_PREFIX)
            .filter(|n| validate_node_name(n).is_ok())
            .map(str::to_string),
        _ => None,
    })
}

/// What the head needs of a node's certificate: who it names, and how to find it among the
/// certificates it issued (to refuse a revoked one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCert {
    pub name: String,
    /// SHA-256 of the DER, lowercase hex (= [`super::SignedNode::fingerprint`]).
    pub fingerprint: String,
    /// The serial number if it fits in a u64 (= [`super::SignedNode::serial`]).
    pub serial: Option<u64>,
}

/// [`NodeCert`] of a certificate the cluster CA issued, or `None` for any other certificate.
/// Like [`node_name_of`], does not check the signature.
pub fn node_cert_of(cert_der: &[u8]) -> Option<NodeCert> {
    let name = node_name_of(cert_der)?;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let serial = u64::try_from(cert.tbs_certificate.serial.clone()).ok();
    Some(NodeCert {
        name,
        fingerprint: crate::auth::fingerprint(cert_der),
        serial,
    })
}

/// The node certificate a gRPC caller presented (verified by the TLS layer against the
/// cluster CA), or `None` for a caller without one (a user with a bearer token).
pub fn peer_node<T>(request: &tonic::Request<T>) -> Option<NodeCert> {
    request
        .peer_certs()?
        .first()
        .and_then(|cert| node_cert_of(cert))
}

/// The node name of the certificate a gRPC caller presented (the head's check of a node or
/// executor connection), or `None` without a node certificate. The TLS layer has verified
/// the certificate against the cluster CA before the request gets here.
pub fn peer_node_name<T>(request: &tonic::Request<T>) -> Option<String> {
    request
        .peer_certs()?
        .first()
        .and_then(|cert| node_name_of(cert))
}
