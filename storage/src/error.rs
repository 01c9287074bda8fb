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

    #[error("data directory {path} is corrupted: {detail}; restore it from a backup or a replica")]
    Corrupted { path: PathBuf, detail: String },

    #[error("RocksDB error: {0}")]
    RocksDb(#[from] rocksdb::Error),

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
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
