//! The tokens a head accepts, by id, with only their secrets' hashes, and the check of a
//! presented token: unknown or wrong, expired and revoked are told apart, because the person
//! holding the token needs to know which one to fix.

use std::collections::HashMap;
use std::sync::RwLock;

use flame_core::auth::{Principal, Token, TokenKind};
use flame_core::model::now_ms;
use flame_core::FlameError;

/// One token as the head keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    pub id: u64,
    pub kind: TokenKind,
    /// User name (user tokens) or node name (node tokens); empty for join tokens.
    pub name: String,
    pub admin: bool,
    pub secret_hash: String,
    pub created_ms: u64,
    /// 0 = never.
    pub expires_ms: u64,
    /// 0 = not revoked.
    pub revoked_ms: u64,
}

impl TokenEntry {
    /// Who this token's holder is (`None` for join tokens, which only join).
    pub fn principal(&self) -> Option<Principal> {
        match self.kind {
            TokenKind::User => Some(Principal::User {
                name: self.name.clone(),
                admin: self.admin,
            }),
            TokenKind::Node => Some(Principal::Node {
                name: self.name.clone(),
            }),
            TokenKind::Join => None,
        }
    }
}

/// The tokens of one head, in memory (the persisted copy is loaded into it at start).
#[derive(Default)]
pub struct TokenRegistry {
    entries: RwLock<HashMap<u64, TokenEntry>>,
}

impl TokenRegistry {
    /// Add (or replace) an entry.
    pub fn insert(&self, entry: TokenEntry) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.insert(entry.id, entry);
    }

    /// The entry `token` names, if its secret matches and it is usable now.
    ///
    /// # Errors
    /// `Unauthenticated` saying whether the token is malformed, unknown or wrong, expired,
    /// or revoked (with when).
    pub fn check(&self, text: &str) -> Result<TokenEntry, FlameError> {
        let token = Token::parse(text).map_err(|e| FlameError::Unauthenticated(e.to_string()))?;
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = entries
            .get(&token.id)
            .filter(|e| e.kind == token.kind && e.secret_hash == token.secret_hash())
            .ok_or_else(|| {
                FlameError::Unauthenticated(format!(
                    "the {} token {} is not valid here (unknown to this head, or its secret \
                     is wrong)",
                    token.kind.as_str(),
                    token.id
                ))
            })?;
        if entry.revoked_ms != 0 {
            return Err(FlameError::Unauthenticated(format!(
                "the {} token {} was revoked at {} ms since the epoch",
                token.kind.as_str(),
                token.id,
                entry.revoked_ms
            )));
        }
        if entry.expires_ms != 0 && now_ms() >= entry.expires_ms as i64 {
            return Err(FlameError::Unauthenticated(format!(
                "the {} token {} expired at {} ms since the epoch",
                token.kind.as_str(),
                token.id,
                entry.expires_ms
            )));
        }
        Ok(entry.clone())
    }

    /// Whether the token `id` with this secret hash is still usable (known, not revoked, not
    /// expired): the cheap re-check of a token accepted before (no parsing, no hashing).
    pub fn still_valid(&self, id: u64, secret_hash: &str) -> bool {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(&id).is_some_and(|e| {
            e.secret_hash == secret_hash
                && e.revoked_ms == 0
                && (e.expires_ms == 0 || now_ms() < e.expires_ms as i64)
        })
    }

    /// Mark a token revoked now; `None` if there is no such id.
    pub fn revoke(&self, id: u64) -> Option<TokenEntry> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get_mut(&id)?;
        if entry.revoked_ms == 0 {
            entry.revoked_ms = now_ms().max(1) as u64;
        }
        Some(entry.clone())
    }

    /// Every entry, by id.
    pub fn list(&self) -> Vec<TokenEntry> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = entries.values().cloned().collect();
        all.sort_by_key(|e| e.id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn entry(token: &Token, expires_ms: u64) -> TokenEntry {
        TokenEntry {
            id: token.id,
            kind: token.kind,
            name: "alice".into(),
            admin: false,
            secret_hash: token.secret_hash(),
            created_ms: now_ms() as u64,
            expires_ms,
            revoked_ms: 0,
        }
    }

    #[test]
    fn wrong_expired_and_revoked_tokens_are_told_apart() {
        let reg = TokenRegistry::default();
        let good = Token::generate(TokenKind::User, 1, FP);
        let old = Token::generate(TokenKind::User, 2, FP);
        reg.insert(entry(&good, 0));
        reg.insert(entry(&old, 1));
        assert_eq!(reg.check(&good.to_string()).unwrap().name, "alice");

        let forged = Token::generate(TokenKind::User, 1, FP).to_string();
        let msg = |r: Result<TokenEntry, FlameError>| r.unwrap_err().to_string();
        assert!(msg(reg.check(&forged)).contains("not valid"));
        assert!(msg(reg.check("nope")).contains("not a Flame token"));
        assert!(msg(reg.check(&old.to_string())).contains("expired"));
        reg.revoke(1).unwrap();
        assert!(msg(reg.check(&good.to_string())).contains("revoked"));
    }
}
