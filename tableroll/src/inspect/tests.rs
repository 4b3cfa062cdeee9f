//! `inspect` on real directories, sockets and locks.

use std::fs::{self, File};
use std::io;
use std::os::unix::net::UnixListener;
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

use super::*;
use crate::coordination::{open_read_only as open_owner_file, OWNER_FILE};

fn write_owner(dir: &Path, content: &[u8]) {
    fs::write(dir.join(OWNER_FILE), content).unwrap();
}

fn socket<'a>(status: &'a DirectoryStatus, id: &str) -> &'a SocketStatus {
    status.sockets.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no socket {id}: {status:#?}"))
}

fn unexpected(status: &DirectoryStatus) -> Vec<(&str, EntryKind)> {
    status.unexpected.iter().map(|e| (e.name.as_str(), e.kind)).collect()
}

#[test]
fn a_live_owner_a_stale_socket_and_strange_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _owner = UnixListener::bind(dir.join("owner.sock")).unwrap();
    drop(UnixListener::bind(dir.join("crashed.sock")).unwrap());
    write_owner(dir, b"owner");
    fs::write(dir.join("notes.txt"), b"x").unwrap();
    fs::write(dir.join("fake.sock"), b"x").unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink(dir.join("owner.sock"), dir.join("link.sock")).unwrap();

    let status = inspect(dir).unwrap();
    assert_eq!(status.dir, dir);
    assert_eq!(status.owner.file, OwnerFile::Valid);
    assert_eq!(status.owner.id.as_deref(), Some("owner"));
    assert!(status.owner.alive, "{status:#?}");
    assert_eq!(status.owner.pid, Some(std::process::id()));
    let ids: Vec<&str> = status.sockets.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["crashed", "owner"]);
    let owner = socket(&status, "owner");
    assert_eq!((owner.state, owner.pid, owner.owner), (SocketState::Live, Some(std::process::id()), true));
    let crashed = socket(&status, "crashed");
    assert_eq!((crashed.state, crashed.pid, crashed.owner), (SocketState::Stale, None, false));
    assert_eq!(
        unexpected(&status),
        [
            ("fake.sock", EntryKind::RegularFile),
            ("link.sock", EntryKind::Symlink),
            ("notes.txt", EntryKind::RegularFile),
            ("sub", EntryKind::Directory),
        ]
    );
    assert_eq!(status.lock.held, LockHeld::No);
}

#[test]
fn an_owner_whose_socket_is_stale_or_missing_is_dead() {
    let tmp = tempfile::tempdir().unwrap();
    drop(UnixListener::bind(tmp.path().join("gone.sock")).unwrap());
    write_owner(tmp.path(), b"gone");
    let status = inspect(tmp.path()).unwrap();
    assert_eq!(status.owner.file, OwnerFile::Valid);
    assert!(!status.owner.alive);
    assert_eq!(status.owner.pid, None);
    assert!(socket(&status, "gone").owner);

    fs::remove_file(tmp.path().join("gone.sock")).unwrap();
    let status = inspect(tmp.path()).unwrap();
    assert_eq!(status.owner.id.as_deref(), Some("gone"));
    assert!(!status.owner.alive);
}

#[test]
fn missing_and_empty_owner_files_mean_no_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let status = inspect(tmp.path()).unwrap();
    assert_eq!((status.owner.file, status.owner.alive), (OwnerFile::Missing, false));
    assert!(status.sockets.is_empty() && status.unexpected.is_empty());
    assert_eq!(status.lock.held, LockHeld::No);
    write_owner(tmp.path(), b"");
    let status = inspect(tmp.path()).unwrap();
    assert_eq!((status.owner.file, status.owner.id.as_deref()), (OwnerFile::Empty, None));
}

#[test]
fn invalid_owner_ids_are_reported_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let _elsewhere = UnixListener::bind(tmp.path().join("x.sock")).unwrap();
    for bad in [&b"../x"[..], b"..", b"a\0b", &[b'x'; 4096]] {
        write_owner(tmp.path(), bad);
        let status = inspect(tmp.path()).unwrap();
        assert_eq!(status.owner.file, OwnerFile::Invalid, "{bad:?}");
        assert_eq!((status.owner.id.as_deref(), status.owner.alive), (None, false));
        let problem = status.owner.problem.unwrap();
        assert!(problem.contains("not a valid id"), "{problem}");
    }
}

