//! Hazards in and around the coordination directory: owner files that name paths outside it,
//! symlinks and regular files planted where the owner file or a socket should be, a huge owner
//! file, a directory this user may not write, a missing directory, and upgrade sockets left by
//! dead processes or held by live ones.
//!
//! Every refusal is an `error` event (exit status 1) that names what is wrong, touches nothing
//! it should not, and leaves the group usable: once the hazard is gone (or alongside it, when it
//! concerns another id), a normal peer becomes owner.

mod util;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use util::{inherited_ids, listen_addr, runnable_peer, Peer, TestDir, NOBODY};

// ---------------------------------------------------------------------------------------------
// Helpers

/// The names in `path`.
/// The names in `path`, but the group's journal (`journal`, `journal.1`), which every member
/// writes.
fn entries(path: &Path) -> BTreeSet<String> {
    fs::read_dir(path)
        .unwrap_or_else(|e| panic!("listing {}: {e}", path.display()))
        .map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "journal" && name != "journal.1")
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// `<tmp>/coord`, the coordination directory, so that what happens next to it shows in `<tmp>`.
fn coordination_dir(tmp: &TestDir) -> PathBuf {
    let coord = tmp.join("coord");
    fs::create_dir(&coord).unwrap();
    coord
}

fn text(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

/// Whether `message` names `path` itself (not only a file inside it).
fn mentions(message: &str, path: &Path) -> bool {
    let path = text(path);
    message.match_indices(&path).any(|(at, _)| !message[at + path.len()..].starts_with('/'))
}

/// Expects an `error` event and exit status 1 naming every path in `paths`; returns the message.
#[track_caller]
fn expect_refusal(peer: &mut Peer, paths: &[&Path]) -> String {
    let message = peer.expect_error_exit();
    for path in paths {
        if !mentions(&message, path) {
            peer.fail(&format!("the error does not name {}: {message}", path.display()));
        }
    }
    message
}

/// A normal peer `id` on `dir` becomes the owner.
#[track_caller]
fn becomes_owner(dir: &Path, id: &str) -> Peer {
    let mut peer = Peer::start(dir, &["--id", id]);
    peer.wait_for("ready");
    let owner = fs::read_to_string(dir.join("pid")).unwrap_or_default();
    if owner != id {
        peer.fail(&format!("ready, but the owner file names {owner:?}"));
    }
    peer
}

/// A Unix listener nobody should contact; non-blocking so that [`untouched`] can look.
fn decoy(path: &Path) -> UnixListener {
    let listener = UnixListener::bind(path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
    listener.set_nonblocking(true).unwrap();
    listener
}

/// No connection ever reached `decoy` (a connection closed by its client would still be queued).
#[track_caller]
fn assert_untouched(decoy: &UnixListener, what: &str) {
    match decoy.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("{what}: something connected to the decoy: {other:?}"),
    }
}

/// Whether process `pid` holds the socket bound at `path`, by the kernel's table of Unix
/// sockets (`/proc/net/unix`, path in the last column) and the process's descriptors.
///
/// The table is read in page-sized pieces, each resuming at a position: a socket closed
/// meanwhile anywhere before the resume point shifts the rest, and the next entry is skipped.
/// A present socket can therefore be missed (never the reverse), so the table is read again
/// a bounded number of times before answering no.
fn listens_at(pid: u32, path: &Path) -> bool {
    let path = text(path);
    (0..100).any(|_| {
        let table = fs::read_to_string("/proc/net/unix").expect("reading /proc/net/unix");
        let inodes: BTreeSet<String> = table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // Num RefCount Protocol Flags Type St Inode Path
                (fields.len() == 8 && fields[7] == path).then(|| fields[6].to_string())
            })
            .collect();
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).expect("reading /proc/<pid>/fd");
        fds.flatten().filter_map(|fd| fs::read_link(fd.path()).ok()).any(|target| {
            let target = target.to_string_lossy();
            let inode = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']'));
            inode.is_some_and(|i| inodes.contains(i))
        })
    })
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The owner file

