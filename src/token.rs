//! Resume tokens and generated client ids, from the OS random source.
//!
//! A token is 256 random bits written as 64 lowercase hex characters, so it
//! goes into a query string unescaped. The server shows it once, in
//! `connection_established`, and keeps only its SHA-256 hash, in memory and
//! on disk; a presented token is checked by hashing it and comparing the
//! hashes in constant time.

use std::fmt;

use sha2::{Digest, Sha256};

const TOKEN_BYTES: usize = 32;

/// The hash of a session's resume token: all the server keeps of it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// A fresh token from the OS random source, and its hash. The token is
    /// for the client; only the hash is kept.
    ///
    /// # Panics
    /// If the OS has no random source at all; the server cannot issue safe
    /// tokens without one, so it must not go on.
    pub fn generate() -> (String, TokenHash) {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random source is unavailable");
        let token = hex(&bytes);
        let hash = TokenHash::of(&token);
        (token, hash)
    }

    fn of(token: &str) -> TokenHash {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `candidate` (as the client sent it) is the token. Takes the
    /// same time wherever the first difference is.
    pub fn matches(&self, candidate: &str) -> bool {
        constant_time_eq(&TokenHash::of(candidate).0, &self.0)
    }

    /// The hash as hex, for the data directory.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Reads [`TokenHash::to_hex`]'s output back.
    pub fn from_hex(s: &str) -> Option<TokenHash> {
        if s.len() != 64 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(TokenHash(out))
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    diff == 0
}

/// A new client id for a client that did not bring one: `c-` and 16 hex digits.
pub fn generate_client_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source is unavailable");
    format!("c-{}", hex(&bytes))
}

/// A random number in `0..bound` from the OS random source (jitter).
pub fn random_below(bound: u64) -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source is unavailable");
    u64::from_le_bytes(bytes) % bound.max(1)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_distinct_and_url_safe() {
        let (a, _) = TokenHash::generate();
        let (b, _) = TokenHash::generate();
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_hash_matches_only_its_token() {
        let (token, hash) = TokenHash::generate();
        assert!(hash.matches(&token));
        assert!(!hash.matches(&TokenHash::generate().0));
        assert!(!hash.matches(""));
        assert!(!hash.matches(&token[..63]));
    }

    #[test]
    fn hashes_round_trip_as_hex_and_hide_the_token() {
        let (token, hash) = TokenHash::generate();
        assert_eq!(TokenHash::from_hex(&hash.to_hex()), Some(hash.clone()));
        assert!(!hash.to_hex().contains(&token));
        assert!(!format!("{hash:?}").contains(&token));
        assert_eq!(TokenHash::from_hex("zz"), None);
    }

    #[test]
    fn generated_ids_are_valid_client_ids() {
        let id = generate_client_id();
        assert!(crate::protocol::is_valid_name(&id));
        assert_ne!(id, generate_client_id());
    }
}
