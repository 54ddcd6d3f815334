//! The auth interceptor on every Frontend and Backend call (README "Security"): a valid
//! bearer token puts its [`Principal`] into the request's extensions, and so does a client
//! certificate of a node (verified against the cluster CA by the TLS layer, named by its
//! `flame-node:` SAN) when no token is sent; an invalid token (wrong,
//! expired, revoked, malformed) is refused right here with UNAUTHENTICATED saying which; a
//! call without credentials passes with no principal, and each service method refuses it
//! (`security::principal`) — except `Discover` and `JoinNode`, which need none.
//!
//! Cost: once per call or stream, never per task. A token seen before is found in a cache
//! by its text and re-checked against the registry (known, same secret hash, not revoked, not
//! expired: one map lookup under a read lock), so revocation and expiry still take effect on
//! the next call; a new token is parsed and its secret hashed (SHA-256) once. See the
//! `cost_of_one_check` test for the figures.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use flame_core::auth::{Principal, AUTHORIZATION_HEADER, BEARER_PREFIX};
use flame_core::FlameError;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use super::Security;

/// Tokens accepted before, by text: their id, secret hash and principal.
#[derive(Default)]
pub struct Accepted {
    map: RwLock<HashMap<String, (u64, String, Principal)>>,
}

/// Most token texts remembered (the cache starts over beyond it).
const ACCEPTED_MAX: usize = 10_000;

/// The principal of a call's credentials: `Ok(None)` without any.
///
/// # Errors
/// `UNAUTHENTICATED` for a header that is not `Bearer <token>` or a token the head refuses.
pub fn authenticate(
    security: &Security,
    accepted: &Accepted,
    metadata: &MetadataMap,
) -> Result<Option<Principal>, Status> {
    let Some(value) = metadata.get(AUTHORIZATION_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix(BEARER_PREFIX))
        .ok_or_else(|| {
            Status::unauthenticated(format!(
                "the {AUTHORIZATION_HEADER} header must read '{BEARER_PREFIX}<token>'"
            ))
        })?;
    check_token(security, accepted, text).map(Some)
}

/// The principal of the token `text` (a bearer token, or one a node's object server asks
/// about, `AuthorizeObjects`), through the `accepted` cache.
///
/// # Errors
/// `UNAUTHENTICATED` saying why the head refuses the token (wrong, expired, revoked,
/// malformed, or a join token).
pub fn check_token(
    security: &Security,
    accepted: &Accepted,
    text: &str,
) -> Result<Principal, Status> {
    {
        let map = accepted.map.read().unwrap_or_else(|e| e.into_inner());
        if let Some((id, hash, p)) = map.get(text) {
            if security.tokens.still_valid(*id, hash) {
                return Ok(p.clone());
            }
        }
    }
    let entry = security.tokens.check(text).map_err(Status::from)?;
    if let Some(p) = entry.principal() {
        let mut map = accepted.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= ACCEPTED_MAX {
            map.clear();
        }
        map.insert(text.to_string(), (entry.id, entry.secret_hash.clone(), p));
    }
    entry.principal().ok_or_else(|| {
        FlameError::Unauthenticated(format!(
            "the {} token {} only joins a node (flame-daemon node --join-token); it is not \
             a credential for calls",
            entry.kind.as_str(),
            entry.id
        ))
        .into()
    })
}

/// The interceptor for the services of a head with `security`.
pub fn interceptor(
    security: Arc<Security>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    let accepted = Arc::new(Accepted::default());
    move |mut req: Request<()>| {
        let principal = match authenticate(&security, &accepted, req.metadata())? {
            Some(p) => Some(p),
            None => node_certificate(&security, &req)?,
        };
        if let Some(p) = principal {
            req.extensions_mut().insert(p);
        }
        Ok(req)
    }
}

