use std::path::PathBuf;

/// Everything that can go wrong below the consensus layer. Each variant says what
/// happened and, where a person can act, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{path} is not a Hanse data directory (no HANSE marker file); point --data-dir at an empty or Hanse directory"
    )]
    NotADataDir { path: PathBuf },

    #[error(
        "{path} was written by a newer Hanse (data format {found}, this build reads up to {supported}); upgrade Hanse to open it"
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "{path} was written by an older Hanse (data format {found}; this build reads format {supported}); Hanse has no in-place upgrade yet: open it with the build that wrote it"
    )]
    OlderFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "{path} is already open in another process (lock held on {path}/hanse.lock); stop that process first"
    )]
    Locked { path: PathBuf },

    #[error(
        "{path}/db holds a Hanse RocksDB with data, but its HANSE marker file is missing; nothing was changed. If this is the right directory, put the marker back: printf 'hanse data directory\\nformat {format}\\n' > {path}/HANSE"
    )]
    MarkerMissing { path: PathBuf, format: u32 },

    #[error(
        "{path} belongs to node {recorded}; it cannot be started as node {claimed} (config field `node_id`): use that node's own config, or an empty directory for a new node"
    )]
    WrongNode {
        path: PathBuf,
        recorded: u64,
        claimed: u64,
    },

    #[error(
        "{path}: its write-ahead log lost writes this node had made durable (RocksDB recovered up to sequence {recovered}, the durability mark says {durable}): the WAL was truncated or damaged. Starting it as is would break its peers' guarantees; move the directory aside and add the node again as an empty one (hanse admin remove-node, then add-node), or restore it from a backup"
    )]
    LostWrites {
        path: PathBuf,
        recovered: u64,
        durable: u64,
    },

    #[error(
        "a write-ahead-log sync failed ({detail}); this node refuses every write until it is restarted, since writes acknowledged after a failed sync could be lost"
    )]
    Poisoned { detail: String },

    #[error("data directory {path} is corrupted: {detail}; restore it from a backup or a replica")]
    Corrupted { path: PathBuf, detail: String },

    /// An error of the engine underneath (RocksDB's, in words).
    #[error("storage engine error: {detail}")]
    Engine { detail: String },

    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("stored record could not be decoded ({what}): {detail}")]
    Decode { what: &'static str, detail: String },

    #[error("the log writer has stopped; the engine is shutting down")]
    WriterStopped,

    #[error(
        "this store handle is closed: the shard group or process that wrote through it has stopped"
    )]
    Closed,

    #[error("no {what} are left")]
    Exhausted { what: &'static str },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
