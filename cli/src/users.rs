//! `hanse user add|remove|grant|revoke|list` and `hanse role add|remove|grant|revoke|list`:
//! who may do what in a cluster (etcd's model; see docs/security.md). A user is the name
//! in a client certificate (`hanse cert create-client --user NAME`); roles grant `read`
//! or `readwrite` on key prefixes or ranges, and the built-in roles `admin` (the Admin
//! service) and `root` (everything). Changing them takes `root`.
//!
//! A user with a password (`hanse user passwd`) may also log in without a certificate
//! (`hanse user login`) and send the token it gets (`--token`, `HANSE_TOKEN`).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use hanse_client::proto::{self, auth_request::Change};
use hanse_node::units::parse_duration;
use serde_json::json;

use crate::admin::first_answer;
use crate::connect::{Credentials, Target, admin, ca_only};

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
    /// Gives a user a role (`root`, `admin`, `monitor`, or one `hanse role add` made).
    Grant { name: String, role: String },
    /// Takes a role from a user.
    Revoke { name: String, role: String },
    /// Sets a user's password, so it may log in (ending its tokens). The password is
    /// read from HANSE_PASSWORD, else from the first line of standard input.
    Passwd { name: String },
    /// Logs in with a password (from HANSE_PASSWORD or standard input, as for `passwd`)
    /// and prints a token to send with --token or HANSE_TOKEN; needs no client
    /// certificate, only the cluster's ca.crt in --certs-dir.
    Login {
        name: String,
        /// How long the token lives (at most a day).
        #[arg(long, value_parser = parse_duration, default_value = "60m")]
        ttl: std::time::Duration,
    },
    /// Ends every token of a user.
    RevokeTokens { name: String },
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
        UserOp::Passwd { name } => Change::SetPassword(proto::UserPassword {
            user: name,
            password: read_password()?,
        }),
        UserOp::Login { name, ttl } => return login(&args.target, name, ttl),
        UserOp::RevokeTokens { name } => Change::RevokeTokens(name),
        UserOp::List => {
            let list = list(&args.target)?;
            for user in &list.users {
                match args.target.json {
                    true => println!(
                        "{}",
                        json!({
                            "user": user.name,
                            "roles": user.roles,
                            "password": user.has_password,
                            "tokens": user.tokens,
                        })
                    ),
                    false => println!(
                        "{:<20} {:<30} {}",
                        user.name,
                        user.roles.join(","),
                        match user.has_password {
                            true => format!("password, {} tokens", user.tokens),
                            false => "certificate only".to_string(),
                        }
                    ),
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
    let tls = target.connect.credentials()?;
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

/// A password from HANSE_PASSWORD, else the first line of standard input.
fn read_password() -> Result<String> {
    if let Ok(password) = std::env::var("HANSE_PASSWORD") {
        return Ok(password);
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    anyhow::ensure!(
        !password.is_empty(),
        "no password: set HANSE_PASSWORD or give it on standard input"
    );
    Ok(password)
}

/// Logs `user` in and prints the token (its expiry goes to standard error).
fn login(target: &Target, user: String, ttl: std::time::Duration) -> Result<()> {
    anyhow::ensure!(
        !target.endpoints.is_empty(),
        "give --endpoints HOST:PORT,..."
    );
    let connect = &target.connect;
    let credentials = match (&connect.certs_dir, connect.insecure) {
        (_, true) => Credentials::default(),
        (Some(dir), false) => Credentials {
            tls: Some(ca_only(dir)?),
            token: None,
        },
        (None, false) => bail!(
            "give --certs-dir DIR (or set HANSE_CERTS_DIR) with the cluster's ca.crt, or \
             --insecure for a cluster that runs without TLS"
        ),
    };
    let request = proto::LoginRequest {
        user,
        password: read_password()?,
        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
    };
    let answer = runtime()?.block_on(first_answer(&target.endpoints, async |endpoint| {
        let answer = admin(endpoint, &credentials)?
            .login(request.clone())
            .await
            .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?;
        Ok(answer.into_inner())
    }))?;
    match target.json {
        true => println!(
            "{}",
            json!({"token": answer.token, "expires_unix_ms": answer.expires_unix_ms})
        ),
        false => {
            println!("{}", answer.token);
            let left = std::time::Duration::from_millis(answer.expires_unix_ms)
                .saturating_sub(std::time::UNIX_EPOCH.elapsed().unwrap_or_default());
            eprintln!(
                "the token expires in {}s; send it with --token or HANSE_TOKEN",
                left.as_secs()
            );
        }
    }
    Ok(())
}

fn list(target: &Target) -> Result<proto::ListAuthResponse> {
    anyhow::ensure!(
        !target.endpoints.is_empty(),
        "give --endpoints HOST:PORT,..."
    );
    let tls = target.connect.credentials()?;
    runtime()?.block_on(first_answer(&target.endpoints, async |endpoint| {
        let answer = admin(endpoint, &tls)?
            .list_auth(proto::ListAuthRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{} ({:?})", s.message(), s.code()))?;
        Ok(answer.into_inner())
    }))
}
