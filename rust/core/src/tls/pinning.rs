//! First contact with a head: get its CA certificate knowing only the CA's fingerprint (the
//! last part of every token), as `kubeadm join` and k3s do.
//!
//! The handshake accepts any chain (we do not trust anything yet) but keeps rustls' check
//! that the server holds the leaf's key. Afterwards the chain must contain a certificate
//! whose SHA-256 is the fingerprint, AND the leaf must verify against that certificate as
//! the only root for the host we dialled: a bystander who merely echoes the public CA
//! certificate cannot sign a leaf with it, so it is refused.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{verify_tls12_signature, verify_tls13_signature};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::config::provider;
use crate::auth::fingerprint as sha256_fingerprint;
use crate::error::FlameError;

/// Connects to `address` (`https://host:port`), and returns the head's CA certificate (PEM)
/// if its SHA-256 is `fingerprint` and it signed the head's certificate for `host`.
///
/// Errors: `Unauthenticated` naming the expected and seen fingerprints (wrong head, or a
/// machine in the middle) or saying the leaf is not signed by the pinned CA; `Unreachable`
/// if the connection or handshake fails; `Timeout` after `timeout`; `InvalidArgument` for an
/// address that is not `https://host:port`.
pub async fn fetch_pinned_ca(
    address: &str,
    fingerprint: &str,
    timeout: Duration,
) -> Result<String, FlameError> {
    let (host, port) = parse_https_address(address)?;
    let server_name = ServerName::try_from(host.clone()).map_err(|_| {
        FlameError::InvalidArgument(format!("{address}: {host:?} is not a host name or IP"))
    })?;
    let chain = tokio::time::timeout(timeout, handshake(&host, port, server_name.clone()))
        .await
        .map_err(|_| {
            FlameError::Timeout(format!(
                "no TLS handshake with {address} within {timeout:?}"
            ))
        })?
        .map_err(|reason| FlameError::Unreachable {
            address: address.to_string(),
            reason,
        })?;
    let expected = fingerprint.trim().to_ascii_lowercase();
    let seen: Vec<String> = chain.iter().map(|c| sha256_fingerprint(c)).collect();
    let Some(ca) = chain.iter().zip(&seen).find(|(_, fp)| **fp == expected) else {
        return Err(FlameError::Unauthenticated(format!(
            "the head's CA is not the one the token names (expected CA fingerprint {expected}, \
             the head at {address} sent certificates with fingerprints [{}]) — wrong head, or \
             a machine in the middle",
            seen.join(", ")
        )));
    };
    let ca = ca.0.clone();
    let leaf = &chain[0];
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| {
        FlameError::Unauthenticated(format!(
            "the certificate of {address} with the token's fingerprint is not a usable CA: {e}"
        ))
    })?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| FlameError::Internal(format!("TLS verifier: {e}")))?;
    verifier
        .verify_server_cert(leaf, &chain[1..], &server_name, &[], UnixTime::now())
        .map_err(|e| {
            FlameError::Unauthenticated(format!(
                "the head at {address} sent the CA the token names, but its own certificate \
                 does not verify against that CA for {host:?} ({e}) — a machine in the middle \
                 echoing the CA, or a head certificate without this name"
            ))
        })?;
    Ok(super::cert_der_to_pem(&ca))
}

/// TCP connect and TLS handshake; returns the chain the server sent (leaf first).
async fn handshake(
    host: &str,
    port: u16,
    server_name: ServerName<'static>,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyChain))
        .with_no_client_auth();
    // The head's gRPC port speaks h2 only and refuses a client offering neither protocol.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    if chain.is_empty() {
        return Err("the server sent no certificate".into());
    }
    Ok(chain)
}

/// `https://host:port` (or `host:port`) → host (brackets removed) and port.
fn parse_https_address(address: &str) -> Result<(String, u16), FlameError> {
    let bad = |why: &str| FlameError::InvalidArgument(format!("address {address:?}: {why}"));
    if address.starts_with("http://") {
        return Err(bad(
            "pinning the head's CA needs TLS: use https://host:port",
        ));
    }
    let rest = address.strip_prefix("https://").unwrap_or(address);
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected https://host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| bad("the port is not a number"))?;
    Ok((host.to_string(), port))
}

/// Accepts any certificate chain during the handshake (it is checked right after, against
/// the pinned fingerprint), but still checks the handshake signatures, i.e. that the server
/// holds the private key of the leaf it sent.
#[derive(Debug)]
struct AcceptAnyChain;

impl ServerCertVerifier for AcceptAnyChain {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
