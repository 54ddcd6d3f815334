//! The head's credentials on disk: `<state_dir>/auth.db` (SQLite, mode 0600) holds every
//! token it issued (only the secret's hash) and every node certificate it signed, with
//! their revocations. Loaded into memory at start ([`super::Security::open`]); each issue
//! and revocation writes through here first, so a restart forgets nothing.
//!
//! Writes are small and rare (a token created, a node joined): one connection behind a
//! mutex is enough, called from a blocking thread by the async callers.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection};

use flame_core::auth::TokenKind;
use flame_core::FlameError;

use super::tokens::TokenEntry;

/// The file name of the store in the state dir.
pub const AUTH_DB_FILE: &str = "auth.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tokens (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    admin INTEGER NOT NULL,
    secret_hash TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    revoked_ms INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS node_certs (
    fingerprint TEXT PRIMARY KEY,
    node_name TEXT NOT NULL,
    serial INTEGER NOT NULL,
    not_after_ms INTEGER NOT NULL,
    revoked_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS node_certs_by_name ON node_certs(node_name);
";

/// A token about to be stored (its id comes from the table).
pub struct NewToken<'a> {
    pub kind: TokenKind,
    pub name: &'a str,
    pub admin: bool,
    pub created_ms: u64,
    pub expires_ms: u64,
}

/// What a node's revocation touched in the store.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeRevocation {
    /// Node tokens newly revoked.
    pub token_ids: Vec<u64>,
    /// Certificates newly revoked, by fingerprint.
    pub cert_fingerprints: Vec<String>,
}

/// `auth.db`.
pub struct AuthStore {
    conn: Mutex<Connection>,
}

fn db_error(path: &str, e: impl std::fmt::Display) -> FlameError {
    FlameError::Storage(format!("{path}: {e}"))
}

