use hanse_consensus::GroupError;
use hanse_shard::limits::LimitError;
use hanse_shard::{Rejection, ShardId};

/// Every way a [`crate::Db`] call can fail. Input errors change nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key is empty: keys must be 1 to {max} bytes")]
    EmptyKey { max: usize },

    #[error(
        "keys starting with byte 0xff are reserved for Hanse's system keyspace (the routing table); use keys that start with a lower byte"
    )]
    ReservedKey,

    #[error("key is {len} bytes, over the limit of {max} bytes (Options::max_key_bytes)")]
    KeyTooLarge { len: usize, max: usize },

    #[error("value is {len} bytes, over the limit of {max} bytes (Options::max_value_bytes)")]
    ValueTooLarge { len: usize, max: usize },

    #[error("ingested keys must strictly ascend; pair {at} is not above the one before")]
    IngestOrder { at: usize },

    #[error("scan range is reversed: start \"{start}\" is after end \"{end}\"")]
    InvalidRange { start: String, end: String },

    #[error("cannot split at \"{key}\": {reason}")]
    InvalidSplit { key: String, reason: String },

    #[error(
        "no shard owns key \"{key}\" right now (an earlier split did not finish); reopen the store"
    )]
    ShardUnavailable { key: String },

    #[error(transparent)]
    Storage(#[from] hanse_storage::Error),

    #[error(transparent)]
    Group(Box<GroupError>),

    #[error("shard {shard}: the write did not complete: {detail}")]
    Raft { shard: ShardId, detail: String },

    #[error("shard {shard} refused the request: {rejection}")]
    Rejected {
        shard: ShardId,
        rejection: Box<Rejection>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<LimitError> for Error {
    fn from(e: LimitError) -> Self {
        match e {
            LimitError::EmptyKey { max } => Error::EmptyKey { max },
            LimitError::ReservedKey => Error::ReservedKey,
            LimitError::KeyTooLarge { len, max } => Error::KeyTooLarge { len, max },
            LimitError::ValueTooLarge { len, max } => Error::ValueTooLarge { len, max },
        }
    }
}

impl From<GroupError> for Error {
    fn from(e: GroupError) -> Self {
        Error::Group(Box::new(e))
    }
}

/// A key as people read it in messages: printable ASCII as is, other bytes escaped.
pub(crate) fn printable(key: &[u8]) -> String {
    const SHOWN_BYTES_MAX: usize = 64;
    let shown = &key[..key.len().min(SHOWN_BYTES_MAX)];
    let mut text = shown.escape_ascii().to_string();
    if key.len() > SHOWN_BYTES_MAX {
        text.push_str(&format!("…({} bytes)", key.len()));
    }
    text
}
