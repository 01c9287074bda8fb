//! One simulated request: what the workload families and recorded traces produce, and
//! the simulator serves.

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write {
        bytes: u32,
    },
    /// Reads `span` keys from the request's key on.
    Scan {
        span: u64,
    },
}

/// One request of a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub key: u64,
    pub op: Op,
    /// Index of the region the request comes from.
    pub origin: usize,
}
