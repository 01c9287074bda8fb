//! The peers a user would pick instead of Hanse, run for real on this machine with the
//! same durability: a 3-member etcd cluster (Debian's `etcd-server`) and PostgreSQL
//! (Debian's server) with a key-value table. Each is started in a temporary directory
//! and stopped when dropped; the processes also die with the thread that started them
//! (`PR_SET_PDEATHSIG`), so an interrupted benchmark leaves nothing running.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a peer may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a peer could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0} is not installed (scripts/setup.sh installs it from Debian's packages)")]
    NotInstalled(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} did not start: {log}")]
    DidNotStart { what: String, log: String },
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PeerError {
    let what = what.into();
    move |source| PeerError::Io { what, source }
}

/// The first executable named `name` in `dirs`, then on `PATH`.
fn find_binary(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    dirs.iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Makes `command`'s process die with the thread that spawns it.
fn die_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of this process.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

/// Asks `child` to stop with `signal`, then kills it if it has not within ten seconds.
fn stop(child: &mut Child, signal: i32) {
    // SAFETY: kill(2) has no memory effects; the pid is our own child's.
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of a log file, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
    format!("{tail} (log: {})", path.display())
}

/// Fails when any of `children` has exited: it will not start answering.
fn check_running(children: &mut [(Child, PathBuf)], what: &str) -> Result<(), PeerError> {
    for (child, log) in children {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(PeerError::DidNotStart {
                what: format!("{what} ({status})"),
                log: log_tail(log),
            });
        }
    }
    Ok(())
}

/// A 3-member etcd cluster on 127.0.0.21-23 (client `port`, peer `port + 1`), each
/// member with its own data directory and etcd's default durability (the WAL is
/// fsynced before a write is acknowledged).
pub struct Etcd {
    members: Vec<(Child, PathBuf)>,
    pub endpoints: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub const MEMBERS: u8 = 3;

