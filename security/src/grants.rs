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

use crate::{Caller, Identity};

/// The role that may do everything.
pub const ROOT: &str = "root";
/// The role that may call the Admin service.
pub const ADMIN: &str = "admin";

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
}

/// Every user and role, as the meta shard stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// Users by name, with their roles.
    pub users: BTreeMap<String, BTreeSet<String>>,
    /// Roles other than the built-in ones, with what they grant.
    pub roles: BTreeMap<String, BTreeSet<Permission>>,
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
    role == ROOT || role == ADMIN
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
                self.users.remove(&user).ok_or(GrantError::NoUser(user))?;
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
        }
        Ok(())
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
        match caller {
            Caller::Verified(Identity::User(user)) if !self.has_role(user, ROOT) => Err(Denied {
                caller: caller.to_string(),
                what: "change users and roles".into(),
                key: None,
                why: "that takes the role `root`".into(),
            }),
            _ => Ok(()),
        }
    }

    /// Whether `caller` may use the Admin service to `what` (membership, splits,
    /// backups): a node, a user with the role `admin` or `root`, or anyone where nobody
    /// is authenticated.
    pub fn check_admin(&self, caller: &Caller, what: &str) -> Result<(), Denied> {
        match caller {
            Caller::Verified(Identity::User(user))
                if !self.has_role(user, ADMIN) && !self.has_role(user, ROOT) =>
            {
                Err(Denied {
                    caller: caller.to_string(),
                    what: what.to_string(),
                    key: None,
                    why: "that takes the role `admin`".into(),
                })
            }
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
        let Caller::Verified(Identity::User(user)) = caller else {
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
    fn prefix_ends_carry_over_0xff() {
        assert_eq!(prefix_end(b"a/"), b"a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), Vec::<u8>::new());
    }
}
