//! TLS configurations built from the cluster's PEM files: tonic's for gRPC (head, nodes,
//! clients) and plain rustls ones for the HTTP server and anything else on tokio-rustls.
//!
//! Always the `ring` provider, never the process default: Flame must not depend on which
//! crypto provider another crate in the process installed (and never on aws-lc or OpenSSL).

use std::sync::Arc;

use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig, ServerTlsConfig};

use super::{certs_from_pem, Identity};
use crate::error::FlameError;

/// The crypto provider of every Flame TLS configuration.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// tonic's server TLS for the head: its identity (chain `[leaf, CA]`), and client
/// certificates checked against `client_ca_pem` but OPTIONAL — users come with bearer tokens,
/// nodes and executors with certificates; the auth layer tells them apart with
/// `request.peer_certs()` and [`super::node_name_of`].
pub fn server_tls(identity: &Identity, client_ca_pem: &str) -> ServerTlsConfig {
    ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            &identity.cert_pem,
            &identity.key_pem,
        ))
        .client_ca_root(Certificate::from_pem(client_ca_pem))
        .client_auth_optional(true)
}

/// tonic's client TLS: trust only `ca_pem` (the cluster CA, no system roots), check the
/// server's name against `domain`, and present `identity` if given (nodes and executors).
pub fn client_tls(ca_pem: &str, domain: &str, identity: Option<&Identity>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(domain.trim_start_matches('[').trim_end_matches(']'));
    match identity {
        Some(id) => config.identity(tonic::transport::Identity::from_pem(
            &id.cert_pem,
            &id.key_pem,
        )),
        None => config,
    }
}

/// A rustls server configuration for HTTPS (axum through tokio-rustls): the identity's
/// chain, no client certificates, ALPN `http/1.1`.
pub fn server_rustls_config(identity: &Identity) -> Result<Arc<ServerConfig>, FlameError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(identity.cert_chain()?, identity.private_key()?)
        .map_err(|e| FlameError::InvalidArgument(format!("the server identity: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A rustls server configuration that also asks for client certificates signed by
/// `client_ca_pem` (optional ones, like [`server_tls`]); no ALPN set.
pub fn server_rustls_config_mtls(
    identity: &Identity,
    client_ca_pem: &str,
) -> Result<Arc<ServerConfig>, FlameError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(client_ca_pem)?), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| FlameError::InvalidArgument(format!("the client CA: {e}")))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.cert_chain()?, identity.private_key()?)
        .map_err(|e| FlameError::InvalidArgument(format!("the server identity: {e}")))?;
    Ok(Arc::new(config))
}

/// A rustls client configuration trusting only `ca_pem`, presenting `identity` if given;
/// no ALPN set (the caller adds `h2` or `http/1.1`).
pub fn client_rustls_config(
    ca_pem: &str,
    identity: Option<&Identity>,
) -> Result<Arc<ClientConfig>, FlameError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(roots(ca_pem)?);
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.cert_chain()?, id.private_key()?)
            .map_err(|e| FlameError::InvalidArgument(format!("the client identity: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A root store holding the certificates of `ca_pem`.
pub(crate) fn roots(ca_pem: &str) -> Result<RootCertStore, FlameError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem, "the CA certificate")? {
        roots
            .add(cert)
            .map_err(|e| FlameError::InvalidArgument(format!("the CA certificate: {e}")))?;
    }
    Ok(roots)
}

fn tls_error(e: tokio_rustls::rustls::Error) -> FlameError {
    FlameError::Internal(format!("TLS configuration: {e}"))
}
