//! Who may do what on a head (#11): the tokens it accepts ([`tokens`], persisted in
//! [`store`]), the cluster CA and the head's TLS identity, the revoked node certificates,
//! and how a request's authenticated identity travels from the auth interceptor to the
//! services (a [`Principal`] in the request's extensions). README "Security".
//!
//! [`Security`] is the one handle: [`Security::open`] loads everything from the state dir
//! at head start; issuing and revoking write through to `auth.db`.

pub mod authz;
pub mod interceptor;
pub mod owners;
pub mod store;
pub mod tls_mode;
pub mod tokens;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use flame_core::auth::{Principal, Token, TokenKind};
use flame_core::model::now_ms;
use flame_core::tls::{ClusterCa, Identity, SignedNode};
use flame_core::FlameError;
use tonic::{Request, Status};

use store::{AuthStore, NewToken};
use tokens::{TokenEntry, TokenRegistry};

/// The admin token's file in the state dir (0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The CA's dir in the state dir (`ca.pem`, `ca.key`, `head.pem`, `head.key`).
pub const TLS_DIR: &str = "tls";

/// A head's security state, shared by its services.
pub struct Security {
    pub tokens: TokenRegistry,
    /// SHA-256 (hex) of the cluster CA certificate; every token this head issues names it.
    pub ca_fingerprint: String,
    /// An admin token for whoever started the head: the embedded cluster's own client, and
    /// `<state_dir>/admin.token` of `flame-daemon head` / `start`.
    pub admin_token: Token,
    /// The cluster CA (`None` only for [`Security::new`], an in-memory head for tests).
    pub ca: Option<ClusterCa>,
    /// The head's server identity (chain `[leaf, CA]`), when it serves TLS.
    pub identity: Option<Identity>,
    /// Whether the head serves TLS (Discover tells clients).
    pub tls: bool,
    /// The head's state dir (Discover tells loopback peers, who find `admin.token` there).
    pub state_dir: Option<PathBuf>,
    store: Option<AuthStore>,
    /// Fingerprints of revoked node certificates ([`Security::cert_revoked`]).
    revoked_certs: RwLock<HashSet<String>>,
    /// Who owns each session and client (for the authorization checks).
    pub owners: owners::Owners,
    /// Token ids of an in-memory head (a persisted one takes them from `auth.db`).
    next_id: AtomicU64,
}

impl Security {
    /// An in-memory head's security with one admin token, named `admin`: nothing is
    /// persisted and there is no CA (for tests of the parts that only check tokens).
    pub fn new(ca_fingerprint: String) -> Security {
        let security = Security {
            tokens: TokenRegistry::default(),
            admin_token: Token::generate(TokenKind::User, 1, &ca_fingerprint),
            ca_fingerprint,
            ca: None,
            identity: None,
            tls: false,
            state_dir: None,
            store: None,
            revoked_certs: RwLock::default(),
            owners: owners::Owners::default(),
            next_id: AtomicU64::new(2),
        };
        security.tokens.insert(entry_of(
            &security.admin_token,
            "admin",
            true,
            0,
            now_ms().max(0) as u64,
        ));
        security
    }

