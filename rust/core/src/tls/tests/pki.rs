//! The CA's files, the certificates it issues, node names and server names.

use std::os::unix::fs::PermissionsExt;

use x509_parser::extensions::GeneralName;

use super::{ders, mode, parse};
use crate::error::FlameError;
use crate::tls::{
    node_cert_of, node_name_of, server_names, ClusterCa, Identity, NodeCert, NodeKey, CA_CERT_FILE,
    CA_COMMON_NAME, CA_KEY_FILE, HEAD_CERT_FILE, HEAD_KEY_FILE,
};

#[test]
fn ca_is_created_once_with_private_files_and_reloaded_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state/tls");
    let ca = ClusterCa::load_or_create(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(CA_CERT_FILE)), 0o600);
    assert_eq!(
        std::fs::read_to_string(dir.join(CA_CERT_FILE)).unwrap(),
        ca.cert_pem()
    );
    assert_eq!(ca.fingerprint(), crate::auth::fingerprint(ca.cert_der()));

    let cert = parse(ca.cert_der());
    assert!(cert.is_ca());
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), CA_COMMON_NAME);
    let years = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
        / (365 * 24 * 3600);
    assert!(years >= 9, "a CA valid for {years} years");

    let again = ClusterCa::load_or_create(&dir).unwrap();
    assert_eq!(again.fingerprint(), ca.fingerprint());
    assert_eq!(again.cert_pem(), ca.cert_pem());
    // A file edited on another system (CRLF) still loads as the same single certificate.
    let crlf = ca.cert_pem().replace('\n', "\r\n");
    std::fs::write(dir.join(CA_CERT_FILE), format!("# cluster CA\r\n{crlf}")).unwrap();
    let edited = ClusterCa::load_or_create(&dir).unwrap();
    assert_eq!(edited.cert_pem(), ca.cert_pem());
    // The reloaded CA still signs certificates that chain to the same CA.
    let node = NodeKey::generate();
    let signed = again.sign_node(&node.csr_pem("n1"), "n1").unwrap();
    let leaf = ders(&signed.cert_pem).remove(0);
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    leaf.verify_signature(Some(parse(ca.cert_der()).public_key()))
        .expect("signed by the CA");
}

#[test]
fn a_ca_key_readable_by_others_is_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    ClusterCa::load_or_create(tmp.path()).unwrap();
    let key = tmp.path().join(CA_KEY_FILE);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = ClusterCa::load_or_create(tmp.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FlameError::FailedPrecondition(_)), "{msg}");
    assert!(
        msg.contains(&key.display().to_string()) && msg.contains("644"),
        "{msg}"
    );
}

#[test]
fn a_certificate_of_another_ca_or_a_missing_file_is_refused() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    ClusterCa::load_or_create(a.path()).unwrap();
    ClusterCa::load_or_create(b.path()).unwrap();
    std::fs::copy(b.path().join(CA_CERT_FILE), a.path().join(CA_CERT_FILE)).unwrap();
    let msg = ClusterCa::load_or_create(a.path()).unwrap_err().to_string();
    assert!(msg.contains("does not belong to the key"), "{msg}");
    assert!(msg.contains(CA_CERT_FILE), "{msg}");

    std::fs::remove_file(a.path().join(CA_CERT_FILE)).unwrap();
    let msg = ClusterCa::load_or_create(a.path()).unwrap_err().to_string();
    assert!(
        msg.contains(CA_CERT_FILE) && msg.contains("does not;"),
        "{msg}"
    );
    // The key that is left is not replaced by a new CA.
    assert!(a.path().join(CA_KEY_FILE).exists());
    assert!(!a.path().join(CA_CERT_FILE).exists());
}