#[test]
fn owner_file_naming_an_id_outside_the_directory_is_refused() {
    let tmp = TestDir::new();
    let coord = coordination_dir(&tmp);
    let owner_file = coord.join("pid");
    fs::create_dir(coord.join("a")).unwrap();
    // Where each id's socket path would lead: a listener there shows whether anyone followed.
    let outside_abs = tmp.join("abs");
    let cases: Vec<(String, PathBuf)> = vec![
        ("../x".into(), tmp.join("x.sock")),
        ("..".into(), coord.join("...sock")),
        (".".into(), coord.join("..sock")),
        ("a/b".into(), coord.join("a/b.sock")),
        (text(&outside_abs), tmp.join("abs.sock")),
    ];
    let decoys: Vec<UnixListener> = cases.iter().map(|(_, path)| decoy(path)).collect();
    for ((id, _), decoy) in cases.iter().zip(&decoys) {
        fs::write(&owner_file, id).unwrap();
        let (outside_before, inside_before) = (entries(tmp.path()), entries(&coord));
        let mut peer = Peer::start(&coord, &["--id", "p"]);
        let message = expect_refusal(&mut peer, &[&owner_file]);
        assert!(message.contains(id.as_str()), "{id}: the error does not show the id: {message}");
        assert_untouched(decoy, id);
        assert_eq!(fs::read_to_string(&owner_file).unwrap(), *id, "{id}: the owner file changed");
        assert_eq!(entries(tmp.path()), outside_before, "{id}: something was created next to the directory");
        assert_eq!(entries(&coord), inside_before, "{id}: something was left in the directory");
    }

    fs::write(&owner_file, "").unwrap();
    let _good = becomes_owner(&coord, "good");
    for ((id, _), decoy) in cases.iter().zip(&decoys) {
        assert_untouched(decoy, id);
    }
}

#[test]
fn owner_file_that_is_a_symlink_or_not_a_file_is_refused() {
    for case in ["a dangling symlink", "a symlink to a file outside", "a directory", "a FIFO"] {
        let tmp = TestDir::new();
        let coord = coordination_dir(&tmp);
        let owner_file = coord.join("pid");
        let outside = tmp.join("outside");
        fs::create_dir(&outside).unwrap();
        let victim = outside.join("victim");
        fs::write(&victim, "precious").unwrap();
        match case {
            "a dangling symlink" => symlink(&outside.join("absent"), &owner_file),
            "a symlink to a file outside" => symlink(&victim, &owner_file),
            "a directory" => fs::create_dir(&owner_file).unwrap(),
            _ => {
                use rustix::fs::{mknodat, FileType, Mode, CWD};
                mknodat(CWD, &owner_file, FileType::Fifo, Mode::from_raw_mode(0o600), 0).unwrap()
            }
        }
        let before = fs::symlink_metadata(&owner_file).unwrap();
        let mut peer = Peer::start(&coord, &["--id", "p"]);
        expect_refusal(&mut peer, &[&owner_file]);
        let after = fs::symlink_metadata(&owner_file).unwrap();
        assert_eq!((after.ino(), after.file_type()), (before.ino(), before.file_type()), "{case}");
        assert_eq!(entries(&coord), set(&["pid"]), "{case}: something was left in the directory");
        assert_eq!(entries(&outside), set(&["victim"]), "{case}: something was created outside");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious", "{case}");

        // Gone, the next peer is owner.
        if after.is_dir() {
            fs::remove_dir(&owner_file).unwrap();
        } else {
            fs::remove_file(&owner_file).unwrap();
        }
        becomes_owner(&coord, "good");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious", "{case}");
        assert_eq!(entries(&outside), set(&["victim"]), "{case}");
    }
}

