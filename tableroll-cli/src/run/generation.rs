//! Generation numbers: each instance is one more than the owner it follows. The number travels
//! in the default id, `g<N>-<pid>-<random>`, which the owner file holds, so the next instance
//! reads it there without asking anyone. A group whose owner has another kind of id (set with
//! `--id`, or a library user) has no known generation. The owner file is read by the library's
//! rule, as `tableroll status` reads it: its bytes exactly, nothing trimmed.

use std::path::Path;

/// The generation of an instance joining the group in `dir` now: 1 for a new group, one more
/// than the owner's if its id carries a generation, `None` otherwise. Read without the lock,
/// for naming and logs only: two instances starting at once may get the same number.
pub fn next(dir: &Path) -> Option<u64> {
    match tableroll::inspect::owner_id(dir) {
        Ok(None) => Some(1),
        Ok(Some(id)) => of_id(&id).and_then(|n| n.checked_add(1)),
        // Something that is not an owner's id is there: the generation is not known.
        Err(_) => None,
    }
}

/// The generation an id of the form `g<N>-…` carries.
pub fn of_id(id: &str) -> Option<u64> {
    let rest = id.strip_prefix('g')?;
    let (digits, _) = rest.split_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// An id that carries `generation`, unique among live processes (pid and 32 random bits, for
/// groups that span PID namespaces).
pub fn id_for(generation: u64) -> String {
    let mut random = [0u8; 4];
    let random = match rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty()) {
        Ok(4) => u32::from_ne_bytes(random),
        _ => std::process::id().rotate_left(16) ^ 0x9e37_79b9,
    };
    format!("g{generation}-{}-{random:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_generation() {
        assert_eq!(of_id("g7-1234-0badf00d"), Some(7));
        assert_eq!(of_id(&id_for(12)), Some(12));
        for other in ["7-1234", "g-1", "gx-1", "g7", "web-1", "", "g18446744073709551616-1"] {
            assert_eq!(of_id(other), None, "{other:?}");
        }
    }

    #[test]
    fn the_next_generation_follows_the_owner_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next(dir.path()), Some(1));
        std::fs::write(dir.path().join("pid"), "").unwrap();
        assert_eq!(next(dir.path()), Some(1));
        std::fs::write(dir.path().join("pid"), "g41-99-00000000").unwrap();
        assert_eq!(next(dir.path()), Some(42));
        std::fs::write(dir.path().join("pid"), "web-1").unwrap();
        assert_eq!(next(dir.path()), None);
        std::fs::write(dir.path().join("pid"), format!("g{}-1-0", u64::MAX)).unwrap();
        assert_eq!(next(dir.path()), None);
    }
}
