//! tableroll's test kit, for the tests of every crate of the workspace: a child process with its
//! output captured and its lines waited on ([`process`], [`events`]), a minimal HTTP client
//! ([`http`]), closed-loop HTTP load ([`load`]), a directory per test, and the descriptor limit.
//! The HTTP and the load are the workspace's one copy, [`tableroll_load`], with what tests need
//! on top: answers counted by the server that gave them, and waits on them.
//!
//! The package also builds the test servers (the library's examples, the conformance peer among
//! them) as binaries and holds the library's process tests, which run them: see `Cargo.toml`.
//!
//! Tests synchronise on events, sockets and process exits; the timeouts here only turn a hang
//! into a failure that shows the command, its status, its stdout and its stderr.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod async_load;
pub mod events;
pub mod http;
pub mod load;
pub mod process;
mod shared_report;

/// How long anything may take before the test is declared hung.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh temporary directory, removed on drop; it doubles as a coordination directory.
pub struct TestDir {
    tmp: tempfile::TempDir,
}

impl TestDir {
    #[allow(clippy::new_without_default)] // a new directory each time: not a default value
    pub fn new() -> TestDir {
        let tmp = tempfile::Builder::new().prefix("tr").tempdir().expect("creating a temporary directory");
        TestDir { tmp }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The names in the directory, but the group's journal (`journal`, `journal.1`), which
    /// every member writes: the owner file, the upgrade sockets, the standby marks and anything
    /// else.
    pub fn entries(&self) -> BTreeSet<String> {
        let entries = fs::read_dir(self.path()).expect("listing the test directory");
        entries
            .map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name != "journal" && name != "journal.1")
            .collect()
    }

    /// The content of the owner file (empty if missing).
    pub fn owner(&self) -> String {
        match fs::read(self.join("pid")) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("reading the owner file: {e}"),
        }
    }
}

/// Raises this process's soft limit on open descriptors to at least `want` (children inherit
/// it); panics if the hard limit does not allow it.
pub fn raise_nofile_limit(want: u64) {
    let now = tableroll_load::raise_nofile_limit(want).expect("raising RLIMIT_NOFILE");
    assert!(now >= want, "this test needs {want} descriptors per process; the hard limit allows {now}");
}
