//! Who holds a `flock(2)` lock, read from the kernel's table of file locks (`/proc/locks`, see
//! proc(5)) so that the lock is never taken, not even for an instant: a newcomer that found
//! the coordination lock taken would queue behind the reader.
//!
//! The table names a file by the device of its file system's superblock and its inode
//! (`1: FLOCK  ADVISORY  WRITE 1234 fe:00:10010642 0 EOF`). On most file systems that device
//! is the one `stat(2)` reports; on some (btrfs subvolumes) `stat(2)` reports another, so the
//! superblock's device is also looked up in `/proc/self/mountinfo` through the file's mount id.

use std::fs;
use std::io::{self, BufRead};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::{statx, AtFlags, StatxFlags, CWD};

/// How many times the table is read before a lock is taken to be absent: like the socket
/// table, it is produced a page at a time and one read can skip an entry that moved.
const TABLE_READS: usize = 3;

/// A file as the lock table names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockTarget {
    /// Every `(major, minor)` the table may print for the file's file system.
    devices: Vec<(u32, u32)>,
    inode: u64,
}

impl LockTarget {
    /// The file at `path` itself (a symlink is not followed).
    ///
    /// # Errors
    ///
    /// The file cannot be inspected (`NotFound` if it is gone).
    pub(crate) fn at(path: &Path) -> io::Result<LockTarget> {
        let meta = fs::symlink_metadata(path)?;
        let mut devices = vec![(rustix::fs::major(meta.dev()), rustix::fs::minor(meta.dev()))];
        if let Some(device) = mount_id(path).and_then(superblock_device) {
            if !devices.contains(&device) {
                devices.push(device);
            }
        }
        Ok(LockTarget { devices, inode: meta.ino() })
    }

    fn is(&self, line: &LockLine) -> bool {
        line.inode == self.inode && self.devices.contains(&line.device)
    }
}

/// A granted `flock(2)` lock on the target file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The process that took it, as this process's PID namespace numbers it.
    pub(crate) pid: Option<u32>,
}

/// The holder of a `flock(2)` lock on `target`, or `None` if the table lists none.
///
/// The kernel leaves out locks whose holder it cannot name in the reader's PID namespace
/// (a process of another container, say): those read as absent.
///
/// # Errors
///
/// `/proc/locks` cannot be opened or read.
pub(crate) fn flock_holder(target: &LockTarget) -> io::Result<Option<Holder>> {
    for _ in 0..TABLE_READS {
        if let Some(holder) = read_flock_holder(target)? {
            return Ok(Some(holder));
        }
    }
    Ok(None)
}

fn read_flock_holder(target: &LockTarget) -> io::Result<Option<Holder>> {
    let table = fs::File::open("/proc/locks")?;
    for line in io::BufReader::new(table).split(b'\n') {
        let line = line?;
        let Some(lock) = std::str::from_utf8(&line).ok().and_then(parse_lock_line) else { continue };
        // Only granted locks count: a waiter (`->`) is queued behind the holder. A POSIX
        // record lock on the same file does not exclude a `flock(2)`, so it is not the lock.
        if lock.flock && !lock.waiting && target.is(&lock) {
            return Ok(Some(Holder { pid: u32::try_from(lock.pid).ok().filter(|&pid| pid > 0) }));
        }
    }
    Ok(None)
}

/// One line of `/proc/locks`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LockLine {
    /// A `flock(2)` lock (not POSIX, OFD, or a lease).
    flock: bool,
    /// Blocked behind another lock rather than granted.
    waiting: bool,
    /// The holder's pid; `-1` for OFD locks, `0` or negative for remote ones.
    pid: i64,
    device: (u32, u32),
    inode: u64,
}

/// Parses `ORD: [->] CLASS ADVICE MODE PID MAJ:MIN:INODE START END`; `None` for anything
/// else, including a lock without a file (`<none>:0`).
fn parse_lock_line(line: &str) -> Option<LockLine> {
    let mut words = line.split_ascii_whitespace();
    let (ordinal, rest) = words.next()?.split_once(':')?;
    ordinal.parse::<u64>().ok()?;
    // Waiters are marked `->`, indented by depth; old kernels glued it to the ordinal.
    let mut waiting = rest == "->";
    let mut class = words.next()?;
    if class == "->" {
        waiting = true;
        class = words.next()?;
    }
    let _advice = words.next()?;
    let _mode = words.next()?;
    let pid = words.next()?.parse().ok()?;
    let (device, inode) = parse_file_id(words.next()?)?;
    Some(LockLine { flock: class == "FLOCK", waiting, pid, device, inode })
}

/// `fe:00:10010642`: major and minor in hex, the inode in decimal.
fn parse_file_id(word: &str) -> Option<((u32, u32), u64)> {
    let (device, inode) = word.rsplit_once(':')?;
    let (major, minor) = device.split_once(':')?;
    let device = (u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?);
    Some((device, inode.parse().ok()?))
}

