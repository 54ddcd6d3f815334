//! The cluster CA: made once in the head's state dir, loaded on every start, and the only
//! signer of the head's server certificate and of node certificates.
//!
//! `ca.key` is the key to the whole cluster (anyone holding it can mint node certificates),
//! so it is written 0600 in a 0700 dir and a key file that group or others can read is
//! refused rather than used: a leaked key cannot be un-leaked by tightening the mode later.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::CertificateDer;
use x509_parser::time::ASN1Time;

use super::files::{io_error, read_private_file, write_private_file};
use super::node::{node_server_name, validate_node_name, NODE_URI_PREFIX};
use crate::auth::fingerprint;
use crate::error::FlameError;

/// The CA certificate's file in the CA dir.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file in the CA dir (0600).
pub const CA_KEY_FILE: &str = "ca.key";
/// The common name of every Flame cluster CA.
pub const CA_COMMON_NAME: &str = "flame cluster CA";

const DAY_SECS: i64 = 24 * 3600;
const CA_VALIDITY_DAYS: i64 = 3650;
const LEAF_VALIDITY_DAYS: i64 = 365;
/// Certificates start an hour in the past so a peer whose clock is a little behind accepts them.
const CLOCK_SKEW_SECS: i64 = 3600;

/// A node certificate signed by the CA, with what the head records about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedNode {
    pub cert_pem: String,
    /// SHA-256 of the certificate's DER, lowercase hex ([`crate::auth::fingerprint`]).
    pub fingerprint: String,
    /// The certificate's serial number (random, below 2^63 so it fits SQLite's INTEGER).
    pub serial: u64,
    /// End of validity, milliseconds since the Unix epoch.
    pub not_after_ms: u64,
}

/// The cluster CA: its certificate and the key that signs with it.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    pub(super) issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Loads the CA kept in `dir` (`ca.pem`, `ca.key`), or makes one there if neither exists.
    ///
    /// Refuses a key file that group or others may read, a pair where only one file exists,
    /// and a certificate that does not belong to the key; every error names the file.
    pub fn load_or_create(dir: &Path) -> Result<ClusterCa, FlameError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error("cannot create the CA directory", dir, e))?;
        // Two processes starting on a fresh dir must not mint two CAs (one would then run
        // with a CA whose files the other replaced): the check and the creation are one step.
        let _lock = lock_dir(dir)?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(&cert_path, &key_path),
            (false, false) => {
                let ca = Self::create()?;
                // The key first: a crash in between leaves a key without certificate, which
                // the next start refuses (naming the file) instead of minting a second CA.
                write_private_file(&key_path, &ca.issuer.key().serialize_pem())?;
                write_private_file(&cert_path, &ca.cert_pem)?;
                Ok(ca)
            }
            (true, false) => Err(FlameError::FailedPrecondition(format!(
                "the CA certificate {} exists but its key {} does not; restore the key or \
                 remove both files to make a new CA (every node must then join again)",
                cert_path.display(),
                key_path.display()
            ))),
            (false, true) => Err(FlameError::FailedPrecondition(format!(
                "the CA key {} exists but its certificate {} does not; restore the \
                 certificate or remove both files to make a new CA",
                key_path.display(),
                cert_path.display()
            ))),
        }
    }

    fn create() -> Result<ClusterCa, FlameError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(rcgen_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial().1);
        params.not_before = time_from_now(-CLOCK_SKEW_SECS)?.to_datetime();
        params.not_after = time_from_now(CA_VALIDITY_DAYS * DAY_SECS)?.to_datetime();
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<ClusterCa, FlameError> {
        let key_pem = read_private_file(key_path, "the CA key")?;
        let cert_pem =
            fs::read_to_string(cert_path).map_err(|e| io_error("cannot read", cert_path, e))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| {
            FlameError::FailedPrecondition(format!(
                "the CA key {} is not a PEM private key: {e}",
                key_path.display()
            ))
        })?;
        let what = format!("the CA certificate {}", cert_path.display());
        let cert_der = super::certs_from_pem(&cert_pem, &what)?.remove(0);
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| FlameError::FailedPrecondition(format!("{what} cannot be read: {e}")))?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(FlameError::FailedPrecondition(format!(
                "{what} does not belong to the key {} (another CA's file?)",
                key_path.display()
            )));
        }
        if !parsed.is_ca() {
            return Err(FlameError::FailedPrecondition(format!(
                "{what} is not a CA certificate"
            )));
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| FlameError::FailedPrecondition(format!("{what} cannot be used: {e}")))?;
        Ok(ClusterCa {
            // Re-encoded so that the head's chain carries exactly this one certificate,
            // whatever else the file holds (comments, CRLF line ends).
            cert_pem: super::cert_der_to_pem(&cert_der),
            cert_der,
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate's DER, lowercase hex: the `cafp` part of every token.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// Signs a node's certificate request: CN = `node_name`, URI SAN `flame-node:<name>`
    /// (the identity the head checks), DNS SAN `<name>.node.flame` (the name its object
    /// server is dialed by, #12; left out for a name too long to be a DNS name), clientAuth
    /// and serverAuth, one year.
    ///
    /// Only the CSR's public key is used (after its signature is checked): whatever names or
    /// usages the CSR asks for are ignored, the head decides them.
    pub fn sign_node(&self, csr_pem: &str, node_name: &str) -> Result<SignedNode, FlameError> {
        validate_node_name(node_name)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            FlameError::InvalidArgument(format!("the certificate request (csr) is not valid: {e}"))
        })?;
        let (mut params, serial, not_after_ms) = leaf_params(node_name)?;
        let uri = format!("{NODE_URI_PREFIX}{node_name}");
        params.subject_alt_names = vec![SanType::URI(uri.try_into().map_err(rcgen_error)?)];
        let dns = node_server_name(node_name);
        if rustls_pki_types::DnsName::try_from(dns.as_str()).is_ok() {
            params
                .subject_alt_names
                .push(SanType::DnsName(dns.try_into().map_err(rcgen_error)?));
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(rcgen_error)?;
        Ok(SignedNode {
            cert_pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
            serial,
            not_after_ms,
        })
    }
}

