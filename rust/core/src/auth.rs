//! Who is calling: the text of Flame's tokens, the identity a daemon derives from a
//! credential ([`Principal`]), and the metadata that carries a token.
//!
//! A token reads `flame_<kind>_<id>_<secret>_<cafp>`: the kind (`user`, `join`, `node`), the
//! id the daemon files it under, 32 random bytes of secret (hex), and the SHA-256 of the
//! cluster CA certificate (hex). The daemon keeps only the secret's hash; the fingerprint lets
//! whoever holds a token pin the head's CA on first contact (no certificate to copy around).

use std::fmt;

use sha2::{Digest, Sha256};

/// The gRPC metadata key of a bearer token (`authorization: Bearer <token>`).
pub const AUTHORIZATION_HEADER: &str = "authorization";
/// Text before the token in [`AUTHORIZATION_HEADER`].
pub const BEARER_PREFIX: &str = "Bearer ";

const SECRET_BYTES: usize = 32;
const HEX_SHA256: usize = 64;

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A person or a program acting for one: the Frontend.
    User,
    /// Joins one node (once per use, until it expires): exchanged for a node certificate.
    Join,
    /// A node's own credential toward a plaintext (loopback) head, instead of a certificate.
    Node,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::User => "user",
            TokenKind::Join => "join",
            TokenKind::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(TokenKind::User),
            "join" => Some(TokenKind::Join),
            "node" => Some(TokenKind::Node),
            _ => None,
        }
    }
}

/// A token's parts.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: TokenKind,
    pub id: u64,
    secret: String,
    /// SHA-256 of the cluster CA certificate's DER, lowercase hex.
    pub ca_fingerprint: String,
}

/// Why a text is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Flame token ({0}); a token looks like flame_user_<id>_<64 hex>_<64 hex>")]
pub struct TokenFormatError(&'static str);

impl Token {
    /// A new token with a fresh random secret.
    ///
    /// # Panics
    /// If the operating system has no randomness to give (nothing could be secure then).
    pub fn generate(kind: TokenKind, id: u64, ca_fingerprint: &str) -> Token {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret).expect("the OS random source failed");
        Token {
            kind,
            id,
            secret: hex(&secret),
            ca_fingerprint: ca_fingerprint.to_ascii_lowercase(),
        }
    }

    /// Parse a token's text (surrounding whitespace is ignored).
    ///
    /// # Errors
    /// [`TokenFormatError`] naming the part that is wrong.
    pub fn parse(text: &str) -> Result<Token, TokenFormatError> {
        let mut parts = text.trim().split('_');
        if parts.next() != Some("flame") {
            return Err(TokenFormatError("it does not start with flame_"));
        }
        let kind = parts
            .next()
            .and_then(TokenKind::parse)
            .ok_or(TokenFormatError("unknown kind"))?;
        let id = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or(TokenFormatError("bad id"))?;
        let secret = parts.next().filter(|s| is_hex(s, SECRET_BYTES * 2));
        let secret = secret.ok_or(TokenFormatError("bad secret"))?;
        let fp = parts.next().filter(|s| is_hex(s, HEX_SHA256));
        let fp = fp.ok_or(TokenFormatError("bad CA fingerprint"))?;
        if parts.next().is_some() {
            return Err(TokenFormatError("extra text at the end"));
        }
        Ok(Token {
            kind,
            id,
            secret: secret.to_ascii_lowercase(),
            ca_fingerprint: fp.to_ascii_lowercase(),
        })
    }

    /// What the daemon stores instead of the secret: its SHA-256, hex.
    pub fn secret_hash(&self) -> String {
        hex(&Sha256::digest(self.secret.as_bytes()))
    }

    /// The value of the [`AUTHORIZATION_HEADER`] for this token.
    pub fn bearer(&self) -> String {
        format!("{BEARER_PREFIX}{self}")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "flame_{}_{}_{}_{}",
            self.kind.as_str(),
            self.id,
            self.secret,
            self.ca_fingerprint
        )
    }
}

impl fmt::Debug for Token {
    /// Never prints the secret (tokens end up in logs through `{:?}`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({} {} ...)", self.kind.as_str(), self.id)
    }
}

/// Who a daemon decided a caller is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A user token's holder; `admin` may act on everything.
    User { name: String, admin: bool },
    /// A node (by its certificate or node token), and the executors it runs.
    Node { name: String },
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::User { admin: true, .. })
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::User { name, admin: true } => write!(f, "user {name} (admin)"),
            Principal::User { name, .. } => write!(f, "user {name}"),
            Principal::Node { name } => write!(f, "node {name}"),
        }
    }
}

/// SHA-256 of a certificate's DER, lowercase hex: how tokens name a CA.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

    #[test]
    fn a_token_reads_back_as_itself_and_hides_its_secret_in_debug() {
        let t = Token::generate(TokenKind::User, 42, FP);
        let text = t.to_string();
        assert!(text.starts_with("flame_user_42_"), "{text}");
        assert_eq!(Token::parse(&format!(" {text}\n")).unwrap(), t);
        assert!(!format!("{t:?}").contains(&t.secret));
        assert_eq!(t.secret_hash().len(), 64);
        assert_ne!(
            t.secret_hash(),
            Token::generate(TokenKind::User, 42, FP).secret_hash()
        );
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let good = Token::generate(TokenKind::Join, 7, FP).to_string();
        let cases = [
            ("flume_user_1", "start with flame_"),
            ("flame_admin_1_x_y", "unknown kind"),
            ("flame_user_x_y_z", "bad id"),
            ("flame_user_1_abc_def", "bad secret"),
            (&good[..good.len() - 1], "bad CA fingerprint"),
            (&format!("{good}_more"), "extra text"),
        ];
        for (text, says) in cases {
            let e = Token::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
