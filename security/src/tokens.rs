//! Passwords and the tokens a login gives, for clients that have no certificate.
//!
//! A user with a password logs in (`hanse user login`) and gets a token: 32 random bytes
//! it sends with every request (`authorization: Bearer hanse1.INDEX.SECRET`). The
//! cluster keeps only each token's SHA-256 digest, with its user and expiry, in the
//! users-and-roles record of the meta shard, so every node accepts it, a backup or a
//! stolen record yields no usable token, and changing a user's password or revoking its
//! tokens ends them everywhere. INDEX is the meta shard's applied index when the token
//! was made: a node whose replica has not yet applied that far waits for it before it
//! calls the token unknown.
//!
//! Passwords are kept as PBKDF2-HMAC-SHA256 with a random salt.

use std::fmt::Write as _;
use std::num::NonZeroU32;

use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, pbkdf2};
use serde::{Deserialize, Serialize};

use crate::knobs::{PASSWORD_BYTES_MAX, PASSWORD_BYTES_MIN, PBKDF2_ITERATIONS};

/// What every token starts with: its format's version.
const TOKEN_PREFIX: &str = "hanse1";

/// The bytes of a token's secret.
const SECRET_BYTES: usize = 32;

/// Why a password or token cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "a password must be {PASSWORD_BYTES_MIN} to {PASSWORD_BYTES_MAX} bytes; this one is {0}"
    )]
    PasswordLength(usize),
    #[error("the system's random number generator failed")]
    Random,
}

/// A password as the cluster keeps it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    salt: [u8; 16],
    iterations: u32,
    hash: [u8; 32],
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

fn derive(salt: &[u8], iterations: NonZeroU32, password: &[u8]) -> [u8; 32] {
    let mut hash = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password,
        &mut hash,
    );
    hash
}

impl PasswordHash {
    /// `password` hashed with a new salt; a password of the wrong length is refused.
    pub fn new(password: &str) -> Result<PasswordHash, TokenError> {
        if !(PASSWORD_BYTES_MIN..=PASSWORD_BYTES_MAX).contains(&password.len()) {
            return Err(TokenError::PasswordLength(password.len()));
        }
        let mut salt = [0u8; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| TokenError::Random)?;
        let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).expect("nonzero iterations");
        let hash = derive(&salt, iterations, password.as_bytes());
        Ok(PasswordHash {
            salt,
            iterations: iterations.get(),
            hash,
        })
    }

    /// Whether `password` is the one this was made from (in constant time).
    pub fn verify(&self, password: &str) -> bool {
        let Some(iterations) = NonZeroU32::new(self.iterations) else {
            return false;
        };
        if password.len() > PASSWORD_BYTES_MAX {
            return false;
        }
        pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            &self.salt,
            password.as_bytes(),
            &self.hash,
        )
        .is_ok()
    }

    /// Spends the time a [`verify`](Self::verify) takes, for a login naming no user with
    /// a password: its answer then takes as long as a wrong password's, and does not
    /// tell which users exist.
    pub fn verify_nothing(password: &str) {
        let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).expect("nonzero iterations");
        let _ = derive(&[0u8; 16], iterations, password.as_bytes());
    }
}

/// A token the cluster gave out: whose, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub expires_unix_ms: u64,
}

/// A new token made at meta index `index`, and the digest the cluster keeps of it.
pub struct NewToken {
    pub secret: String,
    pub digest: String,
}

impl NewToken {
    pub fn generate() -> Result<NewToken, TokenError> {
        let mut secret = [0u8; SECRET_BYTES];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| TokenError::Random)?;
        let secret = hex(&secret);
        let digest = digest_of(&secret);
        Ok(NewToken { secret, digest })
    }

    /// The token as its holder sends it.
    pub fn token(&self, index: u64) -> String {
        format!("{TOKEN_PREFIX}.{index}.{}", self.secret)
    }
}

/// A token as a request carried it: the meta index it was made at and the digest of
/// its secret; `None` for anything not shaped like a token.
pub fn parse_token(token: &str) -> Option<(u64, String)> {
    let mut parts = token.split('.');
    let (Some(TOKEN_PREFIX), Some(index), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let index = index.parse().ok()?;
    let well_formed = secret.len() == 2 * SECRET_BYTES
        && secret
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    well_formed.then(|| (index, digest_of(secret)))
}

fn digest_of(secret: &str) -> String {
    hex(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_and_no_other_does() {
        let hash = PasswordHash::new("correct horse").unwrap();
        assert!(hash.verify("correct horse"));
        assert!(!hash.verify("correct horsf"));
        assert!(!hash.verify(""));
        assert_eq!(
            PasswordHash::new("short"),
            Err(TokenError::PasswordLength(5))
        );
        // Two hashes of one password differ by their salt.
        assert_ne!(hash, PasswordHash::new("correct horse").unwrap());
        assert_eq!(format!("{hash:?}"), "PasswordHash(..)");
    }

    #[test]
    fn tokens_parse_to_their_index_and_digest_and_odd_ones_to_nothing() {
        let made = NewToken::generate().unwrap();
        let token = made.token(42);
        assert_eq!(parse_token(&token), Some((42, made.digest.clone())));
        assert_ne!(made.digest, made.secret);
        let other = NewToken::generate().unwrap();
        assert_ne!(other.secret, made.secret);
        for odd in [
            "",
            "hanse1",
            "hanse1.42",
            "hanse2.42.00",
            &format!("hanse1.x.{}", made.secret),
            &format!("hanse1.42.{}", &made.secret[1..]),
            &format!("hanse1.42.{}.x", made.secret),
            &format!("hanse1.42.{}", made.secret.to_uppercase()),
        ] {
            assert_eq!(parse_token(odd), None, "{odd}");
        }
    }
}