impl AuthStore {
    /// Open (or create, mode 0600) `auth.db` in `state_dir`.
    ///
    /// # Errors
    /// `Storage` naming the file when it cannot be created, opened or read.
    pub fn open(state_dir: &Path) -> Result<AuthStore, FlameError> {
        let path = state_dir.join(AUTH_DB_FILE);
        let shown = path.display().to_string();
        // Created 0600 before SQLite touches it: token hashes are not for other users.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| db_error(&shown, e))?;
        let conn = Connection::open(&path).map_err(|e| db_error(&shown, e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| db_error(&shown, e))?;
        Ok(AuthStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stored token.
    pub fn tokens(&self) -> Result<Vec<TokenEntry>, FlameError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, kind, name, admin, secret_hash, created_ms, expires_ms, revoked_ms
                 FROM tokens ORDER BY id",
            )
            .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                    r.get::<_, i64>(7)?,
                ))
            })
            .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, name, admin, secret_hash, created, expires, revoked) =
                row.map_err(|e| db_error(AUTH_DB_FILE, e))?;
            let kind = TokenKind::parse(&kind).ok_or_else(|| {
                db_error(
                    AUTH_DB_FILE,
                    format!("token {id} has unknown kind {kind:?}"),
                )
            })?;
            out.push(TokenEntry {
                id: id as u64,
                kind,
                name,
                admin,
                secret_hash,
                created_ms: created as u64,
                expires_ms: expires as u64,
                revoked_ms: revoked as u64,
            });
        }
        Ok(out)
    }

    /// Store a new token; `hash_for(id)` makes the token for the id the table gives and
    /// returns its secret's hash. Returns the stored entry.
    pub fn insert_token(
        &self,
        new: &NewToken<'_>,
        hash_for: impl FnOnce(u64) -> String,
    ) -> Result<TokenEntry, FlameError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| db_error(AUTH_DB_FILE, e))?;
        let id: i64 = tx
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM tokens", [], |r| {
                r.get(0)
            })
            .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        let entry = TokenEntry {
            id: id as u64,
            kind: new.kind,
            name: new.name.to_string(),
            admin: new.admin,
            secret_hash: hash_for(id as u64),
            created_ms: new.created_ms,
            expires_ms: new.expires_ms,
            revoked_ms: 0,
        };
        tx.execute(
            "INSERT INTO tokens (id, kind, name, admin, secret_hash, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                id,
                entry.kind.as_str(),
                entry.name,
                entry.admin,
                entry.secret_hash,
                entry.created_ms as i64,
                entry.expires_ms as i64
            ],
        )
        .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        tx.commit().map_err(|e| db_error(AUTH_DB_FILE, e))?;
        Ok(entry)
    }

    /// Mark token `id` revoked at `at_ms` (kept if it already was); `false` if no such id.
    pub fn revoke_token(&self, id: u64, at_ms: u64) -> Result<bool, FlameError> {
        let conn = self.conn();
        let n = conn
            .execute(
                "UPDATE tokens SET revoked_ms = CASE WHEN revoked_ms = 0 THEN ?2 ELSE revoked_ms END
                 WHERE id = ?1",
                params![id as i64, at_ms as i64],
            )
            .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        Ok(n > 0)
    }

    /// Remember a node certificate the CA signed.
    pub fn insert_cert(
        &self,
        node_name: &str,
        serial: u64,
        fingerprint: &str,
        not_after_ms: u64,
    ) -> Result<(), FlameError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO node_certs (fingerprint, node_name, serial, not_after_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![fingerprint, node_name, serial as i64, not_after_ms as i64],
            )
            .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        Ok(())
    }

    /// Fingerprints of every revoked node certificate.
    pub fn revoked_certs(&self) -> Result<Vec<String>, FlameError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT fingerprint FROM node_certs WHERE revoked_ms != 0")
            .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| db_error(AUTH_DB_FILE, e))
    }

    /// Revoke, at `at_ms`, every not yet revoked certificate and node token of `node_name`.
    pub fn revoke_node(&self, node_name: &str, at_ms: u64) -> Result<NodeRevocation, FlameError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| db_error(AUTH_DB_FILE, e))?;
        let mut out = NodeRevocation::default();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT fingerprint FROM node_certs WHERE node_name = ?1 AND revoked_ms = 0",
                )
                .map_err(|e| db_error(AUTH_DB_FILE, e))?;
            let rows = stmt
                .query_map([node_name], |r| r.get::<_, String>(0))
                .map_err(|e| db_error(AUTH_DB_FILE, e))?;
            out.cert_fingerprints = rows
                .collect::<Result<_, _>>()
                .map_err(|e| db_error(AUTH_DB_FILE, e))?;
            let mut stmt = tx
                .prepare(
                    "SELECT id FROM tokens WHERE kind = 'node' AND name = ?1 AND revoked_ms = 0",
                )
                .map_err(|e| db_error(AUTH_DB_FILE, e))?;
            let rows = stmt
                .query_map([node_name], |r| r.get::<_, i64>(0))
                .map_err(|e| db_error(AUTH_DB_FILE, e))?;
            for id in rows {
                out.token_ids
                    .push(id.map_err(|e| db_error(AUTH_DB_FILE, e))? as u64);
            }
        }
        tx.execute(
            "UPDATE node_certs SET revoked_ms = ?2 WHERE node_name = ?1 AND revoked_ms = 0",
            params![node_name, at_ms as i64],
        )
        .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        tx.execute(
            "UPDATE tokens SET revoked_ms = ?2
             WHERE kind = 'node' AND name = ?1 AND revoked_ms = 0",
            params![node_name, at_ms as i64],
        )
        .map_err(|e| db_error(AUTH_DB_FILE, e))?;
        tx.commit().map_err(|e| db_error(AUTH_DB_FILE, e))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn new(kind: TokenKind, name: &str) -> NewToken<'_> {
        NewToken {
            kind,
            name,
            admin: false,
            created_ms: 1,
            expires_ms: 0,
        }
    }

    #[test]
    fn tokens_certificates_and_revocations_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = AuthStore::open(dir.path()).unwrap();
            let a = store
                .insert_token(&new(TokenKind::User, "alice"), |id| format!("hash{id}"))
                .unwrap();
            let b = store
                .insert_token(&new(TokenKind::Node, "n1"), |id| format!("hash{id}"))
                .unwrap();
            assert_eq!((a.id, b.id), (1, 2), "ids come from the table");
            store.insert_cert("n1", 7, "fp1", 99).unwrap();
            store.insert_cert("n2", 8, "fp2", 99).unwrap();
            assert!(store.revoke_token(a.id, 50).unwrap());
            assert!(!store.revoke_token(42, 50).unwrap());
            let r = store.revoke_node("n1", 60).unwrap();
            assert_eq!(r.token_ids, vec![2]);
            assert_eq!(r.cert_fingerprints, vec!["fp1".to_string()]);
        }
        let mode = std::fs::metadata(dir.path().join(AUTH_DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let store = AuthStore::open(dir.path()).unwrap();
        let tokens = store.tokens().unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].name, "alice");
        assert_eq!(tokens[0].secret_hash, "hash1");
        assert_eq!(tokens[0].revoked_ms, 50);
        assert_eq!(tokens[1].revoked_ms, 60);
        assert_eq!(store.revoked_certs().unwrap(), vec!["fp1".to_string()]);
        let c = store
            .insert_token(&new(TokenKind::Join, ""), |id| format!("hash{id}"))
            .unwrap();
        assert_eq!(c.id, 3, "a reopened store goes on from the last id");
        // A second revocation keeps the first time.
        store.revoke_token(1, 70).unwrap();
        assert_eq!(store.tokens().unwrap()[0].revoked_ms, 50);
    }
}