    /// Starts the members; [`Etcd::connect`] waits until they answer.
    pub fn start(port: u16) -> Result<Etcd, PeerError> {
        let etcd = find_binary("etcd", &[]).ok_or(PeerError::NotInstalled("etcd"))?;
        let dir = tempfile::tempdir().map_err(io("a temporary directory"))?;
        let ip = |member: u8| format!("127.0.0.{}", 20 + member);
        let initial_cluster: Vec<String> = (1..=Self::MEMBERS)
            .map(|m| format!("m{m}=http://{}:{}", ip(m), port + 1))
            .collect();
        let mut members = Vec::new();
        let mut endpoints = Vec::new();
        for m in 1..=Self::MEMBERS {
            let client_url = format!("http://{}:{port}", ip(m));
            let peer_url = format!("http://{}:{}", ip(m), port + 1);
            let log_path = dir.path().join(format!("m{m}.log"));
            let log =
                std::fs::File::create(&log_path).map_err(io(log_path.display().to_string()))?;
            let child = die_with_parent(
                Command::new(&etcd)
                    .arg(format!("--name=m{m}"))
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("m{m}")))
                    .arg(format!("--listen-client-urls={client_url}"))
                    .arg(format!("--advertise-client-urls={client_url}"))
                    .arg(format!("--listen-peer-urls={peer_url}"))
                    .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                    .arg(format!("--initial-cluster={}", initial_cluster.join(",")))
                    .arg("--initial-cluster-state=new")
                    .arg("--initial-cluster-token=hanse-bench")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log),
            )
            .spawn()
            .map_err(io(format!("starting {}", etcd.display())))?;
            members.push((child, log_path));
            endpoints.push(format!("{}:{port}", ip(m)));
        }
        Ok(Etcd {
            members,
            endpoints,
            _dir: dir,
        })
    }

    /// A client of the cluster once every member serves a linearizable read (the client
    /// spreads its requests over all of them).
    pub async fn connect(&mut self) -> Result<etcd_client::Client, PeerError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            check_running(&mut self.members, "etcd")?;
            let attempt = async {
                for member in &self.endpoints {
                    let mut client = etcd_client::Client::connect([member], None).await?;
                    client.get("hanse-bench-probe", None).await?;
                }
                etcd_client::Client::connect(&self.endpoints, None).await
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(client)) => return Ok(client),
                Ok(Err(e)) if Instant::now() > deadline => return Err(e.into()),
                _ if Instant::now() > deadline => {
                    return Err(PeerError::DidNotStart {
                        what: "etcd".into(),
                        log: log_tail(&self.members[0].1),
                    });
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl Etcd {
    /// The members' processes, for their CPU time.
    pub fn processes(&self) -> crate::cpu::Processes {
        crate::cpu::Processes(self.members.iter().map(|(c, _)| c.id()).collect())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for (child, _) in &mut self.members {
            stop(child, libc::SIGTERM);
        }
    }
}

/// PostgreSQL on 127.0.0.30:`port` in a fresh data directory: fsync and
/// synchronous_commit on (a commit is on disk before it is acknowledged), one table
/// `kv (k bytea primary key, v bytea)`. As root it runs as the `postgres` user, which
/// Debian's package creates (the server refuses to run as root).
pub struct Postgres {
    server: Vec<(Child, PathBuf)>,
    pub address: String,
    _dir: tempfile::TempDir,
}

/// The statements every connection prepares once.
struct Prepared {
    get: tokio_postgres::Statement,
    put: tokio_postgres::Statement,
    scan: tokio_postgres::Statement,
}

/// A fixed pool of connections, each with its prepared statements, handed out in turn
/// (a connection pipelines the queries of the clients that share it).
pub struct PgPool {
    connections: Vec<(tokio_postgres::Client, Prepared)>,
    next: AtomicUsize,
}

impl Postgres {
    /// The server's processes (each connection's backend is a child of them).
    pub fn processes(&self) -> crate::cpu::Processes {
        crate::cpu::Processes(self.server.iter().map(|(c, _)| c.id()).collect())
    }

    /// Creates the data directory and starts the server; [`Postgres::connect`] waits
    /// until it answers.
    pub fn start(port: u16) -> Result<Postgres, PeerError> {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|dirs| dirs.flatten().map(|d| d.path().join("bin")).collect())
            .unwrap_or_default();
        versions.sort_by_key(|dir| {
            dir.parent()
                .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                .unwrap_or(0)
        });
        versions.reverse();
        let initdb = find_binary("initdb", &versions);
        let postgres = find_binary("postgres", &versions);
        let (Some(initdb), Some(postgres)) = (initdb, postgres) else {
            return Err(PeerError::NotInstalled("PostgreSQL's server"));
        };
        let dir = tempfile::tempdir().map_err(io("a temporary directory"))?;
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(io(format!("handing {} to postgres", dir.path().display())))?;
        }
        let as_owner = |command: &mut Command| {
            if let Some((uid, gid)) = owner {
                command.uid(uid).gid(gid);
            }
        };
        let data = dir.path().join("data");
        let mut init = Command::new(&initdb);
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        as_owner(&mut init);
        let out = init
            .output()
            .map_err(io(format!("running {}", initdb.display())))?;
        if !out.status.success() {
            return Err(PeerError::DidNotStart {
                what: "initdb".into(),
                log: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let address = "127.0.0.30".to_string();
        let log_path = dir.path().join("postgres.log");
        let log = std::fs::File::create(&log_path).map_err(io(log_path.display().to_string()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid))
                .map_err(io(log_path.display().to_string()))?;
        }
        let mut server = Command::new(&postgres);
        server
            .arg("-D")
            .arg(&data)
            .args(["-h", &address, "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        as_owner(&mut server);
        let child = die_with_parent(&mut server)
            .spawn()
            .map_err(io(format!("starting {}", postgres.display())))?;
        Ok(Postgres {
            server: vec![(child, log_path)],
            address: format!("{address}:{port}"),
            _dir: dir,
        })
    }

    /// Waits until the server answers, creates the table and opens `connections`
    /// connections with their statements prepared (spawns their tasks on this runtime).
    pub async fn connect(&mut self, connections: usize) -> Result<PgPool, PeerError> {
        let (host, port) = self.address.split_once(':').expect("host:port");
        let config = format!("host={host} port={port} user=postgres dbname=postgres");
        let deadline = Instant::now() + START_TIMEOUT;
        let first = loop {
            check_running(&mut self.server, "postgres")?;
            match open(&config).await {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => {
                    return Err(PeerError::DidNotStart {
                        what: format!("postgres ({e})"),
                        log: log_tail(&self.server[0].1),
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        first
            .batch_execute("CREATE TABLE IF NOT EXISTS kv (k bytea PRIMARY KEY, v bytea NOT NULL)")
            .await?;
        let mut pool = vec![first];
        while pool.len() < connections.max(1) {
            pool.push(open(&config).await?);
        }
        let mut prepared = Vec::new();
        for client in pool {
            let statements = Prepared {
                get: client.prepare("SELECT v FROM kv WHERE k = $1").await?,
                put: client
                    .prepare(
                        "INSERT INTO kv (k, v) VALUES ($1, $2) \
                         ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                    )
                    .await?,
                scan: client
                    .prepare("SELECT k, v FROM kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3")
                    .await?,
            };
            prepared.push((client, statements));
        }
        Ok(PgPool {
            connections: prepared,
            next: AtomicUsize::new(0),
        })
    }
}

/// The `postgres` user's ids when running as root, `None` otherwise.
fn server_user() -> Result<Option<(u32, u32)>, PeerError> {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    // SAFETY: getpwnam(3) with a valid C string; the record is read before any other
    // call could overwrite it.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(PeerError::NotInstalled(
            "the postgres user (PostgreSQL refuses to run as root)",
        ));
    }
    // SAFETY: non-null, as checked.
    let entry = unsafe { &*entry };
    Ok(Some((entry.pw_uid, entry.pw_gid)))
}

async fn open(config: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(config, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        // The connection ends when its client is dropped or the server goes away; the
        // client's calls report that.
        let _ = connection.await;
    });
    Ok(client)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: PostgreSQL's fast shutdown (ends the sessions, checkpoints, exits).
        for (child, _) in &mut self.server {
            stop(child, libc::SIGINT);
        }
    }
}

impl PgPool {
    fn connection(&self) -> &(tokio_postgres::Client, Prepared) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        &self.connections[i]
    }

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, tokio_postgres::Error> {
        let (client, prepared) = self.connection();
        let row = client.query_opt(&prepared.get, &[&key]).await?;
        Ok(row.map(|row| row.get(0)))
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), tokio_postgres::Error> {
        let (client, prepared) = self.connection();
        client.execute(&prepared.put, &[&key, &value]).await?;
        Ok(())
    }

    /// Up to `limit` pairs with keys in `start..end`.
    pub async fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, tokio_postgres::Error> {
        let (client, prepared) = self.connection();
        let rows = client
            .query(&prepared.scan, &[&start, &end, &i64::from(limit)])
            .await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }
}
