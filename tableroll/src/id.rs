//! Process ids: validation and the default id.

use crate::error::{Error, Result};

/// The longest path a Unix socket address holds on Linux (108 bytes with the terminating NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// An id's bytes as text for people (logs, the journal, errors), lossily decoded if they are
/// not UTF-8.
pub(crate) fn text(id: &[u8]) -> String {
    String::from_utf8_lossy(id).into_owned()
}

/// Checks that `id` can name a file in the coordination directory.
///
/// An id is non-empty, has no `/` and no NUL, and is not `.` or `..`. Whether it is short
/// enough depends on the directory and is checked there.
///
/// # Errors
///
/// An invalid id error naming the id and the reason.
pub(crate) fn validate(id: &[u8]) -> Result<()> {
    match invalid_reason(id) {
        Some(reason) => Err(Error::invalid_id(id, reason)),
        None => Ok(()),
    }
}

/// Why `id` is not a valid id, if it is not.
pub(crate) fn invalid_reason(id: &[u8]) -> Option<&'static str> {
    let reason = if id.is_empty() {
        "an id must not be empty"
    } else if id.contains(&b'/') {
        "an id must not contain '/'"
    } else if id.contains(&0) {
        "an id must not contain NUL"
    } else if id == b"." || id == b".." {
        "an id must not be '.' or '..'"
    } else if id.len() > MAX_SOCKET_PATH {
        "an id must fit in a Unix socket path"
    } else {
        return None;
    };
    Some(reason)
}

/// A fresh id that fits in `max_len` bytes if it can: this process's pid and 64 random bits in
/// hex (`12345-00c0ffee12345678`), or only the random part if the directory's path leaves too
/// little room, shortened if need be but never below 32 random bits (then it does not fit,
/// and the socket path check says so).
///
/// Process ids repeat across PID namespaces (every container's first process is pid 1), so the
/// pid alone would not do; the random part makes collisions as unlikely as its bits allow.
pub(crate) fn default_id(max_len: usize) -> String {
    let random = format!("{:016x}", random_u64());
    let full = format!("{}-{random}", std::process::id());
    if full.len() <= max_len {
        full
    } else {
        random[..max_len.clamp(8, random.len())].to_owned()
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if crate::sys::files::fill_random(&mut bytes).is_err() {
        // getrandom(2) only fails on kernels older than 3.17; fall back to clock and address
        // entropy, which still differs between processes started in the same namespace.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let stack = &bytes as *const _ as u64;
        bytes = (nanos ^ stack.rotate_left(32)).to_le_bytes();
    }
    u64::from_le_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for id in ["a", "web-1", "12345-00ff", "with space", "ünï", "...", ".hidden"] {
            validate(id.as_bytes()).unwrap();
        }
    }

    #[test]
    fn refuses_ids_that_escape_or_break_paths() {
        for id in ["", ".", "..", "a/b", "/", "../x", "a\0b"] {
            let err = validate(id.as_bytes()).unwrap_err();
            assert!(matches!(err.kind(), crate::ErrorKind::InvalidId), "{id:?}: {err}");
        }
        assert!(validate(&[b'x'; MAX_SOCKET_PATH + 1]).is_err());
    }

    #[test]
    fn default_ids_are_valid_and_distinct() {
        let a = default_id(MAX_SOCKET_PATH);
        let b = default_id(MAX_SOCKET_PATH);
        validate(a.as_bytes()).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}-", std::process::id())));
        assert!(a.len() <= 11 + 16, "{a}");
    }

    #[test]
    fn default_ids_shrink_to_fit() {
        let short = default_id(10);
        assert_eq!(short.len(), 10);
        assert!(short.bytes().all(|b| b.is_ascii_hexdigit()), "{short}");
        assert_eq!(default_id(16).len(), 16);
        assert_eq!(default_id(7).len(), 8, "never below 32 random bits");
    }
}
