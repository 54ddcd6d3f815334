//! Tests of the PKI (files, certificates, names) and of real TLS on 127.0.0.1.

mod handshake;
mod pki;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use x509_parser::prelude::X509Certificate;

/// The DER certificates of a PEM text.
fn ders(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .expect("PEM")
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).expect("X.509").1
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}
