//! Who may do what on a head (#11): the tokens it accepts ([`tokens`]) and how a request's
//! authenticated identity travels from the auth interceptor to the services (a
//! [`Principal`] in the request's extensions). The design every part follows is README
//! "Security".

pub mod authz;
pub mod interceptor;
pub mod owners;
pub mod tokens;

use std::sync::atomic::{AtomicU64, Ordering};

use flame_core::auth::{Principal, Token, TokenKind};
use flame_core::model::now_ms;
use tonic::{Request, Status};

use tokens::{TokenEntry, TokenRegistry};

/// A head's security state, shared by its services.
pub struct Security {
    pub tokens: TokenRegistry,
    /// SHA-256 (hex) of the cluster CA certificate; every token this head issues names it.
    pub ca_fingerprint: String,
    /// An admin token for whoever started the head: the embedded cluster's own client, and
    /// `<state_dir>/admin.token` of `flame-daemon head` / `start`.
    pub admin_token: Token,
    /// Who owns each session and client (for the authorization checks).
    pub owners: owners::Owners,
    next_id: AtomicU64,
}

impl Security {
    /// A head's security with one admin token, named `admin`.
    pub fn new(ca_fingerprint: String) -> Security {
        let security = Security {
            tokens: TokenRegistry::default(),
            admin_token: Token::generate(TokenKind::User, 1, &ca_fingerprint),
            ca_fingerprint,
            owners: owners::Owners::default(),
            next_id: AtomicU64::new(2),
        };
        security.register(&security.admin_token, "admin", true, 0);
        security
    }

    /// A new token of `kind` for `name` (a user or node name), valid until `expires_ms`
    /// (0 = never).
    pub fn issue(&self, kind: TokenKind, name: &str, admin: bool, expires_ms: u64) -> Token {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = Token::generate(kind, id, &self.ca_fingerprint);
        self.register(&token, name, admin, expires_ms);
        token
    }

    /// Accept `token` (made elsewhere) as `name`'s, valid until `expires_ms` (0 = never).
    pub fn register(&self, token: &Token, name: &str, admin: bool, expires_ms: u64) {
        self.tokens.insert(TokenEntry {
            id: token.id,
            kind: token.kind,
            name: name.to_string(),
            admin,
            secret_hash: token.secret_hash(),
            created_ms: now_ms().max(0) as u64,
            expires_ms,
            revoked_ms: 0,
        });
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
