//! `hanse cert create-ca|create-node|create-client|list --certs-dir DIR`: the cluster's
//! TLS material. Every node and client certificate is signed by the CA in DIR and names
//! its node id or user; keys are written readable by their owner only.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use hanse_security::issue;
use hanse_security::{CertsDir, Identity, describe};

#[derive(Args)]
pub struct CertArgs {
    /// The certificates directory (created with owner-only permissions).
    #[arg(long, global = true, env = "HANSE_CERTS_DIR", value_name = "DIR")]
    certs_dir: Option<PathBuf>,
    #[command(subcommand)]
    op: CertOp,
}

#[derive(Subcommand)]
enum CertOp {
    /// Creates the cluster's CA (`ca.crt`, `ca.key`); an existing CA is never replaced.
    CreateCa {
        /// Days the CA is valid (default 3650).
        #[arg(long)]
        days: Option<u32>,
    },
    /// Creates node N's certificate (`node-N.crt`, `node-N.key`), valid for the host
    /// names and addresses its peers and clients connect to.
    CreateNode {
        #[arg(long, value_name = "N")]
        node_id: u64,
        /// A host name or IP address the node is reached at (repeatable, or comma
        /// separated).
        #[arg(
            long = "host",
            value_name = "HOST",
            value_delimiter = ',',
            required = true
        )]
        hosts: Vec<String>,
        /// Days it is valid (default 730).
        #[arg(long)]
        days: Option<u32>,
        /// Replace an existing certificate (a rotation: running nodes reload it).
        #[arg(long)]
        overwrite: bool,
    },
    /// Creates a client certificate for a user (`client-USER.crt`, `client-USER.key`).
    CreateClient {
        #[arg(long, value_name = "NAME")]
        user: String,
        /// Days it is valid (default 730).
        #[arg(long)]
        days: Option<u32>,
        /// Replace an existing certificate.
        #[arg(long)]
        overwrite: bool,
    },
    /// Lists the certificates in the directory: whom each names, its hosts, and when it
    /// expires.
    List,
}

pub fn run(args: CertArgs) -> Result<()> {
    let Some(dir) = args.certs_dir else {
        anyhow::bail!("give --certs-dir DIR (or set HANSE_CERTS_DIR)");
    };
    let dir = CertsDir::new(dir);
    match args.op {
        CertOp::CreateCa { days } => {
            issue::create_ca(&dir, days)?;
            println!("created {}", dir.ca_cert().display());
        }
        CertOp::CreateNode {
            node_id,
            hosts,
            days,
            overwrite,
        } => {
            anyhow::ensure!(node_id != 0, "--node-id must be 1 or more");
            let identity = Identity::Node(node_id);
            issue::create_leaf(
                &dir,
                &identity,
                &hosts,
                issue::leaf_validity(days),
                overwrite,
            )?;
            println!("created {}", dir.pair(&identity).0.display());
        }
        CertOp::CreateClient {
            user,
            days,
            overwrite,
        } => {
            let identity = Identity::user(&user)?;
            issue::create_leaf(&dir, &identity, &[], issue::leaf_validity(days), overwrite)?;
            println!("created {}", dir.pair(&identity).0.display());
        }
        CertOp::List => list(&dir)?,
    }
    Ok(())
}

fn list(dir: &CertsDir) -> Result<()> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.path().display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "crt"))
        .collect();
    paths.sort();
    println!("{:<24} {:<16} {:<30} expires", "file", "names", "hosts");
    for path in paths {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match describe(&path) {
            Ok(info) => {
                let names = info
                    .identity
                    .as_ref()
                    .map_or("the CA".to_string(), Identity::to_string);
                let days = info.remaining().as_secs() / 86_400;
                let expires = match info.remaining().is_zero() {
                    true => "EXPIRED".to_string(),
                    false => format!("in {days} days"),
                };
                println!(
                    "{name:<24} {names:<16} {:<30} {expires}",
                    info.hosts.join(",")
                );
            }
            Err(e) => println!("{name:<24} unreadable: {e}"),
        }
    }
    Ok(())
}