/// The node a verified client certificate names (mutual TLS), if the caller sent one;
/// UNAUTHENTICATED for a certificate that was revoked (`RevokeNode`).
fn node_certificate(security: &Security, req: &Request<()>) -> Result<Option<Principal>, Status> {
    let Some(cert) = flame_core::tls::peer_node(req) else {
        return Ok(None);
    };
    if security.cert_revoked(&cert.fingerprint) {
        return Err(Status::unauthenticated(format!(
            "the certificate of node {} (fingerprint {}) was revoked; join the node again \
             with a new join token (flame-daemon token create --node)",
            cert.name, cert.fingerprint
        )));
    }
    Ok(Some(Principal::Node { name: cert.name }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flame_core::auth::TokenKind;
    use flame_core::model::now_ms;
    use tonic::Code;

    fn call(security: &Arc<Security>, bearer: Option<&str>) -> Result<Request<()>, Status> {
        let mut req = Request::new(());
        if let Some(b) = bearer {
            req.metadata_mut()
                .insert(AUTHORIZATION_HEADER, b.parse().unwrap());
        }
        interceptor(security.clone())(req)
    }

    #[test]
    fn a_valid_token_becomes_a_principal_and_others_are_refused() {
        let security = Arc::new(Security::new("ab".repeat(32)));
        let alice = security.issue(TokenKind::User, "alice", false, 0);
        let req = call(&security, Some(&alice.bearer())).unwrap();
        assert_eq!(
            req.extensions().get::<Principal>(),
            Some(&Principal::User {
                name: "alice".into(),
                admin: false
            })
        );
        assert!(call(&security, None)
            .unwrap()
            .extensions()
            .get::<Principal>()
            .is_none());
        let refused = |b: &str| {
            let s = call(&security, Some(b)).unwrap_err();
            assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
            s.message().to_string()
        };
        assert!(refused("Basic x").contains("Bearer"));
        assert!(refused("Bearer nope").contains("not a Flame token"));
        let join = security.issue(TokenKind::Join, "", false, 0);
        assert!(refused(&join.bearer()).contains("only joins a node"));
        security.tokens.revoke(alice.id);
        assert!(refused(&alice.bearer()).contains("revoked"));
    }

    #[test]
    fn a_cached_token_is_refused_once_revoked_or_expired() {
        let security = Arc::new(Security::new("ab".repeat(32)));
        let accepted = Accepted::default();
        let alice = security.issue(TokenKind::User, "alice", false, 0);
        let soon = security.issue(TokenKind::User, "bob", false, (now_ms() + 300) as u64);
        let md = |t: &flame_core::auth::Token| {
            let mut md = MetadataMap::new();
            md.insert(AUTHORIZATION_HEADER, t.bearer().parse().unwrap());
            md
        };
        assert!(authenticate(&security, &accepted, &md(&alice))
            .unwrap()
            .is_some());
        assert!(authenticate(&security, &accepted, &md(&soon))
            .unwrap()
            .is_some());
        security.tokens.revoke(alice.id);
        let s = authenticate(&security, &accepted, &md(&alice)).unwrap_err();
        assert!(s.message().contains("revoked"), "{s:?}");
        std::thread::sleep(std::time::Duration::from_millis(400));
        let s = authenticate(&security, &accepted, &md(&soon)).unwrap_err();
        assert!(s.message().contains("expired"), "{s:?}");
    }

    /// Not a pass/fail check: prints what one check costs (`--nocapture`), for the report.
    #[test]
    fn cost_of_one_check() {
        let security = Arc::new(Security::new("ab".repeat(32)));
        for i in 0..1000 {
            security.issue(TokenKind::User, &format!("u{i}"), false, 0);
        }
        let alice = security.issue(TokenKind::User, "alice", false, 0);
        let mut md = MetadataMap::new();
        md.insert(AUTHORIZATION_HEADER, alice.bearer().parse().unwrap());
        let n = 20_000;
        let cold = std::time::Instant::now();
        for _ in 0..n {
            let fresh = Accepted::default();
            assert!(authenticate(&security, &fresh, &md).unwrap().is_some());
        }
        let cold = cold.elapsed().as_nanos() / n;
        let accepted = Accepted::default();
        let warm = std::time::Instant::now();
        for _ in 0..n {
            assert!(authenticate(&security, &accepted, &md).unwrap().is_some());
        }
        let warm = warm.elapsed().as_nanos() / n;
        println!("auth check: {cold} ns per call uncached, {warm} ns cached");
    }
}
