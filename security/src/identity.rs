//! The identity a certificate names, and who sent a request.
//!
//! A certificate of the cluster's CA names exactly one identity in its subject's common
//! name: `node:N` for node N, `user:NAME` for a client. Names, not the certificate's
//! other fields, decide what a caller may do, so one parser reads them everywhere.

use std::fmt;

use crate::knobs::USER_NAME_BYTES_MAX;

/// Whom a certificate was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    Node(u64),
    User(String),
}

const NODE_PREFIX: &str = "node:";
const USER_PREFIX: &str = "user:";

impl Identity {
    /// A user identity, if `name` may name a user: 1 to 64 bytes of ASCII letters,
    /// digits, `_`, `-` and `.` (it appears in file names, logs and grants).
    pub fn user(name: &str) -> Result<Identity, crate::SecurityError> {
        let fine = !name.is_empty()
            && name.len() <= USER_NAME_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && !name.starts_with('.');
        match fine {
            true => Ok(Identity::User(name.to_string())),
            false => Err(crate::SecurityError::Invalid {
                what: "user name",
                detail: format!(
                    "{name:?}: 1 to {USER_NAME_BYTES_MAX} ASCII letters, digits, '_', '-' or '.', not starting with '.'"
                ),
            }),
        }
    }

    /// The subject common name a certificate for this identity carries.
    pub fn common_name(&self) -> String {
        match self {
            Identity::Node(id) => format!("{NODE_PREFIX}{id}"),
            Identity::User(name) => format!("{USER_PREFIX}{name}"),
        }
    }

    /// The identity a common name gives, if it gives one.
    pub fn from_common_name(name: &str) -> Option<Identity> {
        if let Some(id) = name.strip_prefix(NODE_PREFIX) {
            // Only the canonical spelling: "node:03" and "node:+3" name nobody.
            let id: u64 = id.parse().ok()?;
            return (id.to_string() == name[NODE_PREFIX.len()..]).then_some(Identity::Node(id));
        }
        let user = name.strip_prefix(USER_PREFIX)?;
        Identity::user(user).ok()
    }

    /// The identity the DER certificate `der` names in its subject.
    pub fn of_certificate(der: &[u8]) -> Result<Identity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or("the certificate has no common name")?;
        Identity::from_common_name(name)
            .ok_or_else(|| format!("the common name {name:?} names no node or user"))
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node(id) => write!(f, "node {id}"),
            Identity::User(name) => write!(f, "user {name}"),
        }
    }
}

/// Where a connection came from and who is on the other end; tonic puts it into the
/// extensions of every request that came on the connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    pub caller: Caller,
}

/// Who sent a request, as the connection it came on proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Nobody is authenticated: the node runs without TLS (`insecure = true`), or the
    /// service was served without this crate's listener (an in-process test). Every
    /// caller may do everything.
    Unauthenticated,
    /// A certificate of the cluster's CA, checked in the TLS handshake, or a token a
    /// login gave the user (see [`crate::tokens`]).
    Verified(Identity),
    /// A TLS connection without a client certificate: it may log in, and do anything
    /// else only with a token, which makes it [`Caller::Verified`].
    Anonymous,
}

impl Caller {
    /// The caller recorded on a request by [`crate::incoming`]'s connections.
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        Self::from_extensions(request.extensions())
    }

    /// The same, from an HTTP request's extensions (for tower layers).
    pub fn from_extensions(extensions: &tonic::Extensions) -> Caller {
        extensions
            .get::<Peer>()
            .map(|peer| peer.caller.clone())
            .unwrap_or(Caller::Unauthenticated)
    }

    /// Whether this caller may act for other nodes (internal calls, Raft messages): a
    /// node, or anyone where nobody is authenticated.
    pub fn is_node(&self) -> bool {
        matches!(
            self,
            Caller::Unauthenticated | Caller::Verified(Identity::Node(_))
        )
    }

    /// Whether this caller may speak for node `id`: node `id` itself, or anyone where
    /// nobody is authenticated.
    pub fn may_speak_for_node(&self, id: u64) -> bool {
        match self {
            Caller::Unauthenticated => true,
            Caller::Verified(Identity::Node(node)) => *node == id,
            Caller::Verified(Identity::User(_)) | Caller::Anonymous => false,
        }
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Unauthenticated => f.write_str("an unauthenticated caller"),
            Caller::Verified(identity) => identity.fmt(f),
            Caller::Anonymous => f.write_str("a caller without certificate or token"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_round_trip_and_odd_ones_name_nobody() {
        for identity in [
            Identity::Node(0),
            Identity::Node(u64::MAX),
            Identity::user("root").unwrap(),
            Identity::user("a.b-c_9").unwrap(),
        ] {
            assert_eq!(
                Identity::from_common_name(&identity.common_name()),
                Some(identity)
            );
        }
        for odd in [
            "node:",
            "node:03",
            "node:+3",
            "node:-1",
            "node:1x",
            "user:",
            "user:a b",
            "user:../x",
            "user:.x",
            "root",
            "NODE:1",
            "node:18446744073709551616",
        ] {
            assert_eq!(Identity::from_common_name(odd), None, "{odd}");
        }
        assert!(Identity::user(&"x".repeat(USER_NAME_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn only_a_node_speaks_for_itself() {
        let node = Caller::Verified(Identity::Node(2));
        let user = Caller::Verified(Identity::user("root").unwrap());
        assert!(node.is_node() && node.may_speak_for_node(2));
        assert!(!node.may_speak_for_node(3));
        assert!(!user.is_node() && !user.may_speak_for_node(2));
        assert!(Caller::Unauthenticated.may_speak_for_node(7));
        assert!(!Caller::Anonymous.is_node() && !Caller::Anonymous.may_speak_for_node(7));
    }
}