/// The id of the mount `path` is on (Linux 5.8 and later), if the kernel says.
fn mount_id(path: &Path) -> Option<u64> {
    let stat = statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID).ok()?;
    StatxFlags::from_bits_retain(stat.stx_mask).contains(StatxFlags::MNT_ID).then_some(stat.stx_mnt_id)
}

/// The device of the superblock of mount `id`, from `/proc/self/mountinfo`.
fn superblock_device(id: u64) -> Option<(u32, u32)> {
    let table = fs::File::open("/proc/self/mountinfo").ok()?;
    io::BufReader::new(table)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| mount_device(&line).filter(|&(mount, _)| mount == id).map(|(_, device)| device))
}

/// `36 35 98:0 /mnt1 /mnt2 rw ...`: the mount id and its device (in decimal here).
fn mount_device(line: &str) -> Option<(u64, (u32, u32))> {
    let mut words = line.split_ascii_whitespace();
    let id = words.next()?.parse().ok()?;
    let _parent = words.next()?;
    let (major, minor) = words.next()?.split_once(':')?;
    Some((id, (major.parse().ok()?, minor.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{flock, FlockOperation};

    #[test]
    fn parses_lock_lines() {
        let held = parse_lock_line("1: FLOCK  ADVISORY  WRITE 1234 fe:00:10010642 0 EOF").unwrap();
        assert_eq!(
            held,
            LockLine { flock: true, waiting: false, pid: 1234, device: (0xfe, 0), inode: 10010642 }
        );
        let waiter = parse_lock_line("1: -> FLOCK  ADVISORY  WRITE 1235 fe:00:10010642 0 EOF").unwrap();
        assert!(waiter.waiting && waiter.flock && waiter.pid == 1235);
        let deeper = parse_lock_line("1:  -> FLOCK  ADVISORY  WRITE 1236 00:2e:12345 0 EOF").unwrap();
        assert!(deeper.waiting);
        assert_eq!(deeper.device, (0, 0x2e));
        assert!(parse_lock_line("2:-> FLOCK  ADVISORY  READ  7 08:01:5 0 EOF").unwrap().waiting);
        let posix = parse_lock_line("3: POSIX  ADVISORY  WRITE 99 103:02:131 0 EOF").unwrap();
        assert!(!posix.flock);
        assert_eq!(posix.device, (0x103, 2));
        let ofd = parse_lock_line("4: OFDLCK ADVISORY  READ  -1 00:05:1 128 128").unwrap();
        assert_eq!((ofd.flock, ofd.pid), (false, -1));
        let lease = parse_lock_line("5: LEASE  ACTIVE    READ  42 00:2e:77 0 EOF").unwrap();
        assert!(!lease.flock);
        let big_minor = parse_lock_line("6: FLOCK  ADVISORY  WRITE 1 00:1a2:3 0 EOF").unwrap();
        assert_eq!(big_minor.device, (0, 0x1a2));
    }

    #[test]
    fn refuses_malformed_lock_lines() {
        for line in [
            "",
            "garbage",
            "1: FLOCK  ADVISORY  WRITE 1234 <none>:0 0 EOF",
            "x: FLOCK  ADVISORY  WRITE 1234 fe:00:1 0 EOF",
            "1: FLOCK  ADVISORY  WRITE abc fe:00:1 0 EOF",
            "1: FLOCK  ADVISORY  WRITE 1234 fe:1 0 EOF",
            "1: FLOCK  ADVISORY  WRITE 1234 zz:00:1 0 EOF",
            "1: FLOCK  ADVISORY  WRITE 1234 fe:00:-1 0 EOF",
            "1: FLOCK  ADVISORY",
        ] {
            assert_eq!(parse_lock_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn parses_mountinfo_lines() {
        let line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        assert_eq!(mount_device(line), Some((36, (98, 0))));
        assert_eq!(mount_device("36 35 98"), None);
        assert_eq!(mount_device(""), None);
    }

    #[test]
    fn sees_a_held_flock_and_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        let file = fs::File::create(&path).unwrap();
        let target = LockTarget::at(&path).unwrap();
        assert_eq!(flock_holder(&target).unwrap(), None);
        flock(&file, FlockOperation::LockExclusive).unwrap();
        let holder = flock_holder(&target).unwrap();
        assert_eq!(holder, Some(Holder { pid: Some(std::process::id()) }));
        flock(&file, FlockOperation::Unlock).unwrap();
        assert_eq!(flock_holder(&target).unwrap(), None);
    }

    #[test]
    fn a_lock_on_another_file_is_not_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let other = fs::File::create(dir.path().join("other")).unwrap();
        fs::write(dir.path().join("pid"), b"").unwrap();
        flock(&other, FlockOperation::LockExclusive).unwrap();
        let target = LockTarget::at(&dir.path().join("pid")).unwrap();
        assert_eq!(flock_holder(&target).unwrap(), None);
    }
}