#[test]
fn a_signed_csr_names_its_node_and_serves_its_object_server_name() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::load_or_create(tmp.path()).unwrap();
    let key = NodeKey::generate();
    // The CSR's own name is ignored: the head decides the name.
    let signed = ca
        .sign_node(&key.csr_pem("whatever"), "node-1.rack_2")
        .unwrap();
    let der = ders(&signed.cert_pem).remove(0);
    assert_eq!(node_name_of(&der).as_deref(), Some("node-1.rack_2"));
    assert_eq!(
        node_cert_of(&der),
        Some(NodeCert {
            name: "node-1.rack_2".into(),
            fingerprint: signed.fingerprint.clone(),
            serial: Some(signed.serial),
        })
    );
    assert_eq!(signed.fingerprint, crate::auth::fingerprint(&der));

    let cert = parse(&der);
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "node-1.rack_2");
    assert_eq!(cert.tbs_certificate.serial.to_string(), {
        let s = x509_parser::num_bigint::BigUint::from(signed.serial);
        s.to_string()
    });
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && eku.server_auth && !eku.any);
    // #12: the node's object server is dialed as <name>.node.flame.
    let dns: Vec<String> = cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(dns, ["node-1.rack_2.node.flame"]);
    assert!(crate::tls::serves_node_name(
        &signed.cert_pem,
        "node-1.rack_2"
    ));
    assert!(!crate::tls::serves_node_name(&signed.cert_pem, "node-2"));
    // A head never carries a node's object server name.
    let err = ca.issue_server(&["n1.node.flame".into()]).unwrap_err();
    assert!(err.to_string().contains(".node.flame"), "{err}");
    assert!(!cert.is_ca());
    let not_after_ms = cert.validity().not_after.timestamp() as u64 * 1000;
    assert_eq!(not_after_ms, signed.not_after_ms);
    let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
        / (24 * 3600);
    assert!((360..=370).contains(&days), "{days} days");
    // The certificate carries the node's public key, not one of the head's.
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        rcgen::KeyPair::from_pem(&key.key_pem())
            .unwrap()
            .public_key_raw()
    );
    // Two signatures of the same key get different serials.
    let again = ca.sign_node(&key.csr_pem("x"), "node-1.rack_2").unwrap();
    assert_ne!(again.serial, signed.serial);

    // Certificates that are not node certificates have no node name.
    let server = ca.issue_server(&["localhost".into()]).unwrap();
    assert_eq!(node_name_of(&ders(&server.cert_pem)[0]), None);
    assert_eq!(node_name_of(ca.cert_der()), None);
    assert_eq!(node_name_of(b"not a certificate"), None);
}

#[test]
fn a_tampered_csr_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::load_or_create(tmp.path()).unwrap();
    let csr = NodeKey::generate().csr_pem("node-a");
    let mut der = pem::parse(&csr).unwrap().into_contents();
    let at = der.windows(6).position(|w| w == b"node-a").unwrap();
    der[at + 5] = b'b';
    let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
    let err = ca.sign_node(&tampered, "node-b").unwrap_err();
    assert!(matches!(err, FlameError::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("certificate request"), "{err}");
    let err = ca.sign_node("garbage", "node-b").unwrap_err();
    assert!(err.to_string().contains("certificate request"), "{err}");
    // The untouched request is accepted (the refusal above is the tampering).
    ca.sign_node(&csr, "node-a").unwrap();
}

#[test]
fn bad_node_names_are_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::load_or_create(tmp.path()).unwrap();
    let csr = NodeKey::generate().csr_pem("n");
    let long = "a".repeat(254);
    for bad in ["", long.as_str(), "a b", "a/b", "nöde", "a:b", "x\n"] {
        let err = ca.sign_node(&csr, bad).unwrap_err();
        assert!(
            matches!(err, FlameError::InvalidArgument(_)),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().contains("node_name"), "{bad:?}: {err}");
    }
    ca.sign_node(&csr, &"a".repeat(253)).unwrap();
}

#[test]
fn the_server_certificate_carries_its_names_and_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::load_or_create(tmp.path()).unwrap();
    let names: Vec<String> = ["127.0.0.2", "head.example", "::1", "[fe80::1]"]
        .map(String::from)
        .to_vec();
    let id = ca.issue_server(&names).unwrap();
    let chain = ders(&id.cert_pem);
    assert_eq!(chain.len(), 2, "leaf then CA");
    assert_eq!(chain[1], ca.cert_der());
    let leaf = parse(&chain[0]);
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("dns:{d}"),
            GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(sans.len(), 4, "{sans:?}");
    assert!(sans.contains(&"dns:head.example".to_string()), "{sans:?}");
    assert!(sans.contains(&"ip:[127, 0, 0, 2]".to_string()), "{sans:?}");
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    rcgen::KeyPair::from_pem(&id.key_pem).unwrap();

    for bad in [vec![], vec!["bad name!".to_string()]] {
        let err = ca.issue_server(&bad).unwrap_err();
        assert!(matches!(err, FlameError::InvalidArgument(_)), "{err}");
    }
}

