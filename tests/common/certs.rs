//! Certificates made in the tests with rcgen: a CA, leaf certificates for
//! 127.0.0.1 signed by it (or expired), and the `tls:` config section that
//! serves one.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair};

/// A CA: its certificate (PEM file) and what signs with it.
pub struct Ca {
    pub cert: Certificate,
    pub key: KeyPair,
    pub file: PathBuf,
}

pub fn ca(dir: &Path, name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("smss test {name}"));
    let cert = params.self_signed(&key).expect("CA cert");
    let file = dir.join(format!("{name}.pem"));
    std::fs::write(&file, cert.pem()).expect("write CA");
    Ca { cert, key, file }
}

/// A certificate for 127.0.0.1 signed by `ca`, written as `<name>.pem`
/// and `<name>-key.pem`; returns both paths.
pub fn leaf(dir: &Path, ca: &Ca, name: &str, expired: bool) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("params");
    if expired {
        params.not_before = rcgen::date_time_ymd(2001, 1, 1);
        params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    }
    let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("sign");
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&c, cert.pem()).expect("write cert");
    std::fs::write(&k, key.serialize_pem()).expect("write key");
    (c, k)
}

pub fn tls_section(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "tls:\n  port: 0\n  cert: {}\n  key: {}\n{extra}",
        cert.display(),
        key.display()
    )
}
