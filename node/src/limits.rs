//! The size rules every way in (embedded calls, gRPC requests) applies to keys and values,
//! with the limits an [`Options`] sets.

use hanse_shard::Mutation;

use crate::{Error, Options, Result};

impl Options {
    pub(crate) fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.max_key_bytes;
        if key.is_empty() {
            return Err(Error::EmptyKey { max });
        }
        if key.len() > max {
            return Err(Error::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        if hanse_shard::range::is_system_key(key) {
            return Err(Error::ReservedKey);
        }
        Ok(())
    }

    pub(crate) fn check_value(&self, value: &[u8]) -> Result<()> {
        let max = self.max_value_bytes;
        if value.len() > max {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        Ok(())
    }

    /// Checks the key of a mutation and, for a put, its value.
    pub(crate) fn check_mutation(&self, mutation: &Mutation) -> Result<()> {
        self.check_key(mutation.key())?;
        match mutation {
            Mutation::Put { value, .. } => self.check_value(value),
            Mutation::Delete { .. } => Ok(()),
        }
    }
}
