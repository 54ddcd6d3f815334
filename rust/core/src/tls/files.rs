//! Private key files: written 0600 (atomically), and refused when group or others may read
//! them — a key that may have leaked is not used, since tightening the mode later cannot
//! un-leak it. Also saving and loading an [`Identity`] (the head's `head.pem`/`head.key`, a
//! node's `node.pem`/`node.key`).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::Identity;
use crate::error::FlameError;

/// Writes `text` to `path` readable by its owner only: created 0600 under a temporary name,
/// synced, then renamed into place so that no reader ever sees half a key.
pub fn write_private_file(path: &Path, text: &str) -> Result<(), FlameError> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_error("cannot create", &tmp, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("cannot write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io_error("cannot rename into place", path, e))
}

/// Reads a private key file, refusing it if group or others may read it; `what` names the
/// key in the error ("the CA key", "the node key").
pub fn read_private_file(path: &Path, what: &str) -> Result<String, FlameError> {
    let mode = fs::metadata(path)
        .map_err(|e| io_error("cannot read", path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(FlameError::FailedPrecondition(format!(
            "{what} {} has mode {:o}: group or others may read it; the key may have leaked, \
             so it is not used. Replace it, or if you are sure nobody read it, `chmod 600` it",
            path.display(),
            mode & 0o777
        )));
    }
    fs::read_to_string(path).map_err(|e| io_error("cannot read", path, e))
}

impl Identity {
    /// Writes the certificate chain and the key, both 0600 (the key first, so that a crash
    /// in between leaves no certificate without its key).
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), FlameError> {
        write_private_file(key_path, &self.key_pem)?;
        write_private_file(cert_path, &self.cert_pem)
    }

    /// Reads an identity written by [`Identity::save`]; refuses a key file that group or
    /// others may read, unreadable PEM, and a certificate that does not belong to the key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Identity, FlameError> {
        let key_pem = read_private_file(key_path, "the private key")?;
        let cert_pem =
            fs::read_to_string(cert_path).map_err(|e| io_error("cannot read", cert_path, e))?;
        let identity = Identity { cert_pem, key_pem };
        let key = rcgen::KeyPair::from_pem(&identity.key_pem).map_err(|e| {
            FlameError::FailedPrecondition(format!(
                "{} is not a PEM private key: {e}",
                key_path.display()
            ))
        })?;
        let what = format!("the certificate {}", cert_path.display());
        let leaf = super::certs_from_pem(&identity.cert_pem, &what)?.remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
            .map_err(|e| FlameError::FailedPrecondition(format!("{what} cannot be read: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(FlameError::FailedPrecondition(format!(
                "{what} does not belong to the key {}",
                key_path.display()
            )));
        }
        Ok(identity)
    }

    /// End of validity of the leaf certificate, milliseconds since the Unix epoch (to renew
    /// a head or node certificate before it expires).
    pub fn not_after_ms(&self) -> Result<u64, FlameError> {
        let leaf = self.cert_chain()?.remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
            .map_err(|e| FlameError::InvalidArgument(format!("the identity's certificate: {e}")))?;
        Ok(cert.validity().not_after.timestamp().max(0) as u64 * 1000)
    }
}

pub(crate) fn io_error(what: &str, path: &Path, e: std::io::Error) -> FlameError {
    FlameError::FailedPrecondition(format!("{what} {}: {e}", path.display()))
}
