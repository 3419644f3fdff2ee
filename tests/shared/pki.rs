//! Test certificates, made at test time with rcgen (ring): no key is ever committed. Shared by
//! the api and mail test binaries (`#[path]`-included by both).
// Each test binary uses a part of these helpers.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its private key in PEM, written to files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Issued {
    fn write(dir: &Path, stem: &str, cert_pem: String, key_pem: String) -> Self {
        let cert_path = dir.join(format!("{stem}.pem"));
        let key_path = dir.join(format!("{stem}.key"));
        std::fs::write(&cert_path, &cert_pem).expect("writing a test certificate");
        std::fs::write(&key_path, &key_pem).expect("writing a test key");
        Self {
            cert_pem,
            key_pem,
            cert_path,
            key_path,
        }
    }
}

fn params(common_name: &str, names: &[&str]) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
}

/// A test certificate authority; its certificate is at `cert_path`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    pub cert_pem: String,
    pub cert_path: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, writing its files into `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = params(name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("a self-signed CA");
        let cert_pem = cert.pem();
        let cert_path = dir.join(format!("{name}.ca.pem"));
        std::fs::write(&cert_path, &cert_pem).expect("writing the CA certificate");
        Self {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            cert_pem,
            cert_path,
        }
    }

    fn issue(&self, stem: &str, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a certificate signed by the test CA");
        Issued::write(&self.dir, stem, cert.pem(), key.serialize_pem())
    }

    /// A server certificate (CA:FALSE, serverAuth) for `names` (DNS names or IP addresses).
    pub fn server(&self, stem: &str, names: &[&str]) -> Issued {
        let mut params = params(names.first().copied().unwrap_or("server"), names);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(stem, params)
    }

    /// A client certificate (clientAuth) for mutual TLS.
    pub fn client(&self, stem: &str, common_name: &str) -> Issued {
        let mut params = params(common_name, &[]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(stem, params)
    }
}

/// A self-signed certificate with CA:TRUE for `names`, like `openssl req -x509` makes by
/// default and many internal mail servers present; written into `dir` as `stem.pem`/`stem.key`.
pub fn self_signed_ca_flagged(dir: &Path, stem: &str, names: &[&str]) -> Issued {
    let key = KeyPair::generate().expect("a key");
    let mut params = params("mail.internal.test", names);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("a self-signed certificate");
    Issued::write(dir, stem, cert.pem(), key.serialize_pem())
}
