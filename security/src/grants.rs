//! What each user may do: users, roles and the key ranges roles grant, in etcd's model.
//!
//! - `root` (the user, or any user with the role `root`) may do everything, including
//!   changing users and roles.
//! - The role `admin` allows the Admin service: membership, splits and merges, backups.
//! - Any other role grants `read` or `readwrite` on key ranges (a prefix is the range of
//!   the keys that start with it).
//!
//! A user no role grants anything to may do nothing. Nodes, and every caller where
//! nobody is authenticated (`insecure`), may do everything. The whole table is one record
//! in the meta shard, so every node enforces the same.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::knobs::TOKENS_PER_USER_MAX;
use crate::tokens::{PasswordHash, Session};
use crate::{Caller, Identity};

/// The role that may do everything.
pub const ROOT: &str = "root";
/// The role that may call the Admin service.
pub const ADMIN: &str = "admin";
/// The role that may watch the cluster: its metrics and web console, nothing else.
pub const MONITOR: &str = "monitor";

/// What a request does to keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Read and write.
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "readwrite",
        })
    }
}

/// `read` or `readwrite` on the keys in `[start, end)` (an empty `end`: to the last key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Permission {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub write: bool,
}

impl Permission {
    /// `access` on every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8], access: Access) -> Permission {
        Permission {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
            write: access == Access::Write,
        }
    }

    fn grants(&self, access: Access) -> bool {
        self.write || access == Access::Read
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match self.end.is_empty() {
            true => "(end)".to_string(),
            false => String::from_utf8_lossy(&self.end).into_owned(),
        };
        let access = if self.write { "readwrite" } else { "read" };
        write!(
            f,
            "{access} [{}, {end})",
            String::from_utf8_lossy(&self.start)
        )
    }
}

/// The first key after every key that starts with `prefix` (empty: none is).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// One change to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddUser(String),
    RemoveUser(String),
    GrantRole {
        user: String,
        role: String,
    },
    RevokeRole {
        user: String,
        role: String,
    },
    AddRole(String),
    RemoveRole(String),
    GrantPermission {
        role: String,
        permission: Permission,
    },
    RevokePermission {
        role: String,
        permission: Permission,
    },
    /// Sets a user's password, ending the tokens it had.
    SetPassword {
        user: String,
        hash: PasswordHash,
    },
    /// Records a token (by its digest) a login gave; tokens expired by `now_unix_ms` are
    /// dropped, and a user's oldest beyond [`TOKENS_PER_USER_MAX`].
    AddToken {
        digest: String,
        session: Session,
        now_unix_ms: u64,
    },
    /// Ends every token of a user.
    RevokeTokens(String),
}

/// Why a change cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("no user {0:?}")]
    NoUser(String),
    #[error("user {0:?} exists already")]
    UserExists(String),
    #[error("no role {0:?}")]
    NoRole(String),
    #[error("role {0:?} exists already")]
    RoleExists(String),
    #[error("{0:?} is a built-in role: it grants what it grants, and it cannot be removed")]
    BuiltIn(String),
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("user {0:?} has no password: set one with `hanse user passwd`")]
    NoPassword(String),
}

/// Every user and role, as the meta shard stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Users by name, with their roles.
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// Roles other than the built-in ones, with what they grant.
    pub roles: BTreeMap<String, BTreeSet<Permission>>,
    /// The users that may log in, with their passwords.
    pub passwords: BTreeMap<String, PasswordHash>,
    /// The tokens logins gave that have not been ended, by their digest.
    pub tokens: BTreeMap<String, Session>,
}

/// A refused request: who, what (and on which key), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub caller: String,
    pub what: String,
    /// The first key the caller may not touch (`None`: no key, or it is not shown).
    pub key: Option<Vec<u8>>,
    pub why: String,
}

impl Denied {
    /// The same refusal without the key, for a node that keeps keys out of its
    /// messages (`redact = true`).
    pub fn redacted(self) -> Denied {
        Denied {
            what: match self.key {
                Some(_) => format!("{} a key", self.what),
                None => self.what,
            },
            key: None,
            ..self
        }
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} may not {}", self.caller, self.what)?;
        if let Some(key) = &self.key {
            write!(f, " {}", String::from_utf8_lossy(key))?;
        }
        write!(f, ": {}", self.why)
    }
}