#[test]
fn an_owner_file_that_is_not_a_regular_file_is_invalid_and_unexpected() {
    let tmp = tempfile::tempdir().unwrap();
    let target = tmp.path().join("target");
    fs::write(&target, b"someone").unwrap();
    std::os::unix::fs::symlink(&target, tmp.path().join(OWNER_FILE)).unwrap();
    let status = inspect(tmp.path()).unwrap();
    assert_eq!(status.owner.file, OwnerFile::Invalid);
    assert!(status.owner.problem.as_deref().unwrap().contains("symlink"), "{status:#?}");
    assert!(unexpected(&status).contains(&("pid", EntryKind::Symlink)));

    // A named pipe is not opened: that would wait for a writer.
    fs::remove_file(tmp.path().join(OWNER_FILE)).unwrap();
    let fifo = tmp.path().join(OWNER_FILE);
    rustix::fs::mknodat(rustix::fs::CWD, &fifo, rustix::fs::FileType::Fifo, 0o600.into(), 0).unwrap();
    let status = inspect(tmp.path()).unwrap();
    assert_eq!(status.owner.file, OwnerFile::Invalid);
    assert!(unexpected(&status).contains(&("pid", EntryKind::Fifo)));
    // And the fallback for one swapped in after listing does not block either.
    assert!(open_owner_file(&fifo).is_err());
}

#[test]
fn a_held_lock_is_an_upgrade_in_progress() {
    let tmp = tempfile::tempdir().unwrap();
    write_owner(tmp.path(), b"");
    let file = File::open(tmp.path().join(OWNER_FILE)).unwrap();
    flock(&file, FlockOperation::NonBlockingLockExclusive).unwrap();
    let status = inspect(tmp.path()).unwrap();
    assert_eq!(status.lock.held, LockHeld::Yes);
    assert_eq!(status.lock.holder_pid, Some(std::process::id()));
    drop(file);
    let status = inspect(tmp.path()).unwrap();
    assert_eq!((status.lock.held, status.lock.holder_pid), (LockHeld::No, None));
}

#[test]
fn a_directory_named_through_a_symlink_still_finds_live_sockets() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    fs::create_dir(&real).unwrap();
    let _owner = UnixListener::bind(real.join("o.sock")).unwrap();
    write_owner(&real, b"o");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let status = inspect(&link).unwrap();
    assert!(status.owner.alive, "{status:#?}");
    assert_eq!(status.dir, link);
}

#[test]
fn never_connects_to_a_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let owner = UnixListener::bind(tmp.path().join("o.sock")).unwrap();
    owner.set_nonblocking(true).unwrap();
    write_owner(tmp.path(), b"o");
    assert!(inspect(tmp.path()).unwrap().owner.alive);
    let err = owner.accept().expect_err("inspect connected to the owner");
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let err = inspect(&missing).unwrap_err();
    assert_eq!(err.io_error().map(io::Error::kind), Some(io::ErrorKind::NotFound), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");
    fs::write(&missing, b"").unwrap();
    assert!(inspect(&missing).is_err(), "a file is not a directory");
}

#[test]
fn serializes_to_plain_json() {
    let tmp = tempfile::tempdir().unwrap();
    let _owner = UnixListener::bind(tmp.path().join("o.sock")).unwrap();
    write_owner(tmp.path(), b"o");
    fs::write(tmp.path().join("junk"), b"").unwrap();
    let json = serde_json::to_value(inspect(tmp.path()).unwrap()).unwrap();
    assert_eq!(json["owner"]["file"], "valid");
    assert_eq!(json["owner"]["alive"], true);
    assert_eq!(json["lock"]["held"], "no");
    assert_eq!(json["sockets"][0]["state"], "live");
    assert_eq!(json["unexpected"][0]["kind"], "regular_file");
    assert_eq!(json["dir"], tmp.path().to_str().unwrap());
}

#[test]
fn owner_id_reads_the_owner_file_alone() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(super::owner_id(tmp.path()).unwrap(), None, "no owner file");
    fs::write(tmp.path().join(OWNER_FILE), b"").unwrap();
    assert_eq!(super::owner_id(tmp.path()).unwrap(), None, "an empty owner file");
    fs::write(tmp.path().join(OWNER_FILE), b"web-2").unwrap();
    assert_eq!(super::owner_id(tmp.path()).unwrap().as_deref(), Some("web-2"));
    fs::write(tmp.path().join(OWNER_FILE), b"../escape").unwrap();
    let err = super::owner_id(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("not a valid id"), "{err}");
    fs::remove_file(tmp.path().join(OWNER_FILE)).unwrap();
    fs::create_dir(tmp.path().join(OWNER_FILE)).unwrap();
    assert!(super::owner_id(tmp.path()).is_err(), "a directory is no owner file");
}

#[test]
fn a_name_that_is_not_utf8_keeps_its_bytes() {
    assert_eq!(RawName::if_lossy(b"plain"), None);
    let raw = RawName::if_lossy(b"a\xff\n\\").unwrap();
    assert_eq!(raw.0, b"a\xff\n\\");
    assert_eq!(raw.escaped(), "a\\xff\\n\\\\");
    assert_eq!(serde_json::to_string(&raw).unwrap(), r#""a\\xff\\n\\\\""#);
}
