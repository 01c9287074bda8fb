//! The `hanse` command line: `hanse demo`, `hanse kv ...`.

mod admin;
mod backup;
mod cert;
mod cluster;
mod connect;
mod demo;
mod display;
mod kv;
mod log_limit;
mod planner;
mod server;
mod tour;
mod users;

use std::process::ExitCode;

/// jemalloc, as TiKV uses: against glibc's malloc it cut an idle 3,000-shard node's CPU by
/// a third and raised its throughput by 70 % (docs/scale.md, "The allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hanse",
    version,
    about = "Hanse: a geo-distributed, strongly consistent key-value store"
)]
struct Cli {
    /// How log lines are written to standard error: `text` for people, `json` (one
    /// object per line) for a log pipeline. RUST_LOG picks what is logged.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "HANSE_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// What is logged when RUST_LOG does not say: a node's own events from `info` (its
/// start, configuration, leadership moves, balancing), everything else's warnings.
const SERVER_LOG: &str =
    "warn,hanse=info,hanse_node=info,hanse_consensus=info,hanse_storage_rocksdb=info";

/// Lines a second one place in the code may log (see [`log_limit`]).
const LOG_LINES_PER_SITE_PER_SECOND: u32 = 20;

/// Logs to standard error in `format`; RUST_LOG, else `default`, says what, and each
/// place in the code logs at most [`LOG_LINES_PER_SITE_PER_SECOND`] lines a second.
fn init_logging(format: LogFormat, default: &str) {
    use tracing_subscriber::filter::FilterExt;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, fmt};

    let wanted = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let limit = log_limit::PerCallsite::new(LOG_LINES_PER_SITE_PER_SECOND);
    let filter = wanted.and(limit.clone());
    let lines = fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Text => lines.with_filter(filter).boxed(),
        LogFormat::Json => lines
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry().with(lines).init();
    log_limit::report_held_back(limit);
}

#[derive(Subcommand)]
enum Command {
    /// The story on one machine: a cluster in three regions under a moving Hamburg
    /// hotspot, shown live, then a summary and a report (`--embedded`: a short tour of
    /// the embedded store instead).
    Demo(demo::DemoArgs),
    /// Reads and writes keys.
    Kv(kv::KvArgs),
    /// Runs one cluster node.
    Server(server::ServerArgs),
    /// Starts, shows and stops a local cluster of real processes on 127.0.0.x.
    Cluster(cluster::ClusterArgs),
    /// Asks a node about itself and its shards.
    Admin(admin::AdminArgs),
    /// Copies every shard of a running cluster into a backup directory.
    Backup(backup::BackupArgs),
    /// Builds a new local cluster from a backup directory (checked first).
    Restore(backup::RestoreArgs),
    /// Makes and lists the cluster's TLS certificates.
    Cert(cert::CertArgs),
    /// Adds, removes and lists users and gives them roles.
    User(users::UserArgs),
    /// Adds, removes and lists roles and what keys they grant.
    Role(users::RoleArgs),
    /// Trains and evaluates the planner's network in the simulator.
    Planner(planner::PlannerArgs),
    /// Runs the load generator: `hanse bench run --endpoints ...` (see `hanse bench --help`).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Runs the chaos harness: `hanse chaos run --nodes 5 --duration 60s --seed S` (see
    /// `hanse chaos --help`).
    #[command(disable_help_flag = true)]
    Chaos {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Server(_) => SERVER_LOG,
        _ => "warn",
    };
    init_logging(cli.log_format, default_log);
    if matches!(cli.command, Command::Kv(_) | Command::Admin(_)) {
        die_quietly_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Demo(args) => demo::run(args).map(|()| ExitCode::SUCCESS),
        Command::Kv(args) => kv::run(args),
        Command::Server(args) => server::run(args).map(|()| ExitCode::SUCCESS),
        Command::Cluster(args) => cluster::run(args).map(|()| ExitCode::SUCCESS),
        Command::Admin(args) => admin::run(args).map(|()| ExitCode::SUCCESS),
        Command::Backup(args) => backup::backup(args).map(|()| ExitCode::SUCCESS),
        Command::Restore(args) => backup::restore(args).map(|()| ExitCode::SUCCESS),
        Command::Cert(args) => cert::run(args).map(|()| ExitCode::SUCCESS),
        Command::User(args) => users::user(args).map(|()| ExitCode::SUCCESS),
        Command::Role(args) => users::role(args).map(|()| ExitCode::SUCCESS),
        Command::Planner(args) => planner::run(args).map(|()| ExitCode::SUCCESS),
        Command::Bench { args } => sibling("hanse-bench", "hanse-bench", &args),
        Command::Chaos { args } => sibling("hanse-chaos", "hanse-tests", &args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// Runs the binary `name` (of package `package`) built next to this one. The load
/// generator and the chaos harness live in crates of their own, and the planner's
/// training is the one process that loads libtorch, so they meet as processes.
pub(crate) fn sibling(name: &str, package: &str, args: &[String]) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        exe.exists(),
        "{} is not built: run `cargo build -p {package}` (scripts/test.sh builds every binary)",
        exe.display()
    );
    let status = std::process::Command::new(&exe).args(args).status()?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(2)),
        None => ExitCode::from(2),
    })
}

/// The error and its causes on one line, leaving out causes whose text an outer message
/// already includes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Lets a closed standard output (`hanse kv scan | head`) end the process silently, as
/// it ends other Unix tools, instead of a panic in `println!`. Only for the short-lived
/// commands that print: Rust ignores SIGPIPE so that long-running nodes see a closed
/// connection as an error rather than die of it (their socket writes also pass
/// MSG_NOSIGNAL, so the clients here are safe either way).
fn die_quietly_on_closed_pipe() {
    // SAFETY: sets this process's SIGPIPE disposition to the default before any thread
    // that writes to a pipe or socket starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
