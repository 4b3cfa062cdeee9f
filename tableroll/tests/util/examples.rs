//! The binaries of the crate's examples (the conformance peer among them) for the tests that run
//! them as child processes.
//!
//! `cargo test` builds the examples, but not when only some test targets are selected: an
//! example that is missing or older than its sources is built here, in the same profile and
//! target directory as this test executable, so that a test never runs a stale binary.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Once, OnceLock};
use std::time::SystemTime;

/// The examples the tests run, named by the module that includes this one (the library's
/// tests, and the CLI's, which include this file by path): they are built together, in one
/// `cargo build` of the including crate, when one of them is missing or stale; the sources
/// they share (`src/`) make them stale together.
use super::EXAMPLES;

/// The binary of example `name` in `target/<profile>/examples/`, built first (with all of
/// [`EXAMPLES`]) if it is missing or older than its sources. Checked once per test process.
pub fn example_binary(name: &str) -> &'static Path {
    static BINARIES: [OnceLock<PathBuf>; EXAMPLES.len()] = [const { OnceLock::new() }; EXAMPLES.len()];
    let index = EXAMPLES.iter().position(|known| *known == name);
    let index = index.unwrap_or_else(|| panic!("example {name:?} is not in EXAMPLES"));
    BINARIES[index].get_or_init(|| {
        let binary = profile_dir().join("examples").join(name);
        if is_stale(&binary, name) {
            build_examples_once();
        }
        assert!(binary.exists(), "example {name} is missing at {} even after building it", binary.display());
        binary
    })
}

/// `target/<profile>`, where cargo put this test executable (in `deps/`).
fn profile_dir() -> &'static Path {
    static PROFILE_DIR: OnceLock<PathBuf> = OnceLock::new();
    PROFILE_DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/<profile>/deps/<test> -> target/<profile>
        exe.parent().and_then(Path::parent).expect("target/<profile>").to_owned()
    })
}

/// Whether `binary` is missing or older than a source of example `name`.
fn is_stale(binary: &Path, name: &str) -> bool {
    let Ok(built) = fs::metadata(binary).and_then(|m| m.modified()) else { return true };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources =
        [root.join("src"), root.join("examples").join(format!("{name}.rs")), root.join("Cargo.toml")];
    sources.iter().any(|source| newest_modification(source) > built)
}

/// The newest modification time of `path` and, for a directory, of everything below it (a
/// directory's own time changes when a file in it is added, removed or renamed).
fn newest_modification(path: &Path) -> SystemTime {
    let Ok(meta) = fs::metadata(path) else { return SystemTime::UNIX_EPOCH };
    let own = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    if !meta.is_dir() {
        return own;
    }
    let entries = fs::read_dir(path).into_iter().flatten().flatten();
    entries.map(|entry| newest_modification(&entry.path())).fold(own, SystemTime::max)
}

/// [`build_examples`], once per test process however many tests find a stale binary.
fn build_examples_once() {
    static BUILT: Once = Once::new();
    BUILT.call_once(build_examples);
}

/// Builds all of [`EXAMPLES`] with one `cargo build` in this test executable's profile.
fn build_examples() {
    let profile_dir = profile_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--manifest-path"]).arg(&manifest);
    for name in EXAMPLES {
        cmd.args(["--example", name]);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    // Build into the same target directory (cargo marks its root with CACHEDIR.TAG); for a
    // cross-compiled layout (target/<triple>/<profile>) leave the choice to cargo.
    if let Some(target_dir) = profile_dir.parent().filter(|t| t.join("CACHEDIR.TAG").exists()) {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?} to build the examples: {e}"));
    assert!(
        output.status.success(),
        "building the examples failed: {cmd:?}\nstatus: {}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
