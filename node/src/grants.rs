//! Users and roles on a node: the table every request is checked against, read from
//! this node's replica of the meta shard every [`GRANTS_REFRESH_INTERVAL`], and changes
//! to it, made on the meta shard's leader as one compare-and-swap of the one record.
//!
//! A change reaches every node within about a refresh interval (plus its replica's lag).
//! Until a node has read the table, it knows no user but `root`: others may do nothing.

use std::sync::{Arc, RwLock};

use hanse_proto::v1 as pb;
use hanse_security::grants::{Change, GrantError, Grants, Permission};
use hanse_shard::meta::{self, META_SHARD};
use hanse_shard::{ShardRequest, ShardResponse};
use hanse_storage::{Cf, Store, codec};
use hanse_storage_rocksdb::Engine;
use tonic::Status;

use crate::actors::{Propose, ReplicaHandle, Routes};
use crate::knobs::{GRANTS_CHANGE_ATTEMPTS_MAX, GRANTS_REFRESH_INTERVAL};

/// The table this node enforces.
#[derive(Default)]
pub(crate) struct GrantsCache {
    current: RwLock<Arc<Grants>>,
}

impl GrantsCache {
    pub(crate) fn get(&self) -> Arc<Grants> {
        self.current.read().expect("grants lock").clone()
    }

    fn set(&self, grants: Grants) {
        *self.current.write().expect("grants lock") = Arc::new(grants);
    }

    /// Reads the table from the local meta replica now and then, for good.
    pub(crate) async fn refresh(self: Arc<Self>, engine: Arc<Engine>, routes: Arc<Routes>) {
        loop {
            if routes.get(META_SHARD).is_some() {
                match read(&engine) {
                    Ok(grants) => self.set(grants),
                    Err(e) => tracing::error!("the users and roles record does not read: {e}"),
                }
            }
            tokio::time::sleep(GRANTS_REFRESH_INTERVAL).await;
        }
    }
}

/// The record's bytes as this node's meta replica holds them (`None`: no user or role
/// was ever added).
fn stored(engine: &Engine) -> Result<Option<Vec<u8>>, hanse_storage::Error> {
    engine.get(Cf::Data, &meta::grants_key())
}

/// The table as this node's meta replica holds it.
pub(crate) fn read(engine: &Engine) -> Result<Grants, hanse_storage::Error> {
    match stored(engine)? {
        Some(bytes) => codec::decode("users and roles", &bytes),
        None => Ok(Grants::default()),
    }
}

/// Makes `change` through `meta`, which this node leads: a compare-and-swap of the
/// record, tried again (a few times) when another change came first.
pub(crate) async fn change(
    engine: &Engine,
    meta: &ReplicaHandle,
    change: Change,
) -> Result<(), Status> {
    let internal = |e: hanse_storage::Error| Status::internal(e.to_string());
    let mut expected = stored(engine).map_err(internal)?;
    for _ in 0..GRANTS_CHANGE_ATTEMPTS_MAX {
        let mut grants: Grants = match &expected {
            Some(bytes) => codec::decode("users and roles", bytes).map_err(internal)?,
            None => Grants::default(),
        };
        grants.apply(change.clone()).map_err(refused)?;
        let request = ShardRequest::CompareAndSwap {
            epoch: meta.descriptor().epoch,
            key: meta::grants_key(),
            expected: expected.clone(),
            new: Some(codec::encode(&grants)),
        };
        let answer = meta
            .ask(|reply| Propose { request, reply })
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        match answer {
            ShardResponse::CompareAndSwap { swapped: true, .. } => return Ok(()),
            ShardResponse::CompareAndSwap { previous, .. } => expected = previous,
            other => {
                return Err(Status::unavailable(format!(
                    "the meta shard answered {other:?}"
                )));
            }
        }
    }
    Err(Status::aborted(
        "other changes to users and roles kept coming first; try again",
    ))
}

fn refused(error: GrantError) -> Status {
    match error {
        GrantError::NoUser(_) | GrantError::NoRole(_) => Status::not_found(error.to_string()),
        GrantError::UserExists(_) | GrantError::RoleExists(_) => {
            Status::already_exists(error.to_string())
        }
        GrantError::BuiltIn(_) | GrantError::Invalid { .. } => {
            Status::invalid_argument(error.to_string())
        }
    }
}

fn permission_from(permission: Option<pb::KeyPermission>) -> Result<Permission, Status> {
    let p = permission.ok_or_else(|| Status::invalid_argument("no permission given"))?;
    Ok(Permission {
        start: p.start,
        end: p.end,
        write: p.write,
    })
}

fn permission_to(p: &Permission) -> pb::KeyPermission {
    pb::KeyPermission {
        start: p.start.clone(),
        end: p.end.clone(),
        write: p.write,
    }
}

/// The change an Auth request asks for.
pub(crate) fn change_from(request: pb::AuthRequest) -> Result<Change, Status> {
    use pb::auth_request::Change as C;
    Ok(
        match request
            .change
            .ok_or_else(|| Status::invalid_argument("no change given"))?
        {
            C::AddUser(user) => Change::AddUser(user),
            C::RemoveUser(user) => Change::RemoveUser(user),
            C::GrantRole(pb::UserRole { user, role }) => Change::GrantRole { user, role },
            C::RevokeRole(pb::UserRole { user, role }) => Change::RevokeRole { user, role },
            C::AddRole(role) => Change::AddRole(role),
            C::RemoveRole(role) => Change::RemoveRole(role),
            C::GrantPermission(pb::RolePermission { role, permission }) => {
                Change::GrantPermission {
                    role,
                    permission: permission_from(permission)?,
                }
            }
            C::RevokePermission(pb::RolePermission { role, permission }) => {
                Change::RevokePermission {
                    role,
                    permission: permission_from(permission)?,
                }
            }
        },
    )
}

/// The table as the ListAuth answer carries it.
pub(crate) fn list(grants: &Grants) -> pb::ListAuthResponse {
    pb::ListAuthResponse {
        users: grants
            .users
            .iter()
            .map(|(name, roles)| pb::AuthUser {
                name: name.clone(),
                roles: roles.iter().cloned().collect(),
            })
            .collect(),
        roles: grants
            .roles
            .iter()
            .map(|(name, permissions)| pb::AuthRole {
                name: name.clone(),
                permissions: permissions.iter().map(permission_to).collect(),
            })
            .collect(),
    }
}
