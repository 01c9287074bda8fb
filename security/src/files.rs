//! Where a cluster's certificates and keys live, and reading them.
//!
//! A certificates directory holds the CA's certificate (`ca.crt`, a bundle of one or
//! more CA certificates: during a CA rotation both), and any of `node-N.crt`/`.key` and
//! `client-USER.crt`/`.key`. `hanse cluster up` keeps one for all its nodes in
//! `DIR/certs`; on real machines each holds `ca.crt` and its own pair. The CA's key,
//! `ca.key`, is needed only to issue certificates and belongs on no server.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Identity, SecurityError};

/// A directory of certificates in the layout above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertsDir(pub PathBuf);

/// The three files one end of a connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificates a peer's certificate must chain to.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertsDir {
    pub fn new(path: impl Into<PathBuf>) -> CertsDir {
        CertsDir(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("ca.crt")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.0.join("ca.key")
    }

    /// The certificate and key files of `identity`.
    pub fn pair(&self, identity: &Identity) -> (PathBuf, PathBuf) {
        let stem = match identity {
            Identity::Node(id) => format!("node-{id}"),
            Identity::User(name) => format!("client-{name}"),
        };
        (
            self.0.join(format!("{stem}.crt")),
            self.0.join(format!("{stem}.key")),
        )
    }

    /// What `identity` connects with.
    pub fn files(&self, identity: &Identity) -> TlsFiles {
        let (cert, key) = self.pair(identity);
        TlsFiles {
            ca: self.ca_cert(),
            cert,
            key,
        }
    }
}

/// The hint a missing file's error gives: the command that makes it.
fn making_hint(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new(".")).display();
    let command = if name == "ca.crt" || name == "ca.key" {
        format!("hanse cert create-ca --certs-dir {dir}")
    } else if let Some(id) = name.strip_prefix("node-").and_then(|n| n.split('.').next()) {
        format!("hanse cert create-node --certs-dir {dir} --node-id {id} --host HOST")
    } else if let Some(user) = name
        .strip_prefix("client-")
        .and_then(|n| n.rsplit_once('.'))
    {
        format!(
            "hanse cert create-client --certs-dir {dir} --user {}",
            user.0
        )
    } else {
        return String::new();
    };
    format!(" (make it with `{command}`)")
}

fn read(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => SecurityError::Missing {
            path: path.to_path_buf(),
            hint: making_hint(path),
        },
        _ => SecurityError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// The certificates of the PEM file `path`, in order (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecurityError::BadFile {
            path: path.to_path_buf(),
            detail: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(SecurityError::BadFile {
            path: path.to_path_buf(),
            detail: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// The private key of the PEM file `path`, which only its owner may read.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
    let pem = read(path)?;
    let mode = std::fs::metadata(path)
        .map_err(|source| SecurityError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SecurityError::KeyReadableByOthers {
            path: path.to_path_buf(),
            mode: mode & 0o777,
        });
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| SecurityError::BadFile {
        path: path.to_path_buf(),
        detail: format!("not a PEM private key: {e}"),
    })
}

/// Writes `contents` to `path` with permission bits `mode`, whole or not at all (a node
/// reloading its certificate never reads half a file).
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), SecurityError> {
    use std::io::Write;
    let error = |source| SecurityError::Write {
        path: path.to_path_buf(),
        source,
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temporary = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)
        .map_err(error)?;
    file.write_all(contents).map_err(error)?;
    file.sync_all().map_err(error)?;
    std::fs::rename(&temporary, path).map_err(error)
}

/// What a certificate file says, for `hanse cert list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub path: PathBuf,
    /// The identity it names, or `None` for a CA certificate.
    pub identity: Option<Identity>,
    /// The host names and addresses a node certificate is valid for.
    pub hosts: Vec<String>,
    pub not_after: SystemTime,
}

impl CertInfo {
    /// How long until it expires (zero once it has).
    pub fn remaining(&self) -> Duration {
        self.not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

/// When `cert` expires (the epoch for a date before it).
fn expiry(cert: &x509_parser::certificate::X509Certificate<'_>) -> SystemTime {
    match u64::try_from(cert.validity().not_after.timestamp()) {
        Ok(after) => SystemTime::UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

/// When the DER certificate `der` expires, if it is one.
pub fn expires(der: &[u8]) -> Option<SystemTime> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, cert)| expiry(&cert))
}

/// What the first certificate of the PEM file `path` says.
pub fn describe(path: &Path) -> Result<CertInfo, SecurityError> {
    let bad = |detail: String| SecurityError::BadFile {
        path: path.to_path_buf(),
        detail,
    };
    let der = read_certificates(path)?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    let identity = match cert.is_ca() {
        true => None,
        false => Some(Identity::of_certificate(&der).map_err(bad)?),
    };
    let mut hosts = Vec::new();
    if let Ok(Some(names)) = cert.subject_alternative_name() {
        for name in &names.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => hosts.push(dns.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).map(std::net::IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .map(std::net::IpAddr::from)
                            .ok(),
                        _ => None,
                    };
                    hosts.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    let not_after = expiry(&cert);
    Ok(CertInfo {
        path: path.to_path_buf(),
        identity,
        hosts,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_names_the_command_that_makes_it() {
        let dir = tempfile::tempdir().unwrap();
        let certs = CertsDir::new(dir.path());
        let files = certs.files(&Identity::Node(3));
        let missing = read_certificates(&files.cert).unwrap_err().to_string();
        assert!(missing.contains("node-3.crt does not exist"), "{missing}");
        assert!(missing.contains("hanse cert create-node"), "{missing}");
        assert!(missing.contains("--node-id 3"), "{missing}");
        let user = certs.files(&Identity::user("alice").unwrap());
        let missing = read_private_key(&user.key).unwrap_err().to_string();
        assert!(missing.contains("--user alice"), "{missing}");
        let missing = read_certificates(&certs.ca_cert()).unwrap_err().to_string();
        assert!(missing.contains("hanse cert create-ca"), "{missing}");
    }

    #[test]
    fn a_key_others_may_read_is_refused_and_garbage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        write_atomically(&key, b"-----BEGIN PRIVATE KEY-----\n", 0o644).unwrap();
        let refused = read_private_key(&key).unwrap_err();
        assert!(matches!(
            refused,
            SecurityError::KeyReadableByOthers { mode: 0o644, .. }
        ));
        assert!(refused.to_string().contains("chmod 600"), "{refused}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_private_key(&key),
            Err(SecurityError::BadFile { .. })
        ));
        let cert = dir.path().join("c.crt");
        write_atomically(&cert, b"hello", 0o644).unwrap();
        assert!(matches!(
            read_certificates(&cert),
            Err(SecurityError::BadFile { .. })
        ));
    }
}
