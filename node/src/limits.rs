//! The size rules every way in (embedded calls, gRPC requests) applies to keys and values.

use crate::{Error, Result};

pub(crate) fn check_key(key: &[u8], max: usize) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey { max });
    }
    if key.len() > max {
        return Err(Error::KeyTooLarge {
            len: key.len(),
            max,
        });
    }
    Ok(())
}

pub(crate) fn check_value(value: &[u8], max: usize) -> Result<()> {
    if value.len() > max {
        return Err(Error::ValueTooLarge {
            len: value.len(),
            max,
        });
    }
    Ok(())
}
