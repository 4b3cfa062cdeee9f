//! The store's lock discipline: it is held to look, claim and insert, never while a descriptor
//! is created. Each test would hang on a store that held its lock around the creation; every
//! wait is bounded to turn such a hang into a failure, and the threads synchronise on
//! channels, never on time.

use std::io;
use std::mem::ManuallyDrop;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use crate::{Fds, Upgrader};

/// Bounds every wait, to turn a hang into a failure.
const TIMEOUT: Duration = Duration::from_secs(20);

fn builder(dir: &tempfile::TempDir, id: &str) -> crate::Builder {
    Upgrader::builder(dir.path()).id(id).connect_timeout(TIMEOUT)
}

/// Runs `f` on a thread of its own and returns its result; fails if it does not return.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(TIMEOUT)
        .unwrap_or_else(|e| panic!("{what} did not return ({e}): the store's lock is held"))
}

/// A creation paused inside its closure on another thread: it has told `started` it runs, and
/// makes a listener once `release` is sent; its result arrives on `done`.
struct PausedCreate {
    release: mpsc::Sender<()>,
    done: mpsc::Receiver<crate::Result<TcpListener>>,
}

impl PausedCreate {
    fn start(fds: &Fds, id: &'static str) -> PausedCreate {
        let (started_tx, started) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let fds = fds.clone();
        std::thread::spawn(move || {
            let result = fds.get_or_insert_with(id, || {
                started_tx.send(()).unwrap();
                release_rx.recv().map_err(io::Error::other)?;
                TcpListener::bind("127.0.0.1:0")
            });
            let _ = done_tx.send(result);
        });
        started.recv_timeout(TIMEOUT).expect("the closure to start");
        PausedCreate { release, done }
    }

    fn finish(self) -> crate::Result<TcpListener> {
        self.release.send(()).unwrap();
        self.done.recv_timeout(TIMEOUT).expect("the creation to finish")
    }
}

fn ids(fds: &Fds) -> Vec<String> {
    fds.list().into_iter().map(|d| d.id).collect()
}

#[test]
fn a_closure_may_use_the_store() {
    let dir = tempfile::tempdir().unwrap();
    // Not dropped if the closure deadlocks: stopping takes the store's lock.
    let upgrader = ManuallyDrop::new(builder(&dir, "one").build().unwrap());
    let fds = upgrader.fds().clone();
    let (outer, inner_addr) = within("get_or_insert_with calling the store", move || {
        let mut inner_addr = None;
        let outer = fds
            .get_or_insert_with("outer", || {
                let inner = fds.listen_tcp("inner", "127.0.0.1:0")?;
                inner_addr = Some(inner.local_addr()?);
                assert_eq!(ids(&fds), ["inner"]);
                assert!(fds.get::<TcpListener>("outer")?.is_none());
                TcpListener::bind("127.0.0.1:0")
            })
            .unwrap();
        (outer.local_addr().unwrap(), inner_addr.unwrap())
    });
    let stored = |id| upgrader.fds().get::<TcpListener>(id).unwrap().unwrap().local_addr().unwrap();
    assert_eq!((stored("outer"), stored("inner")), (outer, inner_addr));
    drop(ManuallyDrop::into_inner(upgrader));
}

#[test]
fn a_slow_create_holds_up_neither_readers_nor_a_handoff() {
    let dir = tempfile::tempdir().unwrap();
    let old = builder(&dir, "old").build().unwrap();
    old.fds().listen_tcp("web", "127.0.0.1:0").unwrap();
    old.ready().unwrap();
    let slow = PausedCreate::start(old.fds(), "slow");

    let fds = old.fds().clone();
    let (listed, got) = within("reading the store", move || (ids(&fds), fds.get::<TcpListener>("web")));
    assert_eq!(listed, ["web"]);
    assert!(got.unwrap().is_some());
    // The owner's serving thread takes its snapshot under the store's lock.
    let new = builder(&dir, "new").build().unwrap();
    assert_eq!(new.inherited_ids(), ["web"]);

    // The handoff began while the listener was made: it is closed, and the snapshot stays whole.
    assert!(matches!(slow.finish().map_err(|e| e.kind()), Err(crate::ErrorKind::UpgradeInProgress)));
    assert_eq!(ids(old.fds()), ["web"]);
    new.fds().get::<TcpListener>("web").unwrap().unwrap();
    new.ready().unwrap();
    assert!(old.upgrade_complete().wait_timeout(TIMEOUT));
}

#[test]
fn creators_of_one_id_at_once_share_the_first_stored() {
    let dir = tempfile::tempdir().unwrap();
    let upgrader = builder(&dir, "one").build().unwrap();
    let slow = PausedCreate::start(upgrader.fds(), "web");
    let fds = upgrader.fds().clone();
    let first = within("creating meanwhile", move || fds.listen_tcp("web", "127.0.0.1:0")).unwrap();

    let second = slow.finish().unwrap();
    assert_eq!(second.local_addr().unwrap(), first.local_addr().unwrap());
    let listed = upgrader.fds().list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].addr, first.local_addr().unwrap().to_string());
}