/// Parameters every leaf shares; returns them with the serial and the end of validity (ms).
pub(super) fn leaf_params(common_name: &str) -> Result<(CertificateParams, u64, u64), FlameError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let (serial, serial_number) = random_serial();
    params.serial_number = Some(serial_number);
    params.not_before = time_from_now(-CLOCK_SKEW_SECS)?.to_datetime();
    let not_after_secs = now_secs() + LEAF_VALIDITY_DAYS * DAY_SECS;
    params.not_after = time_at(not_after_secs)?.to_datetime();
    Ok((params, serial, not_after_secs as u64 * 1000))
}

/// A random positive serial below 2^63 with a non-zero first byte (minimal DER, 8 bytes).
fn random_serial() -> (u64, SerialNumber) {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source failed");
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    let serial = u64::from_be_bytes(bytes);
    (serial, SerialNumber::from(serial))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A certificate date `delta_secs` from now; `.to_datetime()` gives rcgen's date type
/// (x509-parser, already a dependency, converts so that `time` need not be one).
fn time_from_now(delta_secs: i64) -> Result<ASN1Time, FlameError> {
    time_at(now_secs() + delta_secs)
}

fn time_at(unix_secs: i64) -> Result<ASN1Time, FlameError> {
    ASN1Time::from_timestamp(unix_secs)
        .map_err(|e| FlameError::Internal(format!("bad certificate date {unix_secs}: {e}")))
}

/// An exclusive lock on `dir/ca.lock`, held until the file is dropped.
fn lock_dir(dir: &Path) -> Result<fs::File, FlameError> {
    let path = dir.join("ca.lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_error("cannot open", &path, e))?;
    // SAFETY: flock on a descriptor this function owns; released when `file` closes.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_error(
            "cannot lock",
            &path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(file)
}

pub(super) fn rcgen_error(e: rcgen::Error) -> FlameError {
    FlameError::Internal(format!("certificate: {e}"))
}
