//! Users and roles on a node: the table every request is checked against, read from
//! this node's replica of the meta shard every [`GRANTS_REFRESH_INTERVAL`], and changes
//! to it, made on the meta shard's leader as one compare-and-swap of the one record.
//!
//! A change reaches every node within about a refresh interval (plus its replica's lag).
//! Until a node has read the table, it knows no user but `root`: others may do nothing.
//!
//! Logins ([`login`]) check a user's password on the meta shard's leader and record the
//! token's digest there; any node then accepts the token ([`GrantsCache::token_user`]).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hanse_proto::v1 as pb;
use hanse_security::grants::{Change, GrantError, Grants, Permission};
use hanse_security::knobs::{TOKEN_TTL_DEFAULT, TOKEN_TTL_MAX};
use hanse_security::tokens::{self, NewToken, PasswordHash, Session};
use hanse_shard::meta::{self, META_SHARD};
use hanse_shard::{ShardRequest, ShardResponse};
use hanse_storage::{Cf, Store, codec};
use hanse_storage_rocksdb::Engine;
use tonic::Status;

use crate::actors::{ReplicaHandle, Routes};
use crate::coordination::wait_applied;
use crate::knobs::{
    GRANTS_CHANGE_ATTEMPTS_MAX, GRANTS_REFRESH_INTERVAL, LOGINS_IN_FLIGHT_MAX, TOKEN_CATCH_UP_WAIT,
};

/// The table this node enforces.
pub(crate) struct GrantsCache {
    current: RwLock<Arc<Grants>>,
    engine: Arc<Engine>,
    routes: Arc<Routes>,
    /// Logins checked at once: each hashes a password for about a third of a second.
    logins: tokio::sync::Semaphore,
}

fn now_unix_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl GrantsCache {
    pub(crate) fn new(engine: Arc<Engine>, routes: Arc<Routes>) -> GrantsCache {
        GrantsCache {
            current: RwLock::default(),
            engine,
            routes,
            logins: tokio::sync::Semaphore::new(LOGINS_IN_FLIGHT_MAX),
        }
    }

    pub(crate) fn get(&self) -> Arc<Grants> {
        self.current.read().expect("grants lock").clone()
    }

    /// Reads the table from the local meta replica, if this node hosts one.
    fn reread(&self) {
        if self.routes.get(META_SHARD).is_none() {
            return;
        }
        match read(&self.engine) {
            Ok(grants) => *self.current.write().expect("grants lock") = Arc::new(grants),
            Err(e) => tracing::error!("the users and roles record does not read: {e}"),
        }
    }

    /// Reads the table from the local meta replica now and then, for good.
    pub(crate) async fn refresh(self: Arc<Self>) {
        loop {
            self.reread();
            tokio::time::sleep(GRANTS_REFRESH_INTERVAL).await;
        }
    }

    /// The user `token` (as a request sent it) stands for, if it is a good token. One
    /// this node does not know yet is looked for again once the local meta replica has
    /// applied the index the token was made at (waiting at most [`TOKEN_CATCH_UP_WAIT`]).
    pub(crate) async fn token_user(&self, token: &str) -> Option<String> {
        let (index, digest) = tokens::parse_token(token)?;
        let known = |cache: &GrantsCache| {
            let grants = cache.get();
            grants
                .token_user(&digest, now_unix_ms())
                .map(str::to_string)
        };
        if let Some(user) = known(self) {
            return Some(user);
        }
        let meta = self.routes.get(META_SHARD)?;
        wait_applied(&meta, index, TOKEN_CATCH_UP_WAIT).await.ok()?;
        self.reread();
        known(self)
    }
}

/// A login of `user` with `password` on this node, which leads `meta`: the token, and
/// when it expires. A wrong password and an unknown user get the same answer, after
/// the same time.
pub(crate) async fn login(
    cache: &GrantsCache,
    meta: &ReplicaHandle,
    request: pb::LoginRequest,
) -> Result<pb::LoginResponse, Status> {
    let pb::LoginRequest {
        user,
        password,
        ttl_ms,
    } = request;
    let ttl = match ttl_ms {
        0 => TOKEN_TTL_DEFAULT,
        ms => Duration::from_millis(ms),
    };
    if ttl > TOKEN_TTL_MAX {
        return Err(Status::invalid_argument(format!(
            "a token lives at most {TOKEN_TTL_MAX:?}; {ttl:?} was asked for"
        )));
    }
    let _permit = cache
        .logins
        .try_acquire()
        .map_err(|_| Status::resource_exhausted("too many logins at once; try again shortly"))?;
    let hash = read(&cache.engine)
        .map_err(|e| Status::internal(e.to_string()))?
        .passwords
        .get(&user)
        .cloned();
    let verified = tokio::task::spawn_blocking(move || match hash {
        Some(hash) => hash.verify(&password),
        None => {
            PasswordHash::verify_nothing(&password);
            false
        }
    })
    .await
    .map_err(|e| Status::internal(format!("checking the password failed: {e}")))?;
    if !verified {
        return Err(Status::unauthenticated("wrong user name or password"));
    }
    let made = NewToken::generate().map_err(|e| Status::internal(e.to_string()))?;
    let now = now_unix_ms();
    let expires_unix_ms = now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    let session = Session {
        user,
        expires_unix_ms,
    };
    let add = Change::AddToken {
        digest: made.digest.clone(),
        session,
        now_unix_ms: now,
    };
    change(&cache.engine, meta, add).await?;
    // The change is applied here, so this index covers it.
    let applied = meta.group.raft.metrics().borrow().last_applied;
    Ok(pb::LoginResponse {
        token: made.token(applied.map_or(0, |id| id.index)),
        expires_unix_ms,
    })
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
            .propose(request)
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
        GrantError::BuiltIn(_) | GrantError::Invalid { .. } | GrantError::NoPassword(_) => {
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

/// The change an Auth request asks for. A password is hashed here: it takes about a third
/// of a second of CPU, so call this off the async workers.
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
            C::SetPassword(pb::UserPassword { user, password }) => Change::SetPassword {
                user,
                hash: PasswordHash::new(&password)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            },
            C::RevokeTokens(user) => Change::RevokeTokens(user),
        },
    )
}

/// The table as the ListAuth answer carries it.
pub(crate) fn list(grants: &Grants) -> pb::ListAuthResponse {
    let now = now_unix_ms();
    let tokens_of = |user: &str| {
        let good = grants
            .tokens
            .values()
            .filter(|s| s.user == user && s.expires_unix_ms > now);
        u32::try_from(good.count()).unwrap_or(u32::MAX)
    };
    pb::ListAuthResponse {
        users: grants
            .users
            .iter()
            .map(|(name, roles)| pb::AuthUser {
                name: name.clone(),
                roles: roles.iter().cloned().collect(),
                has_password: grants.passwords.contains_key(name),
                tokens: tokens_of(name),
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