impl std::error::Error for Denied {}

fn is_built_in(role: &str) -> bool {
    [ROOT, ADMIN, MONITOR].contains(&role)
}

fn check_name(what: &'static str, name: &str) -> Result<(), GrantError> {
    Identity::user(name)
        .map(|_| ())
        .map_err(|_| GrantError::Invalid {
            what,
            detail: format!(
                "{name:?}: 1 to 64 ASCII letters, digits, '_', '-' or '.', not starting with '.'"
            ),
        })
}

impl Grants {
    /// Makes `change`, or says why not and changes nothing.
    pub fn apply(&mut self, change: Change) -> Result<(), GrantError> {
        match change {
            Change::AddUser(user) => {
                check_name("user name", &user)?;
                if self.users.contains_key(&user) {
                    return Err(GrantError::UserExists(user));
                }
                self.users.insert(user, BTreeSet::new());
            }
            Change::RemoveUser(user) => {
                self.users
                    .remove(&user)
                    .ok_or(GrantError::NoUser(user.clone()))?;
                self.passwords.remove(&user);
                self.tokens.retain(|_, session| session.user != user);
            }
            Change::GrantRole { user, role } => {
                if !is_built_in(&role) && !self.roles.contains_key(&role) {
                    return Err(GrantError::NoRole(role));
                }
                let roles = self.users.get_mut(&user).ok_or(GrantError::NoUser(user))?;
                roles.insert(role);
            }
            Change::RevokeRole { user, role } => {
                let roles = self.users.get_mut(&user).ok_or(GrantError::NoUser(user))?;
                if !roles.remove(&role) {
                    return Err(GrantError::NoRole(role));
                }
            }
            Change::AddRole(role) => {
                check_name("role name", &role)?;
                if is_built_in(&role) {
                    return Err(GrantError::BuiltIn(role));
                }
                if self.roles.contains_key(&role) {
                    return Err(GrantError::RoleExists(role));
                }
                self.roles.insert(role, BTreeSet::new());
            }
            Change::RemoveRole(role) => {
                if is_built_in(&role) {
                    return Err(GrantError::BuiltIn(role));
                }
                self.roles
                    .remove(&role)
                    .ok_or(GrantError::NoRole(role.clone()))?;
                for roles in self.users.values_mut() {
                    roles.remove(&role);
                }
            }
            Change::GrantPermission { role, permission } => {
                if is_built_in(&role) {
                    return Err(GrantError::BuiltIn(role));
                }
                if !permission.end.is_empty() && permission.end <= permission.start {
                    return Err(GrantError::Invalid {
                        what: "range",
                        detail: format!("{permission}: the end must come after the start"),
                    });
                }
                let grants = self.roles.get_mut(&role).ok_or(GrantError::NoRole(role))?;
                grants.insert(permission);
            }
            Change::RevokePermission { role, permission } => {
                let grants = self
                    .roles
                    .get_mut(&role)
                    .ok_or(GrantError::NoRole(role.clone()))?;
                if !grants.remove(&permission) {
                    return Err(GrantError::Invalid {
                        what: "permission",
                        detail: format!("role {role:?} does not grant {permission}"),
                    });
                }
            }
            Change::SetPassword { user, hash } => {
                if !self.users.contains_key(&user) {
                    return Err(GrantError::NoUser(user));
                }
                self.tokens.retain(|_, session| session.user != user);
                self.passwords.insert(user, hash);
            }
            Change::AddToken {
                digest,
                session,
                now_unix_ms,
            } => {
                if !self.passwords.contains_key(&session.user) {
                    return Err(GrantError::NoPassword(session.user));
                }
                self.tokens
                    .retain(|_, kept| kept.expires_unix_ms > now_unix_ms);
                let mut held: Vec<(u64, String)> = self
                    .tokens
                    .iter()
                    .filter(|(_, kept)| kept.user == session.user)
                    .map(|(digest, kept)| (kept.expires_unix_ms, digest.clone()))
                    .collect();
                held.sort();
                let surplus = (held.len() + 1).saturating_sub(TOKENS_PER_USER_MAX);
                for (_, oldest) in held.into_iter().take(surplus) {
                    self.tokens.remove(&oldest);
                }
                self.tokens.insert(digest, session);
            }
            Change::RevokeTokens(user) => {
                if !self.users.contains_key(&user) {
                    return Err(GrantError::NoUser(user));
                }
                self.tokens.retain(|_, session| session.user != user);
            }
        }
        Ok(())
    }

