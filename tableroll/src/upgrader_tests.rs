//! In-process tests of the whole upgrader: two upgraders in one process behave like two
//! processes, since the lock is per open file description and each has its own sockets.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::{Error, Kind, Upgrader};

fn builder(dir: &tempfile::TempDir, id: &str) -> crate::Builder {
    Upgrader::builder(dir.path()).id(id).connect_timeout(Duration::from_secs(20))
}

#[test]
fn hands_a_listener_to_a_newcomer() {
    let dir = tempfile::tempdir().unwrap();
    let old = builder(&dir, "old").build().unwrap();
    assert!(old.inherited_ids().is_empty());
    let ln = old.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    let addr = ln.local_addr().unwrap();
    old.ready().unwrap();
    assert_eq!(std::fs::read(dir.path().join("pid")).unwrap(), b"old");

    let new = builder(&dir, "new").build().unwrap();
    assert_eq!(new.inherited_ids(), ["web"]);
    let inherited = new.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    assert_eq!(inherited.local_addr().unwrap(), addr);
    assert!(!old.upgrade_complete().is_complete());
    new.ready().unwrap();
    assert!(old.upgrade_complete().wait_timeout(Duration::from_secs(20)));
    assert_eq!(std::fs::read(dir.path().join("pid")).unwrap(), b"new");

    // Both copies accept on the same socket.
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"x").unwrap();
    let (mut conn, _) = inherited.accept().unwrap();
    let mut byte = [0u8];
    conn.read_exact(&mut byte).unwrap();
    // The old owner's upgrade socket is gone; the new one's is there.
    old.stop();
    assert!(!dir.path().join("old.sock").exists());
    assert!(dir.path().join("new.sock").exists());
}

#[test]
fn mutation_rules_follow_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let old = builder(&dir, "old").build().unwrap();
    old.fds().listen_tcp("a", "127.0.0.1:0").unwrap();
    old.fds().listen_tcp("b", "127.0.0.1:0").unwrap();
    old.ready().unwrap();
    let new = builder(&dir, "new").build().unwrap();
    // The owner is mid-transfer until the newcomer is ready.
    assert!(matches!(
        (old.fds().listen_tcp("c", "127.0.0.1:0")).map_err(|e| e.kind()),
        Err(crate::ErrorKind::UpgradeInProgress)
    ));
    assert!(matches!(
        (old.fds().remove("a")).map_err(|e| e.kind()),
        Err(crate::ErrorKind::UpgradeInProgress)
    ));
    // Reading is always fine.
    assert!(old.fds().get::<TcpListener>("a").unwrap().is_some());
    new.fds().get::<TcpListener>("a").unwrap().unwrap();
    new.fds().get::<TcpListener>("b").unwrap().unwrap();
    new.ready().unwrap();
    old.upgrade_complete().wait();
    assert!(matches!(
        (old.fds().listen_tcp("c", "127.0.0.1:0")).map_err(|e| e.kind()),
        Err(crate::ErrorKind::UpgradeCompleted)
    ));
    old.fds().remove("a").unwrap();
    assert!(matches!(old.fds().remove("a").map_err(|e| e.kind()), Err(crate::ErrorKind::UnknownId)));
    old.stop();
    assert!(matches!(old.fds().remove("b").map_err(|e| e.kind()), Err(crate::ErrorKind::Stopped)));
    assert!(matches!(
        (old.fds().listen_tcp("c", "127.0.0.1:0")).map_err(|e| e.kind()),
        Err(crate::ErrorKind::Stopped)
    ));
}

