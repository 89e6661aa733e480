//! Test certificates made with rcgen: a CA, and server or client
//! certificates it signs, written as PEM files.

use std::path::{Path, PathBuf};

/// A CA and the PEM files of certificates it signs.
pub struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    /// A self-signed CA named `name`.
    pub fn new(name: &str) -> Ca {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().expect("CA key");
        Ca {
            issuer: rcgen::CertifiedIssuer::self_signed(p, key).expect("self-signed CA"),
        }
    }

    /// Writes the CA's certificate (PEM) to `path`, and returns the path.
    pub fn write_ca(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.issuer.pem()).expect("write CA");
        path.to_path_buf()
    }

    /// Writes `<stem>.crt` and `<stem>.key` for 127.0.0.1 and localhost.
    pub fn issue(&self, dir: &Path, stem: &str, client: bool) -> (PathBuf, PathBuf) {
        self.issue_for(dir, stem, client, &["127.0.0.1", "localhost"])
    }

    /// Writes `<stem>.crt` and `<stem>.key` with these SANs.
    pub fn issue_for(&self, dir: &Path, stem: &str, client: bool, sans: &[&str]) -> (PathBuf, PathBuf) {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("leaf params");
        p.distinguished_name.push(rcgen::DnType::CommonName, stem);
        p.extended_key_usages = if client {
            vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth]
        };
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign leaf");
        let (c, k) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
        std::fs::write(&c, cert.pem()).expect("write cert");
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        (c, k)
    }
}
