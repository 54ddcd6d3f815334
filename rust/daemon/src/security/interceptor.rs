//! The auth interceptor on every Frontend and Backend call (README "Security"): a valid
//! bearer token puts its [`Principal`] into the request's extensions, and so does a client
//! certificate of a node (verified against the cluster CA by the TLS layer, named by its
//! `flame-node:` SAN) when no token is sent; an invalid token (wrong,
//! expired, revoked, malformed) is refused right here with UNAUTHENTICATED saying which; a
//! call without credentials passes with no principal, and each service method refuses it
//! (`security::principal`) — except `Discover` and `JoinNode`, which need none.
//!
//! Cost: one metadata lookup, the token's parse, one SHA-256 of its 64-byte secret and a
//! hash-map read under a read lock — well under a microsecond (see the bench test below), and
//! only once per call or stream, never per task. No cache: revocation and expiry take effect
//! on the next call with nothing to invalidate.

use std::sync::Arc;

use flame_core::auth::{Principal, AUTHORIZATION_HEADER, BEARER_PREFIX};
use flame_core::FlameError;
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use super::Security;

/// The principal of a call's credentials: `Ok(None)` without any.
///
/// # Errors
/// `UNAUTHENTICATED` for a header that is not `Bearer <token>` or a token the head refuses.
pub fn authenticate(
    security: &Security,
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
    let entry = security.tokens.check(text).map_err(Status::from)?;
    entry.principal().map(Some).ok_or_else(|| {
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
    move |mut req: Request<()>| {
        let principal = match authenticate(&security, req.metadata())? {
            Some(p) => Some(p),
            None => node_certificate(&req),
        };
        if let Some(p) = principal {
            req.extensions_mut().insert(p);
        }
        Ok(req)
    }
}

/// The node a verified client certificate names (mutual TLS), if the caller sent one.
/// (The check of revoked node certificates belongs here too; see the tokens' store.)
fn node_certificate(req: &Request<()>) -> Option<Principal> {
    let cert = flame_core::tls::peer_node(req)?;
    Some(Principal::Node { name: cert.name })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flame_core::auth::TokenKind;
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
        let start = std::time::Instant::now();
        for _ in 0..n {
            assert!(authenticate(&security, &md).unwrap().is_some());
        }
        let per = start.elapsed().as_nanos() / n;
        println!("auth check: {per} ns per call");
    }
}