#[test]
fn unclaimed_inherited_descriptors_are_closed_at_ready() {
    let dir = tempfile::tempdir().unwrap();
    let old = builder(&dir, "old").build().unwrap();
    let a = old.fds().listen_tcp("a", "127.0.0.1:0").unwrap();
    drop(old.fds().listen_tcp("b", "127.0.0.1:0").unwrap());
    old.ready().unwrap();
    let new = builder(&dir, "new").build().unwrap();
    let kinds: Vec<(String, Kind, bool)> =
        new.fds().list().into_iter().map(|d| (d.id, d.kind, d.inherited)).collect();
    assert_eq!(kinds, [("a".into(), Kind::TcpListener, true), ("b".into(), Kind::TcpListener, true)]);
    // Any accessor claims: `get::<OwnedFd>("b")` keeps b, `listen_tcp` keeps a.
    drop(new.fds().get::<OwnedFd>("b").unwrap().unwrap());
    new.fds().listen_tcp("a", a.local_addr().unwrap()).unwrap();
    new.ready().unwrap();
    let kept: Vec<_> = new.fds().list().into_iter().map(|d| d.id).collect();
    assert_eq!(kept, ["a", "b"]);

    let third = builder(&dir, "third").build().unwrap();
    assert_eq!(third.inherited_ids(), ["a", "b"]);
    third.fds().get::<TcpListener>("a").unwrap().unwrap();
    third.ready().unwrap();
    assert_eq!(third.fds().list().len(), 1, "b was not claimed, so it was closed");
    assert!(third.fds().get::<OwnedFd>("b").unwrap().is_none());
}

#[test]
fn kinds_round_trip_through_a_handoff() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("app.sock");
    let old = builder(&dir, "old").build().unwrap();
    old.fds().listen_unix("unix", &sock).unwrap();
    old.fds().bind_udp("udp", "127.0.0.1:0").unwrap();
    let (mine, theirs) = UnixStream::pair().unwrap();
    old.fds().get_or_insert_with("conn", || Ok(theirs)).unwrap();
    let file = dir.path().join("log");
    old.fds().open_file("log", &file, std::fs::OpenOptions::new().create(true).append(true)).unwrap();
    old.fds().get_or_insert_with("pipe", || Ok(OwnedFd::from(TcpListener::bind("127.0.0.1:0")?))).unwrap();
    old.ready().unwrap();

    let new = builder(&dir, "new").build().unwrap();
    let kinds: Vec<Kind> = new.fds().list().into_iter().map(|d| d.kind).collect();
    assert_eq!(kinds, [Kind::UnixStream, Kind::File, Kind::Fd, Kind::UdpSocket, Kind::UnixListener]);
    let ln = new.fds().listen_unix("unix", &sock).unwrap();
    let mut conn = new.fds().get::<UnixStream>("conn").unwrap().unwrap();
    let mut log = new.fds().get::<File>("log").unwrap().unwrap();
    new.fds().get::<UdpSocket>("udp").unwrap().unwrap();
    new.fds().get::<OwnedFd>("pipe").unwrap().unwrap();
    assert!(matches!(
        (new.fds().get::<TcpListener>("unix")).map_err(|e| e.kind()),
        Err(crate::ErrorKind::KindMismatch)
    ));
    new.ready().unwrap();

    conn.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    (&mine).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    log.write_all(b"line\n").unwrap();
    assert_eq!(std::fs::read(&file).unwrap(), b"line\n");
    let _client = UnixStream::connect(&sock).unwrap();
    ln.accept().unwrap();
    // Closing every copy never unlinks the Unix listener's path.
    drop(ln);
    drop(old);
    drop(new);
    assert!(sock.exists());
}

#[test]
fn bad_ids_and_directories_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for id in ["", ".", "..", "a/b", "a\0b", &"x".repeat(200)] {
        let err = Upgrader::builder(dir.path()).id(id).build().unwrap_err();
        assert!(
            matches!(err.kind(), crate::ErrorKind::InvalidId | crate::ErrorKind::PathTooLong),
            "{id:?}: {err}"
        );
    }
    let missing = dir.path().join("missing");
    let err = Upgrader::new(&missing).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_live_id_is_refused_and_a_dead_one_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = builder(&dir, "same").build().unwrap();
    first.ready().unwrap();
    let err = builder(&dir, "same").build().unwrap_err();
    assert!(matches!(err.kind(), crate::ErrorKind::IdInUse), "{err}");
    drop(first);
    // A stale socket of a crashed process with this id, and the owner file naming it.
    drop(std::os::unix::net::UnixListener::bind(dir.path().join("same.sock")).unwrap());
    let again = builder(&dir, "same").build().unwrap();
    assert!(again.inherited_ids().is_empty());
    again.ready().unwrap();
}

