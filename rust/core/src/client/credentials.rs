//! What a client, node or executor shows the head (#11): a bearer token, the cluster CA it
//! trusts for `https://` heads, and a TLS client certificate (nodes and their executors).
//!
//! [`Credentials::from_env`] reads the variables a node hands to the executors it starts
//! (`FLAME_TOKEN`, `FLAME_CA_FILE`, `FLAME_CERT_FILE` + `FLAME_KEY_FILE`); a bad value is an
//! error naming the variable and the file, never silently ignored, since a client that
//! quietly dropped its credentials would only fail later with a vaguer UNAUTHENTICATED.

use std::path::Path;

use crate::auth::Token;
use crate::error::{FlameError, Result};
use crate::tls::Identity;

/// Environment variable holding a bearer token (a user's, or a node token in executors).
pub const TOKEN_ENV: &str = "FLAME_TOKEN";
/// Environment variable naming the cluster CA certificate file (PEM).
pub const CA_FILE_ENV: &str = "FLAME_CA_FILE";
/// Environment variable naming a TLS client certificate file (PEM; a node's).
pub const CERT_FILE_ENV: &str = "FLAME_CERT_FILE";
/// Environment variable naming the private key of [`CERT_FILE_ENV`] (PEM, mode 0600).
pub const KEY_FILE_ENV: &str = "FLAME_KEY_FILE";

/// A caller's credentials; all optional (a loopback head without auth needs none).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Sent as `authorization: Bearer <token>` on every call and stream.
    pub token: Option<String>,
    /// The cluster CA certificate (PEM) an `https://` head must chain to. Without it, a
    /// token's CA fingerprint pins the CA on first contact.
    pub ca_pem: Option<String>,
    /// A TLS client certificate and key (nodes and their executors: mutual TLS).
    pub identity: Option<Identity>,
}

impl Credentials {
    /// No credentials at all.
    pub fn none() -> Credentials {
        Credentials::default()
    }

    /// Only a bearer token.
    pub fn with_token(token: impl Into<String>) -> Credentials {
        Credentials {
            token: Some(token.into()),
            ..Credentials::default()
        }
    }

    /// Whether nothing at all is set.
    pub fn is_empty(&self) -> bool {
        self.token.is_none() && self.ca_pem.is_none() && self.identity.is_none()
    }

    /// The token, parsed (its CA fingerprint pins the head's CA).
    ///
    /// # Errors
    /// `InvalidArgument` naming what is wrong with the token's text.
    pub fn parsed_token(&self) -> Result<Option<Token>> {
        self.token
            .as_deref()
            .map(|t| Token::parse(t).map_err(|e| FlameError::InvalidArgument(e.to_string())))
            .transpose()
    }

