//! The limits of connection set-up, each with why it is what it is.

use std::time::Duration;

/// How long a TLS handshake may take before the connection is dropped: a few round trips
/// between continents take well under a second; a caller that stalls must not hold a
/// handshake slot for long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes a node runs at once; further connections wait to be accepted. Each costs a
/// little memory and CPU, and a flood of half-open connections must not exhaust either.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;

/// Accepted connections handed to the server and not yet taken by it.
pub const ACCEPTED_QUEUE_MAX: usize = 64;

/// How long the accept loop rests after the kernel refused a connection (out of file
/// descriptors, say), so it does not spin.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The longest user name a certificate may carry (it appears in logs and grants).
pub const USER_NAME_BYTES_MAX: usize = 64;

/// How long a CA certificate made by `hanse cert create-ca` is valid.
pub const CA_VALIDITY_DAYS: u32 = 3650;

/// How long a node or client certificate is valid by default: long enough that a test
/// cluster never sees one expire, short enough that a lost key is not good forever.
pub const LEAF_VALIDITY_DAYS: u32 = 730;

/// How far back a new certificate's validity starts, so that a machine whose clock is a
/// little behind the issuer's still accepts it.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

/// The shortest password a user may be given: below this, guessing beats any hashing.
pub const PASSWORD_BYTES_MIN: usize = 8;

/// The longest password: a login hashes what it is sent, and that work stays bounded.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// PBKDF2-HMAC-SHA256 rounds per password hash (OWASP's recommendation for this hash):
/// about a third of a second of one core per login, so that guessing is slow.
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// How long a token lives unless the login asks otherwise.
pub const TOKEN_TTL_DEFAULT: Duration = Duration::from_secs(3600);

/// The longest a token may live: a leaked token should not be good for long.
pub const TOKEN_TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// Tokens one user holds at once; a further login ends the one that expires first. The
/// table is one record every node reads each second, and it must stay small.
pub const TOKENS_PER_USER_MAX: usize = 16;
