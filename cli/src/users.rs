//! `hanse user add|remove|grant|revoke|list` and `hanse role add|remove|grant|revoke|list`:
//! who may do what in a cluster (etcd's model; see docs/security.md). A user is the name
//! in a client certificate (`hanse cert create-client --user NAME`); roles grant `read`
//! or `readwrite` on key prefixes or ranges, and the built-in roles `admin` (the Admin
//! service) and `root` (everything). Changing them takes `root`.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hanse_client::proto::{self, auth_request::Change};
use serde_json::json;

use crate::admin::first_answer;
use crate::connect::{Target, admin};

#[derive(Args)]
pub struct UserArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    op: UserOp,
}

#[derive(Args)]
pub struct RoleArgs {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    op: RoleOp,
}

#[derive(Subcommand)]
enum UserOp {
    /// Adds a user (with no role: it may do nothing yet).
    Add { name: String },
    /// Removes a user.
    Remove { name: String },
    /// Gives a user a role (`root`, `admin`, or one `hanse role add` made).
    Grant { name: String, role: String },
    /// Takes a role from a user.
    Revoke { name: String, role: String },
    /// Lists the users and their roles.
    List,
}

#[derive(Subcommand)]
enum RoleOp {
    /// Adds a role (granting nothing yet).
    Add { name: String },
    /// Removes a role (and takes it from every user).
    Remove { name: String },
    /// Lets a role read, or read and write, keys.
    Grant {
        name: String,
        #[command(flatten)]
        keys: Keys,
    },
    /// Takes a grant from a role (give it as it was granted).
    Revoke {
        name: String,
        #[command(flatten)]
        keys: Keys,
    },
    /// Lists the roles and what each grants.
    List,
}

/// Keys and what may be done to them.
#[derive(Args)]
struct Keys {
    /// Every key that starts with PREFIX.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    prefix: Option<String>,
    /// The keys from FROM (inclusive)...
    #[arg(long)]
    from: Option<String>,
    /// ...to TO (exclusive; default: to the last key).
    #[arg(long)]
    to: Option<String>,
    /// `read` or `readwrite`.
    #[arg(long, value_parser = ["read", "readwrite"], default_value = "read")]
    access: String,
}

impl Keys {
    fn permission(&self) -> Result<proto::KeyPermission> {
        let write = self.access == "readwrite";
        let (start, end) = match (&self.prefix, &self.from) {
            (Some(prefix), _) => {
                let end = prefix_end(prefix.as_bytes());
                (prefix.as_bytes().to_vec(), end)
            }
            (None, Some(from)) => (
                from.as_bytes().to_vec(),
                self.to.clone().unwrap_or_default().into_bytes(),
            ),
            (None, None) => bail!("give --prefix P, or --from A [--to B]"),
        };
        Ok(proto::KeyPermission { start, end, write })
    }
}

/// What a prefix grant covers ends here (see `hanse_security::grants::Permission::prefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let access = hanse_security::grants::Access::Read;
    hanse_security::grants::Permission::prefix(prefix, access).end
}

pub fn user(args: UserArgs) -> Result<()> {
    let change = match args.op {
        UserOp::Add { name } => Change::AddUser(name),
        UserOp::Remove { name } => Change::RemoveUser(name),
        UserOp::Grant { name, role } => Change::GrantRole(proto::UserRole { user: name, role }),
        UserOp::Revoke { name, role } => Change::RevokeRole(proto::UserRole { user: name, role }),
        UserOp::List => {
            let list = list(&args.target)?;
            for user in &list.users {
                match args.target.json {
                    true => println!("{}", json!({"user": user.name, "roles": user.roles})),
                    false => println!("{:<20} {}", user.name, user.roles.join(",")),
                }
            }
            return Ok(());
        }
    };
    apply(&args.target, change)
}

pub fn role(args: RoleArgs) -> Result<()> {
    let change = match args.op {
        RoleOp::Add { name } => Change::AddRole(name),
        RoleOp::Remove { name } => Change::RemoveRole(name),
        RoleOp::Grant { name, keys } => Change::GrantPermission(proto::RolePermission {
            role: name,
            permission: Some(keys.permission()?),
        }),
        RoleOp::Revoke { name, keys } => Change::RevokePermission(proto::RolePermission {
            role: name,
            permission: Some(keys.permission()?),
        }),
        RoleOp::List => {
            let list = list(&args.target)?;
            for role in &list.roles {
                let grants: Vec<String> = role.permissions.iter().map(show).collect();
                match args.target.json {
                    true => println!("{}", json!({"role": role.name, "grants": grants})),
                    false => println!("{:<20} {}", role.name, grants.join("; ")),
                }
            }
            return Ok(());
        }
    };
    apply(&args.target, change)
}

fn show(p: &proto::KeyPermission) -> String {
    let access = if p.write { "readwrite" } else { "read" };
    let end = match p.end.is_empty() {
        true => "(end)".to_string(),
        false => String::from_utf8_lossy(&p.end).into_owned(),
    };
    format!("{access} [{}, {end})", String::from_utf8_lossy(&p.start))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn apply(target: &Target, change: Change) -> Result<()> {
    anyhow::ensure!(
        !target.endpoints.is_empty(),
        "give --endpoints HOST:PORT,..."
    );
    let tls = target.connect.tls()?;
    let request = proto::AuthRequest {
        change: Some(change),
    };
    runtime()?.block_on(first_answer(&target.endpoints, async |endpoint| {
        admin(endpoint, &tls)?
            .auth(request.clone())
            .await
            .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?;
        Ok(())
    }))
}

fn list(target: &Target) -> Result<proto::ListAuthResponse> {
    anyhow::ensure!(
        !target.endpoints.is_empty(),
        "give --endpoints HOST:PORT,..."
    );
    let tls = target.connect.tls()?;
    runtime()?.block_on(first_answer(&target.endpoints, async |endpoint| {
        let answer = admin(endpoint, &tls)?
            .list_auth(proto::ListAuthRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?;
        Ok(answer.into_inner())
    }))
}