#[test]
fn stopping_before_ready_releases_the_lock_and_keeps_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let owner = builder(&dir, "owner").build().unwrap();
    owner.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    owner.ready().unwrap();
    let quitter = builder(&dir, "quitter").build().unwrap();
    drop(quitter);
    assert!(!dir.path().join("quitter.sock").exists());
    let next = builder(&dir, "next").build().unwrap();
    assert_eq!(next.inherited_ids(), ["web"]);
    next.fds().get::<TcpListener>("web").unwrap().unwrap();
    next.ready().unwrap();
    assert!(owner.upgrade_complete().wait_timeout(Duration::from_secs(20)));
}

#[test]
fn upgrade_complete_works_as_a_future_without_a_runtime() {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    let dir = tempfile::tempdir().unwrap();
    let old = builder(&dir, "old").build().unwrap();
    old.ready().unwrap();
    let mut fut = pin!(old.upgrade_complete());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(fut.as_mut().poll(&mut cx).is_pending());
    let new = builder(&dir, "new").build().unwrap();
    new.ready().unwrap();
    old.upgrade_complete().wait();
    assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(()));
}

/// Connects to `dir/<id>.sock` as a raw client, reads the list frame and descriptors away
/// (or not), and sends `ready` bytes.
fn raw_newcomer(dir: &tempfile::TempDir, owner: &str, drain: bool, ready: &[u8]) {
    let mut conn = UnixStream::connect(dir.path().join(format!("{owner}.sock"))).unwrap();
    if drain {
        let ch = crate::protocol::Channel::new(conn.try_clone().unwrap(), None, None, "test").unwrap();
        let version = crate::handoff::newcomer::receive(&ch, &mut Vec::new()).unwrap();
        assert_eq!(version, 1);
        conn.set_nonblocking(false).unwrap();
    }
    let _ = conn.write_all(ready);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    // Wait for the owner to close its side: the session is over.
    let mut rest = Vec::new();
    let _ = conn.read_to_end(&mut rest);
}

#[test]
fn hostile_newcomers_leave_the_owner_serving() {
    let dir = tempfile::tempdir().unwrap();
    let owner = builder(&dir, "owner").upgrade_timeout(Duration::from_secs(20)).build().unwrap();
    let ln = owner.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    owner.ready().unwrap();
    let huge = [&[0x42u8][..], &i32::MAX.to_be_bytes()].concat();
    let negative = [&[0x42u8][..], &(-5i32).to_be_bytes()].concat();
    let bad_version = [&[0x42u8][..], &[0, 0, 0, 14], b"{\"version\":9}\n"].concat();
    let wrong_shape = [&[0x42u8][..], &[0, 0, 0, 3], b"[1]\n"].concat();
    let cases: [(bool, &[u8]); 8] = [
        (false, b""),
        (true, b""),
        (true, b"\x00"),
        (true, b"garbage"),
        (true, &huge),
        (true, &negative),
        (true, &bad_version),
        (true, &wrong_shape),
    ];
    for (drain, ready) in cases {
        raw_newcomer(&dir, "owner", drain, ready);
        assert!(!owner.upgrade_complete().is_complete(), "stepped down after {ready:?}");
    }
    // Still the owner, still serving: a real newcomer takes over normally.
    let new = builder(&dir, "new").build().unwrap();
    assert_eq!(
        new.fds().get::<TcpListener>("web").unwrap().unwrap().local_addr().unwrap(),
        ln.local_addr().unwrap()
    );
    new.ready().unwrap();
    assert!(owner.upgrade_complete().wait_timeout(Duration::from_secs(20)));
}

