//! A coordination directory on a file system with no inode left: a newcomer that cannot create
//! its upgrade socket fails with a clear error and changes nothing; with one inode left, its
//! socket takes it, the owner cannot make its standby mark, and the handoff goes on without it.
//!
//! The directory is a small tmpfs mounted in a mount namespace of the owner's own (`unshare`),
//! which the newcomers enter (`nsenter`); the namespace, and the tmpfs with it, goes with the
//! last of them. Needs root, as CI and this project's machines have.

mod util;

use std::path::Path;
use std::process::Command;

use util::{assert_hello, http_get, inherited_ids, listen_addr, Peer, TestDir};

/// Inodes of the tmpfs: the root, the owner's files, and room to fill.
const INODES: usize = 64;

/// Starts the peer with `args` on `dir`, over which a tmpfs of [`INODES`] inodes is mounted in
/// a new mount namespace.
fn start_on_small_tmpfs(dir: &Path, args: &[&str]) -> Peer {
    let dir = dir.to_str().expect("a UTF-8 test directory");
    let peer = util::peer_binary().to_str().expect("a UTF-8 peer path");
    let options = format!("size=4m,nr_inodes={INODES},mode=0700");
    let script = format!("mount -t tmpfs -o {options} tableroll-test \"$1\" && shift && exec \"$@\"");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script, "sh", dir, peer, "--dir", dir]);
    Peer::start_command(cmd, args)
}

/// Starts the peer with `args` on `dir` in the mount namespace of process `pid`.
fn start_beside(pid: u32, dir: &Path, args: &[&str]) -> Peer {
    let dir = dir.to_str().expect("a UTF-8 test directory");
    let peer = util::peer_binary().to_str().expect("a UTF-8 peer path");
    let mut cmd = Command::new("nsenter");
    cmd.args(["--target", &pid.to_string(), "--mount", "--", peer, "--dir", dir]);
    Peer::start_command(cmd, args)
}

/// Runs the shell `script` with `dir` as `$1` in the mount namespace of process `pid`; its
/// stdout. Fails the test if it fails.
fn shell_beside(pid: u32, dir: &Path, script: &str) -> String {
    let output = Command::new("nsenter")
        .args(["--target", &pid.to_string(), "--mount", "--", "sh", "-c", script, "sh"])
        .arg(dir)
        .output()
        .expect("running nsenter");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{script}: {}: {stderr}", output.status);
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Creates files in `dir` until no inode is left; how many it made. A bounded loop: the tmpfs
/// has [`INODES`] inodes in all.
fn fill_inodes(pid: u32, dir: &Path) -> usize {
    let script = format!(
        "i=0; while [ $i -lt {INODES} ] && touch \"$1/fill.$i\" 2>/dev/null; do i=$((i+1)); done; \
         touch \"$1/one.more\" 2>&1 | grep -q 'No space left' || exit 1; echo $i"
    );
    shell_beside(pid, dir, &script).trim().parse().expect("a count")
}

#[test]
fn no_inode_fails_the_newcomer_cleanly_and_one_inode_hands_over_without_a_standby_mark() {
    let dir = TestDir::new();
    let mut owner =
        start_on_small_tmpfs(dir.path(), &["--id", "a", "--listen", "web=tcp:127.0.0.1:0", "--serve"]);
    let addr = listen_addr(&owner.wait_for("listening"), "web");
    owner.wait_for("ready");
    let filled = fill_inodes(owner.pid(), dir.path());
    assert!(filled > 0 && filled < INODES, "made {filled} files");
    let listen = format!("web=tcp:{addr}");
    let newcomer_args = ["--id", "b", "--listen", listen.as_str(), "--serve"];

    // No inode for the newcomer's upgrade socket.
    let mut refused = start_beside(owner.pid(), dir.path(), &newcomer_args);
    let error = refused.expect_error_exit();
    assert!(error.contains("b.sock") && error.contains("No space left on device"), "{error}");
    assert_eq!(shell_beside(owner.pid(), dir.path(), "cat \"$1/pid\""), "a");
    assert_hello(http_get(&addr, "/"), "a");
    assert!(!owner.has_pending("upgrade_complete"), "the owner was told to drain");

    // One inode: the newcomer's socket takes it, and the owner's standby mark finds none.
    shell_beside(owner.pid(), dir.path(), "rm \"$1/fill.0\"");
    let mut next = start_beside(owner.pid(), dir.path(), &newcomer_args);
    assert_eq!(inherited_ids(&next.wait_for("inherited")), ["web"]);
    next.wait_for("ready");
    owner.wait_for("upgrade_complete");
    owner.wait_for_log("could not mark this process as a standby");
    assert_hello(http_get(&addr, "/"), "b");
    owner.expect_clean_exit();
    assert_eq!(shell_beside(next.pid(), dir.path(), "cat \"$1/pid\""), "b");
}
