//! The size rules every way into a shard's log applies to keys and values (embedded
//! calls, client requests, forwarded batches), so no path lets through what another
//! refuses.

use crate::command::Mutation;
use crate::knobs;
use crate::range::is_system_key;

/// How long keys and values may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            key_bytes_max: knobs::KEY_BYTES_MAX,
            value_bytes_max: knobs::VALUE_BYTES_MAX,
        }
    }
}

/// Why a key or value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("key is empty: keys must be 1 to {max} bytes")]
    EmptyKey { max: usize },
    #[error(
        "keys starting with byte 0xff are reserved for Hanse's system keyspace (the routing table); use keys that start with a lower byte"
    )]
    ReservedKey,
    #[error("key is {len} bytes, over the limit of {max} bytes")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value is {len} bytes, over the limit of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
}

impl Limits {
    pub fn check_key(&self, key: &[u8]) -> Result<(), LimitError> {
        let max = self.key_bytes_max;
        if key.is_empty() {
            return Err(LimitError::EmptyKey { max });
        }
        if key.len() > max {
            return Err(LimitError::KeyTooLarge {
                len: key.len(),
                max,
            });
        }
        if is_system_key(key) {
            return Err(LimitError::ReservedKey);
        }
        Ok(())
    }

    pub fn check_value(&self, value: &[u8]) -> Result<(), LimitError> {
        let max = self.value_bytes_max;
        if value.len() > max {
            return Err(LimitError::ValueTooLarge {
                len: value.len(),
                max,
            });
        }
        Ok(())
    }

    /// Checks the key of a mutation and, for a put, its value.
    pub fn check_mutation(&self, mutation: &Mutation) -> Result<(), LimitError> {
        self.check_key(mutation.key())?;
        match mutation {
            Mutation::Put { value, .. } => self.check_value(value),
            Mutation::Delete { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_checked_against_the_limits() {
        let limits = Limits {
            key_bytes_max: 4,
            value_bytes_max: 3,
        };
        assert_eq!(limits.check_key(b""), Err(LimitError::EmptyKey { max: 4 }));
        assert_eq!(
            limits.check_key(b"12345"),
            Err(LimitError::KeyTooLarge { len: 5, max: 4 })
        );
        assert_eq!(limits.check_key(&[0xff, 1]), Err(LimitError::ReservedKey));
        assert_eq!(limits.check_key(b"k"), Ok(()));
        let put = |value: &[u8]| Mutation::Put {
            key: b"k".to_vec(),
            value: value.to_vec(),
        };
        assert_eq!(
            limits.check_mutation(&put(b"1234")),
            Err(LimitError::ValueTooLarge { len: 4, max: 3 })
        );
        assert_eq!(limits.check_mutation(&put(b"123")), Ok(()));
    }
}
