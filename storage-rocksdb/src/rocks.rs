//! What the engine and the log writer share about the RocksDB they write to.

use rocksdb::{ColumnFamily, DB, WriteBatch};

use hanse_storage::{Cf, Error, Result, WriteOp};

/// RocksDB's errors as the storage interface's.
pub(crate) trait OrEngine<T> {
    fn or_engine(self) -> Result<T>;
}

impl<T> OrEngine<T> for std::result::Result<T, rocksdb::Error> {
    fn or_engine(self) -> Result<T> {
        self.map_err(|e| Error::Engine {
            detail: e.into_string(),
        })
    }
}

/// The handle of `cf`.
pub(crate) fn cf_handle(db: &DB, cf: Cf) -> &ColumnFamily {
    db.cf_handle(cf.name())
        .expect("every column family is created when the engine opens")
}

/// Adds `ops` to a RocksDB write batch.
pub(crate) fn fill_batch(db: &DB, batch: &mut WriteBatch, ops: &[WriteOp]) {
    for op in ops {
        match op {
            WriteOp::Put { cf, key, value } => batch.put_cf(cf_handle(db, *cf), key, value),
            WriteOp::Delete { cf, key } => batch.delete_cf(cf_handle(db, *cf), key),
            // An empty range is no write: RocksDB would refuse an inverted one (and count
            // an empty one in the batch's sequence numbers without replaying it).
            WriteOp::DeleteRange { cf, start, end } if start < end => {
                batch.delete_range_cf(cf_handle(db, *cf), start, end)
            }
            WriteOp::DeleteRange { .. } => {}
        }
    }
}