#[test]
fn server_names_cover_the_bind_host_or_every_interface_and_loopback() {
    let names = server_names("10.1.2.3");
    assert_eq!(names[0], "10.1.2.3");
    for n in ["localhost", "127.0.0.1", "::1"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    let all = server_names("0.0.0.0");
    assert!(!all.contains(&"0.0.0.0".to_string()), "{all:?}");
    // Every interface address of the machine, so at least loopback and one more usually;
    // no name twice.
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "{all:?}");
    assert_eq!(server_names("[::]"), server_names("::"));
    // A certificate can be made for every name found.
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::load_or_create(tmp.path()).unwrap();
    ca.issue_server(&all).unwrap();
}

#[test]
fn an_identity_is_saved_private_and_loaded_back_only_if_private_and_matching() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::load_or_create(&tmp.path().join("ca")).unwrap();
    let key = NodeKey::generate();
    let signed = ca.sign_node(&key.csr_pem("n"), "n").unwrap();
    let id = key.identity(&signed.cert_pem);
    let (cert, keyf) = (tmp.path().join("node.pem"), tmp.path().join("node.key"));
    id.save(&cert, &keyf).unwrap();
    assert_eq!((mode(&cert), mode(&keyf)), (0o600, 0o600));
    assert_eq!(Identity::load(&cert, &keyf).unwrap(), id);
    assert_eq!(id.not_after_ms().unwrap(), signed.not_after_ms);
    assert_eq!(
        NodeKey::from_pem(&id.key_pem).unwrap().key_pem(),
        key.key_pem()
    );

    // Another key next to this certificate.
    let other = NodeKey::generate().identity(&signed.cert_pem);
    std::fs::write(&keyf, &other.key_pem).unwrap();
    let msg = Identity::load(&cert, &keyf).unwrap_err().to_string();
    assert!(msg.contains("does not belong to the key"), "{msg}");

    id.save(&cert, &keyf).unwrap();
    std::fs::set_permissions(&keyf, std::fs::Permissions::from_mode(0o640)).unwrap();
    let msg = Identity::load(&cert, &keyf).unwrap_err().to_string();
    assert!(msg.contains("640") && msg.contains("node.key"), "{msg}");
}

#[test]
fn the_head_identity_is_kept_while_it_fits_and_reissued_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = ClusterCa::load_or_create(dir).unwrap();
    let names: Vec<String> = vec!["127.0.0.1".into(), "localhost".into(), "::1".into()];
    let first = ca.head_identity(dir, &names).unwrap();
    assert_eq!(mode(&dir.join(HEAD_KEY_FILE)), 0o600);
    assert_eq!(mode(&dir.join(HEAD_CERT_FILE)), 0o600);
    // Same names (in another spelling): the kept one.
    let spelled: Vec<String> = vec!["[::1]".into(), "LOCALHOST".into()];
    assert_eq!(ca.head_identity(dir, &spelled).unwrap(), first);
    // A new name: a new certificate, with it.
    let mut more = names.clone();
    more.push("head.example".into());
    let second = ca.head_identity(dir, &more).unwrap();
    assert_ne!(second, first);
    assert_eq!(ca.head_identity(dir, &more).unwrap(), second);
    // Another CA in the same dir (rotated): reissued under it.
    let other_dir = tempfile::tempdir().unwrap();
    let other = ClusterCa::load_or_create(other_dir.path()).unwrap();
    let third = other.head_identity(dir, &more).unwrap();
    assert_eq!(ders(&third.cert_pem)[1], other.cert_der());
    // A kept key others may read is refused, not silently replaced.
    std::fs::set_permissions(
        dir.join(HEAD_KEY_FILE),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let msg = other.head_identity(dir, &more).unwrap_err().to_string();
    assert!(msg.contains(HEAD_KEY_FILE) && msg.contains("644"), "{msg}");
}

#[test]
fn processes_starting_together_share_one_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let fingerprints: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| ClusterCa::load_or_create(&dir).unwrap().fingerprint()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let on_disk = ClusterCa::load_or_create(&dir).unwrap().fingerprint();
    assert!(
        fingerprints.iter().all(|f| *f == on_disk),
        "{fingerprints:?} vs {on_disk}"
    );
}