#[test]
fn huge_owner_file_is_refused() {
    let tmp = TestDir::new();
    let coord = coordination_dir(&tmp);
    let owner_file = coord.join("pid");
    let huge = vec![b'a'; 1 << 20];
    fs::write(&owner_file, &huge).unwrap();

    let mut peer = Peer::start(&coord, &["--id", "p"]);
    let message = expect_refusal(&mut peer, &[&owner_file]);
    // Clear, not a mebibyte of 'a'.
    assert!(message.len() < 4096, "the error echoes {} bytes of the owner file", message.len());
    assert!(fs::read(&owner_file).unwrap() == huge, "the owner file changed");
    assert_eq!(entries(&coord), set(&["pid"]));

    fs::write(&owner_file, "").unwrap();
    becomes_owner(&coord, "good");
}

// ---------------------------------------------------------------------------------------------
// Upgrade sockets

#[test]
fn symlink_at_a_peers_own_socket_path_is_left_alone() {
    // Where the symlink `<dir>/p.sock` points, and how to tell its target was left alone.
    enum Target {
        Absent,
        File,
        DeadSocket,
        LiveSocket(UnixListener),
    }
    for case in ["absent", "file", "dead socket", "live socket"] {
        let tmp = TestDir::new();
        let coord = coordination_dir(&tmp);
        let target_path = tmp.join("target.sock");
        let target = match case {
            "absent" => Target::Absent,
            "file" => {
                fs::write(&target_path, "precious").unwrap();
                Target::File
            }
            "dead socket" => {
                drop(UnixListener::bind(&target_path).unwrap());
                Target::DeadSocket
            }
            _ => Target::LiveSocket(decoy(&target_path)),
        };
        let link = coord.join("p.sock");
        symlink(&target_path, &link);
        let check = |when: &str| {
            assert_eq!(fs::read_link(&link).ok(), Some(target_path.clone()), "{case}, {when}: the symlink");
            match &target {
                Target::Absent => assert!(!target_path.exists(), "{case}, {when}: the target was created"),
                Target::File => assert_eq!(fs::read_to_string(&target_path).unwrap(), "precious"),
                Target::DeadSocket => {
                    let meta = fs::symlink_metadata(&target_path);
                    assert!(
                        meta.is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type())),
                        "{case}, {when}: the dead socket the symlink points to is gone"
                    );
                }
                Target::LiveSocket(listener) => assert_untouched(listener, &format!("{case}, {when}")),
            }
            let beside = if case == "absent" { set(&["coord"]) } else { set(&["coord", "target.sock"]) };
            assert_eq!(entries(tmp.path()), beside, "{case}, {when}");
        };

        let mut peer = Peer::start(&coord, &["--id", "p"]);
        expect_refusal(&mut peer, &[&link]);
        check("after the refusal");
        assert_eq!(entries(&coord), set(&["p.sock"]), "{case}: the refused peer left something");

        // The hazard concerns id p only: q becomes owner beside it, and its sweep of stale
        // sockets does not follow or remove the symlink.
        let _q = becomes_owner(&coord, "q");
        check("after another peer became owner");
        assert_eq!(entries(&coord), set(&["p.sock", "pid", "q.sock"]), "{case}");
    }
}

#[test]
fn symlink_at_the_owners_socket_path_is_not_followed() {
    let tmp = TestDir::new();
    let coord = coordination_dir(&tmp);
    let elsewhere = tmp.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    // A live socket elsewhere, as another group's owner would have.
    let live = decoy(&elsewhere.join("o.sock"));
    fs::write(coord.join("pid"), "o").unwrap();
    let link = coord.join("o.sock");
    symlink(&elsewhere.join("o.sock"), &link);

    let mut peer = Peer::start(&coord, &["--id", "p"]);
    expect_refusal(&mut peer, &[&link]);
    assert_untouched(&live, "the newcomer followed the symlink");
    assert_eq!(fs::read_link(&link).unwrap(), elsewhere.join("o.sock"));
    assert_eq!(fs::read_to_string(coord.join("pid")).unwrap(), "o");
    assert_eq!(entries(&coord), set(&["o.sock", "pid"]));

    fs::remove_file(&link).unwrap();
    becomes_owner(&coord, "good");
    assert_untouched(&live, "after the hazard was removed");
}

