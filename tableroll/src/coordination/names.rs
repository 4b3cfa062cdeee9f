//! The names in a coordination directory: the owner file `pid`, the journal `journal` (and
//! `journal.1`), each process's upgrade socket `<id>.sock`, and the standby mark
//! `<id>.standby` of a process of ours that stepped down (or is handing over) and still holds
//! the group's descriptors. No other part of the crate spells them.

/// The owner file's name, which is also the lock file. (Named `pid` for history: ids used to
/// be process ids, and Go tableroll processes share the name.)
pub(crate) const OWNER_FILE: &str = "pid";
/// The journal of the group's events (see `journal_file`), and its previous part.
pub const JOURNAL_FILE: &str = "journal";
pub(crate) const JOURNAL_ROTATED: &str = "journal.1";
const SOCKET_SUFFIX: &str = ".sock";
const STANDBY_SUFFIX: &str = ".standby";

/// What a file name in the directory is to the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry<'n> {
    /// The owner file.
    OwnerFile,
    /// The journal, or its previous part.
    Journal,
    /// The upgrade socket of the process with this id.
    UpgradeSocket(&'n [u8]),
    /// The standby mark of the process with this id (see `standby_mark`).
    StandbyMark(&'n [u8]),
    /// Anything else: not the group's.
    Other,
}

/// What the file name `name` is to the group.
pub(crate) fn entry(name: &[u8]) -> Entry<'_> {
    if name == OWNER_FILE.as_bytes() {
        return Entry::OwnerFile;
    }
    if name == JOURNAL_FILE.as_bytes() || name == JOURNAL_ROTATED.as_bytes() {
        return Entry::Journal;
    }
    if let Some(id) = name.strip_suffix(SOCKET_SUFFIX.as_bytes()).filter(|id| !id.is_empty()) {
        return Entry::UpgradeSocket(id);
    }
    match name.strip_suffix(STANDBY_SUFFIX.as_bytes()) {
        Some(id) if !id.is_empty() => Entry::StandbyMark(id),
        _ => Entry::Other,
    }
}

/// The file name of the standby mark of `id`.
pub(crate) fn standby_file_name(id: &[u8]) -> Vec<u8> {
    [id, STANDBY_SUFFIX.as_bytes()].concat()
}

/// The file name of the upgrade socket of `id`.
pub(crate) fn socket_file_name(id: &[u8]) -> Vec<u8> {
    [id, SOCKET_SUFFIX.as_bytes()].concat()
}

/// How many bytes the socket's file name adds to the id.
pub(crate) fn socket_suffix_len() -> usize {
    SOCKET_SUFFIX.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(entry(b"pid"), Entry::OwnerFile);
        assert_eq!(entry(b"journal"), Entry::Journal);
        assert_eq!(entry(b"journal.1"), Entry::Journal);
        assert_eq!(entry(&socket_file_name(b"web-1")), Entry::UpgradeSocket(b"web-1"));
        assert_eq!(entry(&standby_file_name(b"web-1")), Entry::StandbyMark(b"web-1"));
        for other in [&b".sock"[..], b".standby", b"pid.tmp", b"web-1.socket", b"x"] {
            assert_eq!(entry(other), Entry::Other, "{:?}", String::from_utf8_lossy(other));
        }
    }
}