    /// The security of a head whose state is in `state_dir`: the cluster CA in
    /// `<state_dir>/tls` (made on first start), the tokens and revocations of `auth.db`,
    /// and the admin token of `<state_dir>/admin.token` (kept across restarts; a new one if
    /// the file is missing or no longer valid). With `tls_names`, the head serves TLS with
    /// a certificate for those names (kept in `tls/head.pem` while it fits).
    ///
    /// Blocking (files, SQLite, key generation): call it at start, not on a busy runtime.
    ///
    /// # Errors
    /// Whatever the CA, the certificate or the store report, naming the file.
    pub fn open(state_dir: &Path, tls_names: Option<&[String]>) -> Result<Security, FlameError> {
        let tls_dir = state_dir.join(TLS_DIR);
        let ca = ClusterCa::load_or_create(&tls_dir)?;
        let identity = match tls_names {
            Some(names) => Some(ca.head_identity(&tls_dir, names)?),
            None => None,
        };
        let store = AuthStore::open(state_dir)?;
        let tokens = TokenRegistry::default();
        for entry in store.tokens()? {
            tokens.insert(entry);
        }
        let revoked: HashSet<String> = store.revoked_certs()?.into_iter().collect();
        let ca_fingerprint = ca.fingerprint();
        let admin_path = state_dir.join(ADMIN_TOKEN_FILE);
        let kept = kept_admin_token(&tokens, &admin_path, &ca_fingerprint);
        let mut security = Security {
            tokens,
            // Replaced below unless the kept one is still good.
            admin_token: kept
                .clone()
                .unwrap_or_else(|| Token::generate(TokenKind::User, 0, &ca_fingerprint)),
            ca_fingerprint,
            ca: Some(ca),
            identity,
            tls: tls_names.is_some(),
            state_dir: Some(state_dir.to_path_buf()),
            store: Some(store),
            revoked_certs: RwLock::new(revoked),
            owners: owners::Owners::default(),
            next_id: AtomicU64::new(1),
        };
        if kept.is_none() {
            security.admin_token = security.issue_stored(TokenKind::User, "admin", true, 0)?;
            flame_core::tls::write_private_file(&admin_path, &security.admin_token.to_string())?;
        }
        Ok(security)
    }

