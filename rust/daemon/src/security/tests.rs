//! `Security::open` across restarts: tokens, revocations and the admin token persist.

use std::os::unix::fs::PermissionsExt;

use flame_core::auth::TokenKind;
use flame_core::tls::NodeKey;

use super::*;

#[test]
fn a_reopened_head_keeps_its_tokens_revocations_ca_and_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, admin, fp, cert_fp) = {
        let s = Security::open(dir.path(), None).unwrap();
        let alice = s.issue_stored(TokenKind::User, "alice", false, 0).unwrap();
        let bob = s.issue_stored(TokenKind::User, "bob", false, 0).unwrap();
        s.revoke_token(bob.id).unwrap();
        let key = NodeKey::generate();
        let ca = s.ca.as_ref().unwrap();
        let signed = ca.sign_node(&key.csr_pem("n1"), "n1").unwrap();
        s.record_node_cert("n1", &signed).unwrap();
        s.issue_stored(TokenKind::Node, "n1", false, 0).unwrap();
        assert_eq!(
            s.revoke_node("n1").unwrap(),
            2,
            "one certificate, one node token"
        );
        assert!(s.cert_revoked(&signed.fingerprint));
        (
            alice,
            bob,
            s.admin_token.clone(),
            s.ca_fingerprint.clone(),
            signed.fingerprint,
        )
    };
    let path = dir.path().join(ADMIN_TOKEN_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin.token is the owner's only");

    let s = Security::open(dir.path(), None).unwrap();
    assert_eq!(s.ca_fingerprint, fp, "the CA is kept");
    assert_eq!(s.admin_token, admin, "the admin token is kept");
    assert_eq!(s.tokens.check(&alice.to_string()).unwrap().name, "alice");
    let err = s.tokens.check(&bob.to_string()).unwrap_err().to_string();
    assert!(err.contains("revoked"), "{err}");
    assert!(
        s.cert_revoked(&cert_fp),
        "a revoked certificate stays revoked"
    );
    assert!(!s.cert_revoked("00"));
    let next = s.issue_stored(TokenKind::Join, "", false, 0).unwrap();
    assert!(next.id > alice.id.max(bob.id), "ids go on after a restart");

    // A deleted admin.token is replaced by a new one on the next start.
    drop(s);
    std::fs::remove_file(&path).unwrap();
    let s = Security::open(dir.path(), None).unwrap();
    assert_ne!(s.admin_token, admin);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        s.admin_token.to_string()
    );
}

#[test]
fn a_tls_head_gets_a_certificate_for_its_names() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["127.0.0.1".to_string(), "head.example.com".to_string()];
    let s = Security::open(dir.path(), Some(&names)).unwrap();
    assert!(s.tls);
    let id = s.identity.as_ref().expect("a server identity");
    assert!(
        id.cert_pem.ends_with(s.ca_pem().unwrap()),
        "chain ends with the CA"
    );
    let plain = Security::open(tempfile::tempdir().unwrap().path(), None).unwrap();
    assert!(!plain.tls && plain.identity.is_none());
}
