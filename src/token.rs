//! Resume tokens and generated client ids, from the OS random source.
//!
//! A token is 256 random bits written as 64 lowercase hex characters, so it
//! goes into a query string unescaped. It is compared in constant time and
//! has no `Debug` or `Display` that could leak it into a log line.

use std::fmt;

const TOKEN_BYTES: usize = 32;

/// A session's resume token.
#[derive(Clone)]
pub struct ResumeToken([u8; TOKEN_BYTES]);

impl ResumeToken {
    /// A fresh token from the OS random source.
    ///
    /// # Panics
    /// If the OS has no random source at all; the server cannot issue safe
    /// tokens without one, so it must not go on.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).expect("the OS random source is unavailable");
        ResumeToken(bytes)
    }

    /// The token as sent to the client, once, in `connection_established`.
    pub fn reveal(&self) -> String {
        hex(&self.0)
    }

    /// Whether `candidate` (as the client sent it) is this token. Takes the
    /// same time wherever the first difference is.
    pub fn matches(&self, candidate: &str) -> bool {
        let candidate = candidate.as_bytes();
        if candidate.len() != TOKEN_BYTES * 2 {
            return false;
        }
        let expected = hex(&self.0);
        constant_time_eq(expected.as_bytes(), candidate)
    }
}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(<redacted>)")
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
        let a = ResumeToken::generate();
        let b = ResumeToken::generate();
        assert_eq!(a.reveal().len(), 64);
        assert_ne!(a.reveal(), b.reveal());
        assert!(a.reveal().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn matches_only_itself() {
        let a = ResumeToken::generate();
        assert!(a.matches(&a.reveal()));
        assert!(!a.matches(&ResumeToken::generate().reveal()));
        assert!(!a.matches(""));
        assert!(!a.matches(&a.reveal()[..63]));
        assert!(!a.matches(&a.reveal().replace(char::is_numeric, "g")));
    }

    #[test]
    fn debug_hides_the_secret() {
        let a = ResumeToken::generate();
        assert!(!format!("{a:?}").contains(&a.reveal()));
    }

    #[test]
    fn generated_ids_are_valid_client_ids() {
        let id = generate_client_id();
        assert!(crate::protocol::is_valid_name(&id));
        assert_ne!(id, generate_client_id());
    }
}
