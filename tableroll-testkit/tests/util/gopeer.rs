//! The Go tableroll peers (`../shared/interop/`, see its README) beside ours, for the interop
//! tests: where their binaries are, and a group of processes of both kinds on one coordination
//! directory, each with an id its Go version accepts.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{peer_binary, Peer};

/// The environment variable that names the directory of the Go peers.
pub const GO_PEERS_ENV: &str = "TABLEROLL_GO_PEERS";

/// The directory of the Go peers, from [`GO_PEERS_ENV`]. Panics (the test fails) when it is
/// unset or not a directory: an interop test never passes without the Go processes.
pub fn go_peers_dir() -> PathBuf {
    let Some(dir) = std::env::var_os(GO_PEERS_ENV) else {
        panic!(
            "{GO_PEERS_ENV} is not set: it must name the directory of the Go tableroll peers \
             (go-tableroll-v1.1.0 ...; in this project ../shared/interop)"
        );
    };
    let dir = PathBuf::from(dir);
    assert!(dir.is_dir(), "{GO_PEERS_ENV}={} is not a directory", dir.display());
    dir
}

/// The Go peer built against Go tableroll `version` (`v1.1.0`, `v2.0.0`, `v2.1.0`, `v4.0.0`);
/// panics when it is missing or not executable.
pub fn go_binary(version: &str) -> PathBuf {
    let binary = go_peers_dir().join(format!("go-tableroll-{version}"));
    let mode = std::fs::metadata(&binary)
        .unwrap_or_else(|e| panic!("the Go peer {} is missing ({GO_PEERS_ENV}): {e}", binary.display()))
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "the Go peer {} is not executable", binary.display());
    binary
}

/// Which implementation a process of a group runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Our conformance peer.
    Rust,
    /// The Go peer of the group's version.
    Go,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Rust => Side::Go,
            Side::Go => Side::Rust,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Rust => "rust",
            Side::Go => "go",
        })
    }
}

/// Processes of both kinds on one coordination directory, with one Go version. Each process's
/// [`Peer::label`] is its library id: what the owner file names and its HTTP answers say.
pub struct Group {
    dir: PathBuf,
    go: PathBuf,
    /// Go v1.1.0 names every process by its pid: ours must too.
    pid_ids: bool,
    started: usize,
}

impl Group {
    /// A group on `dir` with the Go peer of `version` (which must exist, see [`go_binary`]).
    pub fn new(dir: &Path, version: &str) -> Group {
        let go = go_binary(version);
        Group { dir: dir.to_owned(), go, pid_ids: version.starts_with("v1."), started: 0 }
    }

    /// Starts a process of `side` on the group's directory with `args` added. Its id is
    /// `<side><n>` (the n-th process of the group), or its pid in a group with Go v1.1.0.
    pub fn start(&mut self, side: Side, args: &[&str]) -> Peer {
        self.started += 1;
        let dir = self.dir.to_str().expect("a UTF-8 test directory");
        let id = format!("{side}{}", self.started);
        let mut peer = match (side, self.pid_ids) {
            (Side::Rust, false) => Peer::start_command(
                Command::new(peer_binary()),
                &[&["--dir", dir, "--id", &id], args].concat(),
            ),
            (Side::Go, false) => {
                Peer::start_command(Command::new(&self.go), &[&["--dir", dir, "--id", &id], args].concat())
            }
            // The shell's pid is the peer's once it execs; the peer's flags stay as they are.
            (Side::Rust, true) => {
                let peer = peer_binary().to_str().expect("a UTF-8 peer path");
                let script = r#"exec "$0" --id $$ "$@""#;
                Peer::start_command(Command::new("sh"), &[&["-c", script, peer, "--dir", dir], args].concat())
            }
            // Go v1.1.0 uses its pid whatever --id says (which then only names it in events).
            (Side::Go, true) => {
                Peer::start_command(Command::new(&self.go), &[&["--dir", dir], args].concat())
            }
        };
        if self.pid_ids {
            peer.label = peer.pid().to_string();
        }
        peer
    }
}
