//! hanse-security: who is calling. Every connection between Hanse processes (a client
//! to a node, a node to a node) runs TLS with certificates of the cluster's own CA, on
//! both ends: a node proves its node id, a client its user name, and the identity a
//! certificate names reaches each request as its [`Caller`].
//!
//! - [`files`]: where certificates and keys live ([`CertsDir`]), reading them (a key
//!   others may read is refused), and what a certificate says ([`describe`]).
//! - [`identity`]: the identity a certificate names ([`Identity`]) and who sent a
//!   request ([`Caller`]).
//! - [`grants`]: users, roles and the key ranges they may read or write, and the
//!   checks every node makes with them.
//! - [`tls`]: the rustls settings of a node ([`ServerTls`]) and of a caller
//!   ([`ClientTls`]), both reloadable, so certificates rotate without a restart.
//! - [`connect`] and [`accept`]: the two ends of a connection, for tonic's channels and
//!   servers.
//! - `issue` (feature `issue`): making a CA and the certificates it signs.
//!
//! The crypto is ring's, through rustls; no OpenSSL.

pub mod accept;
pub mod connect;
pub mod files;
pub mod grants;
pub mod identity;
#[cfg(feature = "issue")]
pub mod issue;
pub mod knobs;
pub mod tls;
pub mod tokens;

pub use accept::{Accepted, incoming};
pub use connect::{ConnectFailed, Connector, never_sent};
pub use files::{CertInfo, CertsDir, TlsFiles, describe};
pub use identity::{Caller, Identity, Peer};
pub use tls::{ClientTls, Protocol, ServerTls};

use std::path::PathBuf;

/// Why certificates could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{} does not exist{hint}", path.display())]
    Missing { path: PathBuf, hint: String },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} already exists; pass --overwrite to replace it", path.display())]
    Exists { path: PathBuf },
    #[error(
        "{} may be read by others (mode {mode:03o}): a private key must be readable by its owner only; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyReadableByOthers { path: PathBuf, mode: u32 },
    #[error("{}: {detail}", path.display())]
    BadFile { path: PathBuf, detail: String },
    #[error("{}: the certificate names {found}, not {expected}", path.display())]
    WrongIdentity {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("TLS settings: {0}")]
    Tls(String),
}