    /// The cluster CA certificate (PEM), if this head has a CA.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(ClusterCa::cert_pem)
    }

    /// A new token of `kind` for `name` that lasts as long as this head process (never
    /// stored in `auth.db`): the in-process node's of `flame-daemon start` and the embedded
    /// cluster, whose holder dies with the head, so a stored copy would only outlive it as a
    /// credential nobody holds. Valid until `expires_ms` (0 = never).
    pub fn issue(&self, kind: TokenKind, name: &str, admin: bool, expires_ms: u64) -> Token {
        // Far above the ids auth.db hands out (and the 1 << 40 of the tests' token).
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + (1 << 48);
        let token = Token::generate(kind, id, &self.ca_fingerprint);
        self.register(&token, name, admin, expires_ms);
        token
    }

    /// A new token stored in `auth.db` (in memory only for [`Security::new`]): what the
    /// token commands and the join token printed at start make.
    ///
    /// # Errors
    /// `Storage` naming `auth.db`.
    pub fn issue_stored(
        &self,
        kind: TokenKind,
        name: &str,
        admin: bool,
        expires_ms: u64,
    ) -> Result<Token, FlameError> {
        let created_ms = now_ms().max(0) as u64;
        let Some(store) = &self.store else {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let token = Token::generate(kind, id, &self.ca_fingerprint);
            self.tokens
                .insert(entry_of(&token, name, admin, expires_ms, created_ms));
            return Ok(token);
        };
        let mut token = None;
        let new = NewToken {
            kind,
            name,
            admin,
            created_ms,
            expires_ms,
        };
        let entry = store.insert_token(&new, |id| {
            let t = Token::generate(kind, id, &self.ca_fingerprint);
            let hash = t.secret_hash();
            token = Some(t);
            hash
        })?;
        self.tokens.insert(entry);
        token.ok_or_else(|| FlameError::Internal("the store made no token".into()))
    }

    /// Accept `token`, made elsewhere (a test's fixed token, the embedded cluster's random
    /// one), as `name`'s until `expires_ms` (0 = never). In memory only: it is not stored
    /// in `auth.db` and ends with the head.
    pub fn register(&self, token: &Token, name: &str, admin: bool, expires_ms: u64) {
        let now = now_ms().max(0) as u64;
        self.tokens
            .insert(entry_of(token, name, admin, expires_ms, now));
    }

    /// Revoke token `id` (in memory at once, then in `auth.db`).
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `Storage` if the revocation cannot be stored (it
    /// still holds until the head stops).
    pub fn revoke_token(&self, id: u64) -> Result<TokenEntry, FlameError> {
        let entry = self
            .tokens
            .revoke(id)
            .ok_or_else(|| FlameError::NotFound(format!("no token with id {id}")))?;
        if let Some(store) = &self.store {
            store.revoke_token(id, entry.revoked_ms)?;
        }
        Ok(entry)
    }

    /// Remember a node certificate the CA just signed (so that it can be revoked).
    ///
    /// # Errors
    /// `Storage` naming `auth.db`.
    pub fn record_node_cert(&self, node_name: &str, cert: &SignedNode) -> Result<(), FlameError> {
        match &self.store {
            Some(store) => {
                store.insert_cert(node_name, cert.serial, &cert.fingerprint, cert.not_after_ms)
            }
            None => Ok(()),
        }
    }

    /// Revoke every certificate and node token of node `node_name`; returns how many were
    /// revoked now. Dropping the node's connections is the caller's part (the actor's
    /// `Event::DropNode`).
    ///
    /// # Errors
    /// `Storage` naming `auth.db` (what was revoked in memory stays revoked).
    pub fn revoke_node(&self, node_name: &str) -> Result<u32, FlameError> {
        let at = now_ms().max(1) as u64;
        let (ids, fps) = match &self.store {
            Some(store) => {
                let r = store.revoke_node(node_name, at)?;
                (r.token_ids, r.cert_fingerprints)
            }
            None => {
                let ids = self.tokens.list().into_iter();
                let ids = ids.filter(|e| {
                    e.kind == TokenKind::Node && e.name == node_name && e.revoked_ms == 0
                });
                (ids.map(|e| e.id).collect(), Vec::new())
            }
        };
        for id in &ids {
            self.tokens.revoke(*id);
        }
        let mut revoked = self
            .revoked_certs
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let n = ids.len() + fps.len();
        revoked.extend(fps);
        Ok(n as u32)
    }

    /// The fingerprints of every revoked node certificate (what nodes refuse, #12).
    pub fn revoked_cert_fingerprints(&self) -> Vec<String> {
        let revoked = self.revoked_certs.read().unwrap_or_else(|e| e.into_inner());
        revoked.iter().cloned().collect()
    }

    /// Whether the node certificate with this fingerprint (SHA-256 of its DER, lowercase
    /// hex, as `flame_core::tls::NodeCert::fingerprint`) was revoked. The auth interceptor
    /// refuses such a certificate; a set lookup, so cheap enough for every connection.
    pub fn cert_revoked(&self, fingerprint: &str) -> bool {
        let revoked = self.revoked_certs.read().unwrap_or_else(|e| e.into_inner());
        revoked.contains(fingerprint)
    }
}

/// The token in `path` if it is still a valid admin token of this CA.
fn kept_admin_token(tokens: &TokenRegistry, path: &Path, ca_fingerprint: &str) -> Option<Token> {
    let text = flame_core::tls::read_private_file(path, "the admin token").ok()?;
    let token = Token::parse(&text).ok()?;
    let entry = tokens.check(&text).ok()?;
    let good =
        entry.kind == TokenKind::User && entry.admin && token.ca_fingerprint == ca_fingerprint;
    good.then_some(token)
}

fn entry_of(
    token: &Token,
    name: &str,
    admin: bool,
    expires_ms: u64,
    created_ms: u64,
) -> TokenEntry {
    TokenEntry {
        id: token.id,
        kind: token.kind,
        name: name.to_string(),
        admin,
        secret_hash: token.secret_hash(),
        created_ms,
        expires_ms,
        revoked_ms: 0,
    }
}

/// The caller the auth interceptor authenticated, or UNAUTHENTICATED if none was (a call
/// that reached a service without going through the interceptor is refused, not trusted).
///
/// # Errors
/// `UNAUTHENTICATED` when the request carries no principal.
pub fn principal<T>(req: &Request<T>) -> Result<&Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("no credentials were checked for this call"))
}

#[cfg(test)]
mod tests;