#[test]
fn non_socket_files_at_socket_paths_are_left_alone() {
    // At the peer's own socket path: a regular file, then a directory.
    for case in ["regular file", "directory"] {
        let tmp = TestDir::new();
        let coord = coordination_dir(&tmp);
        let own = coord.join("p.sock");
        if case == "directory" {
            fs::create_dir(&own).unwrap();
            fs::write(own.join("inside"), "keep me").unwrap();
        } else {
            fs::write(&own, "keep me").unwrap();
        }
        let content = || match case {
            "directory" => fs::read_to_string(own.join("inside")).unwrap(),
            _ => fs::read_to_string(&own).unwrap(),
        };

        let mut peer = Peer::start(&coord, &["--id", "p"]);
        expect_refusal(&mut peer, &[&own]);
        assert_eq!(content(), "keep me", "{case}");
        assert_eq!(entries(&coord), set(&["p.sock"]), "{case}");

        // Beside it, q becomes owner; its sweep leaves the file alone.
        let _q = becomes_owner(&coord, "q");
        assert_eq!(content(), "keep me", "{case}: after another peer became owner");
        assert_eq!(entries(&coord), set(&["p.sock", "pid", "q.sock"]), "{case}");
    }

    // At the owner's socket path, named by the owner file.
    let tmp = TestDir::new();
    let coord = coordination_dir(&tmp);
    fs::write(coord.join("pid"), "o").unwrap();
    let theirs = coord.join("o.sock");
    fs::write(&theirs, "keep me too").unwrap();
    let mut peer = Peer::start(&coord, &["--id", "p"]);
    expect_refusal(&mut peer, &[&theirs]);
    assert_eq!(fs::read_to_string(&theirs).unwrap(), "keep me too");
    assert_eq!(fs::read_to_string(coord.join("pid")).unwrap(), "o");
    assert_eq!(entries(&coord), set(&["o.sock", "pid"]));

    fs::remove_file(&theirs).unwrap();
    becomes_owner(&coord, "good");
}