    /// The user whose token has the digest `digest`, if the token is known and good at
    /// `now_unix_ms`.
    pub fn token_user(&self, digest: &str, now_unix_ms: u64) -> Option<&str> {
        self.tokens
            .get(digest)
            .filter(|session| session.expires_unix_ms > now_unix_ms)
            .map(|session| session.user.as_str())
    }

    fn has_role(&self, user: &str, role: &str) -> bool {
        user == ROOT
            || self
                .users
                .get(user)
                .is_some_and(|roles| roles.contains(role))
    }

    /// Whether `caller` may change users and roles: a node, `root`, or anyone where
    /// nobody is authenticated.
    pub fn check_root(&self, caller: &Caller) -> Result<(), Denied> {
        match self.user_of(caller) {
            Some(user) if !self.has_role(user, ROOT) => Err(Denied {
                caller: caller.to_string(),
                what: "change users and roles".into(),
                key: None,
                why: "that takes the role `root`".into(),
            }),
            _ => Ok(()),
        }
    }

    /// The user whose grants decide for `caller`: `None` for the callers that may do
    /// everything (nodes, and anyone where nobody is authenticated); a caller without
    /// certificate or token counts as a user no role grants anything.
    fn user_of<'a>(&self, caller: &'a Caller) -> Option<&'a str> {
        match caller {
            Caller::Verified(Identity::User(user)) => Some(user),
            Caller::Anonymous => Some(""),
            Caller::Verified(Identity::Node(_)) | Caller::Unauthenticated => None,
        }
    }

    /// Whether `caller` may use the Admin service to `what` (membership, splits,
    /// backups): a node, a user with the role `admin` or `root`, or anyone where nobody
    /// is authenticated.
    pub fn check_admin(&self, caller: &Caller, what: &str) -> Result<(), Denied> {
        self.check_built_in(caller, what, &[ADMIN, ROOT], "that takes the role `admin`")
    }

    /// Whether `caller` may watch the cluster (its metrics and web console): a node, a
    /// user with the role `monitor`, `admin` or `root`, or anyone where nobody is
    /// authenticated.
    pub fn check_monitor(&self, caller: &Caller, what: &str) -> Result<(), Denied> {
        let why = "that takes the role `monitor` (or `admin`)";
        self.check_built_in(caller, what, &[MONITOR, ADMIN, ROOT], why)
    }

    /// Whether `caller` is a node, anyone where nobody is authenticated, or a user with
    /// one of `roles`.
    fn check_built_in(
        &self,
        caller: &Caller,
        what: &str,
        roles: &[&str],
        why: &str,
    ) -> Result<(), Denied> {
        match self.user_of(caller) {
            Some(user) if !roles.iter().any(|role| self.has_role(user, role)) => Err(Denied {
                caller: caller.to_string(),
                what: what.to_string(),
                key: None,
                why: why.into(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether `caller` may `access` every key in `[start, end)` (an empty `end`: to the
    /// last key); a refusal names the first key no role of theirs grants it on.
    pub fn check_keys(
        &self,
        caller: &Caller,
        access: Access,
        start: &[u8],
        end: &[u8],
    ) -> Result<(), Denied> {
        let Some(user) = self.user_of(caller) else {
            return Ok(());
        };
        if self.has_role(user, ROOT) {
            return Ok(());
        }
        let mut granted: Vec<&Permission> = self
            .users
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|role| self.roles.get(role))
            .flatten()
            .filter(|p| p.grants(access))
            .collect();
        granted.sort_by(|a, b| a.start.cmp(&b.start));
        // Walk the granted ranges from `start`: each one that begins at or before the
        // first key not yet covered moves it on.
        let mut covered_to = start.to_vec();
        for permission in granted {
            if permission.start > covered_to {
                break;
            }
            if permission.end.is_empty() {
                return Ok(());
            }
            if permission.end > covered_to {
                covered_to = permission.end.clone();
            }
            if !end.is_empty() && covered_to.as_slice() >= end {
                return Ok(());
            }
        }
        let roles: Vec<&String> = self.users.get(user).into_iter().flatten().collect();
        Err(Denied {
            caller: caller.to_string(),
            what: access.to_string(),
            key: Some(covered_to),
            why: match roles.is_empty() {
                true => "the user has no role".into(),
                false => format!("none of the roles {roles:?} grants {access} on that key"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Caller {
        Caller::Verified(Identity::user(name).unwrap())
    }

    fn grants() -> Grants {
        let mut grants = Grants::default();
        for change in [
            Change::AddRole("reader".into()),
            Change::GrantPermission {
                role: "reader".into(),
                permission: Permission::prefix(b"a/", Access::Read),
            },
            Change::AddRole("writer".into()),
            Change::GrantPermission {
                role: "writer".into(),
                permission: Permission::prefix(b"a/", Access::Write),
            },
            Change::AddUser("alice".into()),
            Change::GrantRole {
                user: "alice".into(),
                role: "reader".into(),
            },
            Change::AddUser("bob".into()),
            Change::GrantRole {
                user: "bob".into(),
                role: "writer".into(),
            },
            Change::AddUser("ops".into()),
            Change::GrantRole {
                user: "ops".into(),
                role: ADMIN.into(),
            },
            Change::AddUser("nobody".into()),
        ] {
            grants.apply(change).unwrap();
        }
        grants
    }

    #[test]
    fn a_reader_reads_its_prefix_only_and_writes_nothing() {
        let grants = grants();
        let alice = user("alice");
        assert!(
            grants
                .check_keys(&alice, Access::Read, b"a/1", b"a/1\0")
                .is_ok()
        );
        assert!(
            grants
                .check_keys(&alice, Access::Read, b"a/", b"a0")
                .is_ok()
        );
        let write = grants.check_keys(&alice, Access::Write, b"a/1", b"a/1\0");
        assert!(write.unwrap_err().to_string().contains("readwrite a/1"));
        let other = grants
            .check_keys(&alice, Access::Read, b"b/1", b"b/1\0")
            .unwrap_err();
        assert!(
            other.to_string().contains("user alice may not read b/1"),
            "{other}"
        );
        // A scan across the prefix's end is refused, naming where the grant stops.
        let across = grants
            .check_keys(&alice, Access::Read, b"a/", b"c")
            .unwrap_err();
        assert!(across.to_string().contains("read a0"), "{across}");
        let redacted = across.redacted().to_string();
        assert!(!redacted.contains("a0"), "{redacted}");
        assert!(redacted.contains("may not read a key"), "{redacted}");
        assert!(grants.check_keys(&alice, Access::Read, b"a/", b"").is_err());
        assert!(grants.check_admin(&alice, "split a shard").is_err());
    }

    #[test]
    fn writers_admins_root_nodes_and_insecure_callers() {
        let grants = grants();
        assert!(
            grants
                .check_keys(&user("bob"), Access::Write, b"a/x", b"a/x\0")
                .is_ok()
        );
        assert!(
            grants
                .check_keys(&user("ops"), Access::Read, b"a/x", b"a/x\0")
                .is_err()
        );
        assert!(grants.check_admin(&user("ops"), "split a shard").is_ok());
        assert!(grants.check_root(&user("ops")).is_err());
        let nobody = grants.check_keys(&user("nobody"), Access::Read, b"a/", b"a0");
        assert!(nobody.unwrap_err().to_string().contains("has no role"));
        let stranger = grants.check_keys(&user("stranger"), Access::Read, b"a/", b"a0");
        assert!(stranger.is_err());
        let anonymous = Caller::Anonymous;
        assert!(
            grants
                .check_keys(&anonymous, Access::Read, b"a/", b"a0")
                .is_err()
        );
        assert!(grants.check_admin(&anonymous, "x").is_err());
        assert!(grants.check_root(&anonymous).is_err());
        for everything in [
            user("root"),
            Caller::Verified(Identity::Node(3)),
            Caller::Unauthenticated,
        ] {
            assert!(
                grants
                    .check_keys(&everything, Access::Write, b"", b"")
                    .is_ok()
            );
            assert!(grants.check_admin(&everything, "x").is_ok());
            assert!(grants.check_root(&everything).is_ok());
        }
    }

    #[test]
    fn changes_are_checked_and_leave_nothing_behind_when_refused() {
        let mut grants = grants();
        let before = grants.clone();
        for refused in [
            Change::AddUser("alice".into()),
            Change::AddUser("no spaces".into()),
            Change::RemoveUser("carol".into()),
            Change::GrantRole {
                user: "alice".into(),
                role: "missing".into(),
            },
            Change::AddRole(ROOT.into()),
            Change::RemoveRole(ADMIN.into()),
            Change::GrantPermission {
                role: "reader".into(),
                permission: Permission {
                    start: b"b".to_vec(),
                    end: b"a".to_vec(),
                    write: false,
                },
            },
        ] {
            assert!(grants.apply(refused.clone()).is_err(), "{refused:?}");
            assert_eq!(grants, before);
        }
        grants.apply(Change::RemoveRole("reader".into())).unwrap();
        assert!(grants.users["alice"].is_empty());
    }

    #[test]
    fn tokens_need_a_password_expire_and_end_with_the_password_or_the_user() {
        let mut grants = grants();
        let token = |digest: &str, user: &str, expires_unix_ms: u64| Change::AddToken {
            digest: digest.into(),
            session: Session {
                user: user.into(),
                expires_unix_ms,
            },
            now_unix_ms: 1_000,
        };
        assert_eq!(
            grants.apply(token("d0", "alice", 5_000)),
            Err(GrantError::NoPassword("alice".into()))
        );
        let hash = PasswordHash::new("alice's secret").unwrap();
        let set = Change::SetPassword {
            user: "alice".into(),
            hash,
        };
        grants.apply(set.clone()).unwrap();
        grants.apply(token("d0", "alice", 5_000)).unwrap();
        assert_eq!(grants.token_user("d0", 4_999), Some("alice"));
        assert_eq!(grants.token_user("d0", 5_000), None);
        assert_eq!(grants.token_user("d1", 10), None);
        // A user holds a bounded number; the one that expires first goes.
        for n in 0..TOKENS_PER_USER_MAX as u64 {
            grants
                .apply(token(&format!("n{n}"), "alice", 10_000 + n))
                .unwrap();
        }
        assert_eq!(grants.tokens.len(), TOKENS_PER_USER_MAX);
        assert_eq!(grants.token_user("d0", 10), None);
        // Expired ones are dropped by the next login.
        grants
            .apply(Change::SetPassword {
                user: "bob".into(),
                hash: PasswordHash::new("bob's secret").unwrap(),
            })
            .unwrap();
        grants
            .apply(Change::AddToken {
                digest: "b".into(),
                session: Session {
                    user: "bob".into(),
                    expires_unix_ms: 20_000,
                },
                now_unix_ms: 11_000,
            })
            .unwrap();
        assert_eq!(grants.tokens.keys().collect::<Vec<_>>(), ["b"]);
        grants.apply(Change::RevokeTokens("bob".into())).unwrap();
        assert_eq!(grants.token_user("b", 0), None);
        grants.apply(set).unwrap();
        assert!(grants.tokens.is_empty());
        grants.apply(token("d2", "alice", 5_000)).unwrap();
        grants.apply(Change::RemoveUser("alice".into())).unwrap();
        assert!(grants.tokens.is_empty() && !grants.passwords.contains_key("alice"));
    }

    #[test]
    fn prefix_ends_carry_over_0xff() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
    }
}