#[test]
fn a_silent_newcomer_is_bounded_by_the_upgrade_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let owner = builder(&dir, "owner").upgrade_timeout(Duration::from_millis(100)).build().unwrap();
    owner.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    owner.ready().unwrap();
    // Connects, takes everything, and says nothing: the owner gives up and closes.
    let mut silent = UnixStream::connect(dir.path().join("owner.sock")).unwrap();
    let ch = crate::protocol::Channel::new(silent.try_clone().unwrap(), None, None, "test").unwrap();
    crate::handoff::newcomer::receive(&ch, &mut Vec::new()).unwrap();
    silent.set_nonblocking(false).unwrap();
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(!owner.upgrade_complete().is_complete());
    let new = builder(&dir, "new").build().unwrap();
    new.fds().get::<TcpListener>("web").unwrap().unwrap();
    new.ready().unwrap();
    assert!(owner.upgrade_complete().wait_timeout(Duration::from_secs(20)));
}

/// Plants a fake owner `fake` that answers the first connection with `bytes` and descriptors
/// `fds`, then holds the connection open until the test ends.
fn fake_owner(dir: &tempfile::TempDir, bytes: Vec<u8>, fds: usize) -> std::thread::JoinHandle<()> {
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("fake.sock")).unwrap();
    std::fs::write(dir.path().join("pid"), b"fake").unwrap();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let ch = crate::protocol::Channel::new(conn, None, None, "test").unwrap();
        // The newcomer may give up (its connect timeout, on a loaded machine) and close the
        // connection before all of this is written: a broken pipe is one of its outcomes.
        if ch.write_all(&bytes).is_err() {
            return;
        }
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        for _ in 0..fds {
            if ch.send_fd(b"x", std::os::fd::AsFd::as_fd(&l)).is_err() {
                return;
            }
        }
        // Hold the connection until the newcomer gives up.
        let _ = ch.read_exact(&mut [0u8; 1]);
    })
}

fn list_frame(prefix: &[u8], json: &[u8]) -> Vec<u8> {
    let body = [prefix, json].concat();
    [&(body.len() as i32).to_be_bytes()[..], &body].concat()
}

#[test]
fn malformed_owners_fail_the_newcomer_cleanly() {
    let two =
        br#"[{"kind":"listener","id":"a","network":"tcp"},{"kind":"listener","id":"b","network":"tcp"}]"#;
    let dup =
        br#"[{"kind":"listener","id":"a","network":"tcp"},{"kind":"listener","id":"a","network":"tcp"}]"#;
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("huge length", i32::MAX.to_be_bytes().to_vec(), 0),
        ("negative length", (-1i32).to_be_bytes().to_vec(), 0),
        ("garbage JSON", list_frame(b"\t ", b"{{{{\n"), 0),
        ("overlong version prefix", list_frame(&[b' '; 17], b"[]\n"), 0),
        ("truncated frame", [&100i32.to_be_bytes()[..], b"[{"].concat(), 0),
        ("fewer descriptors than listed", list_frame(b"\t ", two), 1),
        ("duplicate ids", list_frame(b"\t ", dup), 2),
        ("hangs after the list", list_frame(b"\t ", two), 0),
    ];
    for (name, bytes, fds) in cases {
        let dir = tempfile::tempdir().unwrap();
        let owner = fake_owner(&dir, bytes, fds);
        let err = Upgrader::builder(dir.path())
            .id("new")
            .connect_timeout(Duration::from_millis(300))
            .build()
            .expect_err(name);
        assert!(
            matches!(err.kind(), crate::ErrorKind::Protocol | crate::ErrorKind::Timeout),
            "{name}: {err}"
        );
        // Nothing left behind: no socket, the lock free.
        assert!(!dir.path().join("new.sock").exists(), "{name}");
        let lock =
            crate::coordination::OwnerLock::acquire(&dir.path().join("pid"), Some(std::time::Instant::now()));
        assert!(lock.is_ok(), "{name}: lock still held");
        drop(lock);
        owner.join().unwrap();
    }
}

#[test]
fn owner_file_naming_an_escaping_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pid"), b"../../etc/passwd").unwrap();
    let err = builder(&dir, "new").build().unwrap_err();
    assert!(matches!(err.kind(), crate::ErrorKind::Protocol), "{err}");
    assert!(!dir.path().join("new.sock").exists());
}

