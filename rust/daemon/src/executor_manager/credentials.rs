//! The node's credentials, handed to the executors it starts through their environment (the
//! contract of `flame_core::client::Credentials::from_env`): `FLAME_TOKEN` for a node token,
//! `FLAME_CERT_FILE` + `FLAME_KEY_FILE` for its certificate, `FLAME_CA_FILE` for the CA of a
//! TLS head (given, or pinned once by the node so that no executor pins it again).
//!
//! PEM texts go into files of a private directory (0700, files 0600) that lives as long as
//! the node: executors run as the node's OS user and read them; nobody else can.

use std::path::{Path, PathBuf};

use flame_core::client::TOKEN_ENV;
use flame_core::client::{Credentials, Transport, CA_FILE_ENV, CERT_FILE_ENV, KEY_FILE_ENV};
use flame_core::error::{FlameError, Result};
use flame_core::tls::write_private_file;

/// The executors' credential files and variables; the files go when this is dropped.
pub(super) struct ExecutorCredentials {
    env: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl ExecutorCredentials {
    /// Writes what the executors need of `creds` (and the CA `transport` trusts).
    ///
    /// # Errors
    /// `FailedPrecondition` when the private directory or a file cannot be written.
    pub(super) fn write(creds: &Credentials, transport: &Transport) -> Result<Self> {
        let mut env = Vec::new();
        if let Some(token) = &creds.token {
            env.push((TOKEN_ENV.to_string(), token.clone()));
        }
        let ca_pem = transport.ca_pem();
        if ca_pem.is_none() && creds.identity.is_none() {
            return Ok(ExecutorCredentials { env, _dir: None });
        }
        // tempfile makes the directory 0700.
        let dir = tempfile::Builder::new()
            .prefix("flame-node-credentials-")
            .tempdir()
            .map_err(|e| {
                FlameError::FailedPrecondition(format!(
                    "cannot make a private directory for the executors' credentials: {e}"
                ))
            })?;
        let file = |name: &str, text: &str| -> Result<PathBuf> {
            let path = dir.path().join(name);
            write_private_file(&path, text)?;
            Ok(path)
        };
        if let Some(ca) = ca_pem {
            env.push((CA_FILE_ENV.to_string(), shown(&file("ca.pem", ca)?)));
        }
        if let Some(id) = &creds.identity {
            env.push((
                CERT_FILE_ENV.to_string(),
                shown(&file("node.pem", &id.cert_pem)?),
            ));
            env.push((
                KEY_FILE_ENV.to_string(),
                shown(&file("node.key", &id.key_pem)?),
            ));
        }
        Ok(ExecutorCredentials {
            env,
            _dir: Some(dir),
        })
    }

    /// The variables to add to every executor's environment.
    pub(super) fn env(&self) -> Vec<(String, String)> {
        self.env.clone()
    }
}

fn shown(path: &Path) -> String {
    path.display().to_string()
}
