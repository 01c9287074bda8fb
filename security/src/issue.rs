//! Making certificates: the cluster's CA, and the node and client certificates it signs
//! (`hanse cert`). Keys are ECDSA P-256; every key file is written readable by its owner
//! only, every file whole or not at all.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::files::{read_certificates, write_atomically};
use crate::knobs::{CA_VALIDITY_DAYS, CLOCK_SKEW_ALLOWANCE, LEAF_VALIDITY_DAYS};
use crate::{CertsDir, Identity, SecurityError};

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;
const DAY: Duration = Duration::from_secs(86_400);

/// When a new certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From a little before now (clocks differ) until `days` from now.
    pub fn days(days: u32) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - CLOCK_SKEW_ALLOWANCE,
            not_after: now + DAY * days,
        }
    }
}

/// A certificate and its private key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn rcgen_error(what: &'static str) -> impl Fn(rcgen::Error) -> SecurityError {
    move |e| SecurityError::Invalid {
        what,
        detail: e.to_string(),
    }
}

fn params(common_name: &str, validity: Validity) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Hanse");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    params
}

/// A new self-signed CA.
pub fn ca(validity: Validity) -> Result<Issued, SecurityError> {
    let mut params = params("Hanse cluster CA", validity);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().map_err(rcgen_error("key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(rcgen_error("CA certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate for `identity` signed by the CA `ca`. A node's is valid for the host
/// names and addresses `hosts` (those its peers and clients connect to) and serves as
/// both server and client; a user's is for clients only.
pub fn leaf(
    ca: &Issued,
    identity: &Identity,
    hosts: &[String],
    validity: Validity,
) -> Result<Issued, SecurityError> {
    let mut params = params(&identity.common_name(), validity);
    for host in hosts {
        params.subject_alt_names.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => {
                SanType::DnsName(
                    host.clone()
                        .try_into()
                        .map_err(|_| SecurityError::Invalid {
                            what: "host",
                            detail: format!("{host:?} is no DNS name or IP address"),
                        })?,
                )
            }
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match identity {
        Identity::Node(_) => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Identity::User(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(rcgen_error("CA key"))?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(rcgen_error("CA certificate"))?;
    let key = KeyPair::generate().map_err(rcgen_error("key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rcgen_error("certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Creates `dir` (readable by its owner only) and a new CA in it; an existing CA key is
/// never replaced (every certificate it signed would stop working).
pub fn create_ca(dir: &CertsDir, days: Option<u32>) -> Result<(), SecurityError> {
    let key_path = dir.ca_key();
    if key_path.exists() {
        return Err(SecurityError::Invalid {
            what: "certificates directory",
            detail: format!(
                "{} already holds a CA key; a new CA would invalidate every certificate it signed",
                dir.path().display()
            ),
        });
    }
    create_dir(dir)?;
    let ca = ca(Validity::days(days.unwrap_or(CA_VALIDITY_DAYS)))?;
    write_atomically(&key_path, ca.key_pem.as_bytes(), KEY_MODE)?;
    write_atomically(&dir.ca_cert(), ca.cert_pem.as_bytes(), CERT_MODE)
}

fn create_dir(dir: &CertsDir) -> Result<(), SecurityError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir.path())
        .map_err(|source| SecurityError::Write {
            path: dir.path().to_path_buf(),
            source,
        })
}

/// The CA of `dir`, to sign with.
fn read_ca(dir: &CertsDir) -> Result<Issued, SecurityError> {
    let read = |path: std::path::PathBuf| {
        // Checks the key's permissions and the PEM as the nodes do.
        if path == dir.ca_key() {
            crate::files::read_private_key(&path)?;
        } else {
            read_certificates(&path)?;
        }
        std::fs::read_to_string(&path).map_err(|source| SecurityError::Read { path, source })
    };
    Ok(Issued {
        cert_pem: read(dir.ca_cert())?,
        key_pem: read(dir.ca_key())?,
    })
}

/// Writes a certificate and key for `identity` in `dir`, signed by the CA there. An
/// existing pair is replaced only with `overwrite` (a rotation: nodes that use it
/// reload it).
pub fn create_leaf(
    dir: &CertsDir,
    identity: &Identity,
    hosts: &[String],
    validity: Validity,
    overwrite: bool,
) -> Result<(), SecurityError> {
    if matches!(identity, Identity::Node(_)) && hosts.is_empty() {
        return Err(SecurityError::Invalid {
            what: "node certificate",
            detail: "give at least one --host its peers and clients connect to".into(),
        });
    }
    let (cert_path, key_path) = dir.pair(identity);
    if !overwrite && (cert_path.exists() || key_path.exists()) {
        return Err(SecurityError::Exists { path: cert_path });
    }
    let ca = read_ca(dir)?;
    let issued = leaf(&ca, identity, hosts, validity)?;
    // The key first: a reloading node that sees the new certificate finds its key.
    write_atomically(&key_path, issued.key_pem.as_bytes(), KEY_MODE)?;
    write_atomically(&cert_path, issued.cert_pem.as_bytes(), CERT_MODE)
}

/// The default validity of a node or client certificate.
pub fn leaf_validity(days: Option<u32>) -> Validity {
    Validity::days(days.unwrap_or(LEAF_VALIDITY_DAYS))
}

/// Makes what is missing of a local cluster's certificates in `dir`: the CA, one for
/// each of `nodes` (its id and the address it is reached at; `localhost` too), and one
/// for each of `users`. `hanse cluster up` runs its nodes with these, and tests theirs.
pub fn create_local_cluster(
    dir: &CertsDir,
    nodes: &[(u64, String)],
    users: &[&str],
) -> Result<(), SecurityError> {
    if !dir.ca_key().exists() {
        create_ca(dir, None)?;
    }
    let validity = leaf_validity(None);
    let mut wanted: Vec<(Identity, Vec<String>)> = nodes
        .iter()
        .map(|(id, host)| (Identity::Node(*id), vec![host.clone(), "localhost".into()]))
        .collect();
    for user in users {
        wanted.push((Identity::user(user)?, Vec::new()));
    }
    for (identity, hosts) in wanted {
        if !dir.pair(&identity).0.exists() {
            create_leaf(dir, &identity, &hosts, validity, false)?;
        }
    }
    Ok(())
}
