//! How the `hanse` commands reach a cluster: TLS with a client certificate of the
//! cluster's CA (`--certs-dir`, `--user`), TLS with the CA only and a token from
//! `hanse user login` (`--token`), or plaintext with `--insecure` for a cluster whose
//! nodes run without TLS. Nothing is plaintext unless asked for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use hanse_client::proto::admin_client::AdminClient;
use hanse_client::{Bearer, CertsDir, ClientOptions, ClientTls, Identity};
use hanse_node::config::NodeConfig;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// How a command's connections prove who calls.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// TLS settings (`None`: plaintext).
    pub tls: Option<Arc<ClientTls>>,
    /// A token from a login, for a caller without a certificate.
    pub token: Option<String>,
}

impl Credentials {
    /// Client options that connect with these credentials.
    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            tls: self.tls.clone(),
            token: self.token.clone(),
            ..ClientOptions::default()
        }
    }
}

/// The options every command that talks to a running cluster takes.
#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    /// The directory with the cluster CA (`ca.crt`) and the user's certificate and key
    /// (`client-USER.crt`, `client-USER.key`), as `hanse cert` makes them; a local
    /// cluster keeps them in `DIR/certs`.
    #[arg(long, global = true, env = "HANSE_CERTS_DIR", value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// The user whose certificate to present.
    #[arg(
        long,
        global = true,
        env = "HANSE_USER",
        default_value = "root",
        value_name = "NAME"
    )]
    pub user: String,
    /// A token from `hanse user login`, sent instead of a client certificate (the
    /// connection still checks the nodes against the CA in --certs-dir).
    #[arg(
        long,
        global = true,
        env = "HANSE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Talk plaintext, to a cluster whose nodes run `insecure = true` (wins over
    /// --certs-dir, which HANSE_CERTS_DIR may set).
    #[arg(long, global = true, env = "HANSE_INSECURE")]
    pub insecure: bool,
}

impl ConnectArgs {
    /// The credentials these options ask for.
    pub fn credentials(&self) -> Result<Credentials> {
        match (&self.certs_dir, self.insecure) {
            (_, true) => Ok(Credentials::default()),
            (Some(dir), false) if self.token.is_some() => Ok(Credentials {
                tls: Some(ca_only(dir)?),
                token: self.token.clone(),
            }),
            (Some(dir), false) => user_tls(dir, &self.user),
            (None, false) => bail!(
                "no certificates: give --certs-dir DIR (or set HANSE_CERTS_DIR) with the \
                 cluster's ca.crt and client-{}.crt/.key (`hanse cert create-client` makes \
                 them), or --insecure for a cluster that runs without TLS",
                self.user
            ),
        }
    }
}

/// Which nodes a command asks, how it reaches them, and how it answers.
#[derive(Args)]
pub struct Target {
    /// Nodes of the cluster, HOST:PORT, comma-separated (the first that answers serves).
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT,...",
        value_delimiter = ','
    )]
    pub endpoints: Vec<String>,
    /// JSON for scripts instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

impl Target {
    /// The TLS settings, once the endpoints are known to be given.
    pub fn credentials(&self) -> Result<Credentials> {
        anyhow::ensure!(!self.endpoints.is_empty(), "give --endpoints HOST:PORT,...");
        self.connect.credentials()
    }
}

/// The TLS settings of `user` from the certificates in `dir`.
pub fn user_tls(dir: &Path, user: &str) -> Result<Credentials> {
    Ok(Credentials {
        tls: Some(hanse_client::user_tls(dir, user)?),
        token: None,
    })
}

/// TLS settings that trust the CA in `dir` and show no certificate (for a login, or a
/// caller with a token).
pub fn ca_only(dir: &Path) -> Result<Arc<ClientTls>> {
    // Only `ca` of the files is read.
    let files = CertsDir::new(dir).files(&Identity::User("login".into()));
    Ok(ClientTls::without_certificate(files)?)
}

/// How the commands that manage the local cluster in `dir` reach it: as `root` with the
/// certificates its nodes use (which `hanse cluster up` made), or plaintext when its
/// nodes run insecure.
pub fn cluster_tls(dir: &Path, configs: &[NodeConfig]) -> Result<Credentials> {
    let Some(certs) = configs
        .iter()
        .find(|c| !c.insecure)
        .and_then(|c| c.certs_dir.clone())
    else {
        return Ok(Credentials::default());
    };
    user_tls(&certs, "root").with_context(|| {
        format!(
            "the certificates of the cluster in {} (made by `hanse cluster up`)",
            dir.display()
        )
    })
}

/// The Admin service of the node at `endpoint`, connected on first use.
pub fn admin(
    endpoint: &str,
    credentials: &Credentials,
) -> Result<AdminClient<InterceptedService<Channel, Bearer>>> {
    Ok(hanse_client::admin(
        endpoint,
        credentials.tls.clone(),
        credentials.token.as_deref(),
    )?)
}