    /// Credentials from `FLAME_TOKEN`, `FLAME_CA_FILE`, `FLAME_CERT_FILE` + `FLAME_KEY_FILE`
    /// (unset or empty variables are absent).
    ///
    /// # Errors
    /// `InvalidArgument` naming the variable (and the file) for a token that is not a Flame
    /// token, a file that cannot be read or holds no PEM certificate, a certificate without
    /// its key (or the reverse), or a key file others may read.
    pub fn from_env() -> Result<Credentials> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Credentials::from_env`] with the variables read through `var` (tests).
    ///
    /// # Errors
    /// As [`Credentials::from_env`].
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Credentials> {
        let var = |name: &str| {
            var(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let token = match var(TOKEN_ENV) {
            Some(t) => {
                Token::parse(&t)
                    .map_err(|e| FlameError::InvalidArgument(format!("{TOKEN_ENV}: {e}")))?;
                Some(t)
            }
            None => None,
        };
        let ca_pem = match var(CA_FILE_ENV) {
            Some(path) => Some(read_ca_file(Path::new(&path), CA_FILE_ENV)?),
            None => None,
        };
        let identity = match (var(CERT_FILE_ENV), var(KEY_FILE_ENV)) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(
                Identity::load(Path::new(&cert), Path::new(&key)).map_err(|e| {
                    FlameError::InvalidArgument(format!(
                        "{CERT_FILE_ENV}={cert} / {KEY_FILE_ENV}={key}: {}",
                        plain(e)
                    ))
                })?,
            ),
            (Some(cert), None) => {
                return Err(FlameError::InvalidArgument(format!(
                    "{CERT_FILE_ENV}={cert} is set but {KEY_FILE_ENV} is not: a client \
                     certificate needs its private key"
                )))
            }
            (None, Some(key)) => {
                return Err(FlameError::InvalidArgument(format!(
                    "{KEY_FILE_ENV}={key} is set but {CERT_FILE_ENV} is not: a private key \
                     needs its certificate"
                )))
            }
        };
        Ok(Credentials {
            token,
            ca_pem,
            identity,
        })
    }
}

/// Reads a CA certificate file; `what` (a variable or option name) starts the error.
///
/// # Errors
/// `InvalidArgument` naming `what` and the path when the file cannot be read or holds no
/// PEM certificate.
pub fn read_ca_file(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        FlameError::InvalidArgument(format!("{what}={}: cannot read it: {e}", path.display()))
    })?;
    let label = format!("{what}={}", path.display());
    crate::tls::certs_from_pem(&text, &label).map_err(|e| FlameError::InvalidArgument(plain(e)))?;
    Ok(text)
}

/// An error's message without its category prefix (it gets one again when re-wrapped).
fn plain(e: FlameError) -> String {
    match e {
        FlameError::InvalidArgument(m) | FlameError::FailedPrecondition(m) => m,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::auth::TokenKind;
    use crate::tls::{ClusterCa, NodeKey};

    fn lookup(vars: &[(&str, String)]) -> Result<Credentials> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Credentials::from_lookup(|name| vars.get(name).cloned())
    }

    fn message(r: Result<Credentials>) -> String {
        match r {
            Err(FlameError::InvalidArgument(m)) => m,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn nothing_set_is_no_credentials_and_a_good_set_is_read() {
        assert_eq!(lookup(&[]).unwrap(), Credentials::none());
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let key = NodeKey::generate();
        let signed = ca.sign_node(&key.csr_pem("n1"), "n1").unwrap();
        let identity = key.identity(&signed.cert_pem);
        let (cert, keyf) = (dir.path().join("node.pem"), dir.path().join("node.key"));
        identity.save(&cert, &keyf).unwrap();
        let token = Token::generate(TokenKind::Node, 3, &ca.fingerprint()).to_string();
        let creds = lookup(&[
            (TOKEN_ENV, format!(" {token}\n")),
            (CA_FILE_ENV, dir.path().join("ca.pem").display().to_string()),
            (CERT_FILE_ENV, cert.display().to_string()),
            (KEY_FILE_ENV, keyf.display().to_string()),
        ])
        .unwrap();
        assert_eq!(creds.token.as_deref(), Some(token.as_str()));
        assert_eq!(creds.ca_pem.as_deref(), Some(ca.cert_pem()));
        assert_eq!(creds.identity, Some(identity));
    }

    #[test]
    fn bad_values_name_the_variable_and_the_file() {
        let m = message(lookup(&[(TOKEN_ENV, "hunter2".into())]));
        assert!(
            m.contains("FLAME_TOKEN") && m.contains("not a Flame token"),
            "{m}"
        );

        let m = message(lookup(&[(CA_FILE_ENV, "/nonexistent/ca.pem".into())]));
        assert!(
            m.contains("FLAME_CA_FILE=/nonexistent/ca.pem") && m.contains("cannot read"),
            "{m}"
        );

        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let m = message(lookup(&[(CA_FILE_ENV, junk.display().to_string())]));
        assert!(
            m.contains("FLAME_CA_FILE=") && m.contains("junk.pem"),
            "{m}"
        );
        assert!(m.contains("no certificate"), "{m}");

        let m = message(lookup(&[(CERT_FILE_ENV, "/x/node.pem".into())]));
        assert!(m.contains("FLAME_KEY_FILE is not"), "{m}");
        let m = message(lookup(&[(KEY_FILE_ENV, "/x/node.key".into())]));
        assert!(m.contains("FLAME_CERT_FILE is not"), "{m}");

        // A key others may read is refused, naming the file and the fix.
        let ca = ClusterCa::load_or_create(dir.path()).unwrap();
        let key = NodeKey::generate();
        let signed = ca.sign_node(&key.csr_pem("n1"), "n1").unwrap();
        let (cert, keyf) = (dir.path().join("node.pem"), dir.path().join("node.key"));
        key.identity(&signed.cert_pem).save(&cert, &keyf).unwrap();
        std::fs::set_permissions(&keyf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let m = message(lookup(&[
            (CERT_FILE_ENV, cert.display().to_string()),
            (KEY_FILE_ENV, keyf.display().to_string()),
        ]));
        assert!(
            m.contains("FLAME_KEY_FILE=") && m.contains("node.key"),
            "{m}"
        );
        assert!(m.contains("chmod 600"), "{m}");
    }
}