#[test]
fn default_id_fits_a_long_directory() {
    let tmp = tempfile::tempdir().unwrap();
    // Leave room for about 12 id bytes: the pid-and-random default would not fit.
    let room = 107 - tmp.path().as_os_str().len() - 1 - ".sock".len() - 1;
    let dir = tmp.path().join("d".repeat(room - 12));
    std::fs::create_dir(&dir).unwrap();
    let up = Upgrader::new(&dir).unwrap();
    assert!(up.id().len() <= 12 && up.id().len() >= 8, "{}", up.id());
    up.ready().unwrap();
}

#[test]
fn public_types_are_thread_safe() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Upgrader>();
    send_sync::<crate::Fds>();
    send_sync::<crate::UpgradeComplete>();
    send_sync::<Error>();
}

#[test]
fn unix_listener_path_of_a_dead_process_is_rebound_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // left behind, nobody accepts
    let up = builder(&dir, "one").build().unwrap();
    let ln = up.fds().listen_unix("app", &path).unwrap();
    let _client = UnixStream::connect(&path).unwrap();
    ln.accept().unwrap();
    // A second store trying to bind the same path while it is alive gets a clear error.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Upgrader::builder(other_dir.path()).id("two").build().unwrap();
    let err = other.fds().listen_unix("app", &path).unwrap_err();
    assert!(matches!(err.kind(), crate::ErrorKind::Create), "{err}");
    assert!(path.exists());
}

#[test]
fn an_owner_dying_midway_leaves_the_newcomer_what_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("dying.sock")).unwrap();
    std::fs::write(dir.path().join("pid"), b"dying").unwrap();
    let web = TcpListener::bind("127.0.0.1:0").unwrap();
    let web_addr = web.local_addr().unwrap();
    let owner = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let ch = crate::protocol::Channel::new(conn, None, None, "test").unwrap();
        let two = br#"[{"kind":"listener","id":"web","network":"tcp"},{"kind":"listener","id":"b","network":"tcp"}]"#;
        ch.write_all(&list_frame(b"\t ", two)).unwrap();
        ch.send_fd(b"listener(web)", std::os::fd::AsFd::as_fd(&web)).unwrap();
        // Dies: its upgrade socket and the connection close, the second descriptor never comes.
        drop(listener);
    });
    let new = builder(&dir, "new").build().unwrap();
    owner.join().unwrap();
    assert_eq!(new.inherited_ids(), ["web"]);
    let inherited = new.fds().listen_tcp("web", web_addr).unwrap();
    assert_eq!(inherited.local_addr().unwrap(), web_addr);
    new.ready().unwrap();
    assert_eq!(std::fs::read(dir.path().join("pid")).unwrap(), b"new");
    // The dead owner's socket was swept.
    assert!(!dir.path().join("dying.sock").exists());
}

#[test]
fn a_directory_too_long_for_any_default_id_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    // Room for 5 id bytes: less than the 8 random hex digits a default id keeps at least.
    let room = 107 - tmp.path().as_os_str().len() - 1 - ".sock".len() - 1;
    let dir = tmp.path().join("d".repeat(room - 5));
    std::fs::create_dir(&dir).unwrap();
    let err = Upgrader::new(&dir).unwrap_err();
    assert!(matches!(err.kind(), crate::ErrorKind::PathTooLong), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing created");
}

#[test]
fn a_missing_directory_is_created_owner_only_only_when_asked() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run").join("app");
    let err = Upgrader::builder(&dir).build().unwrap_err();
    assert_eq!(err.path(), Some(dir.as_path()), "{err}");
    assert!(!tmp.path().join("run").exists(), "created without being asked");

    let upgrader = Upgrader::builder(&dir).create_dir(true).build().unwrap();
    upgrader.ready().unwrap();
    for created in [tmp.path().join("run"), dir.clone()] {
        let mode = std::fs::metadata(&created).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", created.display());
    }
    drop(upgrader);
    // An existing directory is used as it is.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
    let again = Upgrader::builder(&dir).create_dir(true).build().unwrap();
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o750);
    drop(again);
}
