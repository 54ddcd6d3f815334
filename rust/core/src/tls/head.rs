//! The head's server identity: a certificate for every name clients may dial, signed by
//! the cluster CA, kept as `head.pem`/`head.key` next to the CA and reissued when it no
//! longer fits (names changed, close to expiry, or another CA).

use std::path::Path;

use rcgen::{ExtendedKeyUsagePurpose, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::DnsName;

use super::ca::{leaf_params, rcgen_error};
use super::{ClusterCa, Identity};
use crate::error::FlameError;

/// The head's certificate chain file (leaf, then CA) in the CA dir.
pub const HEAD_CERT_FILE: &str = "head.pem";
/// The head's private key file (0600) in the CA dir.
pub const HEAD_KEY_FILE: &str = "head.key";
/// A kept head certificate closer than this to its end is replaced.
const RENEW_BEFORE_MS: u64 = 30 * 24 * 3600 * 1000;
/// The common name of every head server certificate (clients check the SANs, not this).
const SERVER_COMMON_NAME: &str = "flame head";

impl ClusterCa {
    /// A server certificate for the head, valid for `names` (each an IP address or a DNS
    /// name; see [`super::server_names`]), serverAuth only, one year.
    ///
    /// The returned `cert_pem` is the chain: the leaf, then the CA certificate (clients that
    /// pin the CA by fingerprint find it in the handshake).
    pub fn issue_server(&self, names: &[String]) -> Result<Identity, FlameError> {
        if names.is_empty() {
            return Err(FlameError::InvalidArgument(
                "a server certificate needs at least one host name or IP address".into(),
            ));
        }
        let mut sans = Vec::with_capacity(names.len());
        for name in names {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            sans.push(match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    if name.to_ascii_lowercase().ends_with(super::NODE_DNS_SUFFIX) {
                        return Err(FlameError::InvalidArgument(format!(
                            "server name {name:?} is under {}, the names of nodes' object \
                             servers; a head cannot carry one",
                            super::NODE_DNS_SUFFIX
                        )));
                    }
                    DnsName::try_from(name).map_err(|_| {
                        FlameError::InvalidArgument(format!(
                            "server name {name:?} is neither an IP address nor a DNS name"
                        ))
                    })?;
                    SanType::DnsName(name.try_into().map_err(rcgen_error)?)
                }
            });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let mut params = leaf_params(SERVER_COMMON_NAME)?.0;
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(Identity {
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem()),
            key_pem: key.serialize_pem(),
        })
    }

    /// The head's identity for `names`: the one kept in `dir` (`head.pem`, `head.key`) if it
    /// was issued by this CA, covers every name and has 30 days left; otherwise a new one,
    /// saved there (0600). A kept key that group or others may read is refused.
    pub fn head_identity(&self, dir: &Path, names: &[String]) -> Result<Identity, FlameError> {
        let (cert_path, key_path) = (dir.join(HEAD_CERT_FILE), dir.join(HEAD_KEY_FILE));
        if cert_path.exists() && key_path.exists() {
            let kept = Identity::load(&cert_path, &key_path)?;
            if self.still_fits(&kept, names)? {
                return Ok(kept);
            }
        }
        let identity = self.issue_server(names)?;
        identity.save(&cert_path, &key_path)?;
        Ok(identity)
    }

    fn still_fits(&self, kept: &Identity, names: &[String]) -> Result<bool, FlameError> {
        let chain = kept.cert_chain()?;
        if chain.len() != 2 || chain[1].as_ref() != self.cert_der() {
            return Ok(false);
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if kept.not_after_ms()? < now_ms + RENEW_BEFORE_MS {
            return Ok(false);
        }
        let Ok((_, leaf)) = x509_parser::parse_x509_certificate(&chain[0]) else {
            return Ok(false);
        };
        let ca = x509_parser::parse_x509_certificate(self.cert_der())
            .map_err(|e| FlameError::Internal(format!("the CA certificate: {e}")))?
            .1;
        if leaf.verify_signature(Some(ca.public_key())).is_err() {
            return Ok(false);
        }
        let Ok(Some(san)) = leaf.subject_alternative_name() else {
            return Ok(false);
        };
        let present: Vec<String> = san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => ip_text(ip),
                _ => None,
            })
            .collect();
        Ok(names.iter().all(|n| {
            let n = n.trim_start_matches('[').trim_end_matches(']');
            let n = match n.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => n.to_ascii_lowercase(),
            };
            present.contains(&n)
        }))
    }
}

/// The text of an IP address SAN (4 or 16 bytes).
fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}
