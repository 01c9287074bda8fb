//! `hanse server --config node.toml`: runs one cluster node until SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use hanse_node::config::NodeConfig;

#[derive(Args)]
pub struct ServerArgs {
    /// The node's TOML configuration (see `hanse_node::config` for the fields).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Serve plaintext with nobody authenticated, as `insecure = true` in the config.
    #[arg(long)]
    insecure: bool,
}

pub fn run(args: ServerArgs) -> Result<()> {
    let config = NodeConfig::load_as(&args.config, args.insecure)?;
    hanse_node::server::system(config.runtime_threads).block_on(async {
        let node = hanse_node::server::start(config.clone())
            .await
            .with_context(|| format!("starting node {}", config.node_id))?;
        // Once started: a node that cannot start says only why.
        config.log_effective();
        println!(
            "hanse node {} ({}) serving on {}",
            config.node_id, config.region, node.local_addr
        );
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("installing the SIGTERM handler")?;
        let mut hang_up = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("installing the SIGHUP handler")?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = terminate.recv() => break,
                // Certificates rotated: new connections use the new ones.
                _ = hang_up.recv() => node.reload_certificates(),
            }
        }
        node.stop().await;
        Ok(())
    })
}
