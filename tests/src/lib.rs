//! hanse-tests: integration tests and the harnesses that drive real processes.
//!
//! [`crash`] is the protocol between the crash-test writer (a child process that is
//! killed with SIGKILL at random points) and the test that checks what survived.
//! [`linearizability`] judges a history of operations on a cluster (the chaos harness's
//! checker); [`chaos`] is the harness that runs a real cluster under faults and produces
//! those histories.

pub mod chaos;
pub mod crash;
pub mod linearizability;