#[test]
fn stale_socket_of_a_dead_process_with_the_peers_id_is_replaced() {
    let tmp = TestDir::new();
    let dir = tmp.path();
    let mut owner = Peer::start(dir, &["--id", "o", "--listen", "web=tcp:127.0.0.1:0", "--serve"]);
    let addr = listen_addr(&owner.wait_for("listening"), "web");
    owner.wait_for("ready");
    let listen = format!("web=tcp:{addr}");

    // A newcomer x dies mid-handoff (SIGKILL): its socket file stays, with nobody behind it.
    let mut dead = Peer::start(dir, &["--id", "x", "--listen", &listen, "--no-ready"]);
    assert_eq!(inherited_ids(&dead.wait_for("inherited")), ["web"]);
    dead.kill();
    let stale = fs::symlink_metadata(tmp.join("x.sock")).expect("the killed process's socket file");
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&stale.file_type()));

    // A new process with id x replaces it and takes over.
    let mut x = Peer::start(dir, &["--id", "x", "--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&x.wait_for("inherited")), ["web"]);
    x.wait_for("ready");
    owner.wait_for("upgrade_complete");
    owner.expect_clean_exit();
    assert_eq!(tmp.owner(), "x");
    if !listens_at(x.pid(), &tmp.join("x.sock")) {
        x.fail("the new x does not listen at x.sock");
    }
    assert_eq!(tmp.entries(), set(&["pid", "x.sock"]));

    // Its socket is live: it hands over in turn.
    let mut next = Peer::start(dir, &["--id", "next", "--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&next.wait_for("inherited")), ["web"]);
    next.wait_for("ready");
    x.wait_for("upgrade_complete");
    x.expect_clean_exit();
}

#[test]
fn live_sockets_are_never_removed() {
    let tmp = TestDir::new();
    let dir = tmp.path();
    let mut x = Peer::start(dir, &["--id", "x", "--listen", "web=tcp:127.0.0.1:0", "--serve"]);
    let addr = listen_addr(&x.wait_for("listening"), "web");
    x.wait_for("ready");
    let listen = format!("web=tcp:{addr}");
    let inode = fs::metadata(tmp.join("x.sock")).unwrap().ino();
    // A live socket of a process that is no peer at all, under a peer-like name.
    let bystander = decoy(&tmp.join("z.sock"));

    let mut twin = Peer::start(dir, &["--id", "x", "--listen", &listen, "--serve"]);
    let message = twin.expect_error_exit();
    if !message.contains("in use") || !mentions(&message, &tmp.join("x.sock")) {
        twin.fail(&format!("expected an error naming x.sock in use: {message}"));
    }
    let now = fs::metadata(tmp.join("x.sock")).map(|m| m.ino()).ok();
    assert_eq!(now, Some(inode), "the live process's socket was removed or replaced");
    if !listens_at(x.pid(), &tmp.join("x.sock")) {
        x.fail("x no longer listens at x.sock");
    }
    assert_eq!(tmp.owner(), "x");
    util::assert_hello(util::http_get(&addr, "/"), "x");

    // Still serving handoffs; the new owner's sweep leaves the live bystander alone.
    let mut y = Peer::start(dir, &["--id", "y", "--listen", &listen, "--serve"]);
    assert_eq!(inherited_ids(&y.wait_for("inherited")), ["web"]);
    y.wait_for("ready");
    x.wait_for("upgrade_complete");
    x.expect_clean_exit();
    assert_eq!(tmp.owner(), "y");
    assert_eq!(tmp.entries(), set(&["pid", "y.sock", "z.sock"]));
    assert_untouched(&bystander, "the sweep connected to a live socket");
}

// ---------------------------------------------------------------------------------------------
// The directory itself

#[test]
fn missing_or_non_directory_paths_are_refused() {
    let tmp = TestDir::new();
    let file = tmp.join("file");
    fs::write(&file, "keep me").unwrap();
    let missing = tmp.join("missing");
    let before = entries(tmp.path());
    for dir in [missing.clone(), missing.join("deeper"), file.clone()] {
        let mut peer = Peer::start(&dir, &["--id", "p"]);
        expect_refusal(&mut peer, &[&dir]);
        assert_eq!(entries(tmp.path()), before, "{}: something was created", dir.display());
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
    }

    fs::create_dir(&missing).unwrap();
    becomes_owner(&missing, "good");
}

#[test]
fn directory_without_write_permission_is_refused() {
    let tmp = TestDir::new();
    // Others may traverse the temporary directory; the coordination directory is read-only.
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let coord = coordination_dir(&tmp);
    fs::set_permissions(&coord, fs::Permissions::from_mode(0o555)).unwrap();
    // Root may write anywhere: as root, run the peer as nobody.
    let user = rustix::process::geteuid().is_root().then_some(NOBODY);
    let program = runnable_peer(&tmp, user);
    let dir_arg = text(&coord);

    let mut peer = Peer::start_as_user(&program, user, &["--dir", &dir_arg, "--id", "p"]);
    let message = peer.expect_error_exit();
    if !mentions(&message, &coord) {
        peer.fail(&format!("the error does not name the directory: {message}"));
    }
    assert_eq!(entries(&coord), BTreeSet::new(), "something was created");

    // Made writable for that user, the same peer becomes owner.
    if let Some(uid) = user {
        std::os::unix::fs::chown(&coord, Some(uid), Some(uid)).unwrap();
    }
    fs::set_permissions(&coord, fs::Permissions::from_mode(0o755)).unwrap();
    let mut peer = Peer::start_as_user(&program, user, &["--dir", &dir_arg, "--id", "p"]);
    peer.wait_for("ready");
    assert_eq!(fs::read_to_string(coord.join("pid")).unwrap(), "p");
}
