//! The command line of the examples' servers, `[DIR] [ADDR]`. Shared by the examples through
//! `#[path]`; not an example.

use std::path::{Path, PathBuf};

/// `[DIR] [ADDR]` for the example `name`, with the defaults filled in (`tableroll-NAME` in the
/// runtime directory, `127.0.0.1:8080`) and the directory created.
pub fn dir_and_addr(name: &str) -> Result<(PathBuf, String), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| default_dir(&format!("tableroll-{name}")));
    let addr = match args.next() {
        Some(addr) => addr.into_string().map_err(|a| format!("the address {a:?} is not UTF-8"))?,
        None => "127.0.0.1:8080".to_string(),
    };
    if let Some(extra) = args.next() {
        return Err(format!("unexpected argument {extra:?}; usage: {name} [DIR] [ADDR]").into());
    }
    create_private_dir(&dir)?;
    Ok((dir, addr))
}

/// `name` in the user's runtime directory, or else in the temporary directory.
fn default_dir(name: &str) -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    base.join(name)
}

/// The coordination directory is the trust boundary: only this user may enter it.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
